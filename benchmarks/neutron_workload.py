"""The assume-established fast path on a Neutron security-group pipeline, beside workload A.

    python3 benchmarks/neutron_workload.py [--flows 2000] [--rounds 20] [--runs 5]
        [--out benchmarks/results/neutron_workload]

What: security groups in Neutron's API JSON (a web tier: HTTP/HTTPS from anywhere, 8000-8100
from members of its own group, everything out) for four VMs on one network (VLAN 12 on the
integration bridge, port 1 the patch port, a trunk) are compiled with ``ctaccel sg compile``
(the flows Neutron's OVS firewall driver installs: tables 60-94, conjunctions for the remote
group, NORMAL with MAC learning, VLAN tags stripped on the way in and pushed by NORMAL on
the way out). TCP connections in workload A's shape (handshakes, then rounds of one data
segment each way) run three ways: from outside clients to the VMs' port 80 (north-south,
tagged frames from the trunk), from VM to VM on port 8080 (east-west: the remote-group
conjunction), and from the VMs out to port 443 (egress through NORMAL). The same engine code
runs workload A with its own rules and the same connection count.

Reported per workload and mode (medians of ``--runs`` paired runs, each a fresh engine timed
over ``engine.run`` only, batches of 1,024 as ``ctaccel bench``): the share of packets the
fast path served, ns per packet over the whole capture and in the steady state (from the
third data round on, every megaflow installed: the first packets of a connection cost an
upcall each, in Python), recirculations per packet; and per workload the ratios recirc /
assume-established. With ``--e2e N``, also as users meet it: the Neutron traffic written as
one capture per port and replayed by the command, ``ctaccel replay --bridge ... --packets
none``, N times per mode taking turns (whole-process wall seconds, warm kernels, medians and
the median of the per-pair ratios). Writes ``neutron_workload.json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ctaccel.bench import workloads as W
from ctaccel.datapath.engine import DatapathEngine
from ctaccel.datapath.layout import PATH_FAST
from ctaccel.io.pcap import PcapWriter
from ctaccel.ofproto.bridge import Bridge
from ctaccel.ofproto.classifier import FlowTables
from ctaccel.ofproto.rules import parse_flows
from ctaccel.packet import build as B
from ctaccel.sg.compile import compile_flows
from ctaccel.sg.model import load_groups, load_ports

BATCH = 1024
VLAN = 12
ROUTER_MAC = "fa:16:3e:ff:00:01"
VMS = [(2 + i, f"fa:16:3e:00:0c:{2 + i:02x}", f"10.0.12.{2 + i}") for i in range(4)]
GROUPS = {
    "security_groups": [
        {
            "id": "sg-web",
            "security_group_rules": [
                {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
                 "port_range_min": 80, "port_range_max": 80},
                {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
                 "port_range_min": 443, "port_range_max": 443},
                {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
                 "port_range_min": 8000, "port_range_max": 8100, "remote_group_id": "sg-web"},
                {"direction": "egress", "ethertype": "IPv4"},
            ],
        }
    ]
}  # fmt: skip
PORTS = {
    "ports": [
        {"id": f"vm-{no}", "mac_address": mac, "fixed_ips": [{"ip_address": ip}],
         "security_groups": ["sg-web"], "ofport": no, "local_vlan": VLAN}
        for no, mac, ip in VMS
    ]
}  # fmt: skip
BRIDGE = "1," + ",".join(f"{no}:tag={VLAN}" for no, _m, _i in VMS)


def neutron_rules(tmp: Path) -> str:
    """The compiled flows, through the same loaders ``ctaccel sg compile`` uses."""
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "groups.json").write_text(json.dumps(GROUPS))
    (tmp / "ports.json").write_text(json.dumps(PORTS))
    groups = load_groups(tmp / "groups.json")
    ports = load_ports(tmp / "ports.json", groups)
    return "\n".join(compile_flows(groups, ports)) + "\n"


def _conversations(flows: int, rng: np.random.Generator):
    """(client (port, mac, ip, vlan), server (...), sport, dport) per connection."""
    out = []
    for f in range(flows):
        kind = f % 3
        vm = VMS[f % len(VMS)]
        other = VMS[(f + 1) % len(VMS)]
        sport = int(rng.integers(1024, 65536))
        outside_ip = f"198.51.{100 + (f >> 8) % 50}.{f % 250 + 1}"
        if kind == 0:  # north-south: an outside client to a VM's web port
            client = (1, ROUTER_MAC, outside_ip, VLAN)
            out.append((client, (vm[0], vm[1], vm[2], None), sport, 80))
        elif kind == 1:  # east-west: VM to VM, the remote-group rule
            out.append(((vm[0], vm[1], vm[2], None), (other[0], other[1], other[2], None),
                        sport, 8080))  # fmt: skip
        else:  # egress: a VM to an outside server
            out.append(((vm[0], vm[1], vm[2], None), (1, ROUTER_MAC, outside_ip, VLAN),
                        sport, 443))  # fmt: skip
    return out


def _frame(src, dst, sport, dport, flags, seq, ack, payload=b""):
    """A TCP frame as it arrives on ``src``'s port: tagged when it comes from the trunk."""
    dst_mac = dst[1]
    if src[0] == 1:  # from the trunk: to the VM's MAC, tagged with the network's VLAN
        hdr = B.HeaderFields(vlan=VLAN)
        return B.tcp_frame(src[1], dst_mac, src[2], dst[2], sport, dport, flags=flags, seq=seq,
                           ack=ack, payload=payload, hdr=hdr)  # fmt: skip
    if dst[0] == 1:  # to the outside: through the router's MAC
        dst_mac = ROUTER_MAC
    return B.tcp_frame(src[1], dst_mac, src[2], dst[2], sport, dport, flags=flags, seq=seq,
                       ack=ack, payload=payload)  # fmt: skip


def neutron_traffic(flows: int, rounds: int, seed: int = 0):
    """ARP, then workload A's schedule (all SYNs, SYN/ACKs, ACKs; then rounds of one data
    segment each way) over the Neutron topology; returns (frames, in_ports)."""
    rng = np.random.default_rng(seed)
    convs = _conversations(flows, rng)
    data = b"d" * 16
    frames, ports = [], []

    def add(src, frame):
        frames.append(frame)
        ports.append(src[0])

    # first the ARP a network starts with: the router and each VM announce themselves, so
    # NORMAL has learned every MAC before the connections start (else it floods)
    router = (1, ROUTER_MAC, "10.0.12.1", VLAN)
    add(router, B.ether(ROUTER_MAC, "ff:ff:ff:ff:ff:ff", 0x0806,
                        B.arp(1, ROUTER_MAC, "10.0.12.1", "00:00:00:00:00:00", VMS[0][2]),
                        vlan=VLAN))  # fmt: skip
    for no, mac, ip in VMS:
        add((no,), B.ether(mac, "ff:ff:ff:ff:ff:ff", 0x0806,
                           B.arp(1, mac, ip, "00:00:00:00:00:00", "10.0.12.1")))  # fmt: skip
    isn = [(int(rng.integers(1 << 31)), int(rng.integers(1 << 31))) for _ in convs]
    for (c, s, sp, dp), (ic, _is) in zip(convs, isn, strict=True):
        add(c, _frame(c, s, sp, dp, "S", ic, 0))
    for (c, s, sp, dp), (ic, is_) in zip(convs, isn, strict=True):
        add(s, _frame(s, c, dp, sp, "SA", is_, ic + 1))
    for (c, s, sp, dp), (ic, is_) in zip(convs, isn, strict=True):
        add(c, _frame(c, s, sp, dp, "A", ic + 1, is_ + 1))
    for r in range(rounds):
        for (c, s, sp, dp), (ic, is_) in zip(convs, isn, strict=True):
            cs, ss = ic + 1 + r * len(data), is_ + 1 + r * len(data)
            add(c, _frame(c, s, sp, dp, "PA", cs, ss, data))
            add(s, _frame(s, c, dp, sp, "PA", ss, cs + len(data), data))
    return frames, ports


def _arrays(frames, ports):
    lengths = np.array([len(f) for f in frames], np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    buf = np.frombuffer(b"".join(frames), np.uint8).copy()
    now = (np.arange(len(frames), dtype=np.int64) // 1000) + 1_000  # 1 Mpps, in ms
    return buf, offsets, lengths, np.asarray(ports, np.int64), now


def one_run(tables, arrays, mode: str, bridge: str | None, steady_from: int) -> dict:
    """A fresh engine over the packets, batch by batch; ``steady_from``: the first packet of
    the data rounds after the first two (every megaflow installed by then)."""
    engine = DatapathEngine(tables, mode=mode, batch_size=BATCH,
                            bridge=Bridge.parse(bridge) if bridge else None)  # fmt: skip
    buf, offs, lens, ports, now = arrays
    n = len(offs)
    fast = outputs = steady_n = 0
    elapsed = steady = 0.0
    for lo in range(0, n, BATCH):
        hi = min(n, lo + BATCH)
        t0 = time.perf_counter()
        br = engine.run(buf, offs[lo:hi], lens[lo:hi], ports[lo:hi], now[lo:hi])
        dt = time.perf_counter() - t0
        elapsed += dt
        if lo >= steady_from:
            steady += dt
            steady_n += hi - lo
        fast += int(np.count_nonzero(br.res[:, 4] == PATH_FAST))
        outputs += int(br.n_outputs().sum()) + sum(len(r.outputs) for r in br.slow.values())
    stats = engine.stats
    return {"ns_per_packet": elapsed * 1e9 / n,
            "ns_per_packet_steady": steady * 1e9 / max(steady_n, 1), "fast_path_share": fast / n,
            "recirculations_per_packet": stats["recirculations"] / n,
            "outputs_per_packet": outputs / n, "upcalls": stats["upcalls"],
            "mac_table": len(engine.bridge.macs)}  # fmt: skip


def write_captures(frames, ports, directory: Path) -> list[str]:
    """One pcap per in_port (1 µs apart, the engine runs' clock); the ``--in`` arguments."""
    directory.mkdir(parents=True, exist_ok=True)
    writers = {}
    for k, (frame, port) in enumerate(zip(frames, ports, strict=True)):
        if port not in writers:
            writers[port] = PcapWriter(directory / f"p{port}.pcap")
        writers[port].write(frame, 1_000_000_000 + k * 1_000)
    for w in writers.values():
        w.close()
    return [f"{port}={directory / f'p{port}.pcap'}" for port in sorted(writers)]


def replay_e2e(flows: Path, inputs: list[str], out: Path, runs: int) -> dict:
    """``ctaccel replay`` of the captures in both modes, taking turns; wall seconds."""
    times: dict[str, list[float]] = {"recirc": [], "assume-established": []}
    env = dict(os.environ)
    for r in range(runs + 1):  # the first round warms the kernels' cache and is dropped
        order = list(times) if r % 2 == 0 else list(reversed(times))
        for mode in order:
            cmd = [sys.executable, "-m", "ctaccel.cli", "replay", "--flows", str(flows),
                   "--bridge", BRIDGE, "--mode", mode, "--packets", "none", "--quiet",
                   "--out-dir", str(out / mode)]  # fmt: skip
            for spec in inputs:
                cmd += ["--in", spec]
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, env=env, capture_output=True)
            if r:
                times[mode].append(time.perf_counter() - t0)
    ratios = [a / b for a, b in zip(times["recirc"], times["assume-established"], strict=True)]
    return {"wall_s": {m: statistics.median(t) for m, t in times.items()},
            "runs": runs, "recirc_over_ae_median": statistics.median(ratios),
            "recirc_over_ae_range": [min(ratios), max(ratios)]}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--flows", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/neutron_workload"))
    ap.add_argument("--e2e", type=int, default=0, metavar="N",
                    help="also time N paired runs of `ctaccel replay` per mode")  # fmt: skip
    args = ap.parse_args()
    from ctaccel.datapath.warmup import warm_up

    warm_up()
    frames, ports = neutron_traffic(args.flows, args.rounds)
    # first packet of the third data round: ARPs, three handshake packets per connection,
    # then rounds of two packets per connection
    steady_from = 1 + len(VMS) + 3 * args.flows + 2 * 2 * args.flows
    neutron = (FlowTables(parse_flows(neutron_rules(args.out / "sg"), "neutron.flows")),
               _arrays(frames, ports), BRIDGE, steady_from)  # fmt: skip
    a = W.build("A", flows=args.flows, packets=len(frames))
    # as `ctaccel bench` plays it: every packet on port 1 (the rules tell the sides apart)
    a_arrays = _arrays([bytes(f) for f in a.frames], np.full(len(a.frames), W.IN_PORT))
    workload_a = (FlowTables(parse_flows(W.rules("A"), "a.flows")), a_arrays, None,
                  3 * args.flows + 2 * 2 * args.flows)  # fmt: skip
    runs: dict = {}
    for r in range(args.runs):  # paired: every configuration once per round, order rotating
        order = [(w, m) for w in ("neutron", "A") for m in ("recirc", "assume-established")]
        for w, m in order[r % 4 :] + order[: r % 4]:
            tables, arrays, bridge, steady_from = neutron if w == "neutron" else workload_a
            result = one_run(tables, arrays, m, bridge, steady_from)
            runs.setdefault(w, {}).setdefault(m, []).append(result)
    report = {"flows": args.flows, "rounds": args.rounds, "packets": len(frames),
              "runs": args.runs, "workloads": {}}  # fmt: skip
    for w, modes in runs.items():
        rep = {}
        for m, results in modes.items():
            rep[m] = {k: statistics.median(r[k] for r in results) for k in results[0]}
        pairs = list(zip(modes["recirc"], modes["assume-established"], strict=True))
        for key in ("ns_per_packet", "ns_per_packet_steady"):
            rep[f"recirc_over_ae_{key}"] = statistics.median(rc[key] / ae[key] for rc, ae in pairs)
        report["workloads"][w] = rep
    if args.e2e:  # the captures and replay outputs go to a scratch directory
        with tempfile.TemporaryDirectory(prefix="ctaccel-neutron-") as tmp:
            flows = Path(tmp) / "neutron.flows"
            flows.write_text(neutron_rules(Path(tmp) / "sg"))
            inputs = write_captures(frames, ports, Path(tmp) / "captures")
            report["replay_e2e"] = replay_e2e(flows, inputs, Path(tmp) / "replay", args.e2e)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "neutron_workload.json").write_text(json.dumps(report, indent=1))
    _plot(report, args.out / "neutron_workload.png")
    json.dump(report, sys.stdout, indent=1)
    print()
    return 0


def _plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["workloads"])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.6))
    x = np.arange(len(names))
    for k, m in enumerate(("recirc", "assume-established")):
        ax1.bar(x + k * 0.38, [report["workloads"][w][m]["ns_per_packet_steady"] for w in names],
                0.38, label=m)  # fmt: skip
    ax1.set_xticks(x + 0.19, [f"workload {w}" if w == "A" else "Neutron SG" for w in names])
    ax1.set_ylabel("ns per packet, steady state (median)")
    ax1.legend()
    ax2.bar(x, [report["workloads"][w]["assume-established"]["fast_path_share"] for w in names])
    ax2.set_xticks(x, [f"workload {w}" if w == "A" else "Neutron SG" for w in names])
    ax2.set_ylim(0, 1)
    ax2.set_ylabel("fast-path share (assume-established)")
    fig.suptitle(f"{report['flows']} connections, {report['packets']} packets")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
