"""VLAN actions and NORMAL: the compiled modes against the reference engine.

What: random L2 traffic (hosts on four ports, access and trunk ports, tagged, priority-tagged
and untagged frames, broadcasts, MACs that move, UDP flows and their replies) through a rule
set that mixes conntrack, VLAN pushes/pops/rewrites and NORMAL, in random batches; outputs
(frames byte for byte), ct_state, drop reasons, conntrack tables and rule counters must be
the reference engine's in both modes. A learned MAC changes NORMAL's answers: the compiled
engine must drop every cached decision when it does (ofproto/bridge.py version).

Design: hypothesis draws the sequence; scapy builds the frames (tests only).
"""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

from support import equivalence as H
from support.hosts import START_MS

if os.environ.get("CTACCEL_EQUIV_ENGINE") == "reference":
    ENGINE = H.ReferenceBatchEngine
else:
    from ctaccel.datapath.engine import DatapathEngine as ENGINE

BRIDGE = "1,2:tag=10,3:tag=10,4:trunks=10;20"
RULES = """
table=0,priority=100,in_port=4,dl_vlan=20,udp,actions=strip_vlan,ct(table=1,zone=20)
table=0,priority=90,in_port=2,udp,actions=ct(table=1,zone=10)
table=0,priority=90,in_port=3,udp,actions=ct(table=1,zone=10)
table=0,priority=80,in_port=1,dl_vlan=10,actions=mod_vlan_pcp:3,resubmit(,2)
table=0,priority=1,actions=normal
table=1,priority=10,ct_state=+trk+new,udp,actions=ct(commit,zone=NXM_NX_CT_ZONE[]),normal
table=1,priority=10,ct_state=+trk+est,in_port=4,actions=mod_vlan_vid:10,normal
table=1,priority=10,ct_state=+trk+est,actions=normal
table=1,priority=1,actions=drop
table=2,priority=10,udp,actions=output:3,strip_vlan,normal
table=2,priority=1,actions=normal
"""
MACS = [0x020000000000 + i for i in range(1, 6)]
BCAST = "ff:ff:ff:ff:ff:ff"


def _mac(v: int) -> str:
    return ":".join(f"{v >> s & 0xFF:02x}" for s in range(40, -1, -8))


def _tag(rng: random.Random, port: int) -> int | None:
    """The VLAN a frame from ``port`` carries: mostly what the port expects, sometimes not."""
    if rng.random() < 0.1:
        return rng.choice((None, 0, 10, 20, 30))
    return {1: rng.choice((None, 10)), 2: None, 3: None, 4: rng.choice((10, 20))}[port]


def _frame(rng: random.Random, src, dst, port: int, sport: int, dport: int) -> bytes:
    (smac, sip), (dmac, dip) = src, dst
    ip = IP(src=sip, dst=dip) / UDP(sport=sport, dport=dport) / Raw(b"p" * rng.randrange(40))
    dst_mac = _mac(dmac) if rng.random() < 0.95 else BCAST
    vid = _tag(rng, port)
    if vid is None:
        return bytes(Ether(src=_mac(smac), dst=dst_mac) / ip)
    return bytes(Ether(src=_mac(smac), dst=dst_mac) / Dot1Q(vlan=vid, prio=rng.randrange(8)) / ip)


def _traffic(seed: int, n: int):
    """Conversations between five hosts, each behind a port (one moves now and then)."""
    rng = random.Random(seed)
    hosts = [(mac, f"10.0.0.{i + 1}") for i, mac in enumerate(MACS)]
    where = {i: rng.choice((1, 2, 3, 4)) for i in range(len(hosts))}
    convs = [tuple(rng.sample(range(len(hosts)), 2)) + (4000 + k,) for k in range(6)]
    packets, now = [], START_MS
    for _ in range(n):
        now += rng.choice((1, 1, 2, 50))
        if rng.random() < 0.02:
            where[rng.randrange(len(hosts))] = rng.choice((1, 2, 3, 4))  # a host moves
        a, b, sport = rng.choice(convs)
        if rng.random() < 0.5:
            a, b = b, a
            sport, dport = 53, sport
        else:
            dport = 53
        port = where[a]
        packets.append((port, _frame(rng, hosts[a], hosts[b], port, sport, dport), now))
    return packets


@settings(max_examples=6, deadline=None, derandomize=True, database=None,
          phases=(Phase.explicit, Phase.generate), suppress_health_check=list(HealthCheck))  # fmt: skip
@given(seed=st.integers(0, 2**31), batch_seed=st.integers(0, 2**31), n=st.integers(200, 900))
def test_vlan_actions_and_normal_match_the_reference(seed, batch_seed, n):
    packets = _traffic(seed, n)
    plan = H.plan_for(packets, batch_seed)
    expected = H.run_reference(RULES, packets, plan, bridge=BRIDGE)
    assert any(len(r.outputs) > 1 for r in expected.results)  # floods happened
    assert any(r.outputs and len(r.outputs[0][1]) != len(f)
               for r, (_p, f, _t) in zip(expected.results, packets, strict=True))  # fmt: skip
    for mode in ("recirc", "assume-established"):
        got = H.run_engine(ENGINE, mode, RULES, packets, plan, bridge=BRIDGE)
        report = H.first_divergence(packets, expected, got, mode, plan)
        if report:
            pytest.fail(report, pytrace=False)
        if mode == "assume-established":  # the fast path served retagged outputs too
            retagged = [r for r, (_p, f, _t) in zip(got.results, packets, strict=True)
                        if r.path == "fast" and r.outputs and r.outputs[0][1] != f]  # fmt: skip
            assert retagged


STACKED = (
    """
table=0,priority=10,in_port=1,ip,actions=push_vlan:0x8100,mod_vlan_vid:100,push_vlan:0x88a8,mod_vlan_vid:7,ct(table=1)
table=0,priority=10,in_port=2,ip,actions="""
    + ",".join(["push_vlan:0x8100"] * 10)
    + """,output:3,ct(table=1)
table=1,priority=1,actions=output:4
"""
)


def test_stacked_tags_on_big_frames_match_the_reference():
    """Tags pushed on tags, on frames as wide as the compiled path's first buffers and wider,
    through a recirculation; and more pushes than a frame gets (MAX_TAG_BYTES): the flow
    changes, the frame stops growing, in both engines alike."""
    packets, now = [], START_MS
    for size in (60, 1500, 2040, 2044, 2048, 4000):
        for port in (1, 2):
            ip = IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=5000 + size, dport=53)
            frame = bytes(Ether(src=_mac(MACS[0]), dst=_mac(MACS[1])) / ip)
            packets.append((port, frame + b"z" * (size - len(frame)), now))
            now += 1
    plan = H.plan_for(packets, 1)
    expected = H.run_reference(STACKED, packets, plan, bridge=BRIDGE)
    assert {len(r.outputs[-1][1]) - len(f) for r, (_p, f, _t) in
            zip(expected.results, packets, strict=True)} == {8, 32}  # fmt: skip
    for mode in ("recirc", "assume-established"):
        got = H.run_engine(ENGINE, mode, STACKED, packets, plan, bridge=BRIDGE)
        report = H.first_divergence(packets, expected, got, mode, plan)
        if report:
            pytest.fail(report, pytrace=False)
