"""The talk's experiments, measured: ``ctaccel bench`` from plan to report.

What: :func:`run_bench` generates (or reuses) the workloads, measures experiments A and B in
both modes plus the stateless rule set (our own ceiling), the optional sweeps over flow count
and NEW fraction and A through an SNAT firewall, cold and warm start-up, writes
``bench-<timestamp>.json`` + ``latest.json`` and the PNGs, prints a table with the
assume-established / recirc ratios, and returns the report's JSON.

Design: orchestration only. The measurements are ``bench/measure.py``'s (timed runs of a
loaded capture through fresh engines, configurations of a workload taking turns), the
start-up figures ``bench/startup.py``'s (fresh processes), the typed results, their JSON
and the printed tables ``bench/report.py``'s. ``bench/compare.py`` puts the result next to
the real OVS-DPDK afterwards. Ratios are taken between measurements of one run on one
machine, never across runs: the median of the per-repeat ratios of configurations whose
repeats alternated (and, beside it, the ratio of the medians).

Invariants: nothing outside ``out_dir`` is written; every measurement of a workload is
taken in the same stretch of time as the others of that workload.
"""

from __future__ import annotations

import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from ctaccel.bench import workloads as W
from ctaccel.bench.measure import (
    DEFAULT_BATCH,
    DEFAULT_REPEATS,
    MODES,
    cached_workload,
    load_capture,
    measure_interleaved,
)
from ctaccel.bench.report import STATELESS, BenchReport, Startup, print_report, write_report
from ctaccel.bench.startup import cache_is_empty, cold_startup, startup

DEFAULT_FLOWS = 10_000
QUICK_FLOWS = 1_000
QUICK_PACKETS = 50_000
QUICK_REPEATS = 2


def machine_info() -> dict:
    import numba

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "numba": numba.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _plan(flows_list, new_fractions) -> list[tuple[str, int, float | None, str]]:
    """(kind, flows, new_fraction, role) for every workload of the run."""
    plan = []
    for flows in flows_list:
        plan.append(("A", flows, None, "flows"))
        plan.append(("B", flows, None, "flows"))
    for frac in new_fractions or ():
        plan.append(("B", flows_list[0], float(frac), "new_fraction"))
    if flows_list[0] <= W.MAX_SNAT_FLOWS:
        plan.append(("A", flows_list[0], None, "snat"))  # A through an SNAT firewall
    return plan


def _measure_plan(report: BenchReport, plan, out: Path, packets, quick_packets: bool,
                  repeats: int, batch_size: int, bar, task, policies=None) -> None:  # fmt: skip
    """Every workload of ``plan``: generated (or reused), loaded, its configurations measured
    in turn; the results appended to ``report``."""
    for kind, flows, frac, role in plan:
        bar.update(task, description=f"workload {kind}, {flows:,} flows: generating")
        n = max(QUICK_PACKETS, 5 * flows) if quick_packets else packets
        w = cached_workload(kind, flows, n, frac, out / "workloads",
                            "snat" if role == "snat" else None)  # fmt: skip
        loaded = load_capture(w.pcap_path)
        runs = [(m, "ct") for m in MODES]
        if role == "flows":
            runs.append(("recirc", STATELESS))
        labels = ", ".join(STATELESS if r == STATELESS else m for m, r in runs)
        bar.update(task, description=f"workload {kind}, {flows:,} flows"
                   f"{'' if frac is None else f', NEW {frac:g}'}: {labels}")  # fmt: skip
        for m in measure_interleaved(w, runs, repeats, batch_size, loaded=loaded,
                                     on_run=lambda: bar.advance(task),
                                     replay=role == "flows", policies=policies):  # fmt: skip
            m.role, m.new_fraction = role, frac
            report.results.append(m)
        del loaded


def _startup_times(quick: bool, cold_start: str, own_cold: float | None, bar,
                   task) -> dict[str, Startup]:  # fmt: skip
    bar.update(task, description="start-up: warm cache (fresh process)")
    times = {"warm": startup(cold=False)}
    if quick:
        times["cold"] = Startup(True, skipped="quick run")
    else:
        bar.update(task, description="start-up: empty cache (fresh process, compiles)")
        times["cold"] = cold_startup(cold_start, own_cold)
    return times


def run_bench(flows_list=None, new_fractions=None, repeats: int = DEFAULT_REPEATS,
              packets: int | None = None, out_dir="benchmarks/results", quick: bool = False,
              progress: bool = True, batch_size: int = DEFAULT_BATCH, startup_times: bool = True,
              cold_start: str = "auto", console=None, policies=None) -> dict:  # fmt: skip
    """Measure the talk's experiments; write JSON + PNGs under ``out_dir``; return the report
    (its JSON form, as written to ``latest.json``).

    ``flows_list``: established flow counts (default 10,000; quick: 1,000); for each, A and B
    in both modes plus the stateless ceiling. ``new_fractions``: extra B workloads at the
    first flow count. ``quick``: tiny captures (50k packets, or the handshakes and a round for
    larger flow counts), at most 2 repeats, no cold start-up (it compiles everything: minutes).
    ``cold_start``: "measure" (a fresh process with an empty cache), or "auto": this process's
    own warm-up when its cache was empty, else the figure recorded when this build of the
    kernels was first measured, else "measure" (see :func:`startup.cold_startup`).
    ``policies``: zone timeout policies (``--timeout-policy``) for every engine."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from ctaccel.datapath.warmup import warm_up

    console = console or Console()
    quick_packets = quick and packets is None  # per workload: at least its handshakes + rounds
    if quick:
        flows_list = flows_list or [QUICK_FLOWS]
        repeats = min(repeats, QUICK_REPEATS)
    flows_list = [int(f) for f in (flows_list or [DEFAULT_FLOWS])]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    settings = {"flows": flows_list, "new_fractions": list(new_fractions or []),
                "repeats": repeats, "packets": packets, "quick": quick,
                "batch_size": batch_size}  # fmt: skip
    report = BenchReport(machine=machine_info(), settings=settings)
    plan = _plan(flows_list, new_fractions)
    steps = sum(3 if role == "flows" else 2 for *_x, role in plan) * (repeats + 1)
    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                  console=console, disable=not progress, transient=True) as bar:  # fmt: skip
        task = bar.add_task("warming up (compiling or loading kernels)", total=steps + 1)
        cache_was_empty = cache_is_empty()
        report.in_process_warm_up_seconds = warm_up()
        bar.advance(task)
        _measure_plan(report, plan, out, packets, quick_packets, repeats, batch_size, bar, task,
                      policies)  # fmt: skip
        if startup_times:
            own = report.in_process_warm_up_seconds if cache_was_empty else None
            report.startup = _startup_times(quick, cold_start, own, bar, task)
    report.bench_seconds = time.perf_counter() - started
    data = write_report(report, out)
    print_report(data, console)
    return data
