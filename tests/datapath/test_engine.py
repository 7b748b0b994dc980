"""Pipeline semantics of the reference engine (no oracle needed).

Each test states the OVS behaviour it checks; the oracle tests compare the same behaviours
with the real OVS on full scenarios.
"""

from __future__ import annotations

import pytest

from ctaccel.conntrack import Conntrack
from ctaccel.datapath.reference import MAX_RECIRC_DEPTH, ReferenceEngine
from ctaccel.ofproto.rules import parse_flows
from ctaccel.packet import build as B

MA, MB = "50:54:00:00:00:01", "50:54:00:00:00:02"
A, Bip = "10.1.1.1", "10.1.1.2"


def engine(text, **kw):
    return ReferenceEngine(parse_flows(text, "test.flows"), Conntrack(**kw))


def udp(sport=1000, dport=2000, src=A, dst=Bip, smac=MA, dmac=MB, data=b"x" * 8):
    return B.udp_frame(smac, dmac, src, dst, sport, dport, data)


def test_table_miss_drops_with_reason():
    e = engine("table=0,priority=10,tcp,actions=output:2")
    r = e.process(udp(), 1, 0)
    assert r.out_ports == [] and r.drop_reason == "table_miss" and r.ct_state is None


def test_output_to_input_port_emits_nothing_but_in_port_does():
    e = engine("priority=10,udp,actions=output:1,output:2,in_port")
    r = e.process(udp(), 1, 0)
    assert r.out_ports == [2, 1]


def test_rule_counters_count_every_match_including_recirculation():
    e = engine(
        "table=0,priority=10,ct_state=-trk,udp,actions=ct(table=1)\n"
        "table=1,priority=10,ct_state=+trk,udp,actions=output:2\n"
    )
    frame = udp()
    for _ in range(3):
        e.process(frame, 1, 0)
    (p0, b0), (p1, _b1) = e.rule_counters()
    assert (p0, p1) == (3, 3)
    assert b0 == 3 * len(frame)


def test_ct_fork_recirculated_copy_first_then_original_without_ct_fields():
    # The copy sees ct fields; the original continues untracked after the ct action.
    e = engine(
        "table=0,priority=10,udp,ct_state=-trk,actions=ct(table=1,zone=3),resubmit(,2)\n"
        "table=1,priority=10,udp,ct_state=+trk+new,ct_zone=3,actions=output:5\n"
        "table=2,priority=10,udp,ct_state=-trk,actions=output:6\n"
        "table=2,priority=5,udp,actions=output:7\n"
    )
    r = e.process(udp(), 1, 0)
    assert r.out_ports == [5, 6]
    assert r.ct_state == ""  # the last matched rule (table 2) saw an untracked packet


def test_registers_survive_recirculation_and_copy_is_independent():
    e = engine(
        "table=0,priority=10,udp,ct_state=-trk,actions=load:7->NXM_NX_REG3[],ct(table=1),"
        "load:0->NXM_NX_REG3[],resubmit(,2)\n"
        "table=1,priority=10,udp,reg3=7,actions=load:9->NXM_NX_REG3[],output:2\n"
        "table=1,priority=5,udp,actions=output:3\n"
        "table=2,priority=10,reg3=0,actions=output:4\n"
        "table=2,priority=5,actions=output:8\n"
    )
    assert e.process(udp(), 1, 0).out_ports == [2, 4]


def test_recirculation_depth_is_capped_at_eight():
    # ct(table=0) without a -trk guard recirculates forever; OVS stops after 8.
    e = engine("table=0,priority=10,udp,actions=ct(table=0)")
    r = e.process(udp(), 1, 0)
    assert r.out_ports == [] and r.drop_reason == "recirc_depth"
    assert r.recirculations == MAX_RECIRC_DEPTH


def test_recirc_loop_that_outputs_on_the_way_still_emits():
    e = engine("table=0,priority=10,udp,actions=output:2,ct(table=0)")
    r = e.process(udp(), 1, 0)
    assert r.out_ports == [2] * (MAX_RECIRC_DEPTH + 1)
    assert r.drop_reason is None


def test_goto_table_and_resubmit_to_current_table_with_in_port():
    e = engine(
        "table=0,priority=10,in_port=1,udp,actions=goto_table:3\n"
        "table=3,priority=10,in_port=1,udp,actions=resubmit(9)\n"
        "table=3,priority=10,in_port=9,udp,actions=output:4\n"
    )
    r = e.process(udp(), 1, 0)
    assert r.out_ports == [4]


def test_ct_clear_removes_ct_fields_for_later_lookups():
    e = engine(
        "table=0,priority=10,udp,ct_state=-trk,actions=ct(table=1)\n"
        "table=1,priority=10,udp,ct_state=+trk,actions=ct_clear,resubmit(,2)\n"
        "table=2,priority=10,udp,ct_state=-trk,actions=output:2\n"
        "table=2,priority=5,udp,actions=output:3\n"
    )
    assert e.process(udp(), 1, 0).out_ports == [2]


def test_zone_from_register():
    e = engine(
        "table=0,priority=10,udp,ct_state=-trk,actions=load:0x2a->NXM_NX_REG6[0..15],"
        "ct(commit,zone=NXM_NX_REG6[0..15],table=1)\n"
        "table=1,priority=10,udp,ct_zone=42,actions=output:2\n"
    )
    r = e.process(udp(), 1, 0)
    assert r.out_ports == [2] and r.ct_state == "new|trk"
    assert any("zone=42" in line for line in e.conntrack.dump(0))


def test_udp_reply_is_established_only_after_commit():
    flows = (
        "table=0,priority=10,ct_state=-trk,udp,action=ct(table=1,zone=0)\n"
        "table=1,priority=10,in_port=1,ct_state=+trk+new,udp,action=ct(commit,zone=0),output:2\n"
        "table=1,priority=10,ct_state=+trk+est,udp,action=output:1\n"
        "table=1,priority=1,action=drop\n"
    )
    e = engine(flows)
    reply = udp(2000, 1000, Bip, A, MB, MA)
    first = e.process(reply, 2, 0)  # B->A first: new, not from port 1: dropped
    assert first.ct_state == "new|trk" and first.out_ports == []
    assert e.process(udp(), 1, 10).out_ports == [2]
    second = e.process(reply, 2, 20)
    assert second.ct_state == "est|rpl|trk" and second.out_ports == [1]


def test_short_frame_is_rx_invalid_and_processing_goes_on():
    e = engine("priority=10,actions=output:2")
    assert e.process(b"\x00" * 13, 1, 0).drop_reason == "rx_invalid"
    assert e.process(udp(), 1, 0).out_ports == [2]


@pytest.mark.parametrize("cut", [14, 20, 33, 34, 38, 41, 42])
def test_truncated_frames_never_raise(cut):
    e = engine(
        "table=0,priority=10,ip,ct_state=-trk,actions=ct(table=1)\n"
        "table=1,priority=10,ct_state=+inv,actions=output:9\n"
        "table=1,priority=5,actions=output:2\n"
        "table=0,priority=1,actions=output:3\n"
    )
    r = e.process(udp()[:cut], 1, 0)
    assert r.drop_reason is None and len(r.out_ports) == 1


def test_second_ct_in_the_same_pass_starts_from_the_packets_ct_metadata():
    # OVS: after ct(table=1) the flow reads untracked, but the packet still carries its ct
    # state; a second ct(table=2) in the same zone reuses the connection (process_one_fast)
    # and its copy sees the state of the first.
    e = engine(
        "table=0,priority=10,udp,ct_state=-trk,actions=ct(commit,table=1),ct(table=2)\n"
        "table=1,priority=10,udp,actions=output:5\n"
        "table=2,priority=10,udp,ct_state=+new+trk,actions=output:6\n"
        "table=2,priority=5,udp,actions=output:7\n"
    )
    r = e.process(udp(), 1, 0)
    assert r.out_ports == [5, 6] and r.ct_state == "new|trk"
