"""Oracle scenarios: small rule sets plus packet sequences, played through OVS and ctaccel.

What: ``SCENARIOS`` lists every scenario; each is a ``Scenario`` (name, flows in ovs-ofctl
add-flows syntax, packets as (in_port, frame, time_ms) with strictly increasing times, zone
limits, and a few hand-written expectations taken from the reference notes).

Design: hosts and frame helpers live in ``frames.py``; this file holds the UDP, zone, mark,
label, table and recirculation scenarios, ``scenarios_l4.py`` the TCP, ICMP, IPv6, fragment and
malformed-frame ones (imported at the end, same registry). Each scenario is built by a small
function so its packet numbers (1-based, returned by ``Timeline.send``) can name the packets the
expectations talk about. Expectations are checked against OVS itself (test_oracle_driver.py),
so a wrong note about OVS shows up as a failing driver test, not as a wrong oracle.

Invariants: times strictly increase within a scenario; ``expect`` keys are 1-based packet
numbers; each scenario has 3–30 packets; names are unique.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .frames import (
    Timeline,
    tcp,
    udp,
)

EST, INV, NEW = "est|trk", "inv|trk", "new|trk"
EST_RPL, REL_RPL = "est|rpl|trk", "rel|rpl|trk"


@dataclass
class Scenario:
    name: str
    flows: str
    packets: list[tuple[int, bytes, int]]
    zone_limits: dict = field(default_factory=dict)
    # packet number (1-based) -> (ct_state of the last matched rule, output ports)
    expect: dict[int, tuple[str | None, list[int]]] = field(default_factory=dict)
    expect_conntrack_lines: int | None = None  # number of dump-conntrack lines at the end
    about: str = ""
    # NORMAL's ports (ctaccel --bridge syntax; OVS: each port's tag/trunks set to match);
    # None: every port a trunk of all VLANs, as the oracle's bridge is by default
    bridge: str | None = None
    # zone timeout policies, {zone: {OVS name: seconds}} (ctaccel --timeout-policy; OVS:
    # ovs-vsctl add-zone-tp on the oracle's netdev datapath)
    timeout_policies: dict = field(default_factory=dict)


SCENARIOS: list[Scenario] = []


def scenario(fn):
    """Register the Scenario that ``fn()`` builds."""
    s = fn()
    assert 3 <= len(s.packets) <= 30, (s.name, len(s.packets))
    SCENARIOS.append(s)
    return fn


# A stateful firewall used by many scenarios: port 1 (A, inside) may open connections to
# port 2 (B, outside); replies and related errors come back; invalid and the rest drop.
FIREWALL = """
table=0,priority=100,ip,actions=ct(table=1)
table=0,priority=100,ipv6,actions=ct(table=1)
table=0,priority=1,actions=drop
table=1,priority=100,in_port=1,ip,ct_state=+trk+new,actions=ct(commit),output:2
table=1,priority=100,in_port=1,ipv6,ct_state=+trk+new,actions=ct(commit),output:2
table=1,priority=90,in_port=1,ct_state=+trk+est,actions=output:2
table=1,priority=90,in_port=2,ct_state=+trk+est,actions=output:1
table=1,priority=80,in_port=2,ct_state=+trk+rel,actions=output:1
table=1,priority=80,in_port=1,ct_state=+trk+rel,actions=output:2
table=1,priority=50,ct_state=+trk+inv,actions=drop
table=1,priority=1,actions=drop
"""

# OVS's own "basic UDP firewall" test, as written there.
UDP_FIREWALL = """
table=0,priority=10,udp,actions=ct(table=1,zone=0)
table=0,priority=1,actions=drop
table=1,priority=10,in_port=1,ct_state=+trk+new,udp,actions=ct(commit,zone=0),output:2
table=1,priority=10,in_port=1,ct_state=+trk+est,udp,actions=output:2
table=1,priority=10,in_port=2,ct_state=+trk+est,udp,actions=output:1
table=1,priority=1,actions=drop
"""


@scenario
def udp_zone5_talk():
    flows = """
table=0,priority=10,ct_state=-trk,udp,actions=ct(commit,table=0,zone=5)
table=0,priority=10,ct_state=+trk+new,ct_zone=5,udp,in_port=1,actions=output:2
table=0,priority=10,ct_state=+trk+est,ct_zone=5,udp,in_port=1,actions=output:2
table=0,priority=10,ct_state=+trk+est,ct_zone=5,udp,in_port=2,actions=output:1
table=0,priority=0,actions=drop
"""
    t = Timeline()
    n1 = t.send("A", udp("A", "B", 1234, 5678))
    n2 = t.send("B", udp("B", "A", 5678, 1234))
    n3 = t.send("A", udp("A", "B", 1234, 5678))
    n4 = t.send("B", udp("B", "A", 7777, 53))
    return Scenario(
        "udp_zone5_talk",
        flows,
        t.packets,
        expect={n1: (NEW, [2]), n2: (EST_RPL, [1]), n3: (EST, [2]), n4: (NEW, [])},
        expect_conntrack_lines=2,
        about="the talk's zone-5 example; the unsolicited flow is committed too",
    )


@scenario
def udp_firewall_basic():
    t = Timeline()
    n1 = t.send("B", udp("B", "A", 53, 40000))
    n2 = t.send("A", udp("A", "B", 40000, 53))
    n3 = t.send("B", udp("B", "A", 53, 40000))
    n4 = t.send("A", udp("A", "B", 40000, 53))
    t.send("A", udp("A", "B", 40001, 53))
    return Scenario(
        "udp_firewall_basic",
        UDP_FIREWALL,
        t.packets,
        expect={n1: (NEW, []), n2: (NEW, [2]), n3: (EST_RPL, [1]), n4: (EST, [2])},
        expect_conntrack_lines=2,
    )


@scenario
def udp_expiry_edges():
    t = Timeline()
    x1 = t.send("A", udp("A", "B", 1000, 53), at=0)
    t.send("A", udp("A", "B", 1001, 53), at=1)
    x2 = t.send("B", udp("B", "A", 53, 1000), at=59_999)  # T-1 of 60 s: alive
    y2 = t.send("B", udp("B", "A", 53, 1001), at=60_001)  # T of 60 s: gone
    x3 = t.send("A", udp("A", "B", 1000, 53), at=89_998)  # replied: 30 s, T-1
    x4 = t.send("A", udp("A", "B", 1000, 53), at=119_998)  # exactly 30 s later: gone
    return Scenario(
        "udp_expiry_edges",
        UDP_FIREWALL,
        t.packets,
        expect={
            x1: (NEW, [2]),
            x2: (EST_RPL, [1]),
            y2: (NEW, []),
            x3: (EST, [2]),
            x4: (NEW, [2]),
        },
        expect_conntrack_lines=1,
        about="UDP 60 s unreplied, 30 s once replied, exact ms edges",
    )


@scenario
def udp_same_direction_refresh():
    t = Timeline()
    t.send("A", udp("A", "B", 2000, 53), at=0)
    t.send("A", udp("A", "B", 2000, 53), at=50_000)
    t.send("B", udp("B", "A", 53, 2000), at=109_999)
    t.send("B", udp("B", "A", 53, 2000), at=139_998)
    t.send("B", udp("B", "A", 53, 2000), at=169_998)
    t.send("A", udp("A", "B", 2000, 53), at=400_000)
    return Scenario("udp_same_direction_refresh", UDP_FIREWALL, t.packets)


@scenario
def zones_independent():
    flows = """
table=0,priority=10,udp,in_port=1,actions=ct(commit,zone=1,table=1)
table=0,priority=10,udp,in_port=3,actions=ct(commit,zone=2,table=1)
table=0,priority=10,udp,in_port=2,actions=ct(zone=1,table=1)
table=1,priority=10,ct_zone=1,ct_state=+trk+new,in_port=1,actions=output:2
table=1,priority=10,ct_zone=2,ct_state=+trk+new,in_port=3,actions=output:2
table=1,priority=10,ct_state=+trk+est,in_port=2,actions=output:1
table=1,priority=10,ct_state=+trk+est,in_port=3,actions=output:2
table=1,priority=1,actions=drop
"""
    t = Timeline()
    a1 = t.send(1, udp("A", "B", 3000, 53))
    c1 = t.send(3, udp("A", "B", 3000, 53))
    b1 = t.send(2, udp("B", "A", 53, 3000))
    c2 = t.send(3, udp("A", "B", 3000, 53))
    return Scenario(
        "zones_independent",
        flows,
        t.packets,
        expect={a1: (NEW, [2]), c1: (NEW, [2]), b1: (EST_RPL, [1]), c2: (NEW, [2])},
        expect_conntrack_lines=2,
    )


ZONE_BY_PORT = """
table=0,priority=10,udp,in_port=1,actions=ct(commit,zone=7,table=1)
table=0,priority=10,udp,in_port=3,actions=ct(commit,zone=8,table=1)
table=0,priority=10,udp,in_port=2,nw_dst=10.1.1.1,actions=ct(zone=7,table=1)
table=0,priority=10,udp,in_port=2,nw_dst=10.1.1.3,actions=ct(zone=8,table=1)
table=1,priority=10,ct_state=+trk+new,in_port=1,actions=output:2
table=1,priority=10,ct_state=+trk+new,in_port=3,actions=output:2
table=1,priority=10,ct_state=+trk+est,in_port=2,actions=output:1
table=1,priority=1,actions=drop
"""


@scenario
def zone_limit_zero():
    t = Timeline()
    t.send(1, udp("A", "B", 7000, 53))
    t.send(3, udp("C", "B", 8000, 53))
    n3 = t.send(2, udp("B", "A", 53, 7000))
    n4 = t.send(2, udp("B", "C", 53, 8000))
    return Scenario(
        "zone_limit_zero",
        ZONE_BY_PORT,
        t.packets,
        zone_limits={7: 0},
        expect={n3: (NEW, []), n4: (EST_RPL, [1])},
        expect_conntrack_lines=1,
        about="limit 0 on zone 7 blocks every commit there; zone 8 is unaffected",
    )


@scenario
def zone_limit_default_three():
    t = Timeline()
    for sport in range(7000, 7005):
        t.send(1, udp("A", "B", sport, 53))
    n6 = t.send(2, udp("B", "A", 53, 7000))
    n7 = t.send(2, udp("B", "A", 53, 7003))
    t.send(3, udp("C", "B", 8000, 53))
    t.send(3, udp("C", "B", 8001, 53))
    n10 = t.send(2, udp("B", "C", 53, 8001))
    return Scenario(
        "zone_limit_default_three",
        ZONE_BY_PORT,
        t.packets,
        zone_limits={"default": 3, 8: 1},
        expect={n6: (EST_RPL, [1]), n7: (NEW, []), n10: (NEW, [])},
        expect_conntrack_lines=4,
    )


@scenario
def force_commit():
    flows = """
table=0,priority=10,udp,actions=ct(table=1)
table=1,priority=10,in_port=1,ct_state=+trk+new,udp,actions=ct(commit),output:2
table=1,priority=10,in_port=1,ct_state=+trk+est,udp,actions=output:2
table=1,priority=10,in_port=2,ct_state=+trk+est,udp,actions=ct(commit,force),output:1
table=1,priority=1,actions=drop
"""
    t = Timeline()
    t.send("A", udp("A", "B", 4000, 53))
    n2 = t.send("B", udp("B", "A", 53, 4000))
    t.send("A", udp("A", "B", 4000, 53))
    t.send("B", udp("B", "A", 53, 4000))
    return Scenario(
        "force_commit",
        flows,
        t.packets,
        expect={n2: (EST_RPL, [1])},
        expect_conntrack_lines=1,
        about="ct(commit,force) on the reply flips the entry's original direction",
    )


@scenario
def ct_mark_masked():
    flows = """
table=0,priority=10,udp,actions=ct(table=1)
table=1,priority=10,in_port=1,udp,udp_dst=53,ct_state=+trk+new,actions=ct(commit,exec(set_field:5->ct_mark)),output:2
table=1,priority=10,in_port=1,udp,udp_dst=54,ct_state=+trk+new,actions=ct(commit,exec(set_field:0x1/0x3->ct_mark)),output:2
table=1,priority=20,in_port=2,ct_state=+trk+est,ct_mark=0x4/0x4,actions=output:1
table=1,priority=20,in_port=2,ct_state=+trk+est,ct_mark=0/0x4,actions=drop
table=1,priority=30,in_port=1,udp,ct_state=+trk+est,ct_mark=5,actions=ct(commit,exec(set_field:0x8/0x8->ct_mark)),output:2
table=1,priority=1,actions=drop
"""
    t = Timeline()
    t.send("A", udp("A", "B", 5000, 53))
    t.send("A", udp("A", "B", 5001, 54))
    n3 = t.send("B", udp("B", "A", 53, 5000))
    n4 = t.send("B", udp("B", "A", 54, 5001))
    t.send("A", udp("A", "B", 5000, 53))
    t.send("B", udp("B", "A", 53, 5000))
    return Scenario(
        "ct_mark_masked",
        flows,
        t.packets,
        expect={n3: (EST_RPL, [1]), n4: (EST_RPL, [])},
        expect_conntrack_lines=2,
    )


@scenario
def ct_label_set_match():
    flows = """
table=0,priority=10,udp,actions=ct(table=1)
table=1,priority=10,in_port=1,ct_state=+trk+new,udp,udp_dst=53,actions=ct(commit,exec(set_field:0x1234567800000000000000000000abcd->ct_label)),output:2
table=1,priority=10,in_port=1,ct_state=+trk+new,udp,udp_dst=54,actions=ct(commit),output:2
table=1,priority=20,in_port=2,ct_state=+trk+est,ct_label=0xabcd/0xffff,actions=output:1
table=1,priority=1,actions=drop
"""
    t = Timeline()
    t.send("A", udp("A", "B", 5100, 53))
    t.send("A", udp("A", "B", 5101, 54))
    n3 = t.send("B", udp("B", "A", 53, 5100))
    n4 = t.send("B", udp("B", "A", 54, 5101))
    return Scenario(
        "ct_label_set_match",
        flows,
        t.packets,
        expect={n3: (EST_RPL, [1]), n4: (EST_RPL, [])},
        expect_conntrack_lines=2,
    )


@scenario
def orig_tuple_masked():
    flows = """
table=0,priority=10,ip,actions=ct(table=1)
table=1,priority=10,in_port=1,ip,ct_state=+trk+new,actions=ct(commit),output:2
table=1,priority=20,in_port=2,udp,ct_state=+trk+est,ct_nw_src=10.1.1.0/24,ct_nw_proto=17,ct_tp_src=0x1/0x1,actions=output:1
table=1,priority=18,in_port=2,udp,ct_state=+trk+est,ct_nw_src=10.1.2.0/24,actions=output:1
table=1,priority=16,in_port=2,udp,ct_state=+trk+est,ct_nw_dst=10.1.1.2,ct_nw_proto=17,ct_tp_src=0x2/0x2,actions=output:3
table=1,priority=1,actions=drop
"""
    t = Timeline()
    for sport in (6001, 6006, 6004):
        t.send("A", udp("A", "B", sport, 53))
    odd = t.send("B", udp("B", "A", 53, 6001))
    bit1 = t.send("B", udp("B", "A", 53, 6006))
    neither = t.send("B", udp("B", "A", 53, 6004))
    return Scenario(
        "orig_tuple_masked",
        flows,
        t.packets,
        expect={odd: (EST_RPL, [1]), bit1: (EST_RPL, [3]), neither: (EST_RPL, [])},
        expect_conntrack_lines=3,
        # OVS quirk kept out of the rules: without ct_nw_proto, ovs-ofctl silently drops
        # ct_tp_src/ct_tp_dst from the match (the rule then matches every port).
    )


@scenario
def registers_across_recirc():
    flows = """
table=0,priority=10,udp,in_port=1,actions=set_field:42->reg3,ct(table=1)
table=0,priority=10,udp,in_port=2,actions=set_field:7->reg3,ct(table=1)
table=1,priority=10,reg3=42,ct_state=+trk+new,udp,actions=ct(commit),output:3,output:2
table=1,priority=10,reg3=42,ct_state=+trk+est,actions=output:2
table=1,priority=10,reg3=7,ct_state=+trk+est,actions=output:1
table=1,priority=1,actions=drop
"""
    t = Timeline()
    n1 = t.send("A", udp("A", "B", 6100, 53))
    n2 = t.send("B", udp("B", "A", 53, 6100))
    n3 = t.send("A", udp("A", "B", 6100, 53))
    n4 = t.send("B", udp("B", "A", 53, 6101))
    return Scenario(
        "registers_across_recirc",
        flows,
        t.packets,
        expect={n1: (NEW, [2, 3]), n2: (EST_RPL, [1]), n3: (EST, [2]), n4: (NEW, [])},
        expect_conntrack_lines=1,
    )


@scenario
def multi_table_resubmit_goto():
    flows = """
table=0,priority=10,ip,actions=resubmit(,3)
table=0,priority=1,actions=drop
table=3,priority=10,ip,actions=ct(table=4,zone=3)
table=4,priority=10,in_port=1,ct_state=+trk+new,ip,actions=ct(commit,zone=3),goto_table:5
table=4,priority=10,ct_state=+trk+est,actions=resubmit(,6)
table=4,priority=1,actions=drop
table=5,priority=10,actions=output:2
table=6,priority=10,in_port=1,actions=output:2
table=6,priority=10,in_port=2,actions=output:1
"""
    t = Timeline()
    n1 = t.send("A", tcp("A", "B", 41000, 80, "S", 100))
    n2 = t.send("B", tcp("B", "A", 80, 41000, "SA", 900, 101))
    n3 = t.send("A", tcp("A", "B", 41000, 80, "A", 101, 901))
    n4 = t.send("B", tcp("B", "A", 80, 41001, "S", 5))
    return Scenario(
        "multi_table_resubmit_goto",
        flows,
        t.packets,
        # ct(commit) without table= leaves the packet untracked for goto_table
        expect={n1: ("", [2]), n2: (EST_RPL, [1]), n3: (EST, [2]), n4: (NEW, [])},
        expect_conntrack_lines=1,
    )


@scenario
def ct_clear_untracks():
    flows = """
table=0,priority=10,ip,actions=ct(table=1)
table=1,priority=10,in_port=1,ip,ct_state=+trk+new,actions=ct(commit),output:2
table=1,priority=10,ct_state=+trk+est,actions=ct_clear,resubmit(,2)
table=1,priority=1,actions=drop
table=2,priority=10,ct_state=-trk,in_port=2,actions=output:1
table=2,priority=10,ct_state=-trk,in_port=1,actions=output:2
table=2,priority=5,ct_state=+trk,actions=drop
"""
    t = Timeline()
    t.send("A", udp("A", "B", 6200, 53))
    n2 = t.send("B", udp("B", "A", 53, 6200))
    n3 = t.send("A", udp("A", "B", 6200, 53))
    return Scenario(
        "ct_clear_untracks",
        flows,
        t.packets,
        expect={n2: ("", [1]), n3: ("", [2])},
        expect_conntrack_lines=1,
    )


@scenario
def recirculation_loop():
    flows = """
table=0,priority=20,udp,udp_dst=9,actions=output:2
table=0,priority=10,ip,actions=ct(table=0)
table=0,priority=1,actions=drop
"""
    t = Timeline()
    loop = t.send("A", udp("A", "B", 8200, 53))
    ok = t.send("A", udp("A", "B", 8200, 9))
    t.send("A", tcp("A", "B", 40200, 80, "S", 1))
    return Scenario(
        "recirculation_loop",
        flows,
        t.packets,
        expect={loop: (NEW, []), ok: ("", [2])},
        expect_conntrack_lines=0,
        about="ct(table=0) without a -trk guard recirculates until the depth limit drops it",
    )


@scenario
def ct_without_commit():
    t = Timeline()
    a = t.send("A", udp("A", "B", 8300, 53))
    b = t.send("B", udp("B", "A", 53, 8300))
    c = t.send("A", tcp("A", "B", 40300, 80, "S", 1))
    d = t.send("B", tcp("B", "A", 80, 40300, "SA", 9, 2))
    return Scenario(
        "ct_without_commit",
        FIREWALL.replace("actions=ct(commit),output:2", "actions=output:2"),
        t.packets,
        expect={a: (NEW, [2]), b: (NEW, []), c: (NEW, [2]), d: (INV, [])},
        expect_conntrack_lines=0,
    )


@scenario
def commit_everything_trap():
    flows = """
table=0,priority=10,ct_state=-trk,ip,actions=ct(commit,table=1)
table=0,priority=1,actions=drop
table=1,priority=10,in_port=1,ct_state=+trk+new,actions=output:2
table=1,priority=10,in_port=1,ct_state=+trk+est,actions=output:2
table=1,priority=10,in_port=2,ct_state=+trk+est,actions=output:1
table=1,priority=1,actions=drop
"""
    t = Timeline()
    probe = t.send("B", udp("B", "A", 8400, 22))
    answer = t.send("A", udp("A", "B", 22, 8400))
    inside = t.send("B", udp("B", "A", 8400, 22))
    return Scenario(
        "commit_everything_trap",
        flows,
        t.packets,
        expect={probe: (NEW, []), answer: (EST_RPL, [2]), inside: (EST, [1])},
        expect_conntrack_lines=1,
        about="committing before the verdict lets the outside open connections",
    )


# Part 2 registers its scenarios into SCENARIOS on import (kept apart to keep files short).
from . import (  # noqa: E402, F401
    scenarios_blind,
    scenarios_conj,
    scenarios_l4,
    scenarios_nd,
    scenarios_rewrite,
    scenarios_tp,
    scenarios_vlan,
)
