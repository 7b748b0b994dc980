"""NAT oracle scenarios: ct(nat) pipelines played through OVS (and, once supported, ctaccel).

What: ``NAT_SCENARIOS`` lists scenarios for source and destination NAT through the userspace
connection tracker: SNAT to one address (UDP, TCP, ICMP echo, IPv4 and IPv6), SNAT with a port
range (including exhaustion), source-port collisions, DNAT to a backend (address, address and
port), DNAT then SNAT in two zones, ICMP errors about NATed flows, NAT with ct_mark/ct_label,
a repeated ct(nat) and a bare ct(commit,nat). Each is a ``NatScenario`` (a ``Scenario`` with
two extras: whether OVS's emitted frames are deterministic, and decoded facts about them).

Design: addresses nobody owns are NAT4/NAT6 (the SNAT address) and VIP4/VIP6 (a virtual IP
DNATed to B); frames to or from them are built with the ``*_via`` helpers of ``frames.py``.
OVS 3.1 picks an address/port inside a range starting from a hash salted with a per-process
random basis, so when a scenario lets OVS choose among several ports, which connection gets
which port varies between OVS runs: such scenarios are listed in ``NONDETERMINISTIC_FRAMES``
and compared on ports, ct_state and conntrack shape only. A single address, a one-port range
and the "keep the source port if free, else the next one" rule of SNAT without a port range
are deterministic. Expectations were checked against OVS 3.1.0 (test_oracle_nat_driver.py).

Invariants: same as ``scenarios.py`` (times strictly increase, 3-30 packets, unique names,
1-based packet numbers); nothing here is in ``SCENARIOS``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .frames import (
    Timeline,
    icmp6_echo,
    icmp6_error,
    icmp_echo,
    icmp_error,
    tcp,
    udp,
)
from .scenarios import INV, NEW, Scenario

NAT4, VIP4 = "10.1.1.240", "10.1.1.100"
NAT6, VIP6 = "fd00::f0", "fd00::64"

# ct_state strings as OVS prints them with NAT flags
EST_SNAT, EST_DNAT = "est|trk|snat", "est|trk|dnat"
EST_RPL_SNAT, EST_RPL_DNAT = "est|rpl|trk|snat", "est|rpl|trk|dnat"
REL_RPL_DNAT = "rel|rpl|trk|dnat"
NEW_SNAT = "new|trk|snat"
A4, B4, C4 = "10.1.1.1", "10.1.1.2", "10.1.1.3"


@dataclass
class NatScenario(Scenario):
    # False when OVS may pick different NAT ports on another run (see module docstring)
    deterministic_frames: bool = True
    # packet number -> [(port, {fact: value})] for the frames OVS emits, per port in order;
    # facts: src, dst (outer IP), sport, dport (outer TCP/UDP), id (ICMP echo id),
    # inner_src, inner_dst, inner_sport, inner_dport (the packet an ICMP error quotes),
    # udp_chksum, inner_udp_chksum (raw UDP checksum fields). A frozenset value means "one of these"; facts
    # of nondeterministic scenarios only name what does not depend on OVS's random choice.
    frame_facts: dict[int, list[tuple[int, dict]]] = field(default_factory=dict)
    # substrings that must each appear in some dump-conntrack line at the end
    conntrack_contains: list[str] = field(default_factory=list)


def udp_checksum(frame: bytes) -> int:
    """The UDP checksum field of an Ethernet+IP+UDP frame (no options, no extension headers)."""
    l4 = 14 + (20 if frame[12:14] == b"\x08\x00" else 40)
    return int.from_bytes(frame[l4 + 6 : l4 + 8], "big")


NAT_SCENARIOS: list[NatScenario] = []
NONDETERMINISTIC_FRAMES: set[str] = set()


def nat_scenario(fn):
    """Register the NatScenario that ``fn()`` builds."""
    s = fn()
    assert 3 <= len(s.packets) <= 30, (s.name, len(s.packets))
    assert s.name not in {x.name for x in NAT_SCENARIOS}, s.name
    NAT_SCENARIOS.append(s)
    if not s.deterministic_frames:
        NONDETERMINISTIC_FRAMES.add(s.name)
    return fn


def snat_pipeline(nat: str, zone: int = 7, l3: str = "ip") -> str:
    """Inside A (port 1) and C (port 3) reach outside (port 2) through ``ct(commit,nat(...))``
    (``l3`` is "ip" or "ipv6": NAT needs the L3 type in the match); both directions first
    pass ``ct(nat)`` so established traffic is (un-)NATed; replies are routed by their
    un-NATed destination address."""
    commit = f"ct(commit,zone={zone},{nat})"
    dst_c = "nw_dst=10.1.1.3" if l3 == "ip" else "ipv6_dst=fd00::3"
    return f"""
table=0,priority=10,{l3},actions=ct(table=1,zone={zone},nat)
table=0,priority=1,actions=drop
table=1,priority=10,{l3},in_port=1,ct_state=+trk+new,actions={commit},output:2
table=1,priority=10,{l3},in_port=3,ct_state=+trk+new,actions={commit},output:2
table=1,priority=10,in_port=1,ct_state=+trk+est,actions=output:2
table=1,priority=10,in_port=3,ct_state=+trk+est,actions=output:2
table=1,priority=10,in_port=2,ct_state=+trk+est,{l3},{dst_c},actions=output:3
table=1,priority=10,in_port=2,ct_state=+trk+rel,{l3},{dst_c},actions=output:3
table=1,priority=9,in_port=2,ct_state=+trk+est,actions=output:1
table=1,priority=9,in_port=2,ct_state=+trk+rel,actions=output:1
table=1,priority=1,actions=drop
"""


SNAT_ONE = snat_pipeline(f"nat(src={NAT4})")
SNAT_ONE6 = snat_pipeline(f"nat(src={NAT6})", l3="ipv6")


@nat_scenario
def nat_snat_udp():
    t = Timeline()
    n1 = t.send("A", udp("A", "B", 40000, 53))
    n2 = t.send("B", udp("B", "A", 53, 40000, dst_ip=NAT4))
    n3 = t.send("A", udp("A", "B", 40000, 53))
    n4 = t.send("B", udp("B", "A", 53, 40000))  # to A's own address: not this connection
    n5 = t.send("B", udp("B", "A", 53, 40001, dst_ip=NAT4))  # no such NAT binding
    n6 = t.send("A", udp("A", "B", 40001, 53, chksum=0))  # IPv4 UDP without checksum
    n7 = t.send("B", udp("B", "A", 53, 40001, dst_ip=NAT4, chksum=0))
    # after SNAT this datagram's checksum computes to 0, which UDP sends as 0xffff
    n8 = t.send("A", udp("A", "B", 40002, 53, data=b"u" * 14 + (5661).to_bytes(2, "big")))
    return NatScenario(
        "nat_snat_udp",
        SNAT_ONE,
        t.packets,
        expect={
            n1: (NEW, [2]),
            n2: (EST_RPL_DNAT, [1]),
            n3: (EST_SNAT, [2]),
            n4: (NEW, []),
            n5: (NEW, []),
            n6: (NEW, [2]),
            n7: (EST_RPL_DNAT, [1]),
            n8: (NEW, [2]),
        },
        expect_conntrack_lines=3,
        frame_facts={
            n1: [(2, {"src": NAT4, "dst": B4, "sport": 40000, "dport": 53})],
            n2: [(1, {"src": B4, "dst": A4, "sport": 53, "dport": 40000})],
            n3: [(2, {"src": NAT4, "sport": 40000})],
            n6: [(2, {"src": NAT4, "sport": 40001, "udp_chksum": 0})],
            n7: [(1, {"dst": A4, "dport": 40001, "udp_chksum": 0})],
            n8: [(2, {"src": NAT4, "sport": 40002, "udp_chksum": 0xFFFF})],
        },
        conntrack_contains=[
            "udp,orig=(src=10.1.1.1,dst=10.1.1.2,sport=40000,dport=53),"
            "reply=(src=10.1.1.2,dst=10.1.1.240,sport=53,dport=40000),zone=7"
        ],
        about="SNAT to one address keeps the source port; replies are un-NATed by ct(nat) "
        "(the reply direction shows +dnat, later originals +snat); a zero UDP checksum stays 0, "
        "one that becomes 0 is sent as 0xffff",
    )


def _tcp_session(t: Timeline, a: str, b: str, sport: int, dport: int, *, b_out=None, a_in=None,
                 v6=False):  # fmt: skip
    """A full TCP session from ``a`` to ``b`` addressed to ``b_out`` (default: b's address);
    ``b`` answers to ``a_in`` (default: a's address). Returns the packet numbers of (syn,
    synack, ack, data from a, data from b, fin from a, fin from b, last ack)."""
    kw_a = {"dst_ip": b_out, "v6": v6}
    kw_b = {"dst_ip": a_in, "v6": v6}
    return [
        t.send(a, tcp(a, b, sport, dport, "S", 1000, **kw_a)),
        t.send(b, tcp(b, a, dport, sport, "SA", 5000, 1001, **kw_b)),
        t.send(a, tcp(a, b, sport, dport, "A", 1001, 5001, **kw_a)),
        t.send(a, tcp(a, b, sport, dport, "PA", 1001, 5001, data=b"x" * 20, **kw_a)),
        t.send(b, tcp(b, a, dport, sport, "PA", 5001, 1021, data=b"y" * 30, **kw_b)),
        t.send(a, tcp(a, b, sport, dport, "FA", 1021, 5031, **kw_a)),
        t.send(b, tcp(b, a, dport, sport, "FA", 5031, 1022, **kw_b)),
        t.send(a, tcp(a, b, sport, dport, "A", 1022, 5032, **kw_a)),
    ]


def _session_expect(numbers, orig_state: str, reply_state: str, orig_out, reply_out):
    """Expectations for the packets of ``_tcp_session`` (the SYN is new)."""
    syn, synack, ack, d_a, d_b, fin_a, fin_b, last = numbers
    expect = {syn: (NEW, orig_out)}
    for n in (ack, d_a, fin_a, last):
        expect[n] = (orig_state, orig_out)
    for n in (synack, d_b, fin_b):
        expect[n] = (reply_state, reply_out)
    return expect


@nat_scenario
def nat_snat_tcp():
    t = Timeline()
    session = _tcp_session(t, "A", "B", 40000, 80, a_in=NAT4)
    syn, synack, _ack, d_a, d_b, _fin_a, _fin_b, last = session
    late = t.send("B", tcp("B", "A", 80, 40000, "A", 5032, 1022))  # to A directly
    return NatScenario(
        "nat_snat_tcp",
        SNAT_ONE,
        t.packets,
        expect={**_session_expect(session, EST_SNAT, EST_RPL_DNAT, [2], [1]), late: (NEW, [])},
        expect_conntrack_lines=1,
        frame_facts={
            syn: [(2, {"src": NAT4, "dst": B4, "sport": 40000, "dport": 80})],
            synack: [(1, {"src": B4, "dst": A4, "dport": 40000})],
            d_a: [(2, {"src": NAT4})],
            d_b: [(1, {"dst": A4})],
            last: [(2, {"src": NAT4, "sport": 40000})],
        },
        conntrack_contains=[
            "tcp,orig=(src=10.1.1.1,dst=10.1.1.2,sport=40000,dport=80),"
            "reply=(src=10.1.1.2,dst=10.1.1.240,sport=80,dport=40000),zone=7,"
            "protoinfo=(state=TIME_WAIT)"
        ],
        about="TCP handshake, data both ways and FIN close through SNAT",
    )


@nat_scenario
def nat_snat_single_port_exhaustion():
    flows = snat_pipeline(f"nat(src={NAT4}:5000)")
    t = Timeline()
    u1 = t.send("A", udp("A", "B", 40000, 53))
    u2 = t.send("A", udp("A", "B", 40001, 53))  # the only port is taken: NAT fails
    r1 = t.send("B", udp("B", "A", 53, 5000, dst_ip=NAT4))
    u2b = t.send("A", udp("A", "B", 40001, 53))
    tc = t.send("A", tcp("A", "B", 40000, 80, "S", 1))  # another protocol: port 5000 free
    r2 = t.send("B", tcp("B", "A", 80, 5000, "SA", 9, 2, dst_ip=NAT4))
    u1b = t.send("A", udp("A", "B", 40000, 53))
    return NatScenario(
        "nat_snat_single_port_exhaustion",
        flows,
        t.packets,
        expect={
            u1: (NEW, [2]),
            u2: (NEW, [2]),
            r1: (EST_RPL_DNAT, [1]),
            u2b: (NEW, [2]),
            tc: (NEW, [2]),
            r2: (EST_RPL_DNAT, [1]),
            u1b: (EST_SNAT, [2]),
        },
        expect_conntrack_lines=2,
        frame_facts={
            u1: [(2, {"src": NAT4, "sport": 5000})],
            u2: [(2, {"src": A4, "sport": 40001})],  # sent on un-NATed, nothing committed
            r1: [(1, {"dst": A4, "dport": 40000})],
            u2b: [(2, {"src": A4, "sport": 40001})],
            tc: [(2, {"src": NAT4, "sport": 5000})],
            r2: [(1, {"dst": A4, "dport": 40000})],
            u1b: [(2, {"src": NAT4, "sport": 5000})],
        },
        conntrack_contains=["reply=(src=10.1.1.2,dst=10.1.1.240,sport=53,dport=5000),zone=7"],
        about="a one-port range is deterministic; when it is taken the commit fails silently: "
        "the packet goes on un-NATed, still new, and no connection is created",
    )


@nat_scenario
def nat_snat_port_range_exhaustion():
    flows = snat_pipeline(f"nat(src={NAT4}:5000-5001)")
    both = frozenset({5000, 5001})
    t = Timeline()
    u1 = t.send("A", udp("A", "B", 40000, 53))
    u2 = t.send("A", udp("A", "B", 40001, 53))
    u3 = t.send("A", udp("A", "B", 40002, 53))  # both ports taken
    r1 = t.send("B", udp("B", "A", 53, 5000, dst_ip=NAT4))
    r2 = t.send("B", udp("B", "A", 53, 5001, dst_ip=NAT4))
    u3b = t.send("A", udp("A", "B", 40002, 53))
    u1b = t.send("A", udp("A", "B", 40000, 53))
    return NatScenario(
        "nat_snat_port_range_exhaustion",
        flows,
        t.packets,
        expect={
            u1: (NEW, [2]),
            u2: (NEW, [2]),
            u3: (NEW, [2]),
            r1: (EST_RPL_DNAT, [1]),
            r2: (EST_RPL_DNAT, [1]),
            u3b: (NEW, [2]),
            u1b: (EST_SNAT, [2]),
        },
        expect_conntrack_lines=2,
        deterministic_frames=False,
        frame_facts={
            u1: [(2, {"src": NAT4, "sport": both})],
            u2: [(2, {"src": NAT4, "sport": both})],
            u3: [(2, {"src": A4, "sport": 40002})],
            r1: [(1, {"dst": A4, "dport": frozenset({40000, 40001})})],
            u3b: [(2, {"src": A4, "sport": 40002})],
            u1b: [(2, {"src": NAT4, "sport": both})],
        },
        about="a two-port range: which flow gets which port depends on OVS's hash basis; "
        "the third flow finds no port and leaves un-NATed without a connection",
    )


@nat_scenario
def nat_snat_sport_collision():
    t = Timeline()
    a1 = t.send("A", tcp("A", "B", 40000, 80, "S", 100))
    a2 = t.send("A", udp("A", "B", 40001, 80))
    c1 = t.send("C", tcp("C", "B", 40000, 80, "S", 200))  # 40000 taken (TCP) -> next
    c2 = t.send("C", udp("C", "B", 40001, 80))  # 40001 taken (UDP) -> 40002
    c3 = t.send("C", udp("C", "B", 40000, 80))  # UDP 40000 is free
    rc1 = t.send("B", tcp("B", "C", 80, 40001, "SA", 900, 201, dst_ip=NAT4))
    ra1 = t.send("B", tcp("B", "A", 80, 40000, "SA", 800, 101, dst_ip=NAT4))
    rc2 = t.send("B", udp("B", "C", 80, 40002, dst_ip=NAT4))
    lo_a = t.send("A", udp("A", "B", 511, 80))
    lo_c = t.send("C", udp("C", "B", 511, 80))  # 511 taken: band 1-511 wraps to 1
    mid_a = t.send("A", udp("A", "B", 1023, 80))
    mid_c = t.send("C", udp("C", "B", 1023, 80))  # band 600-1023 wraps to 600
    hi_a = t.send("A", udp("A", "B", 65535, 80))
    hi_c = t.send("C", udp("C", "B", 65535, 80))  # band 1024-65535 wraps to 1024
    r_lo = t.send("B", udp("B", "C", 80, 1, dst_ip=NAT4))
    new_out = {n: (NEW, [2]) for n in (a1, a2, c1, c2, c3, lo_a, lo_c, mid_a, mid_c, hi_a, hi_c)}
    return NatScenario(
        "nat_snat_sport_collision",
        SNAT_ONE,
        t.packets,
        expect={
            **new_out,
            rc1: (EST_RPL_DNAT, [3]),
            ra1: (EST_RPL_DNAT, [1]),
            rc2: (EST_RPL_DNAT, [3]),
            r_lo: (EST_RPL_DNAT, [3]),
        },
        expect_conntrack_lines=11,
        frame_facts={
            a1: [(2, {"src": NAT4, "sport": 40000})],
            a2: [(2, {"src": NAT4, "sport": 40001})],
            c1: [(2, {"src": NAT4, "sport": 40001})],
            c2: [(2, {"src": NAT4, "sport": 40002})],
            c3: [(2, {"src": NAT4, "sport": 40000})],
            rc1: [(3, {"dst": C4, "dport": 40000})],
            ra1: [(1, {"dst": A4, "dport": 40000})],
            rc2: [(3, {"dst": C4, "dport": 40001})],
            lo_a: [(2, {"sport": 511})],
            lo_c: [(2, {"sport": 1})],
            mid_a: [(2, {"sport": 1023})],
            mid_c: [(2, {"sport": 600})],
            hi_a: [(2, {"sport": 65535})],
            hi_c: [(2, {"sport": 1024})],
            r_lo: [(3, {"dst": C4, "dport": 511})],
        },
        conntrack_contains=[
            "udp,orig=(src=10.1.1.3,dst=10.1.1.2,sport=1023,dport=80),"
            "reply=(src=10.1.1.2,dst=10.1.1.240,sport=80,dport=600),zone=7"
        ],
        about="SNAT without a port range keeps the source port if free, else the next free one "
        "in its band (1-511, 600-1023, 1024-65535), wrapping to the band's start",
    )


DNAT = f"""
table=0,priority=10,ip,actions=ct(table=1,zone=3,nat)
table=0,priority=1,actions=drop
table=1,priority=20,in_port=1,tcp,nw_dst={VIP4},tp_dst=80,ct_state=+trk+new,actions=ct(commit,zone=3,nat(dst=10.1.1.2)),output:2
table=1,priority=20,in_port=1,tcp,nw_dst={VIP4},tp_dst=81,ct_state=+trk+new,actions=ct(commit,zone=3,nat(dst=10.1.1.2:8080)),output:2
table=1,priority=10,in_port=1,ct_state=+trk+est+dnat,actions=output:2
table=1,priority=10,in_port=2,ct_state=+trk+est+snat,actions=output:1
table=1,priority=5,in_port=2,ct_state=+trk+est,actions=output:3
table=1,priority=1,actions=drop
"""  # noqa: E501


@nat_scenario
def nat_dnat_vip_tcp():
    t = Timeline()
    session = _tcp_session(t, "A", "B", 40000, 80, b_out=VIP4)
    syn, synack, _ack, d_a, d_b, _fin_a, _fin_b, _last = session
    direct = t.send("A", tcp("A", "B", 40001, 80, "S", 7))  # not the VIP: no rule
    return NatScenario(
        "nat_dnat_vip_tcp",
        DNAT,
        t.packets,
        expect={**_session_expect(session, EST_DNAT, EST_RPL_SNAT, [2], [1]), direct: (NEW, [])},
        expect_conntrack_lines=1,
        frame_facts={
            syn: [(2, {"src": A4, "dst": B4, "sport": 40000, "dport": 80})],
            synack: [(1, {"src": VIP4, "dst": A4, "sport": 80})],
            d_a: [(2, {"dst": B4})],
            d_b: [(1, {"src": VIP4})],
        },
        conntrack_contains=[
            "tcp,orig=(src=10.1.1.1,dst=10.1.1.100,sport=40000,dport=80),"
            "reply=(src=10.1.1.2,dst=10.1.1.1,sport=80,dport=40000),zone=3"
        ],
        about="DNAT of a virtual IP to B; originals show +dnat, B's replies +snat and leave "
        "with the VIP as source",
    )


@nat_scenario
def nat_dnat_vip_port_tcp():
    t = Timeline()
    syn = t.send("A", tcp("A", "B", 40000, 81, "S", 1000, dst_ip=VIP4))
    synack = t.send("B", tcp("B", "A", 8080, 40000, "SA", 5000, 1001))
    ack = t.send("A", tcp("A", "B", 40000, 81, "A", 1001, 5001, dst_ip=VIP4))
    d_a = t.send("A", tcp("A", "B", 40000, 81, "PA", 1001, 5001, dst_ip=VIP4, data=b"q"))
    d_b = t.send("B", tcp("B", "A", 8080, 40000, "PA", 5001, 1002, data=b"r" * 5))
    stray = t.send("B", tcp("B", "A", 81, 40000, "A", 5006, 1002))  # wrong port: not it
    return NatScenario(
        "nat_dnat_vip_port_tcp",
        DNAT,
        t.packets,
        expect={
            syn: (NEW, [2]),
            synack: (EST_RPL_SNAT, [1]),
            ack: (EST_DNAT, [2]),
            d_a: (EST_DNAT, [2]),
            d_b: (EST_RPL_SNAT, [1]),
            stray: (NEW, []),
        },
        expect_conntrack_lines=1,
        frame_facts={
            syn: [(2, {"src": A4, "dst": B4, "sport": 40000, "dport": 8080})],
            synack: [(1, {"src": VIP4, "dst": A4, "sport": 81, "dport": 40000})],
            d_a: [(2, {"dst": B4, "dport": 8080})],
            d_b: [(1, {"src": VIP4, "sport": 81})],
        },
        conntrack_contains=[
            "tcp,orig=(src=10.1.1.1,dst=10.1.1.100,sport=40000,dport=81),"
            "reply=(src=10.1.1.2,dst=10.1.1.1,sport=8080,dport=40000),zone=3"
        ],
        about="DNAT to an address and port",
    )


DNAT_THEN_SNAT = f"""
table=0,priority=10,ip,in_port=1,actions=ct(table=1,zone=1,nat)
table=0,priority=10,ip,in_port=2,actions=ct(table=3,zone=2,nat)
table=0,priority=1,actions=drop
table=1,priority=10,in_port=1,ct_state=+trk+new,tcp,nw_dst={VIP4},actions=ct(commit,zone=1,nat(dst=10.1.1.2)),ct(table=2,zone=2,nat)
table=1,priority=10,ip,in_port=1,ct_state=+trk+est,actions=ct(table=2,zone=2,nat)
table=2,priority=10,ip,in_port=1,ct_state=+trk+new,actions=ct(commit,zone=2,nat(src={NAT4})),output:2
table=2,priority=10,in_port=1,ct_state=+trk+est,actions=output:2
table=3,priority=10,ip,in_port=2,ct_state=+trk+est,actions=ct(table=4,zone=1,nat)
table=4,priority=10,in_port=2,ct_state=+trk+est,actions=output:1
table=1,priority=1,actions=drop
table=2,priority=1,actions=drop
table=3,priority=1,actions=drop
table=4,priority=1,actions=drop
"""  # noqa: E501


@nat_scenario
def nat_dnat_then_snat_zones():
    t = Timeline()
    session = _tcp_session(t, "A", "B", 40000, 80, b_out=VIP4, a_in=NAT4)
    syn, synack, _ack, d_a, d_b, _fin_a, _fin_b, _last = session
    return NatScenario(
        "nat_dnat_then_snat_zones",
        DNAT_THEN_SNAT,
        t.packets,
        # the last matched rule is zone 2's on the way out, zone 1's on the way back
        expect=_session_expect(session, EST_SNAT, EST_RPL_SNAT, [2], [1]),
        expect_conntrack_lines=2,
        frame_facts={
            syn: [(2, {"src": NAT4, "dst": B4, "sport": 40000, "dport": 80})],
            synack: [(1, {"src": VIP4, "dst": A4, "sport": 80, "dport": 40000})],
            d_a: [(2, {"src": NAT4, "dst": B4})],
            d_b: [(1, {"src": VIP4, "dst": A4})],
        },
        conntrack_contains=[
            "tcp,orig=(src=10.1.1.1,dst=10.1.1.100,sport=40000,dport=80),"
            "reply=(src=10.1.1.2,dst=10.1.1.1,sport=80,dport=40000),zone=1",
            "tcp,orig=(src=10.1.1.1,dst=10.1.1.2,sport=40000,dport=80),"
            "reply=(src=10.1.1.2,dst=10.1.1.240,sport=80,dport=40000),zone=2",
        ],
        about="DNAT in zone 1, then SNAT in zone 2; replies un-SNAT in 2 (+dnat) then un-DNAT "
        "in 1 (+snat)",
    )


@nat_scenario
def nat_icmp_echo_snat():
    t = Timeline()
    q1 = t.send("A", icmp_echo("A", "B", 77, 1))
    p1 = t.send("B", icmp_echo("B", "A", 77, 1, reply=True, dst_ip=NAT4))
    q2 = t.send("A", icmp_echo("A", "B", 77, 2))
    qc = t.send("C", icmp_echo("C", "B", 77, 1))  # same id from C: reply tuple taken
    qc2 = t.send("C", icmp_echo("C", "B", 78, 1))
    pc2 = t.send("B", icmp_echo("B", "C", 78, 1, reply=True, dst_ip=NAT4))
    p2 = t.send("B", icmp_echo("B", "A", 77, 2, reply=True, dst_ip=NAT4))
    return NatScenario(
        "nat_icmp_echo_snat",
        SNAT_ONE,
        t.packets,
        expect={
            q1: (NEW, [2]),
            p1: (EST_RPL_DNAT, [1]),
            q2: (EST_SNAT, [2]),
            qc: (NEW, [2]),
            qc2: (NEW, [2]),
            pc2: (EST_RPL_DNAT, [3]),
            p2: (EST_RPL_DNAT, [1]),
        },
        expect_conntrack_lines=2,
        frame_facts={
            q1: [(2, {"src": NAT4, "dst": B4, "id": 77})],
            p1: [(1, {"src": B4, "dst": A4, "id": 77})],
            q2: [(2, {"src": NAT4, "id": 77})],
            qc: [(2, {"src": C4, "id": 77})],  # NAT failed: sent on as it came
            qc2: [(2, {"src": NAT4, "id": 78})],
            pc2: [(3, {"dst": C4, "id": 78})],
            p2: [(1, {"dst": A4, "id": 77})],
        },
        conntrack_contains=[
            "icmp,orig=(src=10.1.1.1,dst=10.1.1.2,id=77,type=8,code=0),"
            "reply=(src=10.1.1.2,dst=10.1.1.240,id=77,type=0,code=0),zone=7"
        ],
        about="ICMP echo through SNAT; the echo id is never translated, so a second pinger "
        "with the same id cannot be NATed (sent on un-NATed, no connection)",
    )


@nat_scenario
def nat_icmp6_echo_snat():
    t = Timeline()
    q1 = t.send("A", icmp6_echo("A", "B", 99, 1))
    p1 = t.send("B", icmp6_echo("B", "A", 99, 1, reply=True, dst_ip=NAT6))
    q2 = t.send("A", icmp6_echo("A", "B", 99, 2))
    p2 = t.send("B", icmp6_echo("B", "A", 99, 2, reply=True, dst_ip=NAT6))
    return NatScenario(
        "nat_icmp6_echo_snat",
        SNAT_ONE6,
        t.packets,
        expect={
            q1: (NEW, [2]),
            p1: (EST_RPL_DNAT, [1]),
            q2: (EST_SNAT, [2]),
            p2: (EST_RPL_DNAT, [1]),
        },
        expect_conntrack_lines=1,
        frame_facts={
            q1: [(2, {"src": NAT6, "dst": "fd00::2", "id": 99})],
            p1: [(1, {"src": "fd00::2", "dst": "fd00::1", "id": 99})],
            q2: [(2, {"src": NAT6})],
            p2: [(1, {"dst": "fd00::1"})],
        },
        conntrack_contains=[
            "icmpv6,orig=(src=fd00::1,dst=fd00::2,id=99,type=128,code=0),"
            "reply=(src=fd00::2,dst=fd00::f0,id=99,type=129,code=0),zone=7"
        ],
        about="ICMPv6 echo through IPv6 SNAT",
    )


@nat_scenario
def nat_icmp_error_snat():
    t = Timeline()
    u = t.send("A", udp("A", "B", 40000, 53))
    as_sent = udp("A", "B", 40000, 53, src_ip=NAT4)  # what B received
    e1 = t.send("B", icmp_error("B", "A", as_sent, dst_ip=NAT4, keep=0))
    s = t.send("A", tcp("A", "B", 40001, 81, "S", 1000))
    syn_sent = tcp("A", "B", 40001, 81, "S", 1000, src_ip=NAT4)
    e2 = t.send("B", icmp_error("B", "A", syn_sent, dst_ip=NAT4, code=1))
    stray = udp("A", "B", 40009, 53, src_ip=NAT4)  # about nothing OVS knows
    e3 = t.send("B", icmp_error("B", "A", stray, dst_ip=NAT4))
    # port-translated flows from C (40000/UDP and 40001/TCP are A's)
    c_udp = udp("C", "B", 40000, 53)
    cu = t.send("C", c_udp)
    e4 = t.send("B", icmp_error("B", "C", udp("C", "B", 40001, 53, src_ip=NAT4),
                                    dst_ip=NAT4))  # fmt: skip
    ct_ = t.send("C", tcp("C", "B", 40001, 81, "S", 2000))
    c_syn_sent = tcp("C", "B", 40002, 81, "S", 2000, src_ip=NAT4)
    # The whole TCP header is quoted: with only 8 bytes OVS 3.1.0 still updates the quoted
    # TCP checksum when it changes a quoted port, writing past the end of the packet, which
    # corrupts its heap (ovs-vswitchd dies with a random assertion soon after).
    e5 = t.send("B", icmp_error("B", "C", c_syn_sent, dst_ip=NAT4, keep=40))
    return NatScenario(
        "nat_icmp_error_snat",
        SNAT_ONE,
        t.packets,
        expect={
            u: (NEW, [2]),
            e1: (REL_RPL_DNAT, [1]),
            s: (NEW, [2]),
            e2: (REL_RPL_DNAT, [1]),
            e3: (INV, []),
            cu: (NEW, [2]),
            e4: (REL_RPL_DNAT, [3]),
            ct_: (NEW, [2]),
            e5: (REL_RPL_DNAT, [3]),
        },
        expect_conntrack_lines=4,
        frame_facts={
            u: [(2, {"src": NAT4})],
            e1: [
                (
                    1,
                    {
                        "src": B4,
                        "dst": A4,
                        "inner_src": A4,
                        "inner_dst": B4,
                        "inner_sport": 40000,
                        "inner_dport": 53,
                    },
                )
            ],
            s: [(2, {"src": NAT4})],
            e2: [(1, {"dst": A4, "inner_src": A4, "inner_sport": 40001, "inner_dport": 81})],
            cu: [(2, {"src": NAT4, "sport": 40001})],
            # the quoted UDP checksum is updated incrementally: back to what C sent
            e4: [
                (
                    3,
                    {
                        "src": B4,
                        "dst": C4,
                        "inner_src": C4,
                        "inner_sport": 40000,
                        "inner_udp_chksum": udp_checksum(c_udp),
                    },
                )
            ],
            ct_: [(2, {"src": NAT4, "sport": 40002})],
            e5: [(3, {"dst": C4, "inner_src": C4, "inner_sport": 40001, "inner_dport": 81})],
        },
        about="ICMP errors about SNATed flows: outer destination and the quoted source address "
        "and port un-NATed; quoted IP checksum and (even when truncated) the quoted UDP checksum "
        "fixed, ICMP checksum recomputed; an error about no connection is invalid",
    )


MARK_NAT = f"""
table=0,priority=10,ip,actions=ct(table=1,zone=7,nat)
table=0,priority=1,actions=drop
table=1,priority=10,in_port=1,udp,tp_dst=53,ct_state=+trk+new,actions=ct(commit,zone=7,nat(src={NAT4}),exec(set_field:0x5->ct_mark,set_field:0xab->ct_label)),output:2
table=1,priority=10,in_port=1,udp,tp_dst=54,ct_state=+trk+new,actions=ct(commit,zone=7,nat(src={NAT4})),output:2
table=1,priority=20,in_port=1,ct_state=+trk+est+snat,ct_mark=0x5,actions=output:2
table=1,priority=10,in_port=1,ct_state=+trk+est,actions=output:3
table=1,priority=20,in_port=2,ct_state=+trk+est+dnat,ct_mark=0x5,ct_label=0xab,actions=output:1
table=1,priority=15,in_port=2,ct_state=+trk+est+dnat,actions=output:1,output:3
table=1,priority=10,in_port=2,ct_state=+trk+est,actions=output:3
table=1,priority=1,actions=drop
"""  # noqa: E501


@nat_scenario
def nat_mark_label_and_flags():
    t = Timeline()
    m1 = t.send("A", udp("A", "B", 40000, 53))
    m2 = t.send("B", udp("B", "A", 53, 40000, dst_ip=NAT4))
    m3 = t.send("A", udp("A", "B", 40000, 53))
    p1 = t.send("A", udp("A", "B", 40001, 54))
    p2 = t.send("B", udp("B", "A", 54, 40001, dst_ip=NAT4))
    p3 = t.send("A", udp("A", "B", 40001, 54))
    return NatScenario(
        "nat_mark_label_and_flags",
        MARK_NAT,
        t.packets,
        expect={
            m1: (NEW, [2]),
            m2: (EST_RPL_DNAT, [1]),
            m3: (EST_SNAT, [2]),
            p1: (NEW, [2]),
            p2: (EST_RPL_DNAT, [1, 3]),
            p3: (EST_SNAT, [3]),
        },
        expect_conntrack_lines=2,
        frame_facts={
            m2: [(1, {"dst": A4})],
            p2: [(1, {"dst": A4, "dport": 40001}), (3, {"dst": A4, "dport": 40001})],
            p3: [(3, {"src": NAT4})],
        },
        conntrack_contains=[
            "reply=(src=10.1.1.2,dst=10.1.1.240,sport=53,dport=40000),zone=7,mark=5,labels=0xab"
        ],
        about="ct_mark/ct_label set in the NAT commit; +snat/+dnat and mark/label matches",
    )


REPEAT_NAT = f"""
table=0,priority=10,ip,actions=ct(table=1,zone=7,nat)
table=0,priority=1,actions=drop
table=1,priority=10,ip,in_port=1,ct_state=+trk+new,actions=ct(commit,zone=7,nat(src={NAT4})),ct(table=2,zone=7,nat)
table=1,priority=10,ip,ct_state=+trk+est,actions=ct(table=2,zone=7,nat)
table=2,priority=10,ip,in_port=1,ct_state=+trk,actions=ct(table=3,zone=7)
table=2,priority=10,in_port=2,ct_state=+trk,actions=output:1
table=3,priority=10,in_port=1,ct_state=+trk,actions=output:2
table=1,priority=1,actions=drop
"""  # noqa: E501


@nat_scenario
def nat_repeat_ct_nat_noop():
    t = Timeline()
    u1 = t.send("A", udp("A", "B", 40000, 53))
    r1 = t.send("B", udp("B", "A", 53, 40000, dst_ip=NAT4))
    u2 = t.send("A", udp("A", "B", 40000, 53))
    r2 = t.send("B", udp("B", "A", 53, 40000, dst_ip=NAT4))
    return NatScenario(
        "nat_repeat_ct_nat_noop",
        REPEAT_NAT,
        t.packets,
        expect={
            # commit+NAT, then ct(nat) and ct() again: the new packet now reads +snat
            u1: (NEW_SNAT, [2]),
            r1: (EST_RPL_DNAT, [1]),
            u2: (EST_SNAT, [2]),
            r2: (EST_RPL_DNAT, [1]),
        },
        expect_conntrack_lines=1,
        frame_facts={
            u1: [(2, {"src": NAT4, "sport": 40000})],
            r1: [(1, {"dst": A4, "dport": 40000})],
            u2: [(2, {"src": NAT4})],
            r2: [(1, {"dst": A4})],
        },
        about="a second ct(nat) in the same zone after NAT is a no-op, and a ct() without nat "
        "after it still finds the connection (through the original tuple)",
    )


BARE_NAT = """
table=0,priority=10,ip,actions=ct(table=1,zone=7,nat)
table=0,priority=1,actions=drop
table=1,priority=10,ip,in_port=1,ct_state=+trk+new,actions=ct(commit,zone=7,nat),output:2
table=1,priority=10,in_port=1,ct_state=+trk+est,actions=output:2
table=1,priority=10,in_port=2,ct_state=+trk+est,actions=output:1
table=1,priority=1,actions=drop
"""


@nat_scenario
def nat_bare_commit():
    t = Timeline()
    u1 = t.send("A", udp("A", "B", 40000, 53))
    r1 = t.send("B", udp("B", "A", 53, 40000))
    u2 = t.send("A", udp("A", "B", 40000, 53))
    s1 = t.send("A", tcp("A", "B", 40001, 80, "S", 1))
    s2 = t.send("B", tcp("B", "A", 80, 40001, "SA", 9, 2))
    return NatScenario(
        "nat_bare_commit",
        BARE_NAT,
        t.packets,
        expect={
            u1: (NEW, [2]),
            r1: (NEW, []),  # the reply does not find the connection
            u2: (NEW, [2]),  # UDP stays new until a reply is seen
            s1: (NEW, [2]),
            s2: (INV, []),  # a SYN-ACK that starts a connection
        },
        expect_conntrack_lines=2,
        frame_facts={
            u1: [(2, {"src": A4, "dst": B4, "sport": 40000, "dport": 53})],
            s1: [(2, {"src": A4, "sport": 40001})],
        },
        conntrack_contains=[
            "udp,orig=(src=10.1.1.1,dst=10.1.1.2,sport=40000,dport=53),"
            "reply=(src=0.0.0.0,dst=10.1.1.1,sport=53,dport=0),zone=7",
            "tcp,orig=(src=10.1.1.1,dst=10.1.1.2,sport=40001,dport=80),"
            "reply=(src=0.0.0.0,dst=10.1.1.1,sport=80,dport=0),zone=7,"
            "protoinfo=(state=SYN_SENT)",
        ],
        about="OVS 3.1: ct(commit,nat) with no address on a new connection leaves the frame "
        "alone but commits a reply tuple from 0.0.0.0 to port 0, so replies never match",
    )


@nat_scenario
def nat_snat_ipv6_tcp_udp():
    t = Timeline()
    session = _tcp_session(t, "A", "B", 40000, 80, a_in=NAT6, v6=True)
    syn, synack, _ack, _d_a, d_b, _fin_a, _fin_b, _last = session
    u = t.send("A", udp("A", "B", 40000, 53, v6=True))
    r = t.send("B", udp("B", "A", 53, 40000, dst_ip=NAT6, v6=True))
    sent = udp("A", "B", 40000, 53, src_ip=NAT6, v6=True)
    e = t.send("B", icmp6_error("B", "A", sent, dst_ip=NAT6, keep=0))
    return NatScenario(
        "nat_snat_ipv6_tcp_udp",
        SNAT_ONE6,
        t.packets,
        expect={
            **_session_expect(session, EST_SNAT, EST_RPL_DNAT, [2], [1]),
            u: (NEW, [2]),
            r: (EST_RPL_DNAT, [1]),
            e: (REL_RPL_DNAT, [1]),
        },
        expect_conntrack_lines=2,
        frame_facts={
            syn: [(2, {"src": NAT6, "dst": "fd00::2", "sport": 40000, "dport": 80})],
            synack: [(1, {"src": "fd00::2", "dst": "fd00::1", "dport": 40000})],
            d_b: [(1, {"dst": "fd00::1"})],
            u: [(2, {"src": NAT6, "sport": 40000})],
            r: [(1, {"dst": "fd00::1", "dport": 40000})],
            e: [(1, {"dst": "fd00::1", "inner_src": "fd00::1", "inner_sport": 40000})],
        },
        conntrack_contains=[
            "udp,orig=(src=fd00::1,dst=fd00::2,sport=40000,dport=53),"
            "reply=(src=fd00::2,dst=fd00::f0,sport=53,dport=40000),zone=7"
        ],
        about="IPv6 SNAT of TCP and UDP, and an ICMPv6 error about the UDP flow",
    )
