"""ctaccel's connection table and the Linux kernel's: take connections over, hand them back.

What: :func:`import_from_kernel` reads the kernel's conntrack table of this network namespace
(io/ctnetlink, one dump) into a running engine's Conntrack (conntrack/kernel_map.py);
:func:`export_to_kernel` writes ctaccel's live connections into the kernel's table, creating
the missing ones and updating those the kernel already has. ``ctaccel run --kernel-import``
and ``--kernel-export`` call them at start and stop, ``ctaccel ctl import-kernel`` and
``export-kernel`` while it runs. :class:`KernelSync` (``run --kernel-sync``) keeps the two
tables converged while running, from the kernel's events and ctaccel's own changes.

Design: one dump and one import (numpy, one jitted loop) for the way in; one batched create
for the way out, then the rows the kernel already had (EEXIST) sent again as updates (their
state, timeout, mark and labels follow ctaccel's; NAT cannot be changed on an existing kernel
entry and such refusals are reported). Every figure a user needs is in the returned dict:
rows per outcome, refusals by errno name, and the seconds each step took.

Invariants: never raises for a refused row (they are counted); a kernel that refuses the
whole operation (not root, no ctnetlink) raises InputError with the reason.
"""

from __future__ import annotations

import errno
import time

import numpy as np

from ctaccel.conntrack.layout import C_GENERATION, C_SEQ, C_USED, ROW_CONN, expirations
from ctaccel.conntrack.table import ST_NEXT_SEQ
from ctaccel.io.ctnetlink import CtNetlink, KernelEntries


def import_from_kernel(conntrack, now_ms: int, zone_map=None, netns: str | None = None) -> dict:
    """Dump the kernel's table and import it; {outcome: rows, "seconds": ...}."""
    t0 = time.perf_counter()
    with CtNetlink(netns) as nl:
        entries = nl.dump()
    t1 = time.perf_counter()
    counts = conntrack.import_entries(entries, now_ms, zone_map)
    t2 = time.perf_counter()
    return {"kernel_entries": len(entries), **counts, "dump_seconds": round(t1 - t0, 4),
            "import_seconds": round(t2 - t1, 4)}  # fmt: skip


def _errors(refused: np.ndarray) -> dict[str, int]:
    names, counts = np.unique(refused[:, 1], return_counts=True) if len(refused) else ((), ())
    return {errno.errorcode.get(int(n), str(int(n))): int(c)
            for n, c in zip(names, counts, strict=True)}  # fmt: skip


def create_entries(nl: CtNetlink, entries, exclusive: bool = True, update=None):
    """Create ``entries`` in the kernel's table; the rows it already has (EEXIST) are sent
    again as updates (``update`` maps them first, e.g. kernel_map.for_update). Returns
    (created, updated, refused rows as (row, errno))."""
    first = np.asarray(nl.create(entries, exclusive=exclusive)).reshape(-1, 2)
    exists = first[first[:, 1] == errno.EEXIST, 0]
    refused = first[first[:, 1] != errno.EEXIST]
    again = np.zeros((0, 2), np.int64)
    if len(exists):
        rows = entries.take(exists)
        again = np.asarray(nl.create(update(rows) if update else rows, exclusive=False))
        again = again.reshape(-1, 2)
    return len(entries) - len(first), len(exists) - len(again), np.concatenate([refused, again])


def export_to_kernel(conntrack, now_ms: int, zone_map=None, netns: str | None = None) -> dict:
    """Write ctaccel's live connections into the kernel's table; {"connections", "created",
    "updated", "refused": {errno name: rows}, "seconds"}."""
    t0 = time.perf_counter()
    entries = conntrack.export_entries(now_ms, zone_map)
    with CtNetlink(netns) as nl:
        created, updated, refused = create_entries(nl, entries)
    return {"connections": len(entries), "created": created, "updated": updated,
            "refused": _errors(refused), "seconds": round(time.perf_counter() - t0, 4)}  # fmt: skip


REFRESH_MS = 2000  # how often the kernel's copies get the timers and states traffic moved


class KernelSync:
    """``run --kernel-sync``: the kernel's table and ctaccel's kept converged while running.

    - At start (:meth:`start`): one dump imported, as ``--kernel-import``.
    - Kernel events (:meth:`tick`, between batches): a connection the kernel creates or updates
      that ctaccel lacks is imported; one a tool deletes (a DESTROY sent by a ctnetlink user:
      ``conntrack -D``) is deleted here too. The kernel's own DESTROYs (its timers: its copies
      see no traffic while ctaccel forwards) are not taken: ctaccel's timers rule, and the copy
      is re-created. Events caused by this object's own requests are recognised by their
      netlink port id and skipped.
    - ctaccel's changes: connections it created are created in the kernel, connections it
      removed (expiry, flush, replacement) deleted there, and every REFRESH_MS the kernel's
      copies of connections that saw traffic get ctaccel's state and timeout.
    - Lost events (ENOBUFS): a full dump, importing what is missing, and every connection of
      ctaccel the kernel lacks created again.
    """

    def __init__(self, conntrack, zone_map=None, netns: str | None = None, log=None,
                 rcvbuf: int = 64 << 20):  # fmt: skip
        from ctaccel.io.ctnetlink import CtEvents

        self.ct, self.zone_map, self.netns = conntrack, dict(zone_map or {}), netns
        self.log = log or (lambda _m: None)
        self.events = CtEvents(netns, rcvbuf)
        self.nl = CtNetlink(netns)
        self.portid = self.nl.portid
        self._slots = np.zeros(0, np.int64)  # the mirrored connections: slot, generation,
        self._gens = np.zeros(0, np.int64)  # the expiration last sent, and their entries
        self._exp = np.zeros(0, np.int64)
        self._sent = None
        self._seq = 0  # connections created from here on are not in the kernel yet
        self._refreshed = 0
        self._resync_due = False
        self.counts = {"imported": 0, "deleted_here": 0, "created_there": 0,
                       "deleted_there": 0, "refreshed_there": 0, "resyncs": 0,
                       "refused_there": 0}  # fmt: skip

    def close(self) -> None:
        self.events.close()
        self.nl.close()

    def start(self, now_ms: int) -> dict:
        """Take the kernel's table over (one dump); the figures, as import_from_kernel's."""
        t0 = time.perf_counter()
        entries = self.nl.dump()
        result = self._import(entries, now_ms)
        return {"kernel_entries": len(entries), **result,
                "seconds": round(time.perf_counter() - t0, 4)}  # fmt: skip

    def _import(self, entries, now_ms: int) -> dict:
        from ctaccel.conntrack.kernel_map import IMPORTED, OUTCOME_NAMES, import_entries

        self._mirror_new(now_ms)  # ctaccel's own creations first: the mark moves past imports
        out, slots = import_entries(self.ct, entries, now_ms, self.zone_map, with_slots=True)
        took = slots[out == IMPORTED]
        self._track(took, entries.take(out == IMPORTED))
        self._seq = int(self.ct.stats[ST_NEXT_SEQ])
        self.counts["imported"] += len(took)
        return {name: int((out == i).sum()) for i, name in enumerate(OUTCOME_NAMES)}

    def _track(self, slots, entries) -> None:
        conns = self.ct.conns
        self._slots = np.concatenate([self._slots, slots])
        self._gens = np.concatenate([self._gens, conns[slots, C_GENERATION]])
        self._exp = np.concatenate([self._exp, expirations(conns, slots)])
        self._sent = entries if self._sent is None else KernelEntries.concat([self._sent, entries])

    def tick(self, now_ms: int) -> None:
        """Apply the kernel's events, then mirror ctaccel's changes (between batches)."""
        events, lost = self.events.read()
        if lost or self._resync_due:
            self.resync(now_ms)
        else:
            self._apply(events, now_ms)
        self._mirror_gone(now_ms)
        self._mirror_new(now_ms)
        if now_ms - self._refreshed >= REFRESH_MS:
            self._refresh(now_ms)
            self._refreshed = now_ms

    def _apply(self, events, now_ms: int) -> None:
        from ctaccel.conntrack.kernel_map import delete_matching

        for kind in ("new", "update"):
            entries, pids = events[kind]
            theirs = pids != self.portid
            if theirs.any():
                self._import(entries.take(theirs), now_ms)
        entries, pids = events["destroy"]
        by_tool = (pids != self.portid) & (pids != 0)
        if by_tool.any():
            self.counts["deleted_here"] += delete_matching(self.ct, entries.take(by_tool),
                                                           now_ms, self.zone_map)  # fmt: skip

    def _mirror_gone(self, now_ms: int) -> None:
        if not len(self._slots):
            return
        conns = self.ct.conns
        gone = ((conns[self._slots, C_USED] != ROW_CONN)
                | (conns[self._slots, C_GENERATION] != self._gens)
                | (expirations(conns, self._slots) <= now_ms))  # fmt: skip
        if gone.any():
            refused = self.nl.delete(self._sent.take(gone))
            self.counts["deleted_there"] += int(gone.sum()) - len(refused)
            keep = ~gone
            self._slots, self._gens, self._exp = (
                self._slots[keep],
                self._gens[keep],
                self._exp[keep],
            )
            self._sent = self._sent.take(keep)

    def _mirror_new(self, now_ms: int) -> None:
        from ctaccel.conntrack.kernel_map import export_rows

        conns = self.ct.conns
        created = int(self.ct.stats[ST_NEXT_SEQ]) - self._seq
        if created <= 0:
            return
        # creation numbers are kept mod 2**32: those created since are the next ``created``
        since = (conns[:, C_SEQ].astype(np.int64) - self._seq) & 0xFFFFFFFF
        new = np.flatnonzero((conns[:, C_USED] == ROW_CONN) & (since < created)
                             & (expirations(conns) > now_ms))  # fmt: skip
        self._seq += created
        if not len(new):
            return
        entries = export_rows(conns, new, now_ms, self.zone_map)
        self._write(entries, exclusive=True)
        self.counts["created_there"] += len(new)
        self._track(new, entries)

    def _refresh(self, now_ms: int) -> None:
        from ctaccel.conntrack.kernel_map import export_rows, for_update

        if not len(self._slots):
            return
        moved = expirations(self.ct.conns, self._slots) != self._exp
        if not moved.any():
            return
        slots = self._slots[moved]
        self._write(for_update(export_rows(self.ct.conns, slots, now_ms, self.zone_map)),
                    exclusive=False)  # fmt: skip
        self._exp[moved] = expirations(self.ct.conns, slots)
        self.counts["refreshed_there"] += len(slots)

    def _write(self, entries, exclusive: bool) -> None:
        from ctaccel.conntrack.kernel_map import for_update

        _created, _updated, refused = create_entries(self.nl, entries, exclusive, for_update)
        lost = refused[:, 1] == errno.ENOBUFS
        self._resync_due |= bool(lost.any())  # which rows failed is unknown: dump next tick
        self.counts["refused_there"] += int((~lost).sum())

    def resync(self, now_ms: int) -> None:
        """After lost events: import what the kernel has and ctaccel lacks, create in the
        kernel what ctaccel has and the kernel lacks (a full dump)."""
        from ctaccel.conntrack.kernel_map import export_rows

        self._resync_due = False
        self.counts["resyncs"] += 1
        self.log("conntrack events were lost (ENOBUFS): resynchronising with a full dump")
        self.events.read()  # what is queued now is older than the dump
        self._import(self.nl.dump(), now_ms)
        ours = self._slots[expirations(self.ct.conns, self._slots) > now_ms]
        if len(ours):  # the kernel's copies it may have lost meanwhile: created again
            self._write(export_rows(self.ct.conns, ours, now_ms, self.zone_map), exclusive=True)
