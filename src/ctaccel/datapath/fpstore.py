"""The fast path's arrays, owned in Python: created, grown between batches, flushed, counted.

What: :class:`FastPathStore` holds what the batch kernel receives as its FastPathTables
bundle (layout.py): the exact-match index of the entries, the rows of classic entries and
templates, the full layouts, the slim entries (entries.py), the templates' index and the
counts. The kernel installs and evicts without Python; this class makes sure there is room
for a batch's installs first (:meth:`reserve`), up to ``max_entries``.

Design: rows and slim rows are views of address space reserved once for the most the cache
may hold (arrays.row_store): growing takes a longer view, nothing is copied, and untouched
pages cost nothing. The indexes double (their slots re-placed from stored hashes). Memory is
reported as the views' and indexes' sizes (what the cache may use without growing again).

Invariants: between batches, the counts in ``state`` leave room for ``n`` installs of any
kind where the maximum allows (else the kernel replaces entries); recirc mode keeps a cache
of one entry, never used.
"""

from __future__ import annotations

import numpy as np

from ctaccel.arrays import aligned_zeros, doubled, doubling, longer_rows, row_store
from ctaccel.datapath import layout as L
from ctaccel.datapath.exact import ExactIndex


class FastPathStore:
    """The fast path's tables for at most ``max_entries`` entries, starting with room for
    ``capacity``; a full cache takes one install in ``admit`` (layout.FP_ADMIT). ``used``
    False (recirc mode): one entry, nothing reserved."""

    def __init__(self, capacity: int, max_entries: int, admit: int, used: bool = True):
        self.max_entries = max(int(max_entries), 1) if used else 1
        if self.max_entries + 1 >= L.SLIM_TAG:  # row numbers must stay below the slim tag
            raise ValueError(f"at most {L.SLIM_TAG - 2} fast-path entries, not {max_entries}")
        cap = max(min(int(capacity), self.max_entries), 1)
        self.exact = ExactIndex(L.EM_WIDTH, L.FK_KEY, cap)
        self.templates = ExactIndex(L.FC_ROW, 0, min(cap, 64))
        self._row_store = row_store(self.max_entries + 1, L.FC_ROW)
        self._slim_store = row_store(self.max_entries, L.SL_WIDTH)
        self.rows = longer_rows(self._row_store, None, min(cap, 64), L.FC_ROW)
        self.slim = longer_rows(self._slim_store, None, cap, L.SL_WIDTH)
        self.full = aligned_zeros((min(cap, 64), L.FP_WIDTH))
        self.state = np.zeros(L.FP_STATE_WIDTH, np.int64)
        st = self.state
        st[L.FP_CAP], st[L.FP_FULL_CAP] = cap, self.full.shape[0]
        st[L.FP_ROW_CAP], st[L.FP_SLIM_CAP] = self.rows.shape[0], self.slim.shape[0]
        st[L.FP_ADMIT] = max(int(admit), 1)

    @property
    def tables(self) -> tuple:
        """The kernel's FastPathTables bundle, in its order."""
        return (*self.exact.tables, self.rows, self.full, self.state, self.slim,
                *self.templates.tables)  # fmt: skip

    def reserve(self, n: int) -> None:
        """Room for ``n`` more installs of any kind (the kernel installs without Python):
        grow what is short, up to ``max_entries``."""
        st, most = self.state, self.max_entries
        # full layouts: room for every install of the batch (n at most) to need one, and for
        # as many after a renewal of the cache within it
        self.full = doubled(self.full, st.item(L.FP_FULL_COUNT) + n, most)
        st[L.FP_FULL_CAP] = self.full.shape[0]
        # rows: classic entries, templates, and the one an install of a slim entry writes first
        want = st.item(L.FP_ROWS) + n + 1
        if want > st.item(L.FP_ROW_CAP) and st.item(L.FP_ROW_CAP) < most + 1:
            new = min(doubling(st.item(L.FP_ROW_CAP), want), most + 1)
            self.rows = longer_rows(self._row_store, self.rows, new, L.FC_ROW)
            st[L.FP_ROW_CAP] = new
        want = st.item(L.FP_SLIMS) + n
        if want > st.item(L.FP_SLIM_CAP) and st.item(L.FP_SLIM_CAP) < most:
            new = min(doubling(st.item(L.FP_SLIM_CAP), want), most)
            self.slim = longer_rows(self._slim_store, self.slim, new, L.SL_WIDTH)
            st[L.FP_SLIM_CAP] = new
        while len(self.templates) + n > self.templates.capacity and (
            self.templates.capacity < most
        ):
            self.templates.grow()
        want = len(self.exact) + n
        cap = st.item(L.FP_CAP)
        if want > cap and cap < most:
            st[L.FP_CAP] = cap = min(doubling(cap, want), most)
        while self.exact.capacity < cap:
            self.exact.grow()

    def flush(self) -> None:
        """Drop every entry and template (the arrays keep their sizes)."""
        self.exact.clear()
        self.templates.clear()
        for c in (L.FP_ROWS, L.FP_ROW_FREE, L.FP_SLIMS, L.FP_SLIM_FREE, L.FP_FULL_COUNT,
                  L.FP_FULL_FREE, L.FP_HAND):  # fmt: skip
            self.state[c] = 0

    def nbytes(self) -> int:
        """Bytes of the indexes, the rows' and slim rows' views, and the full layouts."""
        arrays = (*self.exact.tables, *self.templates.tables, self.rows, self.slim, self.full)
        return sum(int(a.nbytes) for a in arrays)

    def __len__(self) -> int:
        """Entries in the cache (classic and slim)."""
        return len(self.exact)

    def counts(self) -> dict:
        """Entries of each kind, templates and full layouts in use (for stats and tests)."""
        refs = self.exact.entries()
        slim = refs >= L.SLIM_TAG
        heads = self.rows[refs[~slim], L.FC_HEAD]
        return {
            "slim": int(np.count_nonzero(slim)),
            "compact": int(np.count_nonzero(slim)) + int(np.count_nonzero(heads & L.FC_COMPACT)),
            "templates": len(self.templates),
            "full_layouts": self._full_layouts(),
        }

    def _full_layouts(self) -> int:
        """Rows of the full layouts in use: those ever used less the free chain's."""
        st, free = self.state, 0
        f = int(st[L.FP_FULL_FREE])
        while f > 0 and free <= st[L.FP_FULL_COUNT]:
            free += 1
            f = int(self.full[f - 1, 0])
        return int(st[L.FP_FULL_COUNT]) - free
