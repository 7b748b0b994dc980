"""Replay a large capture end to end; report time and peak memory.

Usage: python benchmarks/replay_large.py [--packets 1000000] [--flows 10000] [--mode MODE]
       [--out DIR]

Generates (once, cached in DIR) workload A of ``ctaccel gen`` (handshakes, then data both
ways interleaved across flows) with its conntrack firewall rules, runs ``ctaccel replay`` on
it in this process (progress bar, every output file written) and writes
DIR/replay_large.json with the packet rate and the peak resident memory. The point is the
whole replay — bounded memory and progress on a long run — not the datapath's own speed,
which ``ctaccel bench`` measures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

from ctaccel.bench.workloads import generate
from ctaccel.replay import replay


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--flows", type=int, default=10_000)
    ap.add_argument("--mode", default="assume-established")
    ap.add_argument("--out", default="benchmarks/results/replay-large")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    wl = generate("A", flows=args.flows, packets=args.packets, out_dir=args.out)
    t = time.perf_counter()
    s = replay(wl.flows_path, [(1, wl.pcap_path)], os.path.join(args.out, "out"),
               progress=True, mode=args.mode)  # fmt: skip
    dt = time.perf_counter() - t
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {
        "mode": args.mode, "packets": s.packets_in, "flows": args.flows,
        "seconds": round(dt, 2), "kpps": round(s.packets_in / dt / 1e3, 1),
        "warmup_seconds": round(s.warmup_seconds, 2), "peak_rss_mb": round(rss_mb, 1),
        "packets_out": s.packets_out, "drops": dict(s.drops), "connections": s.connections,
        "paths": s.paths,
    }  # fmt: skip
    with open(os.path.join(args.out, "replay_large.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
