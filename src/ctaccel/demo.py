"""The built-in demo: the talk's zone-5 UDP example, a stateful TCP firewall, and SNAT.

What: builds three small captures and their rule files, replays each with ``ctaccel replay``'s
library function, and prints a per-packet table (what the packet was, the ct_state its last
rule saw, where it went; for NAT, the addresses it left with).

Design: the traffic is generated with ctaccel.packet.build (no scapy at run time); the
results come from the real replay outputs (packets.jsonl), not from the demo's own notes.
"""

from __future__ import annotations

import json
import os
import tempfile

from ctaccel.io.pcap import write_pcap
from ctaccel.packet import build as B
from ctaccel.replay import replay

MAC_A, MAC_B = "50:54:00:00:00:01", "50:54:00:00:00:02"
IP_A, IP_B = "10.1.1.1", "10.1.1.2"
IP_C, IP_NAT, IP_WEB = "10.1.1.3", "192.168.0.1", "203.0.113.80"

UDP_FLOWS = """\
# The talk's example: every untracked UDP packet goes through conntrack zone 5, is
# committed, and comes back to table 0 with its ct_state filled in.
table=0,priority=10,ct_state=-trk,udp,action=ct(commit,table=0,zone=5)
# new connections only from port 1; established traffic both ways
table=0,priority=10,ct_state=+trk+new,ct_zone=5,udp,in_port=1,action=output:2
table=0,priority=10,ct_state=+trk+est,ct_zone=5,udp,in_port=1,action=output:2
table=0,priority=10,ct_state=+trk+est,ct_zone=5,udp,in_port=2,action=output:1
table=0,priority=0,action=drop
"""

TCP_FLOWS = """\
# A stateful TCP firewall: connections may only be opened from port 1 (inside).
table=0,priority=100,tcp,ct_state=-trk,actions=ct(table=1,zone=1)
table=0,priority=0,actions=drop
table=1,priority=200,ct_state=+trk+inv,actions=drop
table=1,priority=100,tcp,in_port=1,ct_state=+trk+new,actions=ct(commit,zone=1),output:2
table=1,priority=100,tcp,in_port=1,ct_state=+trk+est,actions=output:2
table=1,priority=100,tcp,in_port=2,ct_state=+trk+est,actions=output:1
table=1,priority=0,actions=drop
"""


NAT_FLOWS = """\
# Source NAT for the inside (port 1): connections leave as 192.168.0.1; replies are translated
# back by ct(nat) on the way in. Every packet goes through ct(nat) in zone 7.
table=0,priority=100,ip,actions=ct(table=1,zone=7,nat)
table=0,priority=0,actions=drop
table=1,priority=100,tcp,in_port=1,ct_state=+trk+new,actions=ct(commit,zone=7,nat(src=192.168.0.1)),output:2
table=1,priority=100,tcp,in_port=1,ct_state=+trk+est,actions=output:2
table=1,priority=100,tcp,in_port=2,ct_state=+trk+est,actions=output:1
table=1,priority=0,actions=drop
"""


def udp_packets():
    """(port, frame, what) of the UDP example."""

    def a2b(sport, dport, data=b"request"):
        return 1, B.udp_frame(MAC_A, MAC_B, IP_A, IP_B, sport, dport, data)

    def b2a(sport, dport, data=b"reply"):
        return 2, B.udp_frame(MAC_B, MAC_A, IP_B, IP_A, sport, dport, data)

    return [
        (*a2b(1234, 5678), "A→B request: new connection from inside"),
        (*b2a(5678, 1234), "B→A reply"),
        (*a2b(1234, 5678), "A→B second request"),
        (*b2a(7777, 53), "B→A unsolicited: new from outside"),
        (*b2a(5678, 1234), "B→A reply again"),
    ]


def tcp_packets():
    """(port, frame, what) of the TCP conversation."""

    def c2s(flags, seq, ack=0, data=b"", sport=40000, dport=80):
        return 1, B.tcp_frame(MAC_A, MAC_B, IP_A, IP_B, sport, dport, flags, seq, ack, data)

    def s2c(flags, seq, ack=0, data=b"", sport=80, dport=40000):
        return 2, B.tcp_frame(MAC_B, MAC_A, IP_B, IP_A, sport, dport, flags, seq, ack, data)

    return [
        (*c2s("S", 1000), "SYN from inside"),
        (*s2c("SA", 5000, 1001), "SYN/ACK"),
        (*c2s("A", 1001, 5001), "ACK: handshake done"),
        (*c2s("PA", 1001, 5001, b"GET / HTTP/1.0\r\n\r\n"), "request"),
        (*s2c("PA", 5001, 1019, b"HTTP/1.0 200 OK\r\n\r\nhello"), "response"),
        (*s2c("PA", 5001 + 10_000_000, 1019, b"spoofed"), "data 10 MB past the window"),
        (*s2c("S", 9000, 0, sport=5555, dport=22), "SYN from outside"),
        (*s2c("SA", 7000, 2001, sport=80, dport=40001), "unsolicited SYN/ACK"),
        (*c2s("FA", 1019, 5025), "FIN from inside"),
        (*s2c("FA", 5025, 1020), "FIN/ACK"),
        (*c2s("A", 1020, 5026), "last ACK"),
    ]


def nat_packets():
    """(port, frame, what) of the SNAT case: two inside clients with the same source port."""

    def out(ip, sport, flags, seq, ack=0, data=b""):
        return 1, B.tcp_frame(MAC_A, MAC_B, ip, IP_WEB, sport, 80, flags, seq, ack, data)

    def back(dport, flags, seq, ack=0, data=b"", dst=IP_NAT):
        return 2, B.tcp_frame(MAC_B, MAC_A, IP_WEB, dst, 80, dport, flags, seq, ack, data)

    return [
        (*out(IP_A, 40000, "S", 1000), "A:40000 SYN"),
        (*back(40000, "SA", 5000, 1001), "SYN/ACK to NAT:40000"),
        (*out(IP_A, 40000, "A", 1001, 5001), "A: ACK"),
        (*out(IP_C, 40000, "S", 7000), "C:40000 SYN"),
        (*back(40001, "SA", 9000, 7001), "SYN/ACK to NAT:40001"),
        (*out(IP_A, 40000, "PA", 1001, 5001, b"GET / HTTP/1.0\r\n\r\n"), "A: request"),
        (*back(40000, "PA", 5001, 1019, b"HTTP/1.0 200 OK\r\n\r\nhi"), "response"),
        (*back(41000, "S", 3000), "outside SYN to NAT"),
    ]


def _translations(out_dir, recs, packets) -> list[str]:
    """Per packet, what NAT changed in the frames it left with ("src 192.168.0.1:40001",
    "dst 10.1.1.3:40000", "none"), read from the port captures (each port's frames are in
    emission order) and compared with the frame received."""
    import numpy as np

    from ctaccel.io.pcap import read_capture
    from ctaccel.packet import key as K
    from ctaccel.packet.parse import parse_frame

    def endpoints(frame):
        key = np.zeros(K.KEY_WIDTH, np.int64)
        parse_frame(np.frombuffer(bytes(frame), np.uint8).copy(), np.int64(0), key)
        ip = [".".join(str((int(key[c + 3]) >> s) & 255) for s in (24, 16, 8, 0))
              for c in (K.NW_SRC, K.NW_DST)]  # fmt: skip
        return f"{ip[0]}:{int(key[K.TP_SRC])}", f"{ip[1]}:{int(key[K.TP_DST])}"

    queues: dict = {}
    texts = []
    for rec, (_p, received, _w) in zip(recs, packets, strict=True):
        parts = []
        for port in rec["out"]:
            if port not in queues:
                cap = read_capture(os.path.join(out_dir, f"port-{port}.pcap"))
                queues[port] = [cap.frame(i) for i in range(len(cap))]
            (src, dst), (src0, dst0) = endpoints(queues[port].pop(0)), endpoints(received)
            changed = [f"src {src}"] if src != src0 else []
            changed += [f"dst {dst}"] if dst != dst0 else []
            parts.append(", ".join(changed) or "none")
        texts.append("; ".join(parts) or "-")
    return texts


def _write_case(base, name, flows, packets):
    d = os.path.join(base, name)
    os.makedirs(d, exist_ok=True)
    flows_path = os.path.join(d, "flows.txt.in")
    with open(flows_path, "w") as f:
        f.write(flows)
    inputs = []
    for port in sorted({p for p, _f, _w in packets}):
        path = os.path.join(d, f"in-port-{port}.pcap")
        frames = [(f, i) for i, (p, f, _w) in enumerate(packets) if p == port]
        # one millisecond apart, so the merge by timestamp restores the conversation order
        write_pcap(path, [f for f, _i in frames], [(1_000 + i) * 1_000_000 for _f, i in frames])
        inputs.append((port, path))
    return d, flows_path, inputs


def run_demo(out_dir=None, console=None) -> dict:
    """Run the demo cases; print their tables; return {case: [packets.jsonl records]}."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    base = out_dir or tempfile.mkdtemp(prefix="ctaccel-demo-")
    results = {}
    for name, title, flows, packets in (
        ("udp-zone5", "The talk's zone-5 UDP example", UDP_FLOWS, udp_packets()),
        (
            "tcp-firewall",
            "Stateful TCP firewall (connections only from port 1)",
            TCP_FLOWS,
            tcp_packets(),
        ),
        ("snat", "Source NAT: inside clients leave as 192.168.0.1", NAT_FLOWS, nat_packets()),
    ):
        d, flows_path, inputs = _write_case(base, name, flows, packets)
        out = os.path.join(d, "out")
        replay(flows_path, inputs, out)
        with open(os.path.join(out, "packets.jsonl")) as f:
            recs = [json.loads(line) for line in f]
        results[name] = recs
        t = Table(title=title)
        nat = name == "snat"
        for col in ("#", "in", "packet", "ct_state", "verdict", "path"):
            t.add_column(col, no_wrap=col == "ct_state")
        if nat:
            t.add_column("translated", no_wrap=True)
            left = _translations(out, recs, packets)
        for k, (rec, (_p, _f, what)) in enumerate(zip(recs, packets, strict=True)):
            verdict = (
                ("→ port " + ",".join(map(str, rec["out"])))
                if rec["out"]
                else (f"dropped ({rec['drop_reason']})")
            )
            row = [str(rec["n"]), str(rec["in_port"]), what, rec["ct_state"] or "-", verdict,
                   rec.get("path", "")]  # fmt: skip
            t.add_row(*row, *([left[k]] if nat else []))
        console.print(t)
        with open(os.path.join(out, "conntrack.txt")) as f:
            console.print("[bold]conntrack table at the end[/bold] (dpctl/dump-conntrack):")
            console.print(
                f.read().rstrip() or "(empty)", highlight=False, markup=False, soft_wrap=True
            )
        console.print()
    console.print(
        "path: 'fast' = the assume-established fast path (one exact-match lookup and a check "
        "of the connection), 'megaflow'/'upcall' = full processing with ct and recirculation."
    )
    console.print(f"All inputs and outputs are in {base}")
    return results
