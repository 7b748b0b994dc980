"""Run the real OVS-DPDK 3.1 on a capture and a rule file: the command line of the speed peer.

What: ``python benchmarks/ovs_dpdk.py --pcap CAPTURE --flows RULES [--repeat 3] [--loop]
[--json OUT.json]`` runs :func:`ctaccel.bench.ovs_dpdk.benchmark` (a private OVS-DPDK, one
PMD core, the capture in through the pcap PMD: see that module) and prints the summary.
``make-capture {A,B} OUT_DIR [--conns N] [--packets P] [--new-fraction F]`` writes a
workload with the project's generator (``ctaccel.bench.workloads.generate``, what ``ctaccel
gen`` and ``ctaccel bench`` use): the capture, its conntrack firewall and stateless rules.

Design: a thin wrapper: the options fill a :class:`PeerConfig`; SIGTERM/SIGHUP become
SystemExit while the benchmark runs, so its cleanup runs.

Invariants: exit status 0 on success, 2 on a configuration or OVS problem (logged).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def make_capture(argv: list[str]) -> int:
    from ctaccel.bench import workloads as W

    p = argparse.ArgumentParser(prog="ovs_dpdk.py make-capture")
    p.add_argument("workload", choices=list(W.KINDS))
    p.add_argument("out_dir")
    p.add_argument("--conns", type=int, default=W.DEFAULT_FLOWS, help="established flows")
    p.add_argument("--packets", type=int, default=None, help="default: about one million")
    p.add_argument("--new-fraction", type=float, default=None, help="B: share of NEW packets")
    a = p.parse_args(argv)
    w = W.generate(a.workload, a.conns, a.packets, new_fraction=a.new_fraction,
                   out_dir=a.out_dir)  # fmt: skip
    print(f"{w.pcap_path}: {w.packets} packets; rules {w.flows_path}, {w.stateless_flows_path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "make-capture":
        return make_capture(argv[1:])
    from ctaccel.bench.ovs_dpdk import PeerConfig, benchmark, log, print_summary, terminate_as_exit
    from ctaccel.bench.private_ovs import OvsError

    d = PeerConfig(pcap="", flows="")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--pcap", required=True, help="classic pcap, all frames enter port 1")
    p.add_argument("--flows", required=True, help="rules, ovs-ofctl add-flows syntax")
    p.add_argument("--repeat", type=int, default=d.repeat, help="runs, OVS restarted for each")
    p.add_argument("--loop", action="store_true",
                   help="replay the capture from memory (infinite_rx) for --seconds")  # fmt: skip
    p.add_argument("--seconds", type=float, default=d.seconds, help="loop: measured time")
    p.add_argument("--warmup", type=float, default=d.warmup, help="loop: time before the stats")
    p.add_argument("--json", help="write the report here")
    p.add_argument("--memory", choices=["huge", "nohuge"], default=d.memory)
    p.add_argument("--socket-mem", type=int, default=d.socket_mem, help="DPDK memory, MB")
    p.add_argument("--pmd-core", type=int, default=d.pmd_core)
    p.add_argument("--main-core", type=int, default=d.main_core)
    p.add_argument("--start-timeout", type=float, default=d.start_timeout,
                   help="once: give up if no packet arrives for this long")  # fmt: skip
    p.add_argument("--keep-logs", action="store_true", help="keep the run dirs in /tmp")
    a = vars(p.parse_args(argv))
    out = a.pop("json")
    try:
        with terminate_as_exit():
            report = benchmark(PeerConfig(**a))
    except OvsError as exc:
        log(f"error: {exc}")
        return 2
    print_summary(report)
    if out:
        Path(out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
