"""Scaling with connection-sharded workers: ``ctaccel bench --experiment workers``.

What: :func:`run_workers_experiment` runs workloads A and B (``ctaccel bench``'s captures)
through ctaccel/workers.py's ShardedEngine with each worker count in turn (paired rounds), in
both modes, and end to end ``ctaccel replay --workers N --packets none`` in a fresh process
each; writes ``workers/workers.json`` and ``workers/workers.png`` under the output directory
and prints Mpps per worker count and the ratio to the first count (the median of the
per-round ratios). The machine's cores are in the JSON and the plot's title: a scaling
figure means nothing without them.

Design: the engine figure is the seconds spent in ``run`` for the whole capture, handed over
as the replay hands it (``ShardedEngine.batch_size`` packets at a time); one worker is the
plain engine, as the replay runs it. The end-to-end figure is the replay's own clock
(stats.json ``seconds``: reading, datapath, writing; start-up and warm-up apart).

Invariants: nothing is written outside ``out_dir``; every worker count sees the same
packets in the same rounds.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


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
    """Seconds of ``ctaccel replay`` in a fresh process (its own clock: stats.json)."""
    with tempfile.TemporaryDirectory() as out:
        cli = "from ctaccel.cli import main; main()"
        cmd = [sys.executable, "-c", cli, "replay", "--flows", str(w.flows_path),
               "--in", f"1={w.pcap_path}", "--out-dir", out, "--mode", mode,
               "--packets", "none", "--quiet", "--workers", str(workers)]  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True)
        return json.loads((Path(out) / "stats.json").read_text())["seconds"]


def _ratios(secs: dict, first: int) -> dict:
    base = np.array(secs[first])
    return {n: float(statistics.median(base / np.array(s))) for n, s in secs.items() if s}


def run_workers_experiment(counts=(1, 2), rounds: int = 5, e2e: int = 3, flows: int = 10_000,
                           out_dir="benchmarks/results", console=None, batch: int = 4096,
                           packets: int | None = None) -> dict:  # fmt: skip
    """Engine and end-to-end throughput for each worker count in ``counts``; the report."""
    from rich.console import Console

    from ctaccel.bench.measure import cached_workload, load_capture, load_tables
    from ctaccel.bench.runner import machine_info
    from ctaccel.datapath.warmup import warm_up

    console = console or Console()
    counts = [int(n) for n in counts]
    warm_up()
    out = Path(out_dir) / "workers"
    out.mkdir(parents=True, exist_ok=True)
    report = {"machine": machine_info(), "workers": counts, "rounds": rounds, "batch": batch,
              "cores": os.cpu_count(), "results": []}  # fmt: skip
    for kind in ("A", "B"):
        w = cached_workload(kind, flows, packets, None, Path(out_dir) / "workloads")
        loaded = load_capture(w.pcap_path)
        tables = load_tables(w, "ct")
        for mode in ("assume-established", "recirc"):
            for n in counts:  # untimed: compile for these types, warm the pool
                engine_run(tables, loaded.head(50_000), n, mode, batch)
            secs = {n: [] for n in counts}
            e2e_secs = {n: [] for n in counts}
            for _ in range(rounds):
                for n in counts:
                    secs[n].append(engine_run(tables, loaded, n, mode, batch))
            for _ in range(e2e):
                for n in counts:
                    e2e_secs[n].append(replay_run(w, n, mode))
            row = {"workload": kind, "mode": mode, "packets": loaded.packets,
                   "engine_mpps": {n: loaded.packets / statistics.median(s) / 1e6
                                   for n, s in secs.items()},
                   "engine_ratio": _ratios(secs, counts[0]),
                   "replay_mpps": {n: loaded.packets / statistics.median(s) / 1e6
                                   for n, s in e2e_secs.items() if s},
                   "replay_ratio": _ratios(e2e_secs, counts[0])}  # fmt: skip
            report["results"].append(row)
            console.print(f"{kind} {mode}: " + ", ".join(
                f"{n} worker(s) {row['engine_mpps'][n]:.2f} Mpps x{row['engine_ratio'][n]:.2f}"
                + (f" (replay x{row['replay_ratio'][n]:.2f})" if row["replay_ratio"] else "")
                for n in counts))  # fmt: skip
    (out / "workers.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    plot(report, out / "workers.png")
    return report


def plot(report: dict, path) -> None:
    """Throughput against one worker, per workload and mode (engine, and end to end)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ns = report["workers"]
    for row in report["results"]:
        ax.plot(ns, [row["engine_ratio"][n] for n in ns], "o-",
                label=f"{row['workload']} {row['mode']} (engine)")  # fmt: skip
        if row["replay_ratio"]:
            ax.plot(ns, [row["replay_ratio"][n] for n in ns], "x--",
                    label=f"{row['workload']} {row['mode']} (replay)")  # fmt: skip
    ax.plot(ns, [n / ns[0] for n in ns], ":", color="gray", label="linear")
    ax.set_xlabel("workers")
    ax.set_ylabel(f"throughput / {ns[0]} worker(s)")
    m = report["machine"]
    ax.set_title(f"Connection-sharded workers, {m['cpu']}, {report['cores']} cores, "
                 f"{m['date'][:10]}", fontsize=9)  # fmt: skip
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
