"""Oracle scenarios, part 2: TCP, ICMP/ICMPv6, IPv6, other protocols, fragments, bad frames.

What/Design/Invariants: as in ``scenarios.py``, which imports this module at its end so every
scenario here lands in the same ``SCENARIOS`` list.
"""

from __future__ import annotations

from .frames import (
    A6,
    B6,
    IP,
    IP4,
    TCP,
    UDP,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    IPv6,
    IPv6ExtHdrFragment,
    Raw,
    Timeline,
    eth,
    fragment,
    fragment6,
    icmp6_echo,
    icmp6_error,
    icmp_echo,
    icmp_error,
    ip4,
    ip6,
    raw_ip4,
    tcp,
    udp,
)
from .scenarios import EST, EST_RPL, FIREWALL, INV, NEW, REL_RPL, Scenario, scenario


def _handshake(t: Timeline, sport: int, isn_a: int = 1000, isn_b: int = 5000, v6=False):
    """SYN, SYN/ACK, ACK between A:sport and B:80; returns the three packet numbers."""
    s = t.send("A", tcp("A", "B", sport, 80, "S", isn_a, v6=v6))
    sa = t.send("B", tcp("B", "A", 80, sport, "SA", isn_b, isn_a + 1, v6=v6))
    a = t.send("A", tcp("A", "B", sport, 80, "A", isn_a + 1, isn_b + 1, v6=v6))
    return s, sa, a


@scenario
def tcp_handshake_data_close():
    t = Timeline()
    s, sa, a = _handshake(t, 40000)
    d1 = t.send("A", tcp("A", "B", 40000, 80, "PA", 1001, 5001, b"G" * 100))
    t.send("B", tcp("B", "A", 80, 40000, "A", 5001, 1101))
    d2 = t.send("B", tcp("B", "A", 80, 40000, "PA", 5001, 1101, b"R" * 200))
    t.send("A", tcp("A", "B", 40000, 80, "A", 1101, 5201))
    f1 = t.send("A", tcp("A", "B", 40000, 80, "FA", 1101, 5201))
    t.send("B", tcp("B", "A", 80, 40000, "A", 5201, 1102))
    t.send("B", tcp("B", "A", 80, 40000, "FA", 5201, 1102))
    last = t.send("A", tcp("A", "B", 40000, 80, "A", 1102, 5202))
    late = t.send("A", tcp("A", "B", 40000, 80, "PA", 1102, 5202, b"z"))
    return Scenario(
        "tcp_handshake_data_close",
        FIREWALL,
        t.packets,
        expect={
            s: (NEW, [2]),
            sa: (EST_RPL, [1]),
            a: (EST, [2]),
            d1: (EST, [2]),
            d2: (EST_RPL, [1]),
            f1: (EST, [2]),
            last: (EST, [2]),
            late: (EST, [2]),
        },
        expect_conntrack_lines=1,
    )


@scenario
def tcp_rst_in_and_out_of_window():
    t = Timeline()
    _handshake(t, 40002)
    t.send("A", tcp("A", "B", 40002, 80, "PA", 1001, 5001, b"V" * 10))
    bad = t.send("B", tcp("B", "A", 80, 40002, "R", 5001 + 3_000_000))
    good = t.send("B", tcp("B", "A", 80, 40002, "R", 5001))
    t.send("A", tcp("A", "B", 40002, 80, "PA", 1011, 5001, b"W" * 10))
    syn = t.send("A", tcp("A", "B", 40002, 80, "S", 777_000))
    return Scenario(
        "tcp_rst_in_and_out_of_window",
        FIREWALL,
        t.packets,
        expect={bad: (INV, []), good: (EST_RPL, [1]), syn: (NEW, [2])},
        expect_conntrack_lines=1,
    )


@scenario
def tcp_out_of_window():
    t = Timeline()
    _handshake(t, 40004)
    c4 = t.send("A", tcp("A", "B", 40004, 80, "PA", 1001 + 10_000_000, 5001, b"X" * 10))
    c5 = t.send("B", tcp("B", "A", 80, 40004, "PA", 5001 + 10_000_000, 1001, b"Y" * 10))
    c6 = t.send("A", tcp("A", "B", 40004, 80, "PA", 1001, 5001 + 10_000_000, b"Z" * 10))
    c7 = t.send("A", tcp("A", "B", 40004, 80, "PA", 1001, 5001, b"V" * 10))
    c8 = t.send("B", tcp("B", "A", 80, 40004, "A", 5001, 1011))
    return Scenario(
        "tcp_out_of_window",
        FIREWALL,
        t.packets,
        expect={c4: (INV, []), c5: (INV, []), c6: (INV, []), c7: (EST, [2]), c8: (EST_RPL, [1])},
    )


@scenario
def tcp_window_right_edge():
    t = Timeline()
    t.send("A", tcp("A", "B", 40006, 80, "S", 1000, window=65535))
    t.send("B", tcp("B", "A", 80, 40006, "SA", 5000, 1001, window=8192))
    t.send("A", tcp("A", "B", 40006, 80, "A", 1001, 5001, window=65535))
    edge = t.send("A", tcp("A", "B", 40006, 80, "PA", 1001 + 8192 - 100, 5001, b"e" * 100))
    past = t.send("A", tcp("A", "B", 40006, 80, "PA", 1001 + 8192 - 99, 5001, b"f" * 100))
    t.send("B", tcp("B", "A", 80, 40006, "A", 5001, 1001, window=8192))
    return Scenario(
        "tcp_window_right_edge",
        FIREWALL,
        t.packets,
        expect={edge: (EST, [2]), past: (INV, [])},
    )


@scenario
def tcp_midstream_pickup():
    t = Timeline()
    d1 = t.send("A", tcp("A", "B", 40010, 80, "A", 3000, 8000))
    d2 = t.send("B", tcp("B", "A", 80, 40010, "A", 8000, 3000))
    t.send("A", tcp("A", "B", 40010, 80, "PA", 3000, 8000, b"m" * 50))
    t.send("A", tcp("A", "B", 40010, 80, "PA", 3050 + 200_000, 8000, b"n" * 50))
    out = t.send("B", tcp("B", "A", 80, 40011, "A", 9000, 4000))
    return Scenario(
        "tcp_midstream_pickup",
        FIREWALL,
        t.packets,
        expect={d1: (NEW, [2]), d2: (EST_RPL, [1]), out: (NEW, [])},
        expect_conntrack_lines=1,
    )


@scenario
def tcp_port_reuse_after_close():
    t = Timeline()
    _handshake(t, 40020)
    t.send("A", tcp("A", "B", 40020, 80, "FA", 1001, 5001))
    t.send("B", tcp("B", "A", 80, 40020, "FA", 5001, 1002))
    t.send("A", tcp("A", "B", 40020, 80, "A", 1002, 5002))
    syn = t.send("A", tcp("A", "B", 40020, 80, "S", 99_999))
    sa = t.send("B", tcp("B", "A", 80, 40020, "SA", 424_242, 100_000))
    return Scenario(
        "tcp_port_reuse_after_close",
        FIREWALL,
        t.packets,
        expect={syn: (NEW, [2]), sa: (EST_RPL, [1])},
        expect_conntrack_lines=1,
    )


@scenario
def tcp_bad_flags():
    t = Timeline()
    sf = t.send("A", tcp("A", "B", 40030, 80, "SF", 1))
    sr = t.send("A", tcp("A", "B", 40031, 80, "SR", 1))
    null = t.send("A", tcp("A", "B", 40032, 80, "", 1))
    fin = t.send("A", tcp("A", "B", 40033, 80, "F", 1))
    xmas = t.send("A", tcp("A", "B", 40034, 80, "FPU", 1))
    good = t.send("A", tcp("A", "B", 40035, 80, "S", 1))
    return Scenario(
        "tcp_bad_flags",
        FIREWALL,
        t.packets,
        expect={
            sf: (INV, []),
            sr: (INV, []),
            null: (INV, []),
            fin: (INV, []),
            xmas: (INV, []),
            good: (NEW, [2]),
        },
        expect_conntrack_lines=1,
    )


@scenario
def tcp_unsolicited_and_pickup_flags():
    t = Timeline()
    sa = t.send("B", tcp("B", "A", 80, 40040, "SA", 7000, 2001))
    syn = t.send("B", tcp("B", "A", 5555, 22, "S", 9000))
    ack = t.send("B", tcp("B", "A", 80, 40040, "A", 7001, 2001))
    ra = t.send("A", tcp("A", "B", 40041, 80, "RA", 10, 20))
    fa = t.send("A", tcp("A", "B", 40042, 80, "FA", 10, 20))
    return Scenario(
        "tcp_unsolicited_and_pickup_flags",
        FIREWALL,
        t.packets,
        expect={sa: (INV, []), syn: (NEW, []), ack: (NEW, []), ra: (NEW, [2]), fa: (NEW, [2])},
    )


@scenario
def tcp_syn_sent_timer():
    t = Timeline()
    t.send("A", tcp("A", "B", 40050, 80, "S", 1000), at=0)
    t.send("A", tcp("A", "B", 40051, 80, "S", 1000), at=1)
    alive = t.send("B", tcp("B", "A", 80, 40050, "SA", 5000, 1001), at=29_999)
    gone = t.send("B", tcp("B", "A", 80, 40051, "SA", 5000, 1001), at=30_001)
    t.send("A", tcp("A", "B", 40050, 80, "A", 1001, 5001), at=30_002)
    return Scenario(
        "tcp_syn_sent_timer",
        FIREWALL,
        t.packets,
        expect={alive: (EST_RPL, [1]), gone: (INV, [])},
        expect_conntrack_lines=1,
    )


@scenario
def tcp_one_sided_stream_timer():
    t = Timeline()
    t.send("A", tcp("A", "B", 40060, 80, "S", 1000), at=0)
    seq = 1001
    for at in (10_000, 20_000, 29_999):
        t.send("A", tcp("A", "B", 40060, 80, "PA", seq, 0, b"o" * 10), at=at)
        seq += 10
    after = t.send("A", tcp("A", "B", 40060, 80, "PA", seq, 0, b"o" * 10), at=30_000)
    return Scenario(
        "tcp_one_sided_stream_timer",
        FIREWALL,
        t.packets,
        expect={2: (EST, [2]), 4: (EST, [2]), after: (NEW, [2])},
        expect_conntrack_lines=1,
        about="a one-sided stream expires 30 s after its first packet; data does not refresh it",
    )


@scenario
def icmp_echo_answered_and_not():
    t = Timeline()
    r1 = t.send("A", icmp_echo("A", "B", 77, 1))
    r2 = t.send("B", icmp_echo("B", "A", 77, 1, reply=True))
    r3 = t.send("A", icmp_echo("A", "B", 78, 1))
    r4 = t.send("A", icmp_echo("A", "B", 78, 2))
    r5 = t.send("B", icmp_echo("B", "A", 79, 1, reply=True))
    r6 = t.send("B", icmp_echo("B", "A", 77, 2, reply=True), at=30_000)
    return Scenario(
        "icmp_echo",
        FIREWALL,
        t.packets,
        expect={
            r1: (NEW, [2]),
            r2: (EST_RPL, [1]),
            r3: (NEW, [2]),
            r4: (NEW, [2]),
            r5: (INV, []),
            r6: (EST_RPL, [1]),
        },
        expect_conntrack_lines=2,
    )


@scenario
def icmp_related_udp():
    t = Timeline()
    probe = udp("A", "B", 33434, 33435)
    t.send("A", probe)
    peer = t.send("B", icmp_error("B", "A", probe))
    router = t.send("R", icmp_error("R", "A", probe, type_=11, code=0))
    other = udp("A", "B", 33436, 33437)
    unsolicited = t.send("B", icmp_error("B", "A", other))
    spoofed = t.send("R", icmp_error("R", "C", probe))
    again = t.send("A", probe)
    return Scenario(
        "icmp_related_udp",
        FIREWALL,
        t.packets,
        expect={
            peer: (REL_RPL, [1]),
            router: (REL_RPL, [1]),
            unsolicited: (INV, []),
            spoofed: (INV, []),
            again: (NEW, [2]),
        },
        expect_conntrack_lines=1,
        about="related errors never make the UDP flow est; unsolicited or mismatched ones are inv",
    )


@scenario
def icmp_related_tcp():
    t = Timeline()
    syn = tcp("A", "B", 40070, 80, "S", 1000)
    t.send("A", syn)
    peer = t.send("B", icmp_error("B", "A", syn))
    router = t.send("R", icmp_error("R", "A", syn, type_=3, code=1))
    t.send("B", tcp("B", "A", 80, 40070, "SA", 5000, 1001))
    full = t.send("B", icmp_error("B", "A", syn, keep=40))
    return Scenario(
        "icmp_related_tcp",
        FIREWALL,
        t.packets,
        expect={peer: (REL_RPL, [1]), router: (REL_RPL, [1]), full: (REL_RPL, [1])},
        expect_conntrack_lines=1,
    )


@scenario
def icmpv6_echo_and_related():
    t = Timeline()
    e1 = t.send("A", icmp6_echo("A", "B", 300, 1))
    e2 = t.send("B", icmp6_echo("B", "A", 300, 1, reply=True))
    probe = udp("A", "B", 33500, 33501, v6=True)
    t.send("A", probe)
    rel = t.send("B", icmp6_error("B", "A", probe))
    syn = tcp("A", "B", 40080, 80, "S", 1000, v6=True)
    t.send("A", syn)
    short = t.send("B", icmp6_error("B", "A", syn, keep=48))
    full = t.send("B", icmp6_error("B", "A", syn, keep=60))
    return Scenario(
        "icmpv6_echo_and_related",
        FIREWALL,
        t.packets,
        expect={
            e1: (NEW, [2]),
            e2: (EST_RPL, [1]),
            rel: (REL_RPL, [1]),
            short: (INV, []),
            full: (REL_RPL, [1]),
        },
        expect_conntrack_lines=3,
    )


@scenario
def ipv6_tcp_udp():
    t = Timeline()
    s, sa, a = _handshake(t, 41000, v6=True)
    d = t.send("A", tcp("A", "B", 41000, 80, "PA", 1001, 5001, b"6" * 30, v6=True))
    t.send("B", tcp("B", "A", 80, 41000, "A", 5001, 1031, v6=True))
    u1 = t.send("A", udp("A", "B", 5353, 53, v6=True))
    u2 = t.send("B", udp("B", "A", 53, 5353, v6=True))
    u3 = t.send("B", udp("B", "A", 53, 5354, v6=True))
    return Scenario(
        "ipv6_tcp_udp",
        FIREWALL,
        t.packets,
        expect={
            s: (NEW, [2]),
            sa: (EST_RPL, [1]),
            a: (EST, [2]),
            d: (EST, [2]),
            u1: (NEW, [2]),
            u2: (EST_RPL, [1]),
            u3: (NEW, []),
        },
        expect_conntrack_lines=2,
    )


@scenario
def icmpv6_neighbour_discovery_inv():
    t = Timeline()
    ns = t.send("A", bytes(ip6("A", "B", hlim=255) / ICMPv6ND_NS(tgt="fd00::2")))
    na = t.send("B", bytes(ip6("B", "A", hlim=255) / ICMPv6ND_NA(tgt="fd00::2", R=0, S=1, O=1)))
    e = t.send("A", icmp6_echo("A", "B", 9, 1))
    return Scenario(
        "icmpv6_neighbour_discovery_inv",
        FIREWALL,
        t.packets,
        expect={ns: (INV, []), na: (INV, []), e: (NEW, [2])},
        expect_conntrack_lines=1,
    )


@scenario
def generic_protocols():
    t = Timeline()
    v1 = t.send("A", raw_ip4("A", "B", 112))
    v2 = t.send("B", raw_ip4("B", "A", 112))
    v3 = t.send("A", raw_ip4("A", "B", 112))
    t.send("A", raw_ip4("A", "B", 132, b"\x13\x88\x13\x89" + b"\0" * 16))
    t.send("A", raw_ip4("A", "B", 132, b"\x13\x8a\x13\x8b" + b"\0" * 16))
    gre = t.send("B", raw_ip4("B", "A", 47))
    return Scenario(
        "generic_protocols",
        FIREWALL,
        t.packets,
        expect={v1: (NEW, [2]), v2: (EST_RPL, [1]), v3: (EST, [2]), gre: (NEW, [])},
        expect_conntrack_lines=2,
        about="VRRP (112), SCTP (132: both associations share one entry), GRE from outside",
    )


def _big_udp(src: str, dst: str, sport: int, dport: int, size: int, ident: int):
    """An IPv4 UDP datagram (no Ethernet) of ``size`` payload bytes, for fragment()."""
    data = (bytes(range(256)) * (size // 256 + 1))[:size]
    return IP(src=IP4[src], dst=IP4[dst], id=ident) / UDP(sport=sport, dport=dport) / Raw(data)


def _frags(src: str, dst: str, sport: int, ident: int) -> list[bytes]:
    """A 3000-byte UDP datagram from ``src`` cut into three 1400-byte-payload fragments."""
    pieces = fragment(_big_udp(src, dst, sport, 53, 3000, ident), 1400)
    return [bytes(eth(src, dst) / p) for p in pieces]


@scenario
def ipv4_fragments():
    t = Timeline()
    frags = _frags("A", "B", 7100, 0x1111)
    assert len(frags) == 3
    for f in frags:
        last_in_order = t.send("A", f)
    reply = t.send("B", udp("B", "A", 53, 7100))
    frags2 = _frags("A", "B", 7101, 0x2222)
    t.send("A", frags2[2])
    t.send("A", frags2[0])
    last_ooo = t.send("A", frags2[1])
    lone = _frags("A", "B", 7102, 0x3333)[1]
    lone_n = t.send("A", lone)
    t.send("A", udp("A", "B", 7103, 53))
    return Scenario(
        "ipv4_fragments",
        FIREWALL,
        t.packets,
        expect={
            1: ("", []),  # held by reassembly: only the pre-ct rule reported
            last_in_order: (NEW, [2, 2, 2]),
            reply: (EST_RPL, [1]),
            last_ooo: (NEW, [2, 2, 2]),
            lone_n: ("", []),
        },
        about="fragments are reassembled before ct; all fragments leave with the last one",
    )


@scenario
def ipv6_fragments():
    t = Timeline()
    payload = UDP(sport=7200, dport=53) / Raw(bytes(range(256)) * 12)
    whole = IPv6(src=A6, dst=B6) / IPv6ExtHdrFragment(id=0x77) / payload
    frags = [bytes(eth("A", "B") / f) for f in fragment6(whole, 1400)]
    assert len(frags) == 3
    for f in frags:
        last = t.send("A", f)
    reply = t.send("B", udp("B", "A", 53, 7200, v6=True))
    lone = t.send("A", frags[1][:14] + frags[1][14:])
    return Scenario(
        "ipv6_fragments",
        FIREWALL,
        t.packets,
        expect={1: ("", []), last: (NEW, [2, 2, 2]), reply: (EST_RPL, [1]), lone: ("", [])},
        expect_conntrack_lines=1,
    )


def _eth_type(src: str, dst: str, ethertype: int) -> bytes:
    return bytes(eth(src, dst))[:12] + ethertype.to_bytes(2, "big")


@scenario
def malformed_l2_l3():
    t = Timeline()
    good = udp("A", "B", 8000, 53)
    t.send("A", good)
    vlan = t.send("A", _eth_type("A", "B", 0x8100) + b"\x00\x05")
    l3 = t.send("A", _eth_type("A", "B", 0x0800) + good[14:24])
    ihl = t.send("A", bytes(ip4("A", "B", ihl=4) / UDP(sport=8000, dport=53) / Raw(b"i" * 8)))
    t.send("A", bytes(ip4("A", "B", len=2000) / UDP(sport=8000, dport=53) / Raw(b"l" * 8)))
    t.send("A", bytes(ip4("A", "B", len=12) / UDP(sport=8000, dport=53) / Raw(b"s" * 8)))
    csum = t.send("A", bytes(ip4("A", "B", chksum=0x1234) / UDP(sport=8001, dport=53)))
    t.send("A", bytes(ip4("A", "B", version=5) / UDP(sport=8000, dport=53)))
    reply = t.send("B", udp("B", "A", 53, 8000))
    return Scenario(
        "malformed_l2_l3",
        FIREWALL,
        t.packets,
        expect={
            vlan: ("", []),
            l3: (INV, []),  # ethertype IPv4 is enough for the "ip" rule
            ihl: (INV, []),
            csum: (INV, []),
            reply: (EST_RPL, [1]),
        },
        expect_conntrack_lines=1,
    )


@scenario
def malformed_l4():
    t = Timeline()
    t.send("A", udp("A", "B", 8100, 53))
    ucsum = t.send("A", bytes(ip4("A", "B") / UDP(sport=8101, dport=53, chksum=0x1234) / Raw(b"c")))
    zero = t.send("A", bytes(ip4("A", "B") / UDP(sport=8102, dport=53, chksum=0) / Raw(b"z")))
    tcsum = t.send("A", bytes(ip4("A", "B") / TCP(sport=40100, dport=80, flags="S", chksum=0x1)))
    doff = t.send("A", bytes(ip4("A", "B") / TCP(sport=40101, dport=80, flags="S", dataofs=15)))
    short = bytes(ip4("A", "B", proto=6) / Raw(tcp("A", "B", 40102, 80, "S", 1)[34:44]))
    trunc = t.send("A", short)
    p0 = t.send("A", udp("A", "B", 8103, 0))
    tp0 = t.send("A", tcp("A", "B", 0, 80, "S", 1))
    reply = t.send("B", udp("B", "A", 53, 8100))
    return Scenario(
        "malformed_l4",
        FIREWALL,
        t.packets,
        expect={
            ucsum: (INV, []),
            zero: (NEW, [2]),
            tcsum: (INV, []),
            doff: (INV, []),
            trunc: (INV, []),
            p0: (INV, []),
            tp0: (INV, []),
            reply: (EST_RPL, [1]),
        },
        expect_conntrack_lines=2,
    )
