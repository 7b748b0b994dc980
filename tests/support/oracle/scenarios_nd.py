"""Oracle scenarios for the ARP and IPv6 neighbor discovery match fields (arp_sha, arp_tha,
nd_target, nd_sll, nd_tll), as the port security of Neutron's OVS firewall uses them.

What: rules that let a host's ARP and neighbor discovery through only with its own addresses,
and traffic that tries both the honest and the spoofed variants, plus malformed ND option
lists (an address option twice; a zero-length option) whose flow fields OVS defines.

Design: packets that differ only in one of these fields follow each other, so a megaflow
that forgot to match the field would give the second packet the first one's verdict. Same
registry as scenarios.py (imported from there).

Invariants: as scenarios.py (3-30 packets, increasing times, unique names).
"""

from __future__ import annotations

from scapy.layers.inet6 import ICMPv6NDOptDstLLAddr, ICMPv6NDOptSrcLLAddr
from scapy.layers.l2 import ARP

from .frames import A6, B6, C6, IP4, MAC, ICMPv6ND_NA, ICMPv6ND_NS, Raw, Timeline, eth, ip6
from .scenarios import Scenario, scenario

UNTRACKED = ""

# Port 1 is host A; ports 2 and 3 lead elsewhere. Which port a packet leaves by says which
# rule took it: 2 the honest variant, 3 the fallback, none a drop. The prerequisites of the
# NA rule are written out field by field, as Neutron's flows write them.
ND_PORT_SECURITY = f"""
table=0,priority=100,icmp6,icmp_type=135,in_port=1,nd_target={B6},nd_sll={MAC["A"]},actions=output:2
table=0,priority=100,dl_type=0x86dd,nw_proto=58,icmp_type=136,in_port=1,nd_target={A6},nd_tll={MAC["A"]},actions=output:2
table=0,priority=95,icmp6,icmp_type=135,nd_target=::,actions=drop
table=0,priority=90,icmp6,icmp_type=135,in_port=1,nd_target={B6},actions=output:3
table=0,priority=90,icmp6,icmp_type=136,in_port=1,actions=output:3
table=0,priority=80,icmp6,icmp_type=135,nd_target=fd00::/64,actions=output:3
table=0,priority=1,actions=drop
"""


def _ns(target: str, *options) -> bytes:
    frame = ip6("A", "B", dst_ip="ff02::1:ff00:2", hlim=255) / ICMPv6ND_NS(tgt=target)
    for opt in options:
        frame = frame / opt
    return bytes(frame)


def _na(target: str, *options) -> bytes:
    frame = ip6("A", "B", hlim=255) / ICMPv6ND_NA(tgt=target, R=0, S=1, O=1)
    for opt in options:
        frame = frame / opt
    return bytes(frame)


@scenario
def neighbor_discovery_port_security():
    t = Timeline()
    sll_a, sll_c = ICMPv6NDOptSrcLLAddr(lladdr=MAC["A"]), ICMPv6NDOptSrcLLAddr(lladdr=MAC["C"])
    honest = t.send("A", _ns(B6, sll_a))
    spoofed = t.send("A", _ns(B6, sll_c))
    no_option = t.send("A", _ns(B6))
    twice = t.send("A", _ns(B6, sll_a, sll_a))  # invalid: no ND field at all
    zero_len = t.send("A", _ns(B6, sll_a, Raw(b"\x02\x00" + b"\0" * 6)))  # the walk stops
    other = t.send("A", _ns(C6, sll_a))
    advert = t.send("A", _na(A6, ICMPv6NDOptDstLLAddr(lladdr=MAC["A"])))
    advert_spoofed = t.send("A", _na(A6, ICMPv6NDOptDstLLAddr(lladdr=MAC["C"])))
    advert_other = t.send("A", _na(B6, ICMPv6NDOptDstLLAddr(lladdr=MAC["A"])))
    honest_again = t.send("A", _ns(B6, sll_a))
    return Scenario(
        "neighbor_discovery_port_security",
        ND_PORT_SECURITY,
        t.packets,
        expect={
            honest: (UNTRACKED, [2]),
            spoofed: (UNTRACKED, [3]),
            no_option: (UNTRACKED, [3]),
            twice: (UNTRACKED, []),
            zero_len: (UNTRACKED, [2]),
            other: (UNTRACKED, [3]),
            advert: (UNTRACKED, [2]),
            advert_spoofed: (UNTRACKED, [3]),
            advert_other: (UNTRACKED, [3]),
            honest_again: (UNTRACKED, [2]),
        },
        about="nd_target/nd_sll/nd_tll in the megaflow; malformed option lists as OVS",
    )


ARP_PORT_SECURITY = f"""
table=0,priority=100,arp,in_port=1,arp_sha={MAC["A"]},arp_spa={IP4["A"]},actions=output:2
table=0,priority=90,arp,in_port=2,arp_op=2,arp_tha={MAC["A"]},actions=output:1
table=0,priority=80,arp,in_port=2,arp_tha=50:54:00:00:00:00/ff:ff:ff:00:00:00,actions=output:3
table=0,priority=70,rarp,actions=output:3
table=0,priority=1,actions=drop
"""


def _arp(sender: str, op: int, sha: str, spa: str, tha: str, tpa: str, rarp: bool = False):
    frame = eth(sender, "B" if sender != "B" else "A") / ARP(
        op=op, hwsrc=sha, psrc=spa, hwdst=tha, pdst=tpa
    )
    raw = bytearray(bytes(frame))
    if rarp:
        raw[12:14] = b"\x80\x35"
    return bytes(raw)


@scenario
def arp_port_security():
    t = Timeline()
    a, b, c = IP4["A"], IP4["B"], IP4["C"]
    zero = "00:00:00:00:00:00"
    honest = t.send("A", _arp("A", 1, MAC["A"], a, zero, b))
    spoofed_mac = t.send("A", _arp("A", 1, MAC["C"], a, zero, b))
    spoofed_ip = t.send("A", _arp("A", 1, MAC["A"], c, zero, b))
    reply = t.send("B", _arp("B", 2, MAC["B"], b, MAC["A"], a))
    reply_c = t.send("B", _arp("B", 2, MAC["B"], b, MAC["C"], c))
    reply_far = t.send("B", _arp("B", 2, MAC["B"], b, "02:00:00:00:00:09", c))
    rarp = t.send("B", _arp("B", 3, MAC["B"], b, MAC["B"], b, rarp=True))
    honest_again = t.send("A", _arp("A", 1, MAC["A"], a, zero, b))
    return Scenario(
        "arp_port_security",
        ARP_PORT_SECURITY,
        t.packets,
        expect={
            honest: (UNTRACKED, [2]),
            spoofed_mac: (UNTRACKED, []),
            spoofed_ip: (UNTRACKED, []),
            reply: (UNTRACKED, [1]),
            reply_c: (UNTRACKED, [3]),
            reply_far: (UNTRACKED, []),
            rarp: (UNTRACKED, [3]),
            honest_again: (UNTRACKED, [2]),
        },
        about="arp_sha/arp_tha (exact and masked) in the megaflow, rarp",
    )
