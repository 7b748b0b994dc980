"""Replay a large generated capture through the reference engine; report time and memory.

Usage: python benchmarks/replay_large.py [--packets 1000000] [--flows 10000] [--out DIR]

Generates (once, cached in DIR) a capture of TCP connections: handshakes first, then data
segments both ways interleaved across flows, through the stateful firewall of the demo; then
runs ``ctaccel replay`` on it in this process and writes DIR/replay_large.json with the
packet rate and the peak resident memory. The point is the reference engine's bounded
memory and progress on a long run, not its speed (the compiled datapath is the fast one).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

from ctaccel.demo import TCP_FLOWS
from ctaccel.io.pcap import PcapWriter
from ctaccel.packet import build as B
from ctaccel.replay import replay

MAC_C, MAC_S = "50:54:00:00:00:01", "50:54:00:00:00:02"


def client_ip(i: int) -> str:
    return f"10.{(i >> 16) & 0xFF}.{(i >> 8) & 0xFF}.{i & 0xFF or 1}"


def generate(path: str, packets: int, flows: int) -> None:
    """Handshakes for every flow, then rounds of one data segment each way per flow."""
    ts = 1_000_000_000
    n = 0
    with PcapWriter(path) as w:

        def put(frame):
            nonlocal ts, n
            w.write(frame, ts)
            ts += 1000
            n += 1

        seq_c = [1000] * flows
        seq_s = [5000] * flows
        for i in range(flows):  # SYNs, then SYN/ACKs a batch later, then ACKs
            put(
                B.tcp_frame(
                    MAC_C,
                    MAC_S,
                    client_ip(i),
                    "10.200.0.1",
                    20000 + i % 40000,
                    80,
                    "S",
                    seq_c[i] - 1,
                    0,
                )
            )
        for i in range(flows):
            put(
                B.tcp_frame(
                    MAC_S,
                    MAC_C,
                    "10.200.0.1",
                    client_ip(i),
                    80,
                    20000 + i % 40000,
                    "SA",
                    seq_s[i] - 1,
                    seq_c[i],
                )
            )
        for i in range(flows):
            put(
                B.tcp_frame(
                    MAC_C,
                    MAC_S,
                    client_ip(i),
                    "10.200.0.1",
                    20000 + i % 40000,
                    80,
                    "A",
                    seq_c[i],
                    seq_s[i],
                )
            )
        payload = b"d" * 6
        while n < packets:
            for i in range(flows):
                if n >= packets:
                    break
                sport = 20000 + i % 40000
                if n % 2 == 0:
                    put(
                        B.tcp_frame(
                            MAC_C,
                            MAC_S,
                            client_ip(i),
                            "10.200.0.1",
                            sport,
                            80,
                            "PA",
                            seq_c[i],
                            seq_s[i],
                            payload,
                        )
                    )
                    seq_c[i] += len(payload)
                else:
                    put(
                        B.tcp_frame(
                            MAC_S,
                            MAC_C,
                            "10.200.0.1",
                            client_ip(i),
                            80,
                            sport,
                            "PA",
                            seq_s[i],
                            seq_c[i],
                            payload,
                        )
                    )
                    seq_s[i] += len(payload)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--flows", type=int, default=10_000)
    ap.add_argument("--out", default="benchmarks/results/replay-large")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    cap = os.path.join(args.out, f"tcp-{args.flows}f-{args.packets}p.pcap")
    if not os.path.exists(cap):
        t = time.perf_counter()
        generate(cap, args.packets, args.flows)
        print(f"generated {cap} in {time.perf_counter() - t:.1f} s")
    flows = os.path.join(args.out, "flows.txt")
    with open(flows, "w") as f:
        # the demo's firewall, with both directions on the capture's single input port
        f.write(TCP_FLOWS.replace("in_port=2", "in_port=1").replace("output:1", "output:2"))
    t = time.perf_counter()
    s = replay(flows, [(1, cap)], os.path.join(args.out, "out"), progress=True)
    dt = time.perf_counter() - t
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {
        "packets": s.packets_in,
        "flows": args.flows,
        "seconds": round(dt, 2),
        "kpps": round(s.packets_in / dt / 1e3, 1),
        "peak_rss_mb": round(rss_mb, 1),
        "packets_out": s.packets_out,
        "drops": dict(s.drops),
        "connections": s.connections,
    }
    with open(os.path.join(args.out, "replay_large.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
