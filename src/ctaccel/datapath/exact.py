"""Exact-match index of the fast path: keys kept in the entries, one word per slot.

What: the lookup structure of the assume-established fast path. An entry is a row of an
int64 array the caller owns (``rows``); its key, ``W`` words chosen by the caller, lies in
that row from column ``key_at``. The index maps a key to its entry's row number.
:class:`ExactIndex` owns the index; the ``em_*`` kernels do the work on arrays passed as
arguments, so compiled code looks up, adds and removes without touching Python objects.

Design:
- The index is ctaccel.hashtable's packed layout: one int64 per slot,
  ``hash31 << 32 | entry + 1`` (0: empty), open addressing with linear probing and
  backward-shift deletion (no tombstones: a lookup stops at the first empty slot however
  long the table lives). ``hash31`` is the low 31 bits of the key's :func:`hash_row`; a probe
  compares it before reading the entry's key, so a lookup reads 8 bytes per slot it passes
  and the one entry row it returns, which the caller reads next anyway.
- Keys live once, in the entries: the index costs 8 bytes per slot at a load of at most 1/2
  (the old table stored each key in its slot with a hash, a value and a flag: 81 bytes a
  slot, 162 an entry).
- Lookups, adds and removes are hashtable's packed operations (em_find's matcher compares
  the key in the entry's row).
- Growth is Python-side (:meth:`ExactIndex.grow`): an index twice as large, every slot put
  back from its stored hash (conntrack.table.reindex: no entry row is read). Kernels never
  allocate; the caller keeps the count under ``state[ES_LIMIT]``.

Invariants:
- ``nslots`` is a power of two; ``state[ES_COUNT]`` is the number of used slots and never
  exceeds ``state[ES_LIMIT]`` (half the slots), so every probe meets an empty slot.
- Each key occurs at most once; every used slot is reachable from its home slot
  (``hash31 & (nslots - 1)``) without crossing an empty slot. Empty slots hold 0.
"""

from __future__ import annotations

import numpy as np

from ctaccel.arrays import aligned_zeros
from ctaccel.conntrack.table import reindex
from ctaccel.hashtable import (
    M32,
    PACKED_LAYOUT,
    hash_row,
    open_addressing,
    packed_add,
    packed_ref,
    packed_remove,
    python_source,
)
from ctaccel.hashtable import slots_for as _slots_for
from ctaccel.jit import njit

# --- state vector -------------------------------------------------------------------------
ES_COUNT = 0  # used slots (entries indexed)
ES_LIMIT = 1  # most entries allowed (load factor 1/2)
ES_WIDTH = 4

LOAD_DEN = 2  # load limit = nslots // LOAD_DEN
H31 = 0x7FFFFFFF


@njit(forceinline=True)
def em_hash31(h):
    """The index's hash of a key whose :func:`hash_row` is ``h``."""
    return h & H31


@njit(forceinline=True)
def key_equals(rows, e, key_at, key):
    for c in range(key.shape[0]):
        if rows[e, key_at + c] != key[c]:
            return False
    return True


@njit(forceinline=True)
def _key_at(t, s, key):
    """Whether slot ``s`` of index ``t[0]`` names the entry whose key (in ``t[1]`` from
    column ``t[2]``) is ``key``."""
    return key_equals(t[1], packed_ref(t[0][s]), t[2], key)


_find = open_addressing(PACKED_LAYOUT, _key_at).find


@njit(forceinline=True)
def em_find(index, rows, key_at, key, h31):
    """The entry (row of ``rows``) whose key is ``key`` (its hash ``h31``), or -1."""
    s = _find(key, h31, index, rows, key_at)
    return packed_ref(index[s]) if s >= 0 else -1


@njit(forceinline=True)
def em_add(index, state, e, h31):
    """Index entry ``e`` (its key, whose hash is ``h31``, absent; the count under the
    limit)."""
    packed_add(index, e, h31)
    state[ES_COUNT] += 1


@njit(forceinline=True)
def em_remove(index, state, e, h31):
    """Take entry ``e`` (hash ``h31``) out of the index; False when it was not there."""
    if packed_remove(index, e, h31):
        state[ES_COUNT] -= 1
        return True
    return False


_delete_at = open_addressing(PACKED_LAYOUT, None).delete_at


@njit(forceinline=True)
def em_take_next(index, state, s):
    """Remove the first used slot at or after ``s`` (cyclically; the index must not be
    empty); returns (its entry, the slot after it)."""
    mask = index.shape[0] - 1
    s &= mask
    while index[s] == 0:
        s = (s + 1) & mask
    e = packed_ref(index[s])
    _delete_at(s, index)
    state[ES_COUNT] -= 1
    return e, s + 1


@njit
def em_find_batch(index, rows, key_at, qkeys, out):
    """``out[i]`` = the entry of ``qkeys[i]`` or -1, for every row; returns the hits."""
    hits = 0
    for i in range(qkeys.shape[0]):
        key = qkeys[i]
        e = em_find(index, rows, key_at, key, em_hash31(hash_row(key)))
        out[i] = e
        if e >= 0:
            hits += 1
    return hits


@njit
def em_add_key(index, state, rows, key_at, e, key):
    """Write ``key`` into entry ``e``'s row and index it (tests and tools: the fast path's
    install does the two itself)."""
    for c in range(key.shape[0]):
        rows[e, key_at + c] = key[c]
    em_add(index, state, e, em_hash31(hash_row(key)))


@njit
def em_remove_key(index, state, rows, key_at, key):
    """Take the entry whose key is ``key`` out of the index; its row, or -1 if absent."""
    h31 = em_hash31(hash_row(key))
    e = em_find(index, rows, key_at, key, h31)
    if e >= 0:
        em_remove(index, state, e, h31)
    return e


def slots_for(capacity: int) -> int:
    """Power-of-two slot count whose load limit holds at least ``capacity`` entries."""
    return _slots_for(max(int(capacity), 1) * LOAD_DEN, 1, 4)


class ExactIndex:
    """The index of entries whose ``width``-word keys lie in their rows from ``key_at``.

    ``jit=False`` runs the very same kernels as plain Python (their ``py_func``), which the
    tests use to check the compiled code against its own source. :meth:`grow` replaces the
    arrays: callers holding ``tables`` re-read it.
    """

    def __init__(self, width: int, key_at: int, capacity: int = 1024, *, jit: bool = True):
        if width < 1 or key_at < 0:
            raise ValueError("width must be >= 1 and key_at >= 0")
        self.width, self.key_at = int(width), int(key_at)
        pick = (lambda f: f) if jit else python_source
        self._find_batch, self._add_key = pick(em_find_batch), pick(em_add_key)
        self._remove_key, self._reindex = pick(em_remove_key), pick(reindex)
        self.index = aligned_zeros(slots_for(capacity))
        self.state = aligned_zeros(ES_WIDTH)
        self.state[ES_LIMIT] = self.index.shape[0] // LOAD_DEN

    @property
    def tables(self):
        """The kernels' leading arguments: ``(index, state)``."""
        return self.index, self.state

    @property
    def capacity(self) -> int:
        """Entries the index holds before the next growth."""
        return int(self.state[ES_LIMIT])

    def __len__(self) -> int:
        return int(self.state[ES_COUNT])

    def _keys(self, keys) -> np.ndarray:
        keys = np.ascontiguousarray(keys, dtype=np.int64)
        if keys.ndim != 2 or keys.shape[1] != self.width:
            raise ValueError(f"keys must have shape (n, {self.width}), got {keys.shape}")
        return keys

    def find_batch(self, rows, keys, out=None) -> np.ndarray:
        """The entry of every row of ``keys[n, width]`` (-1 where absent)."""
        keys = self._keys(keys)
        if out is None:
            out = np.empty(keys.shape[0], np.int64)
        self._find_batch(self.index, rows, np.int64(self.key_at), keys, out)
        return out

    def add(self, rows, e: int, key) -> None:
        """Write ``key`` (absent) into row ``e`` of ``rows`` and index it, growing when full."""
        key = self._keys(np.reshape(key, (1, -1)))[0]
        if len(self) >= self.capacity:
            self.grow()
        self._add_key(self.index, self.state, rows, np.int64(self.key_at), np.int64(e), key)

    def remove(self, rows, key) -> int:
        """Take ``key`` out of the index; its entry's row, or -1 when it was absent."""
        key = self._keys(np.reshape(key, (1, -1)))[0]
        return int(self._remove_key(self.index, self.state, rows, np.int64(self.key_at), key))

    def clear(self) -> None:
        """Drop every entry, keeping the index (and its size)."""
        self.index.fill(0)
        self.state[ES_COUNT] = 0

    def grow(self) -> None:
        """Double the slot count; every slot is put back from its stored hash."""
        old = self.index
        self.index = aligned_zeros(old.shape[0] * 2)
        self._reindex(old, self.index)
        self.state[ES_LIMIT] = self.index.shape[0] // LOAD_DEN

    def entries(self) -> np.ndarray:
        """The indexed entries' rows, in slot order (for tests and dumps)."""
        used = self.index[self.index != 0]
        return (used & M32) - 1
