"""dpctl/dump-conntrack format. The expected lines were printed by the real OVS 3.1
(private userspace instance, the same frames injected on dummy ports, same ct() actions)."""

from __future__ import annotations

import numpy as np
from scapy.all import ICMP, IP, SCTP, TCP, UDP, Ether, ICMPv6EchoRequest, IPv6, Raw

from ctaccel.conntrack import Conntrack, action_row
from ctaccel.packet.key import KEY_WIDTH
from ctaccel.packet.parse import parse_frame

LABEL = 0x2A00000000000000000000000001
V4 = [
    IP(src="10.1.1.1", dst="10.1.1.2") / UDP(sport=1234, dport=53) / Raw(b"q" * 10),
    IP(src="10.1.1.1", dst="10.1.1.2") / TCP(sport=40000, dport=80, flags="S", seq=1000),
    IP(src="10.1.1.1", dst="10.1.1.2") / ICMP(type=8, id=77, seq=1) / Raw(b"p" * 8),
    IP(src="10.1.1.1", dst="10.1.1.2") / ICMP(type=13, id=78) / Raw(b"\0" * 12),
    IP(src="10.1.1.1", dst="10.1.1.2", proto=112) / Raw(b"v" * 20),
    IP(src="10.1.1.1", dst="10.1.1.2") / SCTP(sport=5, dport=6),
]
V6 = [
    IPv6(src="fe80::1", dst="2001:db8::2") / UDP(sport=5555, dport=6666) / Raw(b"x" * 4),
    IPv6(src="2001:db8::1", dst="2001:db8::2") / ICMPv6EchoRequest(id=9, seq=1),
    IPv6(src="::ffff:1.2.3.4", dst="2001:db8:0:0:1:0:0:1") / TCP(sport=1, dport=2, flags="S"),
]
Z5 = ",zone=5,mark=7,labels=0x2a00000000000000000000000001"
OVS_LINES = sorted(
    [
        "112,orig=(src=10.1.1.1,dst=10.1.1.2,sport=0,dport=0),"
        "reply=(src=10.1.1.2,dst=10.1.1.1,sport=0,dport=0)" + Z5,
        "icmp,orig=(src=10.1.1.1,dst=10.1.1.2,id=77,type=8,code=0),"
        "reply=(src=10.1.1.2,dst=10.1.1.1,id=77,type=0,code=0)" + Z5,
        "icmp,orig=(src=10.1.1.1,dst=10.1.1.2,id=78,type=13,code=0),"
        "reply=(src=10.1.1.2,dst=10.1.1.1,id=78,type=14,code=0)" + Z5,
        "icmpv6,orig=(src=2001:db8::1,dst=2001:db8::2,id=9,type=128,code=0),"
        "reply=(src=2001:db8::2,dst=2001:db8::1,id=9,type=129,code=0)",
        "sctp,orig=(src=10.1.1.1,dst=10.1.1.2,sport=0,dport=0),"
        "reply=(src=10.1.1.2,dst=10.1.1.1,sport=0,dport=0)" + Z5,
        "tcp,orig=(src=10.1.1.1,dst=10.1.1.2,sport=40000,dport=80),"
        "reply=(src=10.1.1.2,dst=10.1.1.1,sport=80,dport=40000)"
        + Z5
        + ",protoinfo=(state=SYN_SENT)",
        "tcp,orig=(src=::ffff:1.2.3.4,dst=2001:db8::1:0:0:1,sport=1,dport=2),"
        "reply=(src=2001:db8::1:0:0:1,dst=::ffff:1.2.3.4,sport=2,dport=1),protoinfo=(state=SYN_SENT)",
        "udp,orig=(src=10.1.1.1,dst=10.1.1.2,sport=1234,dport=53),"
        "reply=(src=10.1.1.2,dst=10.1.1.1,sport=53,dport=1234)" + Z5,
        "udp,orig=(src=fe80::1,dst=2001:db8::2,sport=5555,dport=6666),"
        "reply=(src=2001:db8::2,dst=fe80::1,sport=6666,dport=5555)",
    ]
)


def commit(ct, l3, zone, **kw):
    frame = np.frombuffer(bytes(Ether() / l3), np.uint8)
    key = np.zeros(KEY_WIDTH, np.int64)
    parse_frame(frame, 1, key)
    return ct.execute(frame, key, action_row(zone, commit=True, **kw), now_ms=0)


def filled() -> Conntrack:
    ct = Conntrack()
    for pkt in V4:
        commit(ct, pkt, 5, mark=7, label=LABEL)
    for pkt in V6:
        commit(ct, pkt, 0)
    return ct


def test_dump_matches_ovs():
    assert filled().dump(1) == OVS_LINES


def test_dump_zone_filter_and_expiry():
    ct = filled()
    assert ct.dump(1, zone=0) == [line for line in OVS_LINES if "zone=5" not in line]
    assert len(ct.dump(1, zone=5)) == 6
    # far in the future every connection has expired
    assert ct.dump(10**9) == []


def test_tcp_state_follows_handshake():
    ct = Conntrack()
    syn = IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=40000, dport=80, flags="S", seq=9)
    synack = IP(src="10.0.0.2", dst="10.0.0.1") / TCP(
        sport=80, dport=40000, flags="SA", seq=99, ack=10
    )
    commit(ct, syn, 0)
    commit(ct, synack, 0)
    assert ct.dump(1) == [
        "tcp,orig=(src=10.0.0.1,dst=10.0.0.2,sport=40000,dport=80),"
        "reply=(src=10.0.0.2,dst=10.0.0.1,sport=80,dport=40000),protoinfo=(state=ESTABLISHED)"
    ]
