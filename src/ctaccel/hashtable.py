"""Open addressing: the one hash-table implementation of the compiled caches and tables.

What: the hash of an int64 key row (:func:`hash_row`, built from :func:`hash_column` and
:func:`hash_finish`) and the algorithm of a power-of-two table with linear probing and
backward-shift deletion: find a key, find where a new key goes, delete a slot, sizing. Users:
the exact-match index of the fast path (datapath/exact.py: row hash, insertion, deletion),
conntrack's connection index (conntrack/table.py: insertion, deletion, sizing) and the
megaflow cache (datapath/megaflow.py: row hash, insertion, sizing). Each keeps only what is
its own (what a key is, how it is compared, what a slot carries). Their *lookup* loops stay
written out in their modules, the same probe sequence over their layout: through
``find`` with a matcher that reads their entry arrays, numba kept reference counting around
every lookup (conntrack 1.5x, megaflow up to 3.7x its lookup time, micro-benchmarks).

Design:
- A table is a tuple ``t`` of numpy arrays; a :class:`Layout` says how to read and write one
  slot of it: ``n_slots(t)``, ``is_used(t, s)``, ``slot_hash(t, s)`` (the stored full hash),
  ``move(t, src, dst)`` and ``clear(t, s)``. Two layouts exist:
  :data:`INDEX_LAYOUT`, ``t[0]`` an ``index[nslots, 2]`` of ``ref + 1`` (0 = empty) and the
  hash, the entries themselves in the caller's rows (megaflow, ALG expectations);
  :data:`PACKED_LAYOUT`, the same in one word per slot (``hash << 32 | ref + 1``, hashes of
  31 bits: conntrack's connection index, the fast path's exact-match index).
- :func:`open_addressing` (layout, ``matches``) returns the compiled operations, written once
  here, each taking the table's arrays as its last arguments (``*t``: a tuple of arrays built
  by a caller costs an atomic reference count per array per call, which numba does not
  always prune: conntrack's lookup ran ~1.9x slower so). ``find`` / ``find_or_free`` probe
  from ``hash & (nslots - 1)`` and compare the stored hash before calling
  ``matches(t, s, key)``, so a probe rarely reads an entry that does not match; ``free_slot`` is where a key known to be absent goes; ``delete_at`` empties a slot
  and shifts the rest of its cluster back (no tombstones, ever: lookups stop at the first
  empty slot however long the table lives). Every callback and operation is
  ``njit(forceinline=True)``: LLVM inlines them into each kernel, so the probe loop is what a
  hand-written one would be (a call per probe tripled the megaflow lookup time). Each table
  builds its operations once, at import, from module-level callbacks; the closures compile
  only for the argument types their kernel uses (no new specialisation).
- Sizing (:func:`slots_for`) and growth are Python-side: bigger arrays, every entry put back
  with ``free_slot``; kernels never allocate, so a table keeps at least one empty slot.
- The row hash mixes each column on its own (one multiply and a xorshift, seeded by the
  column's position), adds the mixes into two 32-bit lanes with different weights and
  avalanches each lane; the result has 63 bits, the slot index uses the low lane. Columns do
  not wait on each other, so the CPU overlaps their multiplies. Every product is a value
  below 2**32 times a constant below 2**31 (or a small weight), so nothing ever overflows
  int64: results are identical compiled and as plain Python (numba may assume signed
  multiplies do not wrap, so code relying on wrapping is unsafe there).

Invariants (each table upholds them, the operations rely on them):
- ``n_slots(t)`` is a power of two and at least one slot is empty, so every probe ends.
- Every used slot is reachable from its home slot ``slot_hash & (nslots - 1)`` without
  crossing an empty slot; ``delete_at`` keeps it so. Empty slots hold zeros.
"""

from __future__ import annotations

from typing import NamedTuple

from ctaccel.jit import njit

# --- row hash -----------------------------------------------------------------------------
M32 = 0xFFFFFFFF
# Odd multipliers below 2**31: (value < 2**32) * multiplier < 2**63, never an overflow.
HASH_MUL_A = 0x5BD1E995
HASH_MUL_B = 0x27D4EB2D
HASH_SEED_A = 0x9E3779B9
HASH_SEED_B = 0x85EBCA6B


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


# --- the algorithm --------------------------------------------------------------------------
class Layout(NamedTuple):
    """How the operations read and write one slot of a table tuple ``t`` (compiled helpers)."""

    n_slots: object  # (t) -> number of slots, a power of two
    is_used: object  # (t, s) -> bool
    slot_hash: object  # (t, s) -> the hash stored with the slot's entry
    move: object  # (t, src, dst): slot dst := slot src (dst is then in use)
    clear: object  # (t, s): slot s empty, all zeros


class Ops(NamedTuple):
    """The compiled operations over one layout and one way of comparing keys."""

    find: object  # (key, h, *t) -> slot holding key, or -1
    find_or_free: object  # (key, h, *t) -> (slot, found): key's slot, or where it would go
    free_slot: object  # (h, *t) -> where a key known to be absent goes
    delete_at: object  # (s, *t): empty slot s, shifting its cluster back


def open_addressing(layout: Layout, matches) -> Ops:
    """The operations for tables of ``layout`` whose key ``key`` matches slot ``s`` when
    ``matches(t, s, key)`` (called only on a used slot whose stored hash equals the key's)."""
    n_slots, is_used, slot_hash = layout.n_slots, layout.is_used, layout.slot_hash
    move, clear = layout.move, layout.clear

    @njit(forceinline=True)
    def find(key, h, *t):
        mask = n_slots(t) - 1
        s = h & mask
        while is_used(t, s):
            if slot_hash(t, s) == h and matches(t, s, key):
                return s
            s = (s + 1) & mask
        return -1

    @njit(forceinline=True)
    def find_or_free(key, h, *t):
        mask = n_slots(t) - 1
        s = h & mask
        while is_used(t, s):
            if slot_hash(t, s) == h and matches(t, s, key):
                return s, True
            s = (s + 1) & mask
        return s, False

    @njit(forceinline=True)
    def free_slot(h, *t):
        mask = n_slots(t) - 1
        s = h & mask
        while is_used(t, s):
            s = (s + 1) & mask
        return s

    @njit(forceinline=True)
    def delete_at(s, *t):
        # Backward shift: walk the cluster after the hole; an entry whose home slot is not
        # cyclically inside (hole, its slot] may move into the hole, which then moves to it.
        mask = n_slots(t) - 1
        hole = s
        j = (hole + 1) & mask
        while is_used(t, j):
            home = slot_hash(t, j) & mask
            if ((j - home) & mask) >= ((j - hole) & mask):
                move(t, j, hole)
                hole = j
            j = (j + 1) & mask
        clear(t, hole)

    return Ops(find, find_or_free, free_slot, delete_at)


# --- the index layout: t[0] is index[nslots, 2] = (ref + 1 or 0, hash) -----------------------
@njit(forceinline=True)
def _index_n_slots(t):
    return t[0].shape[0]


@njit(forceinline=True)
def _index_is_used(t, s):
    return t[0][s, 0] != 0


@njit(forceinline=True)
def _index_slot_hash(t, s):
    return t[0][s, 1]


@njit(forceinline=True)
def _index_move(t, src, dst):
    index = t[0]
    index[dst, 0] = index[src, 0]
    index[dst, 1] = index[src, 1]


@njit(forceinline=True)
def _index_clear(t, s):
    index = t[0]
    index[s, 0] = 0
    index[s, 1] = 0


INDEX_LAYOUT = Layout(_index_n_slots, _index_is_used, _index_slot_hash, _index_move, _index_clear)


@njit(forceinline=True)
def index_ref(index, s):
    """The entry reference (row, handle) stored in used slot ``s`` of an index."""
    return index[s, 0] - 1


@njit(forceinline=True)
def index_store(index, s, ref, h):
    """Put entry ``ref`` with hash ``h`` into the empty slot ``s`` of an index."""
    index[s, 0] = ref + 1
    index[s, 1] = h


@njit(forceinline=True)
def _is_ref(t, s, ref):
    return t[0][s, 0] == ref + 1


def _by_ref(layout: Layout, is_ref, store):
    """(add, remove) of an index of ``layout`` that need no knowledge of the entries: place an
    entry known to be absent (``store(index, slot, ref, h)`` writes it), and find an entry by
    its reference to delete it."""
    ops = open_addressing(layout, is_ref)
    free_slot, find_ref, delete_at = ops.free_slot, ops.find, ops.delete_at

    @njit(forceinline=True)
    def add(index, ref, h):
        store(index, free_slot(h, index), ref, h)

    @njit(forceinline=True)
    def remove(index, ref, h):
        s = find_ref(ref, h, index)
        if s < 0:
            return False
        delete_at(s, index)
        return True

    return add, remove


# index_add(index, ref, h): add entry ``ref`` (absent) with hash ``h`` (the index must have an
# empty slot); index_remove(index, ref, h): remove it, shifting later entries back (False when
# absent).
index_add, index_remove = _by_ref(INDEX_LAYOUT, _is_ref, index_store)


# --- the packed index layout: t[0] is index[nslots] = hash << 32 | (ref + 1), 0 = empty ----
# For an index whose hashes have 31 bits (conntrack's tuple hash): one int64 per slot, eight
# slots to a cache line, half the memory of INDEX_LAYOUT's two words.
@njit(forceinline=True)
def _packed_is_used(t, s):
    return t[0][s] != 0


@njit(forceinline=True)
def _packed_slot_hash(t, s):
    return t[0][s] >> 32


@njit(forceinline=True)
def _packed_move(t, src, dst):
    t[0][dst] = t[0][src]


@njit(forceinline=True)
def _packed_clear(t, s):
    t[0][s] = 0


PACKED_LAYOUT = Layout(_index_n_slots, _packed_is_used, _packed_slot_hash, _packed_move,
                       _packed_clear)  # fmt: skip


@njit(forceinline=True)
def packed_ref(word):
    """The entry reference stored in a used slot's word of a packed index."""
    return (word & M32) - 1


@njit(forceinline=True)
def _is_packed_ref(t, s, ref):
    return (t[0][s] & M32) == ref + 1


@njit(forceinline=True)
def _packed_store(index, s, ref, h):
    index[s] = (h << 32) | (ref + 1)


# packed_add / packed_remove: index_add / index_remove over a packed index (ref < 2**32 - 1,
# h < 2**31).
packed_add, packed_remove = _by_ref(PACKED_LAYOUT, _is_packed_ref, _packed_store)


# --- Python side --------------------------------------------------------------------------
def slots_for(entries: int, slots_per_entry: int, minimum: int = 1) -> int:
    """The smallest power of two >= ``minimum`` and >= ``slots_per_entry`` slots per entry."""
    n = minimum
    while n < slots_per_entry * max(int(entries), 1):
        n <<= 1
    return n


def python_source(kernel):
    """The plain-Python function behind a kernel (itself when NUMBA_DISABLE_JIT=1)."""
    return getattr(kernel, "py_func", kernel)
