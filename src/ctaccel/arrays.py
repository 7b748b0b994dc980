"""Numpy arrays laid out for the compiled kernels.

What: :func:`aligned_zeros`, a zeroed C-contiguous array whose data starts on a cache-line
boundary, optionally with every page already touched (:func:`prefaulted_zeros`); growing
tables: :func:`doubled` (a copy twice as long), :func:`row_store` and :func:`longer_rows`
(address space reserved once, views of it that grow without a copy).

Design: the kernels read table rows whose widths are multiples of a cache line (a connection
row is 512 bytes, its hot columns 192). numpy's large allocations start 16 bytes past a page
boundary, so each of those reads would straddle one line more than it needs; aligning the
data puts a row's hot columns on the fewest lines. The array views an over-allocated byte
buffer (kept alive as its base); to numba it is the same array type as any other.
"""

from __future__ import annotations

import numpy as np

CACHE_LINE = 64


def aligned_zeros(shape, dtype=np.int64, *, prefault: bool = False) -> np.ndarray:
    """Zeroed array of ``shape`` starting on a 64-byte boundary. ``prefault``: touch every page
    now (a table the hot path will fill), instead of on first write."""
    dtype = np.dtype(dtype)
    shape = tuple(int(d) for d in np.atleast_1d(shape))
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.zeros(nbytes + CACHE_LINE, np.uint8)
    start = (-raw.ctypes.data) % CACHE_LINE
    arr = raw[start : start + nbytes].view(dtype).reshape(shape)
    if prefault:
        arr.fill(0)
    return arr


def prefaulted_zeros(shape, dtype=np.int64) -> np.ndarray:
    """A table the hot path fills: zeroed, aligned, every page touched now (no page faults in
    the hot path)."""
    return aligned_zeros(shape, dtype, prefault=True)


def doubling(cap: int, want: int) -> int:
    """``cap`` doubled until it is at least ``want``."""
    cap = max(int(cap), 1)
    while cap < want:
        cap *= 2
    return cap


def doubled(a, want: int, limit: int):
    """``a`` with room for ``want`` rows, doubling up to ``limit`` rows (itself when it has
    them, or already has ``limit``); the rows it had are kept."""
    cap = a.shape[0]
    if want <= cap or cap >= limit:
        return a
    b = aligned_zeros((min(doubling(cap, want), limit),) + a.shape[1:], a.dtype)
    b[:cap] = a
    return b


def row_store(rows: int, width: int, dtype=np.int64):
    """Zeroed rows as address space (numpy's zeroed allocation leaves untouched pages
    unmapped: they cost memory once written); None when the system refuses it."""
    try:
        return aligned_zeros((max(int(rows), 1), width), dtype)
    except MemoryError:
        return None


def longer_rows(store, rows, n: int, width: int):
    """``n`` int64 rows keeping those of ``rows`` (None: none yet): a view of ``store`` (a
    :func:`row_store`) when it is long enough (nothing copied), else a copy into fresh
    memory."""
    if store is not None and store.shape[0] >= n:
        return store[:n]
    new = aligned_zeros((n, width))
    if rows is not None:
        new[: rows.shape[0]] = rows
    return new
