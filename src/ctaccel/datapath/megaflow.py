"""Megaflow cache: wildcarded entries found by tuple space search (OVS's dpcls), compiled.

What: the cache of the recirc datapath mode. An entry is (mask, masked key) -> an int64
payload (e.g. an action-program id). A lookup key is an int64 vector of width ``MF_WIDTH``:
the matchable flow-key columns ``0..PARSE_FIRST-1`` followed by the recirc_id (``MF_RECIRC``),
built by :func:`make_mf_key`. A key matches an entry when ``key & mask == masked key`` on every
column. :class:`MegaflowCache` owns the arrays; the ``mf_*`` kernels work on arrays passed as
arguments, so compiled code can look up (and install) without Python objects.

Design:
- Tuple space search, as dpcls: the distinct masks are few; each mask lists its nonzero
  columns (``mask_cols[m, :mask_ncols[m]]``) so hashing and comparing touch only those. A
  lookup probes the masks in ``mask_order`` and the first mask with a matching entry wins.
  Hits are counted per mask; :meth:`MegaflowCache.resort` (Python, between batches) sorts the
  order by hits since the previous sort, most first, ties keeping their order, and restarts
  the counts, as dpif-netdev re-sorts its subtables by recent hits.
- One open-addressing index for all entries, keyed by (mask id, masked key): ctaccel.hashtable's
  index layout, ``index[nbuckets, 2]`` holding ``entry + 1`` (0 = empty) and the 63-bit hash,
  in one cache line per probe; this module gives it the masked hash and comparison (insertion
  is hashtable's; the lookup loop is written out, see :func:`_probe`). Entry
  rows are allocated in insertion order (``entry_key``, full width with zeros outside the
  mask, ``entry_mask_id``, ``entry_value``, ``entry_hits``), so an entry index is stable until
  the next :meth:`flush` or :meth:`grow`.
- Invalidation is wholesale: :meth:`flush` drops every entry and mask (rule change), in place.
  There is no per-entry deletion yet (OVS's revalidators expire idle megaflows one by one).
- Every kernel takes ``MegaflowCache.tables`` (a tuple, ``MegaflowTables``' order) as its first
  argument, except :func:`mf_lookup`, which the VM calls with the arrays spread out. Kernels
  never allocate: ``mf_insert`` returns ``MF_FULL`` when the entry rows or the mask slots are
  used up, and Python grows (new arrays, index rebuilt) or flushes.
- Hashing uses ctaccel.hashtable's row-hash lanes, seeded with the mask id.

Invariants:
- ``state[MS_N_MASKS]`` masks are in use, ids ``0..n-1``, all distinct, each with at least one
  entry; ``mask_order[:n]`` is a permutation of those ids.
- ``state[MS_N_ENTRIES]`` entries are in use, rows ``0..n-1``; (mask id, masked key) pairs are
  distinct; each is in the index exactly once. Unused rows and masks are all zeros.
- Bucket count is a power of two, at least twice the entry capacity (load <= 1/2).
- ``entry_key[e, c] == key[c] & masks[m, c]`` for the key it was installed from.

A correct engine installs masks that include ``MF_RECIRC`` (and ``IN_PORT``) exactly, as OVS
always matches recirc_id and in_port exactly; the cache itself accepts any mask, even zero.
"""

from __future__ import annotations

import numpy as np

from ctaccel.arrays import prefaulted_zeros
from ctaccel.hashtable import (
    HASH_SEED_A,
    HASH_SEED_B,
    hash_column,
    hash_finish,
    index_add,
    python_source,
    slots_for,
)
from ctaccel.jit import njit
from ctaccel.packet.key import PARSE_FIRST

MF_RECIRC = PARSE_FIRST  # the recirc_id column of a megaflow key
MF_WIDTH = PARSE_FIRST + 1

# --- state vector -------------------------------------------------------------------------
MS_N_MASKS = 0  # masks in use
MS_N_ENTRIES = 1  # entry rows in use
MS_LOOKUPS = 2  # keys looked up (single and batch)
MS_HITS = 3  # of which found an entry
MS_WIDTH = 8

MF_FULL = -2  # mf_insert: no entry row, or no mask slot, left
BUCKETS_PER_ENTRY = 2


@njit(forceinline=True)
def make_mf_key(key, recirc_id, out):
    """Fill ``out[MF_WIDTH]`` from a flow key's matchable columns and a recirc_id."""
    for c in range(PARSE_FIRST):
        out[c] = key[c]
    out[MF_RECIRC] = recirc_id


@njit(forceinline=True)
def make_mf_keys(keys, recirc_ids, out):
    """Batch form of :func:`make_mf_key`: ``out[i]`` from ``keys[i]`` and ``recirc_ids[i]``."""
    for i in range(keys.shape[0]):
        for c in range(PARSE_FIRST):
            out[i, c] = keys[i, c]
        out[i, MF_RECIRC] = recirc_ids[i]


@njit(forceinline=True)
def _masked_hash(m, key, masks, mask_cols, ncols):
    """Hash of (mask id ``m``, ``key & masks[m]``) over the mask's nonzero columns."""
    a = HASH_SEED_A ^ m
    b = HASH_SEED_B ^ m
    for k in range(ncols):
        c = mask_cols[m, k]
        a, b = hash_column(a, b, c, key[c] & masks[m, c])
    return hash_finish(a, b)


@njit(forceinline=True)
def _probe(masks, mask_cols, mask_ncols, entry_key, entry_mask_id, index, m, key):
    """Entry of mask ``m`` matching ``key``, or -1.

    The probe loop is written out (the same sequence as ctaccel.hashtable's ``find`` over its
    index layout): through ``find`` with a matcher reading the entry arrays, numba kept
    reference counting around each probe, 1.1-3.7x the lookup time depending on how the
    arrays were passed.
    """
    ncols = mask_ncols[m]
    h = _masked_hash(m, key, masks, mask_cols, ncols)
    bucket_mask = index.shape[0] - 1
    b = h & bucket_mask
    while True:
        stored = index[b, 0]
        if stored == 0:
            return -1
        if index[b, 1] == h:
            e = stored - 1
            if entry_mask_id[e] == m:
                same = True
                for k in range(ncols):
                    c = mask_cols[m, k]
                    if (key[c] & masks[m, c]) != entry_key[e, c]:
                        same = False
                        break
                if same:
                    return e
        b = (b + 1) & bucket_mask


@njit(forceinline=True)
def mf_lookup(
    masks,
    mask_cols,
    mask_ncols,
    mask_hits,
    mask_order,
    entry_key,
    entry_mask_id,
    entry_value,
    entry_hits,
    index,
    state,
    mf_key,
):
    """Entry index matching ``mf_key`` (masks probed in order, first hit wins), or -1."""
    state[MS_LOOKUPS] += 1
    for k in range(state[MS_N_MASKS]):
        m = mask_order[k]
        e = _probe(masks, mask_cols, mask_ncols, entry_key, entry_mask_id, index, m, mf_key)
        if e >= 0:
            mask_hits[m] += 1
            entry_hits[e] += 1
            state[MS_HITS] += 1
            return e
    return -1


@njit
def mf_lookup_batch(mf, mf_keys, out_idx):
    """``out_idx[i]`` = entry matching ``mf_keys[i]`` or -1; returns the number of hits.
    ``mf`` is ``MegaflowCache.tables``.

    Mask-major, as dpcls: each mask in order is tried on the keys still unresolved, which
    keeps one mask's columns hot and gives the same answers as one key at a time (the order
    does not change inside a batch).
    """
    masks, mask_cols, mask_ncols, mask_hits, mask_order = mf[0], mf[1], mf[2], mf[3], mf[4]
    entry_key, entry_mask_id, entry_hits, index, state = mf[5], mf[6], mf[8], mf[9], mf[10]
    n = mf_keys.shape[0]
    for i in range(n):
        out_idx[i] = -1
    unresolved = n
    for k in range(state[MS_N_MASKS]):
        if unresolved == 0:
            break
        m = mask_order[k]
        for i in range(n):
            if out_idx[i] < 0:
                e = _probe(
                    masks, mask_cols, mask_ncols, entry_key, entry_mask_id, index, m, mf_keys[i]
                )
                if e >= 0:
                    out_idx[i] = e
                    entry_hits[e] += 1
                    mask_hits[m] += 1
                    unresolved -= 1
    state[MS_LOOKUPS] += n
    state[MS_HITS] += n - unresolved
    return n - unresolved


@njit(forceinline=True)
def _find_mask(masks, n_masks, mask):
    for m in range(n_masks):
        same = True
        for c in range(mask.shape[0]):
            if masks[m, c] != mask[c]:
                same = False
                break
        if same:
            return m
    return -1


@njit(forceinline=True)
def _add_mask(masks, mask_cols, mask_ncols, mask_hits, mask_order, state, mask):
    """Append ``mask`` (new) to the masks and to the lookup order; returns its id."""
    m = state[MS_N_MASKS]
    ncols = 0
    for c in range(mask.shape[0]):
        masks[m, c] = mask[c]
        if mask[c] != 0:
            mask_cols[m, ncols] = c
            ncols += 1
    mask_ncols[m] = ncols
    mask_hits[m] = 0
    mask_order[m] = m
    state[MS_N_MASKS] = m + 1
    return m


@njit
def mf_insert(mf, mask, key, value):
    """Install ``(mask, key & mask) -> value``; returns the entry index or ``MF_FULL``.
    ``mf`` is ``MegaflowCache.tables``.

    ``key`` may be the full key or already masked. An existing (mask, masked key) entry gets
    the new value and keeps its index and hits. A new mask is appended to the lookup order.
    Nothing changes when the answer is ``MF_FULL``.
    """
    masks, mask_cols, mask_ncols, mask_hits, mask_order = mf[:5]
    entry_key, entry_mask_id, entry_value, entry_hits, index, state = mf[5:]
    n_masks = state[MS_N_MASKS]
    m = _find_mask(masks, n_masks, mask)
    if m >= 0:
        e = _probe(masks, mask_cols, mask_ncols, entry_key, entry_mask_id, index, m, key)
        if e >= 0:
            entry_value[e] = value
            return e
    e = state[MS_N_ENTRIES]
    if e >= entry_key.shape[0]:
        return MF_FULL
    if m < 0:
        if n_masks >= masks.shape[0]:
            return MF_FULL
        m = _add_mask(masks, mask_cols, mask_ncols, mask_hits, mask_order, state, mask)
    for c in range(mask.shape[0]):
        entry_key[e, c] = key[c] & mask[c]
    entry_mask_id[e] = m
    entry_value[e] = value
    entry_hits[e] = 0
    index_add(index, e, _masked_hash(m, key, masks, mask_cols, mask_ncols[m]))
    state[MS_N_ENTRIES] = e + 1
    return e


@njit
def mf_rebuild_index(mf, n_entries):
    """Index every entry row ``0..n_entries-1`` into the empty index of ``mf`` (after growth)."""
    masks, mask_cols, mask_ncols = mf[:3]
    entry_key, entry_mask_id, index = mf[5], mf[6], mf[9]
    for e in range(n_entries):
        m = entry_mask_id[e]
        index_add(index, e, _masked_hash(m, entry_key[e], masks, mask_cols, mask_ncols[m]))


def buckets_for(capacity: int) -> int:
    """Power-of-two bucket count with at least BUCKETS_PER_ENTRY buckets per entry row."""
    return slots_for(capacity, BUCKETS_PER_ENTRY, 4)


def _pick(f, jit: bool):
    return f if jit else python_source(f)


class MegaflowCache:
    """The megaflow cache's arrays plus the Python-side operations (grow, flush, resort).

    ``capacity`` entry rows and ``max_masks`` mask slots; both double on :meth:`grow`, which
    :meth:`insert` calls by itself when the kernel reports ``MF_FULL``. Arrays are replaced
    on growth (re-read ``tables`` afterwards); :meth:`flush` and :meth:`resort` work in place.
    ``jit=False`` runs the kernels' plain-Python source (tests compare the two).
    """

    def __init__(self, capacity: int = 4096, max_masks: int = 64, *, jit: bool = True):
        self._jit = jit
        self._lookup = _pick(mf_lookup, jit)
        self._lookup_batch = _pick(mf_lookup_batch, jit)
        self._insert = _pick(mf_insert, jit)
        self._rebuild = _pick(mf_rebuild_index, jit)
        self.state = prefaulted_zeros(MS_WIDTH)
        self._allocate_masks(max(int(max_masks), 1))
        self._allocate_entries(max(int(capacity), 1))

    def _allocate_masks(self, max_masks: int) -> None:
        self.masks = prefaulted_zeros((max_masks, MF_WIDTH))
        self.mask_cols = prefaulted_zeros((max_masks, MF_WIDTH))
        self.mask_ncols = prefaulted_zeros(max_masks)
        self.mask_hits = prefaulted_zeros(max_masks)
        self.mask_order = prefaulted_zeros(max_masks)

    def _allocate_entries(self, capacity: int) -> None:
        self.entry_key = prefaulted_zeros((capacity, MF_WIDTH))
        self.entry_mask_id = prefaulted_zeros(capacity)
        self.entry_value = prefaulted_zeros(capacity)
        self.entry_hits = prefaulted_zeros(capacity)
        self.index = prefaulted_zeros((buckets_for(capacity), 2))

    @property
    def tables(self):
        """The kernels' leading arguments, in order."""
        return (
            self.masks,
            self.mask_cols,
            self.mask_ncols,
            self.mask_hits,
            self.mask_order,
            self.entry_key,
            self.entry_mask_id,
            self.entry_value,
            self.entry_hits,
            self.index,
            self.state,
        )

    # --- sizes and statistics ---------------------------------------------------------------
    @property
    def capacity(self) -> int:
        return self.entry_key.shape[0]

    @property
    def max_masks(self) -> int:
        return self.masks.shape[0]

    @property
    def n_masks(self) -> int:
        return int(self.state[MS_N_MASKS])

    def __len__(self) -> int:
        return int(self.state[MS_N_ENTRIES])

    def stats(self) -> dict[str, int]:
        lookups = int(self.state[MS_LOOKUPS])
        hits = int(self.state[MS_HITS])
        return {
            "masks": self.n_masks,
            "entries": len(self),
            "lookups": lookups,
            "hits": hits,
            "misses": lookups - hits,
            "capacity": self.capacity,
            "max_masks": self.max_masks,
        }

    # --- operations ---------------------------------------------------------------------------
    @staticmethod
    def _vector(v, name: str) -> np.ndarray:
        arr = np.ascontiguousarray(v, dtype=np.int64)
        if arr.shape != (MF_WIDTH,):
            raise ValueError(f"{name} must have shape ({MF_WIDTH},), got {arr.shape}")
        return arr

    def insert(self, mask, key, value: int) -> int:
        """Install ``(mask, key & mask) -> value``, growing when full; returns the entry."""
        mask = self._vector(mask, "mask")
        key = self._vector(key, "key")
        while True:
            e = int(self._insert(self.tables, mask, key, np.int64(value)))
            if e != MF_FULL:
                return e
            self.grow()

    def lookup(self, mf_key) -> int:
        """Entry index matching ``mf_key`` or -1 (counts hits, as the datapath does)."""
        return int(self._lookup(*self.tables, self._vector(mf_key, "mf_key")))

    def lookup_batch(self, mf_keys, out_idx=None) -> np.ndarray:
        """Entry indices for every row of ``mf_keys[n, MF_WIDTH]`` (-1 on a miss)."""
        mf_keys = np.ascontiguousarray(mf_keys, dtype=np.int64)
        if mf_keys.ndim != 2 or mf_keys.shape[1] != MF_WIDTH:
            raise ValueError(f"mf_keys must have shape (n, {MF_WIDTH}), got {mf_keys.shape}")
        if out_idx is None:
            out_idx = np.empty(mf_keys.shape[0], np.int64)
        self._lookup_batch(self.tables, mf_keys, out_idx)
        return out_idx

    def value(self, entry: int) -> int:
        return int(self.entry_value[entry])

    def resort(self) -> None:
        """Order masks by hits since the last resort (most first, stable); restart counts."""
        n = self.n_masks
        order = self.mask_order[:n].copy()
        ranked = np.argsort(-self.mask_hits[order], kind="stable")
        self.mask_order[:n] = order[ranked]
        self.mask_hits.fill(0)

    def flush(self) -> None:
        """Drop every entry and mask (rule change); arrays and counters of lookups stay."""
        for arr in self.tables[:-1]:
            arr.fill(0)
        self.state[MS_N_MASKS] = 0
        self.state[MS_N_ENTRIES] = 0

    def grow(self) -> None:
        """Double the mask slots when all are used, else (or also, when full) the entry rows."""
        n_entries = len(self)
        masks_full = self.n_masks >= self.max_masks
        entries_full = n_entries >= self.capacity
        if masks_full:
            old = (self.masks, self.mask_cols, self.mask_ncols, self.mask_hits, self.mask_order)
            self._allocate_masks(self.max_masks * 2)
            for new, prev in zip(
                (self.masks, self.mask_cols, self.mask_ncols, self.mask_hits, self.mask_order),
                old,
                strict=True,
            ):
                new[: prev.shape[0]] = prev
        if entries_full or not masks_full:
            old = (self.entry_key, self.entry_mask_id, self.entry_value, self.entry_hits)
            self._allocate_entries(self.capacity * 2)
            for new, prev in zip(
                (self.entry_key, self.entry_mask_id, self.entry_value, self.entry_hits),
                old,
                strict=True,
            ):
                new[: prev.shape[0]] = prev
            self._rebuild(self.tables, n_entries)

    def entries(self):
        """(mask tuple, masked key tuple, value) of every entry, in entry order."""
        for e in range(len(self)):
            m = int(self.entry_mask_id[e])
            yield (
                tuple(int(x) for x in self.masks[m]),
                tuple(int(x) for x in self.entry_key[e]),
                int(self.entry_value[e]),
            )


class ReferenceMegaflow:
    """The trivial model: a list of (mask, masked key, value) searched linearly.

    Masks are probed in the same order as :class:`MegaflowCache` (first installation, then
    re-sorted by hits on :meth:`resort`), so results agree even for overlapping entries.
    """

    def __init__(self):
        self.entries: list[tuple[tuple[int, ...], tuple[int, ...], int]] = []
        self.entry_hits: list[int] = []
        self.mask_order: list[tuple[int, ...]] = []
        self.mask_hits: dict[tuple[int, ...], int] = {}

    def __len__(self) -> int:
        return len(self.entries)

    @staticmethod
    def _masked(key, mask) -> tuple[int, ...]:
        return tuple(int(k) & int(m) for k, m in zip(key, mask, strict=True))

    def insert(self, mask, key, value: int) -> int:
        mask = tuple(int(x) for x in mask)
        masked = self._masked(key, mask)
        for e, (emask, ekey, _) in enumerate(self.entries):
            if emask == mask and ekey == masked:
                self.entries[e] = (mask, masked, int(value))
                return e
        if mask not in self.mask_hits:
            self.mask_order.append(mask)
            self.mask_hits[mask] = 0
        self.entries.append((mask, masked, int(value)))
        self.entry_hits.append(0)
        return len(self.entries) - 1

    def lookup(self, key) -> int:
        for mask in self.mask_order:
            masked = self._masked(key, mask)
            for e, (emask, ekey, _) in enumerate(self.entries):
                if emask == mask and ekey == masked:
                    self.mask_hits[mask] += 1
                    self.entry_hits[e] += 1
                    return e
        return -1

    def resort(self) -> None:
        self.mask_order.sort(key=lambda mask: -self.mask_hits[mask])  # stable
        for mask in self.mask_hits:
            self.mask_hits[mask] = 0

    def flush(self) -> None:
        self.entries.clear()
        self.entry_hits.clear()
        self.mask_order.clear()
        self.mask_hits.clear()
