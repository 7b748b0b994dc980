"""SYN and UDP floods mixed into workload A: established connections must keep flowing.

    python3 benchmarks/flood.py [--flows 10000] [--flood 1000000] [--zone-limit 50000]
        [--repeat 3] [--json benchmarks/results/flood.json] [--png benchmarks/results/flood.png]
        [--pcap-dir DIR]

What (issue 20, item 2): workload A (``flows`` established TCP connections, about one
million packets, all entering on port 1 through the talk's zone-5 firewall, here also for
UDP) with ``flood`` spoofed packets spread evenly through it: TCP SYNs from random sources in
198.18.0.0/15 and random ports to the workload's servers (each one a new connection the
firewall commits), or UDP datagrams the same way. Each configuration — mode (recirc,
assume-established) x flood (SYN, UDP) x zone limit (none, ``--zone-limit`` on zone 5) — runs
the merged capture through the compiled engine in batches of 1,024, and is compared with the
same engine on the workload alone: every workload packet must get the same ct_state and the
same outputs (0 established packets lost or misclassified). Reported per configuration:
engine ns/packet over the whole capture, flood packets/s and connections committed/s, the
connection count and the bytes of every table at the end (conntrack, megaflow, fast path),
and the process's resident memory. JSON + PNG.

Design: the flood frames are one template patched in numpy (addresses, ports, sequence
numbers, checksums recomputed over the 16-bit words), so a million cost well under a second;
the workload is ``bench.workloads.build``'s (the bytes ``ctaccel gen`` writes). Times are
medians of ``--repeat`` runs, each with fresh engines. ``--pcap-dir`` also writes the merged
captures and rules, for the same run through OVS-DPDK (``benchmarks/ovs_dpdk.py``) on a
machine that has it.
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

RESULTS = Path(__file__).resolve().parent / "results"
FLOOD_NET = 0xC6120000  # 198.18.0.0/15 (RFC 2544 benchmarking addresses)


def _words(frames: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Sum of big-endian 16-bit words of ``frames[:, lo:hi]`` per row."""
    part = np.ascontiguousarray(frames[:, lo:hi])
    return part.view(">u2").astype(np.int64).sum(axis=1)


def _put(frames: np.ndarray, col: int, values: np.ndarray, dtype: str) -> None:
    """Big-endian ``values`` into every row at byte ``col``."""
    raw = values.astype(dtype).view(np.uint8).reshape(len(values), -1)
    frames[:, col : col + raw.shape[1]] = raw


def flood_frames(n: int, proto: str, traffic, seed: int) -> np.ndarray:
    """``n`` spoofed frames (``proto`` "syn" or "udp") to the workload's servers, as wide
    as its frames: sources random in 198.18.0.0/15, random ports and sequence numbers."""
    from ctaccel.bench import workloads as W
    from ctaccel.packet import build as B

    width = traffic.frames.shape[1]
    client = traffic.frames[np.nonzero(traffic.from_client)[0][0]]
    macs = (bytes(client[6:12]), bytes(client[0:6]))
    if proto == "syn":
        tmpl = B.tcp_frame(macs[0], macs[1], "198.18.0.1", "172.16.0.1", 1, 80, "S", 0, 0)
        l4_len, csum_at, proto_num = 20, 34 + 16, 6
    else:
        tmpl = B.udp_frame(macs[0], macs[1], "198.18.0.1", "172.16.0.1", 1, 53, b"f" * 6)
        l4_len, csum_at, proto_num = 14, 34 + 6, 17
    frames = np.tile(np.frombuffer(tmpl.ljust(width, b"\0"), np.uint8), (n, 1))
    rng = np.random.default_rng(seed)
    ep = traffic.endpoints
    src = FLOOD_NET + rng.integers(1, 1 << 17, n)
    pick = rng.integers(0, len(ep.server_ip), n)
    dst = np.asarray(ep.server_ip, np.int64)[pick]
    sport = rng.integers(1024, 65536, n)
    dport = np.asarray(ep.server_port, np.int64)[pick]
    for col, values, dtype in ((26, src, ">u4"), (30, dst, ">u4"), (34, sport, ">u2"),
                               (36, dport, ">u2")):  # fmt: skip
        _put(frames, col, values, dtype)
    if proto == "syn":
        _put(frames, 38, rng.integers(0, 1 << 32, n), ">u4")
    frames[:, 24:26] = 0  # IPv4 header checksum
    _put(frames, 24, ~W.fold_words(_words(frames, 14, 34)) & 0xFFFF, ">u2")
    frames[:, csum_at : csum_at + 2] = 0
    pseudo = _words(frames, 26, 34) + proto_num + l4_len
    l4 = ~W.fold_words(pseudo + _words(frames, 34, 34 + l4_len)) & 0xFFFF
    if proto == "udp":
        l4 = np.where(l4 == 0, 0xFFFF, l4)
    _put(frames, csum_at, l4, ">u2")
    return frames


def merged(workload: np.ndarray, flood: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two spread evenly into one capture; and a mask of the workload's packets."""
    nw, nf = len(workload), len(flood)
    rank = np.concatenate([np.arange(nw) / max(nw, 1), (np.arange(nf) + 0.5) / max(nf, 1)])
    order = np.argsort(rank, kind="stable")
    frames = np.concatenate([workload, flood])[order]
    return frames, order < nw


def rules_text() -> str:
    from ctaccel.bench import workloads as W

    tcp = W.rules("A")
    udp = [line.replace(",tcp,", ",udp,") for line in tcp.splitlines()
           if "ct(" in line]  # fmt: skip
    return tcp + "\n".join(udp) + "\n"


def run_engine(mode: str, frames: np.ndarray, zone_limit: int | None):
    """One run: (seconds in engine.run, per-packet ct_state code and output count, engine).
    A packet the reference engine completed (slow path) gets ct_state -2 and its outputs."""
    from ctaccel.conntrack import Conntrack
    from ctaccel.datapath.engine import DatapathEngine
    from ctaccel.ofproto.rules import parse_flows

    ct = Conntrack()
    if zone_limit:
        ct.set_zone_limit(5, zone_limit)
    eng = DatapathEngine(parse_flows(rules_text(), "flood.flows"), mode=mode, conntrack=ct)
    n, width = frames.shape
    buf = frames.reshape(-1)
    offsets = np.arange(n, dtype=np.int64) * width
    lengths = np.full(n, width, np.int64)
    ports = np.ones(n, np.int64)
    now = 1_000_000 + np.arange(n, dtype=np.int64) // 1000  # 1 Mpps, as the workload
    state = np.empty(n, np.int64)
    nout = np.empty(n, np.int64)
    seconds = 0.0
    for lo in range(0, n, 1024):
        hi = min(n, lo + 1024)
        t0 = time.perf_counter()
        r = eng.run(buf, offsets[lo:hi], lengths[lo:hi], ports[lo:hi], now[lo:hi])
        seconds += time.perf_counter() - t0
        state[lo:hi] = r.ct_state_codes()
        nout[lo:hi] = r.n_outputs()
        for i, res in r.slow.items():
            state[lo + i], nout[lo + i] = -2, len(res.outputs)
    return seconds, state, nout, eng


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--flows", type=int, default=10_000)
    ap.add_argument("--packets", type=int, default=None, help="workload packets (default ~1M)")
    ap.add_argument("--flood", type=int, default=1_000_000)
    ap.add_argument("--zone-limit", type=int, default=50_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", default=str(RESULTS / "flood.json"))
    ap.add_argument("--png", default=str(RESULTS / "flood.png"))
    ap.add_argument("--pcap-dir", default=None)
    ap.add_argument("--config", default=None, help=argparse.SUPPRESS)  # worker: proto:mode:limit
    a = ap.parse_args()

    from ctaccel.bench import workloads as W

    if a.config:
        _one(a, *a.config.split(":"))
        return
    results = []
    for proto in ("syn", "udp"):
        if a.pcap_dir:
            traffic = W.build("A", a.flows, a.packets)
            frames, _w = merged(traffic.frames, flood_frames(a.flood, proto, traffic, seed=7))
            _write_capture(a.pcap_dir, proto, frames)
        for mode in ("recirc", "assume-established"):
            for limit in (0, a.zone_limit):
                # a process of its own per configuration: its peak memory is its own
                cmd = [sys.executable, __file__, "--config", f"{proto}:{mode}:{limit}",
                       "--flows", str(a.flows), "--flood", str(a.flood),
                       "--repeat", str(a.repeat)]  # fmt: skip
                if a.packets:
                    cmd += ["--packets", str(a.packets)]
                done = subprocess.run(cmd, capture_output=True, text=True, check=True)
                row = json.loads(done.stdout.strip().splitlines()[-1])
                results.append(row)
                print(f"{proto:3} {mode:18} limit={limit:<6} conns={row['connections_at_end']:>8} "
                      f"changed={row['workload_packets_changed']} "
                      f"{row['ns_per_packet']:.0f} ns/pkt (alone {row['workload_alone_ns_per_packet']:.0f}) "
                      f"flood {row['flood_packets_per_s'] / 1e6:.2f} Mpps "
                      f"tables {row['total_bytes'] / 2**20:.0f} MiB peak rss {row['peak_rss_mb']:.0f} MB",
                      flush=True)  # fmt: skip
    out = {"flows": a.flows, "flood": a.flood, "zone_limit": a.zone_limit, "repeat": a.repeat,
           "cpus": os.cpu_count(), "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "runs": results}  # fmt: skip
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(out, indent=1))
    _plot(results, a.png)


def _one(a, proto: str, mode: str, limit: str) -> None:
    """One configuration (a worker process): print its row as one JSON line."""
    import resource

    from ctaccel.bench import workloads as W
    from ctaccel.bench.measure import memory_summary
    from ctaccel.datapath.warmup import warm_up
    from ctaccel.packet.key import CS_ESTABLISHED

    warm_up()
    limit = int(limit) or None
    traffic = W.build("A", a.flows, a.packets)
    work = traffic.frames
    handshake = 3 * a.flows
    frames, is_work = merged(work, flood_frames(a.flood, proto, traffic, seed=7))
    times, base_times = [], []
    for _ in range(a.repeat):
        tb, b_state, b_nout, _e = run_engine(mode, work, limit)
        base_times.append(tb)
        del _e
        t, state, nout, eng = run_engine(mode, frames, limit)
        times.append(t)
    changed = (state[is_work] != b_state) | (nout[is_work] != b_nout)
    est = (b_state[handshake:] & CS_ESTABLISHED) != 0
    mem = memory_summary(eng)
    mem["total_bytes"] = sum(mem[k] for k in ("conntrack_bytes", "conntrack_fixed_bytes",
                                              "megaflow_bytes", "fast_path_bytes"))  # fmt: skip
    t = statistics.median(times)
    row = {
        "flood": proto, "mode": mode, "zone_limit": limit,
        "packets": int(len(frames)), "flood_packets": a.flood,
        "workload_packets_changed": int(changed.sum()),
        "established_lost_or_misclassified": int(changed[handshake:][est].sum()),
        "engine_seconds": t,
        "ns_per_packet": t * 1e9 / len(frames),
        "workload_alone_ns_per_packet": statistics.median(base_times) * 1e9 / len(work),
        "flood_packets_per_s": a.flood / t,
        "connections_at_end": len(eng.conntrack),
        "committed_per_s": (len(eng.conntrack) - a.flows) / t,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        **mem,
    }  # fmt: skip
    print(json.dumps(row))


def _write_capture(out_dir: str, proto: str, frames: np.ndarray) -> None:
    from ctaccel.io.pcap import write_pcap

    os.makedirs(out_dir, exist_ok=True)
    write_pcap(os.path.join(out_dir, f"A-{proto}-flood.pcap"), [f.tobytes() for f in frames],
               [1_700_000_000 * 10**9 + i * 1000 for i in range(len(frames))])  # fmt: skip
    Path(out_dir, "flood.flows").write_text(rules_text())


def _plot(results, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    labels = [f"{r['flood']}\n{r['mode'][:6]}\n{'limit' if r['zone_limit'] else 'no limit'}"
              for r in results]  # fmt: skip
    x = np.arange(len(results))
    ax1.bar(
        x - 0.2, [r["workload_alone_ns_per_packet"] for r in results], 0.4, label="workload A alone"
    )
    ax1.bar(x + 0.2, [r["ns_per_packet"] for r in results], 0.4, label="A + flood (all packets)")
    ax1.set_xticks(x, labels, fontsize=7)
    ax1.set_ylabel("engine ns / packet")
    ax1.legend(fontsize=8)
    ax2.bar(x, [r.get("total_bytes", 0) / 2**20 for r in results])
    ax2.set_xticks(x, labels, fontsize=7)
    ax2.set_ylabel("tables at the end (MiB)")
    worst = max(r["established_lost_or_misclassified"] for r in results)
    fig.suptitle(f"Workload A ({results[0]['packets'] - results[0]['flood_packets']:,} packets) "
                 f"+ {results[0]['flood_packets']:,} spoofed SYN / UDP: at most {worst} "
                 "established packets lost or misclassified in any run", fontsize=9)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
