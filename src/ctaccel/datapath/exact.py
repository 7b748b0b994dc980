"""Exact-match table over fixed-width int64 rows: the fast path's cache.

What: the lookup structure of the assume-established fast path. A key is an int64 row of a
width ``W`` chosen at construction (the engine picks the header columns it keys on); a value is
an int64 entry id (>= 0) into side arrays the caller owns. :class:`ExactTable` owns the arrays;
the ``em_*`` kernels do the work on arrays passed as arguments, so compiled code can look up,
insert and delete without touching Python objects.

Design:
- Open addressing with linear probing (ctaccel.hashtable's algorithm, this module gives it the
  slot layout and the key comparison), the key rows stored in the slots themselves:
  ``keys[nslots, W]``, ``used[nslots]`` (uint8, 1 = occupied), ``value[nslots]`` and
  ``hashes[nslots]`` (the row's full 63-bit :func:`hash_row`, compared before the row so a
  probe rarely reads a row that does not match). ``state`` is a small int64 vector (``ES_*``
  columns) with the entry count and the load limit, so kernels can refuse an insert instead of
  allocating.
- Every kernel takes the same arrays in the same order, ``ExactTable.tables``:
  ``(keys, used, value, hashes, state)``, then its own arguments.
- Deletion is backward shift (no tombstones): after emptying a slot, later members of the
  probe cluster move back when their home slot allows it, so a lookup can stop at the first
  empty slot forever, and a long-running table never degrades.
- Small helpers are ``forceinline=True`` (inlined by LLVM, see ctaccel.jit): a call per
  probe tripled the megaflow lookup time.
- Growth is Python-side (``grow``): bigger arrays, every entry re-inserted. Kernels never
  allocate; ``em_insert`` returns ``EM_FULL`` when the load limit is reached.

Invariants:
- ``nslots`` is a power of two; ``state[ES_COUNT]`` equals ``used.sum()`` and never exceeds
  ``state[ES_LIMIT]`` (half the slots), so every probe sequence meets an empty slot.
- Each key occurs at most once; every occupied slot is reachable from its home slot
  (``hashes[s] & (nslots - 1)``) without crossing an empty slot.
- Unused slots hold zeros (keys, value, hash), so tables compare equal across implementations.
"""

from __future__ import annotations

import numpy as np

from ctaccel.arrays import prefaulted_zeros
from ctaccel.hashtable import Layout, hash_row, open_addressing, python_source
from ctaccel.hashtable import slots_for as _slots_for
from ctaccel.jit import njit

# --- state vector -------------------------------------------------------------------------
ES_COUNT = 0  # occupied slots
ES_LIMIT = 1  # most entries allowed before em_insert refuses (load factor 1/2)
ES_WIDTH = 4

EM_FULL = -2  # em_insert: no room for a new key (grow, then retry)

LOAD_NUM = 1  # load limit = nslots * LOAD_NUM // LOAD_DEN
LOAD_DEN = 2


# --- the slot layout: t = (keys, used, value, hashes) ------------------------------------------
@njit(forceinline=True)
def _n_slots(t):
    return t[1].shape[0]


@njit(forceinline=True)
def _is_used(t, s):
    return t[1][s] != 0


@njit(forceinline=True)
def _slot_hash(t, s):
    return t[3][s]


@njit(forceinline=True)
def _move(t, src, dst):
    keys, used, value, hashes = t
    for c in range(keys.shape[1]):
        keys[dst, c] = keys[src, c]
    value[dst] = value[src]
    hashes[dst] = hashes[src]
    used[dst] = 1


@njit(forceinline=True)
def _clear(t, s):
    keys, used, value, hashes = t
    for c in range(keys.shape[1]):
        keys[s, c] = 0
    used[s] = 0
    value[s] = 0
    hashes[s] = 0


@njit(forceinline=True)
def _row_equals(t, s, key):
    keys = t[0]
    for c in range(key.shape[0]):
        if keys[s, c] != key[c]:
            return False
    return True


_SLOTS = open_addressing(Layout(_n_slots, _is_used, _slot_hash, _move, _clear), _row_equals)
_find = _SLOTS.find
_find_or_free = _SLOTS.find_or_free
_delete_at = _SLOTS.delete_at
em_delete_at = _delete_at  # (s, keys, used, value, hashes): empty slot s (backward shift);
#                            the caller lowers state[ES_COUNT]


@njit(forceinline=True)
def em_lookup_hashed(keys, used, value, hashes, key, h):
    """``em_lookup`` with the key's ``hash_row`` already computed."""
    s = _find(key, h, keys, used, value, hashes)
    if s < 0:
        return -1
    return value[s]


@njit(forceinline=True)
def em_lookup(keys, used, value, hashes, state, key):
    """Value stored for ``key``, or -1."""
    return em_lookup_hashed(keys, used, value, hashes, key, hash_row(key))


@njit
def em_lookup_batch(keys, used, value, hashes, state, qkeys, out):
    """``out[i]`` = value of ``qkeys[i]`` or -1, for every row; returns the number of hits."""
    hits = 0
    for i in range(qkeys.shape[0]):
        row = qkeys[i]
        s = _find(row, hash_row(row), keys, used, value, hashes)
        if s < 0:
            out[i] = -1
        else:
            out[i] = value[s]
            hits += 1
    return hits


@njit
def em_insert(keys, used, value, hashes, state, key, val):
    """Store ``key -> val`` (overwriting an existing value); returns the slot or ``EM_FULL``."""
    h = hash_row(key)
    s, found = _find_or_free(key, h, keys, used, value, hashes)
    if found:
        value[s] = val
        return s
    if state[ES_COUNT] >= state[ES_LIMIT]:
        return EM_FULL
    for c in range(key.shape[0]):
        keys[s, c] = key[c]
    used[s] = 1
    value[s] = val
    hashes[s] = h
    state[ES_COUNT] += 1
    return s


@njit
def em_delete(keys, used, value, hashes, state, key):
    """Remove ``key`` (backward shift); returns its value, or -1 when absent."""
    s = _find(key, hash_row(key), keys, used, value, hashes)
    if s < 0:
        return -1
    old = value[s]
    _delete_at(s, keys, used, value, hashes)
    state[ES_COUNT] -= 1
    return old


@njit
def em_reinsert_all(old_keys, old_used, old_value, keys, used, value, hashes, state):
    """Insert every occupied row of the old arrays into the (empty) new ones."""
    for s in range(old_used.shape[0]):
        if old_used[s] != 0:
            em_insert(keys, used, value, hashes, state, old_keys[s], old_value[s])


def slots_for(capacity: int) -> int:
    """Power-of-two slot count whose load limit holds at least ``capacity`` entries."""
    return _slots_for(max(int(capacity), 1) * LOAD_DEN // LOAD_NUM, 1, 4)


def _kernels(jit: bool):
    pick = (lambda f: f) if jit else python_source
    return (
        pick(em_lookup),
        pick(em_lookup_batch),
        pick(em_insert),
        pick(em_delete),
        pick(em_reinsert_all),
    )


class ExactTable:
    """Exact-match map from int64 rows of width ``width`` to int64 values >= 0.

    ``jit=False`` runs the very same kernels as plain Python (their ``py_func``), which the
    tests use to check the compiled code against its own source.
    Arrays are replaced by :meth:`grow`: callers holding ``tables`` must re-read it after
    an insert through this class (``clear`` keeps the arrays).
    """

    def __init__(self, width: int, capacity: int = 1024, *, jit: bool = True):
        if width < 1:
            raise ValueError("width must be >= 1")
        self.width = int(width)
        self._jit = jit
        (
            self._lookup,
            self._lookup_batch,
            self._insert,
            self._delete,
            self._reinsert_all,
        ) = _kernels(jit)
        self._allocate(slots_for(capacity))

    def _allocate(self, nslots: int) -> None:
        self.keys = prefaulted_zeros((nslots, self.width))
        self.used = prefaulted_zeros(nslots, np.uint8)
        self.value = prefaulted_zeros(nslots)
        self.hashes = prefaulted_zeros(nslots)
        self.state = prefaulted_zeros(ES_WIDTH)
        self.state[ES_LIMIT] = nslots * LOAD_NUM // LOAD_DEN

    @property
    def tables(self):
        """The kernels' leading arguments: ``(keys, used, value, hashes, state)``."""
        return self.keys, self.used, self.value, self.hashes, self.state

    @property
    def capacity(self) -> int:
        """Entries the current arrays hold before the next growth."""
        return int(self.state[ES_LIMIT])

    def _row(self, key) -> np.ndarray:
        row = np.ascontiguousarray(key, dtype=np.int64)
        if row.shape != (self.width,):
            raise ValueError(f"key must have shape ({self.width},), got {row.shape}")
        return row

    def __len__(self) -> int:
        return int(self.state[ES_COUNT])

    def lookup(self, key) -> int:
        """The value stored for ``key``, or -1."""
        return int(self._lookup(*self.tables, self._row(key)))

    def lookup_batch(self, qkeys, out=None) -> np.ndarray:
        """Values for every row of ``qkeys[n, width]`` (-1 where absent)."""
        qkeys = np.ascontiguousarray(qkeys, dtype=np.int64)
        if qkeys.ndim != 2 or qkeys.shape[1] != self.width:
            raise ValueError(f"qkeys must have shape (n, {self.width}), got {qkeys.shape}")
        if out is None:
            out = np.empty(qkeys.shape[0], np.int64)
        self._lookup_batch(*self.tables, qkeys, out)
        return out

    def insert(self, key, value: int) -> None:
        """Store ``key -> value`` (overwriting), growing the arrays when they are full."""
        if value < 0:
            raise ValueError("values must be >= 0 (-1 means absent)")
        row = self._row(key)
        while self._insert(*self.tables, row, np.int64(value)) == EM_FULL:
            self.grow()

    def delete(self, key) -> int:
        """Remove ``key``; returns its value, or -1 when it was absent."""
        return int(self._delete(*self.tables, self._row(key)))

    def clear(self) -> None:
        """Drop every entry, keeping the arrays (and their size)."""
        self.keys.fill(0)
        self.used.fill(0)
        self.value.fill(0)
        self.hashes.fill(0)
        self.state[ES_COUNT] = 0

    def grow(self) -> None:
        """Double the slot count and re-insert every entry."""
        old_keys, old_used, old_value = self.keys, self.used, self.value
        self._allocate(old_used.shape[0] * 2)
        self._reinsert_all(old_keys, old_used, old_value, *self.tables[:4], self.state)

    def items(self):
        """(key tuple, value) of every entry, in slot order (for tests and dumps)."""
        for s in np.flatnonzero(self.used):
            yield tuple(int(x) for x in self.keys[s]), int(self.value[s])


class ReferenceExact:
    """The trivial model of :class:`ExactTable`: a dict from key tuples to values."""

    def __init__(self, width: int):
        self.width = width
        self.entries: dict[tuple[int, ...], int] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def lookup(self, key) -> int:
        return self.entries.get(tuple(int(x) for x in key), -1)

    def insert(self, key, value: int) -> None:
        self.entries[tuple(int(x) for x in key)] = int(value)

    def delete(self, key) -> int:
        return self.entries.pop(tuple(int(x) for x in key), -1)

    def clear(self) -> None:
        self.entries.clear()
