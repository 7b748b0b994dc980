"""ctaccel's connection table and the Linux kernel's: take connections over, hand them back.

What: :func:`import_from_kernel` reads the kernel's conntrack table of this network namespace
(io/ctnetlink, one dump) into a running engine's Conntrack (conntrack/kernel_map.py);
:func:`export_to_kernel` writes ctaccel's live connections into the kernel's table, creating
the missing ones and updating those the kernel already has. ``ctaccel run --kernel-import``
and ``--kernel-export`` call them at start and stop, ``ctaccel ctl import-kernel`` and
``export-kernel`` while it runs.

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

from ctaccel.io.ctnetlink import CtNetlink


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


def export_to_kernel(conntrack, now_ms: int, zone_map=None, netns: str | None = None) -> dict:
    """Write ctaccel's live connections into the kernel's table; {"connections", "created",
    "updated", "refused": {errno name: rows}, "seconds"}."""
    t0 = time.perf_counter()
    entries = conntrack.export_entries(now_ms, zone_map)
    with CtNetlink(netns) as nl:
        first = np.asarray(nl.create(entries, exclusive=True)).reshape(-1, 2)
        exist_rows = first[first[:, 1] == errno.EEXIST, 0]
        refused = first[first[:, 1] != errno.EEXIST]
        again = np.zeros((0, 2), np.int64)
        if len(exist_rows):
            again = np.asarray(nl.create(entries.take(exist_rows), exclusive=False)).reshape(-1, 2)
    return {"connections": len(entries), "created": len(entries) - len(first),
            "updated": len(exist_rows) - len(again),
            "refused": _errors(np.concatenate([refused, again])),
            "seconds": round(time.perf_counter() - t0, 4)}  # fmt: skip
