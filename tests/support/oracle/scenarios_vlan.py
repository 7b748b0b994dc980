"""Oracle scenarios for the VLAN actions and NORMAL (the L2 switch Neutron's flows end in).

What: ``strip_vlan``, ``mod_vlan_vid`` and ``mod_vlan_pcp`` (a tag pushed on an untagged
packet, rewritten on a tagged one), ``push_vlan``; conntrack on a frame whose tag was popped
(its headers moved) and a recirculated copy that pushes one; NORMAL's learning, flooding,
access and trunk ports, VLAN admission, reserved multicast, a moved MAC; and a Neutron-like
pipeline (ct zone per network, then ``mod_vlan_vid,normal``) with established replies.

Design: frames are compared byte for byte with OVS's. Ports' VLAN modes come from
``Scenario.bridge`` (the oracle sets each port's ``tag``/``trunks``; the OVS run purges its
datapath flows after each packet so a learned MAC takes effect at once, as ctaccel drops its
caches). Same registry as scenarios.py.

Invariants: as scenarios.py.
"""

from __future__ import annotations

from scapy.layers.l2 import ARP, Dot1Q, Ether

from .frames import IP, MAC, UDP, Raw, Timeline, udp
from .scenarios import EST_RPL, NEW, Scenario, scenario

UNTRACKED = ""
BCAST = "ff:ff:ff:ff:ff:ff"


def _tagged(frame: bytes, vid: int, prio: int = 0, tpid: int = 0x8100) -> bytes:
    """``frame`` with an 802.1Q tag inserted after the MAC addresses."""
    e = Ether(frame)
    tag = Dot1Q(vlan=vid, prio=prio, type=e.type)
    return bytes(Ether(src=e.src, dst=e.dst, type=tpid) / tag / e.payload)


VLAN_ACTIONS = """
table=0,priority=20,in_port=1,dl_vlan=10,udp,actions=strip_vlan,output:2,ct(table=1)
table=0,priority=20,in_port=1,vlan_tci=0,udp,actions=mod_vlan_vid:30,output:2,mod_vlan_pcp:5,output:3
table=0,priority=20,in_port=2,dl_vlan=20,actions=mod_vlan_vid:21,mod_vlan_pcp:2,output:1,strip_vlan,output:3
table=0,priority=20,in_port=3,udp,actions=mod_vlan_vid:5,output:1,strip_vlan,output:2
table=0,priority=20,in_port=4,udp,actions=mod_vlan_pcp:7,ct(commit,table=2)
table=0,priority=1,actions=drop
table=1,priority=10,ct_state=+trk+new,udp,actions=mod_vlan_vid:11,output:3
table=2,priority=10,ct_state=+trk,dl_vlan=0,dl_vlan_pcp=7,actions=output:1,strip_vlan,output:2
"""


@scenario
def vlan_actions():
    t = Timeline()
    pop = t.send(1, _tagged(udp("A", "B", 5000, 53), 10, prio=3))  # popped, then tracked
    again = t.send(1, _tagged(udp("A", "B", 5000, 53, b"v" * 30), 10))
    push = t.send(1, udp("A", "B", 5001, 53))  # tag pushed (VID 30, PCP 0), then PCP 5
    other = t.send(1, _tagged(udp("A", "B", 5002, 53), 11))  # no rule
    rewrite = t.send(2, _tagged(udp("B", "A", 53, 5000), 20, prio=6))
    vid_then_strip = t.send(3, udp("C", "A", 7000, 53))
    pcp = t.send(4, udp("C", "A", 7001, 53))
    pcp_tagged = t.send(4, _tagged(udp("C", "A", 7002, 53), 40))
    return Scenario(
        "vlan_actions",
        VLAN_ACTIONS,
        t.packets,
        expect={
            pop: (NEW, [2, 3]),
            again: (NEW, [2, 3]),
            push: (UNTRACKED, [2, 3]),
            other: (UNTRACKED, []),
            rewrite: (UNTRACKED, [1, 3]),
            vid_then_strip: (UNTRACKED, [1, 2]),
            pcp: ("new|trk", [1, 2]),
            pcp_tagged: (UNTRACKED, []),  # VLAN 40 kept: table 2's dl_vlan=0 misses
        },
        about="strip_vlan, mod_vlan_vid/pcp before outputs, before ct and in a recirculation",
    )


# push_vlan is OpenFlow 1.1+: the oracle loads this rule set over OpenFlow 1.3, where
# mod_vlan_vid/pcp would always push (their OF1.3 encoding), so none is used here.
PUSH_VLAN = """
table=0,priority=20,in_port=3,udp,actions=push_vlan:0x88a8,output:1,push_vlan:0x8100,output:2
table=0,priority=20,in_port=1,dl_vlan=7,actions=push_vlan:0x8100,output:2,strip_vlan,output:3
table=0,priority=1,actions=drop
"""


@scenario
def push_vlan():
    t = Timeline()
    untagged = t.send(3, udp("C", "A", 7000, 53))  # 802.1ad tag, then an 802.1Q one over it
    tagged = t.send(1, _tagged(udp("A", "B", 7001, 53), 7, prio=2))  # a second tag, then off
    return Scenario(
        "push_vlan",
        PUSH_VLAN,
        t.packets + [(2, udp("B", "A", 1, 2), 100)],
        expect={untagged: (UNTRACKED, [1, 2]), tagged: (UNTRACKED, [2, 3])},
        about="push_vlan on untagged and tagged frames, 0x88a8 and 0x8100",
    )


SWITCH = """
table=0,priority=10,actions=normal
"""
SWITCH_PORTS = "1,2,3:tag=10,4:trunks=10;20"


def _l2(src: str, dst: str, data: bytes = b"n" * 20) -> bytes:
    return bytes(Ether(src=src, dst=dst) / IP(src="10.9.0.1", dst="10.9.0.2") / UDP() / Raw(data))


@scenario
def normal_learning_and_vlans():
    a, b, c, d = MAC["A"], MAC["B"], MAC["C"], "50:54:00:00:00:04"
    t = Timeline()
    flood = t.send(1, _l2(a, b))  # unknown: flood VLAN 0 (port 2; not 3, 4: not in VLAN 0)
    learned = t.send(2, _l2(b, a))  # A learned on port 1
    access = t.send(3, _l2(c, BCAST))  # VLAN 10: trunks tagged, port 4 tagged
    to_c = t.send(1, _tagged(_l2(a, c), 10))  # C learned on port 3: untagged there
    to_c4 = t.send(4, _tagged(_l2(d, c, b"m" * 20), 10, prio=4))  # priority kept? access: no
    back = t.send(3, _l2(c, d))  # D learned on 4 in VLAN 10
    tagged_on_access = t.send(3, _tagged(_l2(c, a), 10))  # dropped: tagged on access
    prio_on_access = t.send(3, _tagged(_l2(c, d), 0, prio=5))  # priority tag: VLAN 10
    not_trunked = t.send(4, _tagged(_l2(d, a), 30))  # port 4 does not trunk 30
    vlan20 = t.send(4, _tagged(_l2(d, BCAST), 20))  # only trunks of 20: 1, 2
    stp = t.send(1, _l2(a, "01:80:c2:00:00:00"))  # reserved: dropped
    same_port = t.send(2, _l2(b, b))  # learned port is the input port: dropped
    moved = t.send(2, _l2(a, b, b"o" * 20))  # A moves to port 2 (VLAN 0)
    after_move = t.send(1, _l2(b, a))  # B on port 2, A now on 2: to port 2
    arp = t.send(1, bytes(Ether(src=a, dst=BCAST) / ARP(op=1, hwsrc=a, psrc="10.9.0.1",
                                                        pdst="10.9.0.1")))  # fmt: skip
    return Scenario(
        "normal_learning_and_vlans",
        SWITCH,
        t.packets,
        expect={
            flood: (UNTRACKED, [2]),
            learned: (UNTRACKED, [1]),
            access: (UNTRACKED, [1, 2, 4]),
            to_c: (UNTRACKED, [3]),
            to_c4: (UNTRACKED, [3]),
            back: (UNTRACKED, [4]),
            tagged_on_access: (UNTRACKED, []),
            prio_on_access: (UNTRACKED, [4]),
            not_trunked: (UNTRACKED, []),
            vlan20: (UNTRACKED, [1, 2]),
            stp: (UNTRACKED, []),
            same_port: (UNTRACKED, []),
            moved: (UNTRACKED, []),
            after_move: (UNTRACKED, [2]),
            arp: (UNTRACKED, [2]),
        },
        about="NORMAL: flood, learn, access/trunk tagging, admission, reserved MACs, a move",
        bridge=SWITCH_PORTS,
    )


# Neutron's shape: ports 1 and 2 are VMs (access ports of VLAN 12), port 3 the uplink trunk;
# traffic from a VM is tracked in zone 12 and committed, then switched; replies come back
# tracked, established.
NEUTRON_LIKE = """
table=0,priority=100,in_port=1,ip,actions=ct(table=1,zone=12)
table=0,priority=100,in_port=2,ip,actions=ct(table=1,zone=12)
table=0,priority=90,in_port=3,dl_vlan=12,ip,actions=strip_vlan,ct(table=2,zone=12)
table=0,priority=1,actions=normal
table=1,priority=10,ct_state=+trk+new,ip,actions=ct(commit,zone=12),normal
table=1,priority=10,ct_state=+trk+est,ip,actions=normal
table=1,priority=1,actions=drop
table=2,priority=10,ct_state=+trk+est,ip,actions=mod_vlan_vid:12,normal
table=2,priority=1,actions=drop
"""


@scenario
def normal_behind_conntrack():
    vm1, vm2, out = MAC["A"], MAC["B"], MAC["R"]

    def frame(src, dst, sip, dip, sport, dport):
        return bytes(Ether(src=src, dst=dst) / IP(src=sip, dst=dip)
                     / UDP(sport=sport, dport=dport) / Raw(b"q" * 24))  # fmt: skip

    t = Timeline()
    first = t.send(1, frame(vm1, out, "10.12.0.1", "8.8.8.8", 4000, 53))  # flood: 2, 3
    reply = t.send(3, _tagged(frame(out, vm1, "8.8.8.8", "10.12.0.1", 53, 4000), 12))
    again = t.send(1, frame(vm1, out, "10.12.0.1", "8.8.8.8", 4000, 53))  # learned: 3
    reply2 = t.send(3, _tagged(frame(out, vm1, "8.8.8.8", "10.12.0.1", 53, 4000), 12))
    unsolicited = t.send(3, _tagged(frame(out, vm1, "8.8.8.8", "10.12.0.1", 53, 4001), 12))
    east_west = t.send(2, frame(vm2, vm1, "10.12.0.2", "10.12.0.1", 6000, 7000))
    return Scenario(
        "normal_behind_conntrack",
        NEUTRON_LIKE,
        t.packets,
        expect={
            first: (NEW, [2, 3]),
            reply: (EST_RPL, [1]),
            again: ("est|trk", [3]),
            reply2: (EST_RPL, [1]),
            unsolicited: (NEW, []),
            east_west: (NEW, [1]),
        },
        expect_conntrack_lines=2,
        about="ct zone per network then NORMAL; replies from a trunk re-tagged then switched",
        bridge="1:tag=12,2:tag=12,3,4:tag=13",
    )
