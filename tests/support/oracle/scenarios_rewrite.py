"""Oracle scenarios for actions that rewrite the frame: ``mod_dl_src``, ``mod_dl_dst``,
``mod_nw_tos``, ``dec_ttl``.

What: rewrites before and after outputs (each output carries the frame as it was at that
point), a later lookup that sees the rewritten flow (resubmit), a rewrite in a recirculated
copy after ``ct``, and established connections (where the fast path would be tempted to
replay the received frame).

Design: frames are compared byte for byte with OVS's (the scenarios are deterministic).
Same registry as scenarios.py.

Invariants: as scenarios.py.
"""

from __future__ import annotations

from .frames import IP, MAC, UDP, Raw, Timeline, ip4, ip6, udp
from .scenarios import EST_RPL, NEW, Scenario, scenario

UNTRACKED = ""
GW = "02:00:00:00:00:aa"  # a gateway MAC the rules write in

REWRITES = f"""
table=0,priority=10,in_port=1,udp,actions=output:3,mod_dl_src:{GW},resubmit(,1)
table=0,priority=10,in_port=2,udp,actions=ct(table=2)
table=0,priority=1,actions=drop
table=1,priority=10,udp,dl_src={GW},actions=ct(commit),mod_dl_dst:{MAC["B"]},output:2
table=1,priority=1,actions=drop
table=2,priority=10,ct_state=+trk+est,actions=mod_dl_src:{GW},mod_dl_dst:{MAC["A"]},output:1
table=2,priority=10,ct_state=+trk+new,actions=drop
"""


@scenario
def mod_dl_src_and_dst():
    t = Timeline()
    first = t.send("A", udp("A", "B", 6000, 53))
    reply = t.send("B", udp("B", "A", 53, 6000))
    again = t.send("A", udp("A", "B", 6000, 53))
    reply2 = t.send("B", udp("B", "A", 53, 6000))
    unsolicited = t.send("B", udp("B", "A", 53, 6001))
    third = t.send("A", udp("A", "B", 6000, 53, b"x" * 40))
    return Scenario(
        "mod_dl_src_and_dst",
        REWRITES,
        t.packets,
        expect={
            first: (UNTRACKED, [3, 2]),
            reply: (EST_RPL, [1]),
            again: (UNTRACKED, [3, 2]),
            reply2: (EST_RPL, [1]),
            unsolicited: (NEW, []),
            third: (UNTRACKED, [3, 2]),
        },
        expect_conntrack_lines=1,
        about="outputs before and after a rewrite; a lookup and a recirculation after one",
    )


TTL_AND_TOS = """
table=0,priority=10,in_port=1,ip,actions=mod_nw_tos:32,dec_ttl,output:2
table=0,priority=10,in_port=2,ipv6,actions=dec_ttl,mod_nw_tos:0xb8,output:1
table=0,priority=9,in_port=3,ip,actions=dec_ttl,output:2,resubmit(,1)
table=0,priority=1,actions=drop
table=1,priority=10,ip,nw_ttl=63,actions=output:1
table=1,priority=5,actions=drop
"""


def _v4(sender: str, ttl: int, tos: int = 0, chksum: int | None = None) -> bytes:
    ip = ip4(sender, "B" if sender != "B" else "A", ttl=ttl, tos=tos)
    if chksum is not None:
        ip[IP].chksum = chksum
    return bytes(ip / UDP(sport=7000, dport=7001) / Raw(b"t" * 12))


def _v6(sender: str, hlim: int, tc: int = 0) -> bytes:
    ip = ip6(sender, "A", hlim=hlim, tc=tc)
    return bytes(ip / UDP(sport=7002, dport=7003) / Raw(b"s" * 12))


@scenario
def dec_ttl_and_mod_nw_tos():
    t = Timeline()
    ecn = t.send("A", _v4("A", 64, tos=0x03))  # DSCP set, ECN kept, checksum updated
    last_hop = t.send("A", _v4("A", 1))  # TTL 1: the rule's other actions are skipped
    two = t.send("A", _v4("A", 2))
    bad_sum = t.send("A", _v4("A", 64, chksum=0x1234))  # stays as wrong as it was
    v6 = t.send("B", _v6("B", 64, tc=0x01))
    v6_last = t.send("B", _v6("B", 1))
    seen = t.send("C", _v4("C", 64))  # the resubmit sees TTL 63
    unseen = t.send("C", _v4("C", 10))
    zero = t.send("C", _v4("C", 0))
    return Scenario(
        "dec_ttl_and_mod_nw_tos",
        TTL_AND_TOS,
        t.packets,
        expect={
            ecn: (UNTRACKED, [2]),
            last_hop: (UNTRACKED, []),
            two: (UNTRACKED, [2]),
            bad_sum: (UNTRACKED, [2]),
            v6: (UNTRACKED, [1]),
            v6_last: (UNTRACKED, []),
            seen: (UNTRACKED, [2, 1]),
            unseen: (UNTRACKED, [2]),
            zero: (UNTRACKED, []),
        },
        about="dec_ttl at 64, 2, 1 and 0, IPv4 and IPv6; mod_nw_tos keeps ECN; a later lookup",
    )
