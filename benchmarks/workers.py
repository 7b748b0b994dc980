"""Scaling with connection-sharded workers (issue 22): 1, 2, ... engines side by side.

Runs workloads A and B (10,000 flows, ~1M packets, ``ctaccel bench``'s captures) through
ctaccel/workers.py's ShardedEngine with 1..N workers in both modes, the worker counts taking
their runs in turn (paired), and, end to end, ``ctaccel replay --workers N --packets none``
in a fresh process each. Writes ``benchmarks/results/workers/workers.json`` and
``workers.png``; prints Mpps per worker count and the ratio to one worker (median of the
per-round ratios). The machine's core count is in the JSON and the plot's title.

    python benchmarks/workers.py [--workers 1,2] [--rounds 7] [--e2e 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

OUT = Path("benchmarks/results/workers")


def engine_run(tables, loaded, workers: int, mode: str, batch: int) -> float:
    """Seconds in ``run`` for the whole capture through a fresh ShardedEngine (``batch``
    packets per engine call; one worker: the plain engine, as the replay runs it)."""
    from ctaccel.workers import ShardedEngine

    eng = ShardedEngine(tables, workers, mode, batch_size=batch)
    step = eng.batch_size  # what the replay hands it at once (engine batches x workers x 8)
    try:
        t = 0.0
        for lo in range(0, loaded.packets, step):
            hi = min(loaded.packets, lo + step)
            t0 = time.perf_counter()
            eng.run(loaded.buf, loaded.offsets[lo:hi], loaded.lengths[lo:hi],
                    loaded.in_ports[lo:hi], loaded.now_ms[lo:hi])  # fmt: skip
            t += time.perf_counter() - t0
        return t
    finally:
        eng.close()


def replay_run(w, workers: int, mode: str) -> float:
    """Wall seconds of ``ctaccel replay`` in a fresh process (its own clock: replay's
    ``seconds``, start-up and warm-up excluded)."""
    import tempfile

    with tempfile.TemporaryDirectory() as out:
        cli = "from ctaccel.cli import main; main()"
        cmd = [sys.executable, "-c", cli, "replay", "--flows", str(w.flows_path),
               "--in", f"1={w.pcap_path}", "--out-dir", out, "--mode", mode,
               "--packets", "none", "--quiet", "--workers", str(workers)]  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True)
        return json.loads((Path(out) / "stats.json").read_text())["seconds"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--e2e", type=int, default=3, help="end-to-end replay rounds (0: none)")
    ap.add_argument("--batch", type=int, default=4096)
    args = ap.parse_args()
    from ctaccel.bench.measure import cached_workload, load_capture, load_tables
    from ctaccel.bench.runner import machine_info
    from ctaccel.datapath.warmup import warm_up

    counts = [int(x) for x in args.workers.split(",")]
    warm_up()
    OUT.mkdir(parents=True, exist_ok=True)
    report = {"machine": machine_info(), "workers": counts, "rounds": args.rounds,
              "batch": args.batch, "cores": os.cpu_count(), "results": []}  # fmt: skip
    for kind in ("A", "B"):
        w = cached_workload(kind, 10_000, None, None, "benchmarks/results/workloads")
        loaded = load_capture(w.pcap_path)
        tables = load_tables(w, "ct")
        for mode in ("assume-established", "recirc"):
            for n in counts:  # untimed: compile for these types, warm the pool
                engine_run(tables, loaded.head(50_000), n, mode, args.batch)
            secs = {n: [] for n in counts}
            for _ in range(args.rounds):
                for n in counts:
                    secs[n].append(engine_run(tables, loaded, n, mode, args.batch))
            e2e = {n: [] for n in counts}
            for _ in range(args.e2e):
                for n in counts:
                    e2e[n].append(replay_run(w, n, mode))
            row = {"workload": kind, "mode": mode, "packets": loaded.packets,
                   "engine_mpps": {n: loaded.packets / statistics.median(s) / 1e6
                                   for n, s in secs.items()},
                   "engine_ratio": {n: statistics.median(np.array(secs[counts[0]]) / np.array(s))
                                    for n, s in secs.items()},
                   "replay_mpps": {n: loaded.packets / statistics.median(s) / 1e6
                                   for n, s in e2e.items() if s},
                   "replay_ratio": {n: statistics.median(np.array(e2e[counts[0]]) / np.array(s))
                                    for n, s in e2e.items() if s}}  # fmt: skip
            report["results"].append(row)
            print(kind, mode, {n: f"{row['engine_mpps'][n]:.2f} Mpps "
                               f"x{row['engine_ratio'][n]:.2f}" for n in counts},
                  {n: f"e2e x{r:.2f}" for n, r in row["replay_ratio"].items()},
                  flush=True)  # fmt: skip
    (OUT / "workers.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    plot(report)


def plot(report: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row in report["results"]:
        ns = report["workers"]
        ax.plot(ns, [row["engine_ratio"][n] for n in ns], "o-",
                label=f"{row['workload']} {row['mode']} (engine)")  # fmt: skip
        if row["replay_ratio"]:
            ax.plot(ns, [row["replay_ratio"][n] for n in ns], "x--",
                    label=f"{row['workload']} {row['mode']} (replay)")  # fmt: skip
    ax.plot(report["workers"], report["workers"], ":", color="gray", label="linear")
    ax.set_xlabel("workers")
    ax.set_ylabel("throughput / one worker")
    m = report["machine"]
    ax.set_title(f"Connection-sharded workers, {m['cpu']}, {report['cores']} cores, "
                 f"{m['date'][:10]}", fontsize=9)  # fmt: skip
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(OUT / "workers.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
