"""Exact-match table over fixed-width int64 rows, and the row hash shared by the caches.

What: the lookup structure of the assume-established fast path. A key is an int64 row of a
width ``W`` chosen at construction (the engine picks the header columns it keys on); a value is
an int64 entry id (>= 0) into side arrays the caller owns. :class:`ExactTable` owns the arrays;
the ``em_*`` kernels do the work on arrays passed as arguments, so compiled code can look up,
insert and delete without touching Python objects.

Design:
- Open addressing with linear probing, the key rows stored in the slots themselves:
  ``keys[nslots, W]``, ``used[nslots]`` (uint8, 1 = occupied), ``value[nslots]`` and
  ``hashes[nslots]`` (the row's full 63-bit hash, compared before the row so a probe rarely
  reads a row that does not match). ``state`` is a small int64 vector (``ES_*`` columns) with
  the entry count and the load limit, so kernels can refuse an insert instead of allocating.
- Every kernel takes the same arrays in the same order, ``ExactTable.tables``:
  ``(keys, used, value, hashes, state)``, then its own arguments.
- Deletion is backward shift (no tombstones): after emptying a slot, later members of the
  probe cluster move back when their home slot allows it, so a lookup can stop at the first
  empty slot forever, and a long-running table never degrades.
- The hash (:func:`hash_column` / :func:`hash_finish`) mixes each column on its own (one
  multiply and a xorshift, seeded by the column's position), adds the mixes into two
  32-bit lanes with different weights and avalanches each lane; the result has 63 bits, the
  bucket index uses the low lane. Columns do not wait on each other, so the CPU overlaps their
  multiplies. Every product is a value below 2**32 times a constant below 2**31 (or a small
  weight), so nothing ever overflows int64: results are identical compiled and as plain
  Python (numba may assume signed multiplies do not wrap, so code relying on wrapping is
  unsafe there).
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
from ctaccel.jit import njit

# --- state vector -------------------------------------------------------------------------
ES_COUNT = 0  # occupied slots
ES_LIMIT = 1  # most entries allowed before em_insert refuses (load factor 1/2)
ES_WIDTH = 4

EM_FULL = -2  # em_insert: no room for a new key (grow, then retry)

# --- hash constants -----------------------------------------------------------------------
M32 = 0xFFFFFFFF
# Odd multipliers below 2**31: (value < 2**32) * multiplier < 2**63, never an overflow.
HASH_MUL_A = 0x5BD1E995
HASH_MUL_B = 0x27D4EB2D
HASH_SEED_A = 0x9E3779B9
HASH_SEED_B = 0x85EBCA6B

LOAD_NUM = 1  # load limit = nslots * LOAD_NUM // LOAD_DEN
LOAD_DEN = 2


@njit(forceinline=True)
def hash_column(a, b, col, v):
    """Fold column ``col`` holding ``v`` into the lanes ``(a, b)``; returns the new lanes.

    Each column first gets its own 32-bit mix (xor a seed from its position, multiply, then a
    xorshift so that neighbouring values do not differ by a constant; the high bits join
    after the multiply); the lanes add the mixes with different odd weights, and
    :func:`hash_finish` avalanches them. Columns are independent of one another, so
    the CPU overlaps their multiplies instead of waiting on one long chain.
    """
    lo = v & M32
    hi = (v >> 32) & M32
    t = ((lo ^ (((col + 1) * HASH_SEED_A) & M32)) * HASH_MUL_A) & M32
    t = t ^ (t >> 15) ^ hi
    # a and b stay below 2**32 * (sum of weights): far from overflow for any row width.
    return (a + t) & M32, (b + t * (2 * col + 1)) & M32


@njit(forceinline=True)
def _avalanche(x, m1, m2):
    x ^= x >> 16
    x = (x * m1) & M32
    x ^= x >> 13
    x = (x * m2) & M32
    return x ^ (x >> 16)


@njit(forceinline=True)
def hash_finish(a, b):
    """Join the lanes into a non-negative 63-bit hash (the low 32 bits come from lane b)."""
    a = _avalanche(a, HASH_MUL_B, HASH_MUL_A)
    b = _avalanche(b, HASH_MUL_A, HASH_MUL_B)
    return ((a & 0x7FFFFFFF) << 32) | b


@njit(forceinline=True)
def hash_row(row):
    """63-bit hash of a 1-D int64 row (every column, by position)."""
    a = HASH_SEED_A
    b = HASH_SEED_B
    for c in range(row.shape[0]):
        a, b = hash_column(a, b, c, row[c])
    return hash_finish(a, b)


@njit(forceinline=True)
def _row_equals(keys, slot, key):
    for c in range(key.shape[0]):
        if keys[slot, c] != key[c]:
            return False
    return True


@njit(forceinline=True)
def _find_slot(keys, used, hashes, key, h):
    """Slot holding ``key`` (hash ``h``), or -1."""
    slot_mask = used.shape[0] - 1
    s = h & slot_mask
    while used[s] != 0:
        if hashes[s] == h and _row_equals(keys, s, key):
            return s
        s = (s + 1) & slot_mask
    return -1


@njit(forceinline=True)
def em_lookup_hashed(keys, used, value, hashes, key, h):
    """``em_lookup`` with the key's ``hash_row`` already computed."""
    s = _find_slot(keys, used, hashes, key, h)
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
        s = _find_slot(keys, used, hashes, row, hash_row(row))
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
    slot_mask = used.shape[0] - 1
    s = h & slot_mask
    while used[s] != 0:
        if hashes[s] == h and _row_equals(keys, s, key):
            value[s] = val
            return s
        s = (s + 1) & slot_mask
    if state[ES_COUNT] >= state[ES_LIMIT]:
        return EM_FULL
    for c in range(key.shape[0]):
        keys[s, c] = key[c]
    used[s] = 1
    value[s] = val
    hashes[s] = h
    state[ES_COUNT] += 1
    return s


@njit(forceinline=True)
def _clear_slot(keys, used, value, hashes, s):
    for c in range(keys.shape[1]):
        keys[s, c] = 0
    used[s] = 0
    value[s] = 0
    hashes[s] = 0


@njit
def em_delete(keys, used, value, hashes, state, key):
    """Remove ``key``; returns its value, or -1 when absent.

    Backward shift: walk the cluster after the hole; an entry whose home slot is not
    cyclically inside (hole, its slot] may move into the hole, which then moves to it.
    """
    s = _find_slot(keys, used, hashes, key, hash_row(key))
    if s < 0:
        return -1
    old = value[s]
    slot_mask = used.shape[0] - 1
    hole = s
    j = (hole + 1) & slot_mask
    while used[j] != 0:
        home = hashes[j] & slot_mask
        if ((j - home) & slot_mask) >= ((j - hole) & slot_mask):
            for c in range(keys.shape[1]):
                keys[hole, c] = keys[j, c]
            value[hole] = value[j]
            hashes[hole] = hashes[j]
            used[hole] = 1
            hole = j
        j = (j + 1) & slot_mask
    _clear_slot(keys, used, value, hashes, hole)
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
    n = 4
    while n * LOAD_NUM // LOAD_DEN < max(int(capacity), 1):
        n <<= 1
    return n


def python_source(kernel):
    """The plain-Python function behind a kernel (itself when NUMBA_DISABLE_JIT=1)."""
    return getattr(kernel, "py_func", kernel)


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
