"""Expiry of many connections: the pause a sweep adds to a batch, and how late it frees.

    python3 benchmarks/expiry.py [--flows 1000000] [--spread-s 60] [--step-ms 4]
        [--json benchmarks/results/expiry.json] [--png benchmarks/results/expiry.png]

What (issue 20, item 1: "expiry of millions of connections without a pause"): ``--flows``
UDP connections imported at time 0 (Conntrack.import_entries), expiring at times spread
evenly over ``--spread-s`` seconds to the millisecond, in random order of rows (or all at
once: ``--spread-s 0``), then the clock of a
running datapath advancing ``--step-ms`` per batch (4 ms: 4,096 packets at ~1 Mpps, the
replay's sweep period) until every connection is gone, with the sweep the replay and the
live datapath run after each batch:
- ``full``: ``sweep(now, monotonic=True)``, the sweep before 2026-12-07's third session (a
  scan of every row whenever something may have expired);
- ``step``: ``sweep_some(now)``, at most 65,536 rows per call, a revolution at most once
  per second of packet time.
Reported per way: the longest call (the pause it adds to one batch), the 99th percentile
and the total time of the calls, and the latest any connection was freed after its
expiration. Each way runs on a table of its own (same entries), one after the other, in this
process. JSON + PNG (call time against packet time).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def entries(n: int):
    from ctaccel.io.ctnetlink_codec import KernelEntries

    e = KernelEntries.empty(n)
    i = np.arange(n, dtype=np.int64)
    e.family[:], e.proto[:], e.status[:] = 2, 17, 0xE  # UDP, seen reply, assured, confirmed
    e.timeout_s[:] = 3600  # replaced below, to the millisecond
    e.src[:, 3], e.dst[:, 3] = 0x0A000000 + i // 50_000, 0x0B000001
    e.sport[:], e.dport[:] = 1024 + i % 50_000, 53
    e.r_src[:], e.r_dst[:], e.r_sport[:], e.r_dport[:] = e.dst, e.src, e.dport, e.sport
    return e


def run(way: str, n: int, spread_s: int, step_ms: int) -> dict:
    from ctaccel.conntrack import Conntrack
    from ctaccel.conntrack.layout import (
        C_EXPIRATION,
        C_EXPIRATION_HI,
        C_USED,
        ROW_CONN,
        expirations,
    )

    ct = Conntrack(initial_capacity=n, max_conns=n)
    got = ct.import_entries(entries(n), 0)
    assert got.get("imported") == n, got
    rows = np.flatnonzero(ct.conns[:, C_USED] == ROW_CONN)
    # expirations to the millisecond, in no order of rows (as traffic leaves them)
    spread_ms = max(spread_s, 0) * 1000
    expires = 1 + np.random.default_rng(5).permutation(n).astype(np.int64) * spread_ms // n
    ct.conns[rows, C_EXPIRATION] = expires & 0xFFFFFFFF
    ct.conns[rows, C_EXPIRATION_HI] = expires >> 32
    assert (expirations(ct.conns, rows) == expires).all()
    ct.forget_sweep_bounds()
    first_seen_gone = np.full(ct.capacity, -1, np.int64)
    # warm the kernels on a throwaway table: compile time is not a pause
    warm = Conntrack()
    warm.sweep(0, monotonic=True)
    warm.sweep_some(0)
    now, times, clock = 0, [], []
    end = int(expires.max()) + 10_000
    while now <= end and len(ct):
        now += step_ms
        t0 = time.perf_counter()
        if way == "full":
            ct.sweep(now, monotonic=True)
        else:
            ct.sweep_some(now)
        times.append(time.perf_counter() - t0)
        clock.append(now)
        gone = rows[(first_seen_gone[rows] < 0) & (ct.conns[rows, C_USED] != ROW_CONN)]
        first_seen_gone[gone] = now
    late = first_seen_gone[rows] - expires
    t = np.array(times) * 1e3
    return {
        "way": way,
        "calls": len(t),
        "longest_ms": round(float(t.max()), 3),
        "p99_ms": round(float(np.percentile(t, 99)), 3),
        "total_ms": round(float(t.sum()), 1),
        "freed": int((first_seen_gone[rows] >= 0).sum()),
        "latest_after_expiry_ms": int(late.max()),
        "series": {"clock_ms": clock[:: max(1, len(clock) // 2000)],
                   "call_ms": [round(x, 3) for x in t[:: max(1, len(t) // 2000)]]},
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--flows", type=int, default=1_000_000)
    ap.add_argument("--spread-s", type=int, default=60)
    ap.add_argument("--step-ms", type=int, default=4)
    ap.add_argument("--json", default=str(RESULTS / "expiry.json"))
    ap.add_argument("--png", default=str(RESULTS / "expiry.png"))
    args = ap.parse_args()
    out = {"flows": args.flows, "spread_s": args.spread_s, "step_ms": args.step_ms,
           "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "runs": []}  # fmt: skip
    for way in ("full", "step"):
        r = run(way, args.flows, args.spread_s, args.step_ms)
        out["runs"].append(r)
        print(f"{way:>4}: longest call {r['longest_ms']} ms, p99 {r['p99_ms']} ms, total "
              f"{r['total_ms']} ms over {r['calls']} calls, freed {r['freed']:,}, at most "
              f"{r['latest_after_expiry_ms']} ms after expiry", flush=True)  # fmt: skip
    Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for r in out["runs"]:
        label = {"full": "sweep(monotonic): whole table", "step": "sweep_some: 65,536 rows"}
        ax.plot(np.array(r["series"]["clock_ms"]) / 1e3, r["series"]["call_ms"], lw=0.8,
                label=f"{label[r['way']]} (longest {r['longest_ms']} ms)")  # fmt: skip
    ax.set_xlabel("packet time (s)")
    ax.set_ylabel("sweep call (ms)")
    ax.set_yscale("log")
    ax.set_title(f"{args.flows:,} connections expiring over {args.spread_s} s, a sweep "
                 f"every {args.step_ms} ms")  # fmt: skip
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.png, dpi=120)


if __name__ == "__main__":
    main()
