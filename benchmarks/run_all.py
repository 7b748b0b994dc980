"""The full comparison in one command: ctaccel's two modes next to the real OVS-DPDK.

What: ``sudo python benchmarks/run_all.py [--flows 10000 ...] [--repeats 5]
[--ovs-dpdk-repeats 3] [--quick]`` runs ``ctaccel bench`` (experiments A and B, both modes,
the stateless ceiling, start-up times), then OVS-DPDK (``ctaccel.bench.ovs_dpdk``) on the same
captures and rule files: the conntrack firewall on A and B and the stateless rules on A, in
rounds that alternate one OVS-DPDK run with one ctaccel run of each mode (this machine's
speed drifts within minutes; the comparison's ratios come from those adjacent runs). It
writes ``benchmarks/results/comparison.json`` (our Mpps and cycles/packet next to OVS-DPDK's,
ratios ours / OVS-DPDK), ``comparison.png``, the bench's JSON and PNGs, and prints the tables.

Design: a thin driver over ``ctaccel.bench.runner.run_bench`` then
``ctaccel.bench.compare.compare_with_ovs_dpdk``; the OVS-DPDK peer cleans up its daemons,
hugepages and mounts itself, also when this process is told to stop. Both sides measure one core; the ratios come from one
run on one machine. Without root, ctaccel's part still runs and the missing step is named.

Invariants: everything is written under ``--out-dir``; nothing is compared across runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--flows", type=int, action="append",
                   help="established flows (repeatable; the first is compared with OVS-DPDK) "
                        "[default: 10000]")  # fmt: skip
    p.add_argument("--new-fraction", type=float, action="append", help="B sweep (ours only)")
    p.add_argument("--repeats", type=int, default=5, help="ctaccel runs per measurement")
    p.add_argument("--ovs-dpdk-repeats", type=int, default=3,
                   help="rounds per capture: one OVS-DPDK run after one ctaccel run of each "
                        "mode, the comparison from these adjacent runs")  # fmt: skip
    p.add_argument("--packets", type=int, default=None, help="packets per capture")
    p.add_argument("--out-dir", default=str(RESULTS))
    p.add_argument("--quick", action="store_true", help="tiny captures: a check of the pipeline")
    p.add_argument("--no-startup", action="store_true", help="skip the start-up measurements")
    args = p.parse_args(argv)

    from rich.console import Console

    from ctaccel.bench import compare, plots, runner

    console = Console()
    report = runner.run_bench(flows_list=args.flows, new_fractions=args.new_fraction,
                              repeats=args.repeats, packets=args.packets, out_dir=args.out_dir,
                              quick=args.quick, startup_times=not args.no_startup,
                              cold_start="measure",
                              console=console)  # fmt: skip
    comparison = compare.compare_with_ovs_dpdk(report, args.out_dir, args.ovs_dpdk_repeats,
                                               console)  # fmt: skip
    if "error" in comparison:
        return 1
    plots.plot_run_bars(report, Path(args.out_dir) / "modes.png", comparison)
    console.print(f"wrote {Path(args.out_dir) / 'comparison.json'} and {comparison['plot']}")
    failed = [r for r in comparison.get("ovs_dpdk_runs", []) if "error" in r["report"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
