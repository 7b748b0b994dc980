"""Compare two source trees of ctaccel on one benchmark capture, taking turns run by run.

    python3 benchmarks/ab_trees.py OLD_SRC NEW_SRC [--mode assume-established]
        [--workload A] [--nat snat] [--flows 10000] [--runs 24] [--cpu 0]

OLD_SRC and NEW_SRC are ``src`` directories (e.g. of a ``git worktree`` of an older commit).
``--old-cache DIR --new-cache DIR`` give each side its own NUMBA_CACHE_DIR instead: with one
tree twice, that compares two ways of compiling the same sources (e.g. a first run with and
without the compile helper, CTACCEL_COMPILE_HELPER=0).
Each tree runs in a long-lived worker process of its own (its numba cache keyed by its own
path, so the first use compiles for a few minutes); the workers are pinned to one CPU and
take turns, one full run of the capture each, alternating which goes first. The machines we
share drift 1.5-2x within seconds, which swamps separate measurements; adjacent runs see the
same phase, so the median of the per-pair ratios NEW/OLD is what to read (below 1: faster).
Each run builds a fresh engine and times only ``engine.run`` over batches of 1,024 packets,
as ``ctaccel bench`` does. Prints per-tree min / p25 / median ns per packet and the ratio.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

WORKLOADS = Path(__file__).resolve().parent / "results" / "workloads"


def worker(args) -> None:
    """Load the capture once, then one timed run per line read from stdin."""
    try:  # the bench in parts (measure.py), or a tree from before it
        from ctaccel.bench import measure as R
    except ImportError:
        from ctaccel.bench import runner as R

    try:
        from ctaccel.datapath.warmup import warm_up
    except ImportError:  # a tree from before datapath/warmup.py
        from ctaccel.datapath.engine import warm_up

    warm_up()
    w = R.cached_workload(args.workload, args.flows, None, None, WORKLOADS, nat=args.nat)
    cap = R.load_capture(w.pcap_path)
    print("ready", flush=True)
    for _line in sys.stdin:  # one run as `ctaccel bench` times it: a fresh engine, run() only
        if hasattr(R, "one_run"):
            tables = R.load_tables(w, "ct")
            ns = R.one_run(tables, cap, args.mode, R.DEFAULT_BATCH).ns_per_packet
        else:
            ns = R._one_run(w, cap, args.mode, "ct", R.DEFAULT_BATCH, fingerprint=False)
            ns = ns["ns_per_packet"]
        print(f"{ns:.2f}", flush=True)


def _start(src: str, args, cache: str | None = None) -> subprocess.Popen:
    cmd = ["taskset", "-c", str(args.cpu), sys.executable, __file__, "--worker",
           "--mode", args.mode, "--workload", args.workload, "--flows", str(args.flows)]  # fmt: skip
    if args.nat:
        cmd += ["--nat", args.nat]
    env = dict(os.environ, PYTHONPATH=str(Path(src).resolve()))
    if cache:
        env["NUMBA_CACHE_DIR"] = cache
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    if proc.stdout.readline().strip() != "ready":
        sys.exit(f"the worker for {src} did not start")
    return proc


def _quantile(values, q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("old", nargs="?")
    ap.add_argument("new", nargs="?")
    ap.add_argument(
        "--mode", default="assume-established", choices=("assume-established", "recirc")
    )
    ap.add_argument("--workload", default="A", choices=("A", "B"))
    ap.add_argument("--nat", default=None, choices=(None, "snat"))
    ap.add_argument("--flows", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=24)
    ap.add_argument("--cpu", type=int, default=0)
    ap.add_argument("--old-cache", default=None, help="NUMBA_CACHE_DIR of the OLD side")
    ap.add_argument("--new-cache", default=None, help="NUMBA_CACHE_DIR of the NEW side")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    if not (args.old and args.new):
        ap.error("give the OLD and NEW src directories")
    for src in (args.old, args.new):
        if not (Path(src) / "ctaccel").is_dir():
            print(f"{src}: no ctaccel package there", file=sys.stderr)
            sys.exit(2)
    procs = [_start(args.old, args, args.old_cache), _start(args.new, args, args.new_cache)]
    times: list[list[float]] = [[], []]
    try:
        for r in range(args.runs):
            for k in (0, 1) if r % 2 == 0 else (1, 0):
                procs[k].stdin.write("go\n")
                procs[k].stdin.flush()
                times[k].append(float(procs[k].stdout.readline()))
    finally:
        for proc in procs:
            proc.stdin.close()
            proc.wait()
    for name, src, t in zip(("old", "new"), (args.old, args.new), times, strict=True):
        print(f"{name} {src}: min {min(t):.0f}  p25 {_quantile(t, 0.25):.0f}  "
              f"median {_quantile(t, 0.5):.0f} ns/packet ({len(t)} runs)")  # fmt: skip
    ratios = [b / a for a, b in zip(times[0], times[1], strict=True)]
    print(f"new/old per pair: median {_quantile(ratios, 0.5):.3f}  "
          f"(p25 {_quantile(ratios, 0.25):.3f}, p75 {_quantile(ratios, 0.75):.3f})")  # fmt: skip


if __name__ == "__main__":
    main()
