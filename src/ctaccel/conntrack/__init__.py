"""Conntrack: the Python object that owns the connection tables.

What: the public face of the connection tracker. :class:`Conntrack` allocates and grows the
arrays (table.py), keeps the zone limits, runs the jitted ct kernel (core.py) on a packet
with :meth:`Conntrack.execute`, and offers flush, sweep, dump and counters.

Design: all state lives in numpy arrays exposed as attributes (``conns``, ``index``,
``free_slots``, ``stats``, ``zone_limits``, ``timeouts``) so the compiled datapath can call
``core.ct_execute`` itself on a whole batch, passing them as one bundle (:attr:`tables`, a
layout.CtTables); it must call :meth:`reserve` first (growth replaces the arrays, so re-read
them afterwards). Time is an argument (ms).

Invariants: the arrays are replaced only by :meth:`reserve` (growth); the capacity never
exceeds ``max_conns`` rows and there is always at least one free row before a kernel call
made through :meth:`execute` unless the table holds ``max_conns`` connections.
"""

from __future__ import annotations

import numpy as np

from ctaccel.conntrack import core, lifecycle
from ctaccel.conntrack.alg import grow_exps, new_exps
from ctaccel.conntrack.dump import dump_lines, expectation_lines
from ctaccel.conntrack.ftp import MAX_GROWTH
from ctaccel.conntrack.layout import (
    C_USED,
    CA_FLAGS,
    CA_LABEL,
    CA_LABEL_MASK,
    CA_MARK,
    CA_MARK_MASK,
    CA_WIDTH,
    CA_ZONE,
    CAF_ALG_FTP,
    CAF_ALG_TFTP,
    CAF_COMMIT,
    CAF_FORCE,
    CAF_SET_LABEL,
    CAF_SET_MARK,
    ROW_CONN,
    CtTables,
)
from ctaccel.conntrack.lifecycle import (
    ZL_COLUMNS,
    ZL_COUNT,
    ZL_DEFAULT,
    ZL_LIMIT,
    ZL_ROWS,
    ZL_SEQ,
    ZL_TP,
)
from ctaccel.conntrack.nat import no_nat_spec
from ctaccel.conntrack.table import (
    COUNTER_NAMES,
    CT_SCRATCH_WIDTH,
    ST_EXP_HWM,
    ST_EXP_USED,
    ST_FLUSHED,
    ST_FRAME_LEN,
    ST_FREE_TOP,
    ST_MAX_CONNS,
    ST_N_CONNS,
    ST_SWEEP_DUE,
    ST_SWEPT,
    grow_tables,
    new_tables,
    row_limit,
    row_store,
)
from ctaccel.conntrack.timeouts import (
    MAX_POLICIES,
    N_TIMEOUTS,
    TIMEOUT_NAMES,
    apply_policy,
    default_timeouts_ms,
    policy_table,
)
from ctaccel.errors import CtaccelError

__all__ = ["Conntrack", "action_row"]

_LABEL_ALL = (1 << 128) - 1
_INT64_MAX = (1 << 63) - 1
SWEEP_MAX_ROWS = 1 << 16  # rows one sweep_some call scans at most
SWEEP_INTERVAL_MS = 1000  # sweep_some starts a revolution at most this often (packet time)
ALG_FLAGS = {None: 0, "ftp": CAF_ALG_FTP, "tftp": CAF_ALG_TFTP}


def _label_words(value: int) -> np.ndarray:
    return np.array([(value >> (32 * (3 - i))) & 0xFFFFFFFF for i in range(4)], np.int64)


def action_row(zone: int, commit: bool = False, force: bool = False, mark: int | None = None,
               mark_mask: int = 0xFFFFFFFF, label: int | None = None,
               label_mask: int = _LABEL_ALL, alg: str | None = None) -> np.ndarray:  # fmt: skip
    """The ct action's parameters as ``core.ct_execute`` reads them (layout ``CA_*``):
    ``mark``/``label`` None leave them alone; ``force`` implies commit; ``alg`` "ftp",
    "tftp" or None."""
    act = np.zeros(CA_WIDTH, np.int64)
    act[CA_ZONE] = int(zone) & 0xFFFF
    act[CA_FLAGS] = (CAF_COMMIT if commit or force else 0) | (CAF_FORCE if force else 0)
    act[CA_FLAGS] |= ALG_FLAGS[alg]
    if mark is not None:
        act[CA_FLAGS] |= CAF_SET_MARK
        act[CA_MARK] = int(mark) & 0xFFFFFFFF
        act[CA_MARK_MASK] = int(mark_mask) & 0xFFFFFFFF
    if label is not None:
        act[CA_FLAGS] |= CAF_SET_LABEL
        act[CA_LABEL : CA_LABEL + 4] = _label_words(int(label))
        act[CA_LABEL_MASK : CA_LABEL_MASK + 4] = _label_words(int(label_mask))
    return act


class Conntrack:
    """The userspace connection tracker of one datapath (all zones)."""

    def __init__(
        self,
        timeouts_ms=None,
        max_conns: int = 3_000_000,
        default_zone_limit: int = 0,
        zone_limits: dict[int, int] | None = None,
        initial_capacity: int = 1 << 14,
    ):
        if max_conns < 0:
            raise CtaccelError("max_conns must be >= 0")
        base = default_timeouts_ms()
        if timeouts_ms is not None:
            items = timeouts_ms.items() if isinstance(timeouts_ms, dict) else None
            if items is None:
                arr = np.asarray(timeouts_ms, np.int64)
                if arr.shape != base.shape:
                    raise CtaccelError("timeouts_ms must have one value per TM_* index")
                base[:] = arr
            else:
                for name, ms in items:
                    idx = TIMEOUT_NAMES.get(name, name)
                    if not isinstance(idx, int) or not 0 <= idx < len(base):
                        raise CtaccelError(f"unknown timeout {name!r}")
                    base[idx] = int(ms)
        # the default policy (row 0, ``timeouts_ms``) and room for zone policies
        self.timeouts = policy_table(base)
        self._policies = 1
        self.max_conns = int(max_conns)
        capacity = max(1, min(int(initial_capacity), max(row_limit(self.max_conns), 1)))
        self._rows = row_store(self.max_conns, capacity)
        self.conns, self.index, self.free_slots, self.stats = new_tables(capacity, self.max_conns,
                                                                         self._rows)  # fmt: skip
        self.zone_limits = np.zeros((ZL_ROWS, ZL_COLUMNS), np.int64)
        self.zone_limits[ZL_LIMIT, :] = -1
        self._zone_limit_seq = 0
        if default_zone_limit:
            self.set_zone_limit(None, default_zone_limit)
        for zone, limit in (zone_limits or {}).items():
            self.set_zone_limit(zone, limit)
        self.exps, self.exp_index = new_exps()
        self.last_frame: np.ndarray | None = None  # execute()'s frame after a ct(nat)
        self._no_nat = no_nat_spec()
        self._tups = np.zeros(CT_SCRATCH_WIDTH, np.int64)  # ct_execute's scratch
        self._sweep_due: int | None = None  # sweep(monotonic=True): no expiry before this
        # sweep_some's revolution: the next row (None: none under way), when the last one
        # started, the earliest expiration it has seen
        self._rev_row: int | None = None
        self._rev_start: int | None = None
        self._rev_earliest = 0
        self.swept_rows = 0  # rows sweep_some has scanned (tests, benchmarks)

    @property
    def tables(self) -> CtTables:
        """The arrays as the kernels take them (valid until the next :meth:`reserve`)."""
        return CtTables(*self.bundle())

    def bundle(self) -> tuple:
        """The arrays as a plain tuple in CtTables order (what compiled callers pass on)."""
        return (self.conns, self.index, self.free_slots, self.stats, self.zone_limits,
                self.timeouts, self.exps, self.exp_index)  # fmt: skip

    # --- capacity ---------------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        return int(self.conns.shape[0])

    def reserve(self, n: int = 1) -> None:
        """Make sure ``n`` more connections (and ALG expectations) fit, connections up to
        max_conns: grow the arrays if not. A connection takes one or two rows (layout.py:
        an extension row for some), so ``2 * n`` rows are kept free."""
        rows = self.exps.shape[0]
        if rows - int(self.stats[ST_EXP_USED]) < n:
            while rows - int(self.stats[ST_EXP_USED]) < n:
                rows *= 2
            self.exps, self.exp_index = grow_exps(self.exps, self.stats, rows)
        free = int(self.stats[ST_FREE_TOP])
        max_rows = max(row_limit(self.max_conns), 1)
        if free >= 2 * n or self.capacity >= max_rows:
            return
        needed = self.capacity - free + 2 * n
        new_cap = self.capacity
        while new_cap < needed:
            new_cap *= 2
        new_cap = min(max(new_cap, 1), max_rows)
        if new_cap > self.capacity:
            self.conns, self.index, self.free_slots = grow_tables(
                self.conns, self.index, self.free_slots, self.stats, new_cap, self._rows
            )

    # --- the ct action -----------------------------------------------------------------------
    def execute(self, frame, key, act, now_ms: int = 0, cached_conn: int = -1, nat=None) -> int:
        """Run ct() on one parsed packet; updates ``key``'s ct fields, returns the handle.

        ``act``: the action's parameters as one row, :func:`action_row` (zone, commit, force,
        ct_mark/ct_label writes, alg), as the compiled datapath passes them. ``nat``: None, or
        the NAT spec row (conntrack/nat.py ``spec_from_action``); with NAT the frame (a
        writable uint8 array) and the key's addresses/ports may be rewritten in place, and
        :attr:`last_frame` is the frame after the call (longer or shorter when an FTP command
        was rewritten for NAT; ``frame`` itself then keeps its old length and bytes)."""
        if not isinstance(frame, np.ndarray):
            frame = np.frombuffer(bytes(frame), np.uint8)
        n = len(frame)
        if nat is None:
            nat = self._no_nat
            buf = frame if frame.flags.writeable else frame.copy()  # never written without nat
        elif not frame.flags.writeable:
            raise ValueError("ct with nat rewrites the frame: pass a writable array")
        else:
            buf = np.zeros(n + MAX_GROWTH, np.uint8)
            buf[:n] = frame
        self.reserve(1)
        handle = core.ct_execute(self.tables, buf, n, key, act, int(now_ms), int(cached_conn),
                                 nat, self._tups)  # fmt: skip
        if nat is not self._no_nat:
            m = int(self.stats[ST_FRAME_LEN])
            self.last_frame = buf[:m]
            if m == n:
                frame[:] = buf[:n]
        return int(handle)

    # --- zone limits ------------------------------------------------------------------------
    def set_zone_limit(self, zone: int | None, limit: int) -> None:
        """OVS ct-set-limits: ``zone=None`` sets the default limit (shared count, as 3.1)."""
        column = ZL_DEFAULT if zone is None else int(zone)
        if not 0 <= column < ZL_COLUMNS or limit < 0:
            raise CtaccelError(f"bad zone limit: zone={zone} limit={limit}")
        if self.zone_limits[ZL_LIMIT, column] < 0:
            # a new entry: its count starts at 0 (existing connections are not counted)
            self.zone_limits[ZL_COUNT, column] = 0
            self.zone_limits[ZL_SEQ, column] = self._zone_limit_seq
            self._zone_limit_seq += 1
        self.zone_limits[ZL_LIMIT, column] = int(limit)

    def del_zone_limit(self, zone: int | None) -> None:
        """OVS ct-del-limits: the zone falls back to the default limit (if any)."""
        column = ZL_DEFAULT if zone is None else int(zone)
        self.zone_limits[ZL_LIMIT, column] = -1
        self.zone_limits[ZL_COUNT, column] = 0

    def zone_count(self, zone: int | None) -> int:
        """Connections counted against the zone's own limit entry (0 without one)."""
        column = ZL_DEFAULT if zone is None else int(zone)
        if self.zone_limits[ZL_LIMIT, column] < 0:
            return 0
        return int(self.zone_limits[ZL_COUNT, column])

    # --- timeout policies (ovs-vsctl add-zone-tp) ------------------------------------------
    def set_timeout_policy(self, zone: int | None, values: dict[str, int]) -> None:
        """A zone's timeout policy from {OVS name: seconds} (the rest OVS's defaults, as
        ``add-zone-tp``); ``zone=None`` changes the named values of the default policy every
        zone without its own uses. Connections keep the policy of their zone at commit."""
        self.forget_sweep_bounds()  # shorter timeouts may expire before either bound
        if zone is None:
            apply_policy(self.timeouts[:N_TIMEOUTS], values)
            return
        if not 0 <= int(zone) <= 0xFFFF:
            raise CtaccelError(f"bad zone {zone} for a timeout policy")
        row = int(self.zone_limits[ZL_TP, int(zone)])
        if row == 0:
            if self._policies >= MAX_POLICIES:
                raise CtaccelError(f"more than {MAX_POLICIES - 1} zone timeout policies")
            row, self._policies = self._policies, self._policies + 1
        table = self.timeouts[row * N_TIMEOUTS : (row + 1) * N_TIMEOUTS]
        table[:] = default_timeouts_ms()
        apply_policy(table, values)
        self.zone_limits[ZL_TP, int(zone)] = row

    def policy_timeouts(self, zone: int) -> np.ndarray:
        """The timeouts (ms, per TM_* class) connections committed in ``zone`` get now."""
        row = int(self.zone_limits[ZL_TP, int(zone)])
        return self.timeouts[row * N_TIMEOUTS : (row + 1) * N_TIMEOUTS]

    # --- maintenance --------------------------------------------------------------------------
    def flush(self, zone: int | None = None) -> int:
        """Remove every connection (of one zone); returns how many."""
        n = int(lifecycle.flush_zone(self.tables, -1 if zone is None else int(zone)))
        self.stats[ST_FLUSHED] += n
        return n

    def sweep(self, now_ms: int, monotonic: bool = False) -> int:
        """Remove every connection expired at ``now_ms``; returns how many.

        ``monotonic``: the caller's clock never goes back (no connection is created or
        refreshed at a time before the last such sweep), so a sweep before the earliest time
        anything can expire skips the scan of the table: a connection still in the table
        expires no earlier than the earliest expiration the last sweep saw, and one armed
        since at ``t >= `` that sweep's time no earlier than ``t`` + the shortest timeout."""
        now_ms = int(now_ms)
        if monotonic and self._sweep_due is not None and now_ms < self._sweep_due:
            return 0
        n, earliest = lifecycle.sweep_expired(self.tables, now_ms)
        n = int(n)
        self.stats[ST_SWEPT] += n
        self._sweep_due = (
            min(int(earliest), now_ms + int(self.timeouts.min())) if monotonic else None
        )
        return n

    def sweep_some(self, now_ms: int, max_rows: int = SWEEP_MAX_ROWS) -> int:
        """The running datapath's sweep (its clock never goes back): remove expired
        connections a part of the table at a time; returns how many this call removed.

        A revolution over every row starts when something may have expired (the bound of
        :meth:`sweep` with ``monotonic``) and at most once per SWEEP_INTERVAL_MS of packet
        time; each call scans at most ``max_rows`` rows of it (the pause it adds to a batch:
        ~1 ms for 65,536 rows here), so an expired connection is freed within
        SWEEP_INTERVAL_MS plus one revolution of calls, as OVS's sweeper frees them within
        its interval. Lookups never see an expired connection either way (they check its
        time), and a commit at a limit sweeps first (commit_conn): only memory waits."""
        now_ms = int(now_ms)
        if self._rev_row is None:
            if self._sweep_due is not None and now_ms < self._sweep_due:
                return 0
            last = self._rev_start
            if last is not None and last <= now_ms < last + SWEEP_INTERVAL_MS:
                return 0
            self._rev_row, self._rev_start, self._rev_earliest = 0, now_ms, _INT64_MAX
        lo = self._rev_row
        hi = min(lo + max(int(max_rows), 1), self.capacity)
        n, earliest = lifecycle.sweep_rows(self.tables, now_ms, lo, hi)
        n = int(n)
        self.stats[ST_SWEPT] += n
        self.swept_rows += hi - lo
        self._rev_earliest = min(self._rev_earliest, int(earliest))
        self._rev_row = hi
        if hi >= self.capacity:  # the revolution is complete: what it saw bounds the next
            self._rev_row = None
            self._sweep_due = min(self._rev_earliest,
                                  self._rev_start + int(self.timeouts.min()))  # fmt: skip
        return n

    def forget_sweep_bounds(self) -> None:
        """sweep()'s and commit_conn's "nothing expires before" bounds no longer hold."""
        self._sweep_due = None
        self._rev_row = self._rev_start = None
        self.stats[ST_SWEEP_DUE] = 0

    def set_max_conns(self, max_conns: int) -> None:
        """OVS dpctl/ct-set-maxconns: new commits are refused at this many connections."""
        self.max_conns = int(max_conns)
        self.stats[ST_MAX_CONNS] = self.max_conns

    # --- inspection -------------------------------------------------------------------------
    def dump(self, now_ms: int, zone: int | None = None, verbose: bool = False,
             stats: bool = False) -> list[str]:  # fmt: skip
        """dpctl/dump-conntrack lines (sorted) of the connections alive at ``now_ms``;
        ``verbose``/``stats`` as its ``-m`` (id, status, per-peer TCP states) and ``-s``
        (timeout)."""
        return dump_lines(self.conns, now_ms, zone, verbose, stats, self.exps)

    def dump_expectations(self, zone: int | None = None) -> list[str]:
        """The ALG expectations waiting for their data connections (dump.expectation_lines)."""
        return expectation_lines(self.exps, int(self.stats[ST_EXP_HWM]), zone)

    # --- the kernel's table (conntrack/kernel_map.py) ----------------------------------------
    def import_entries(self, entries, now_ms: int, zone_map=None, peer_states=None) -> dict:
        """Add kernel entries (io/ctnetlink KernelEntries) as live connections; returns how many
        rows were imported, already tracked, unsupported or refused for lack of room."""
        from ctaccel.conntrack.kernel_map import import_entries, outcome_counts

        out = import_entries(self, entries, now_ms, zone_map, peer_states)
        return outcome_counts(out)

    def export_entries(self, now_ms: int, zone_map=None):
        """The live connections as kernel entries (KernelEntries) for a ctnetlink create."""
        from ctaccel.conntrack.kernel_map import export_entries

        return export_entries(self.conns, now_ms, zone_map)

    def __len__(self) -> int:
        return int(self.stats[ST_N_CONNS])

    @property
    def counters(self) -> dict[str, int]:
        """Named counters (drops, refusals and events) since creation."""
        return {name: int(self.stats[col]) for col, name in COUNTER_NAMES}

    def conn_row(self, handle: int) -> np.ndarray | None:
        """The row of a handle's connection (a view), or None if the slot is free."""
        if handle < 0:
            return None
        slot = handle >> 1
        if slot >= self.capacity or self.conns[slot, C_USED] != ROW_CONN:
            return None
        return self.conns[slot]
