"""dump-flows formatting: line layout as the real OVS 3.1 prints it, order, counters."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from ctaccel.ofproto.classifier import FlowTables
from ctaccel.ofproto.dumpflows import dump_order, format_dump_flows, format_flow
from ctaccel.ofproto.rules import parse_flows, parse_rule

# Lines printed by `ovs-ofctl dump-flows br0` on OVS 3.1.0 (userspace bridge) for these rules,
# with only the wall-clock fields (duration=, idle_age=) removed.
REAL_OVS = [
    (
        "table=1,priority=100,tcp,ct_state=+trk,actions=ct(commit),output:2",
        " cookie=0x0, table=1, n_packets=0, n_bytes=0, priority=100,ct_state=+trk,tcp "
        "actions=ct(commit),output:2",
    ),
    (
        "udp,tp_dst=0x50/0xfff0,actions=ct(table=1,zone=5)",
        " cookie=0x0, table=0, n_packets=0, n_bytes=0, udp,tp_dst=0x50/0xfff0 "
        "actions=ct(table=1,zone=5)",
    ),
    (
        "cookie=0x1234,idle_timeout=10,hard_timeout=20,priority=5,tcp,actions=output:1",
        " cookie=0x1234, table=0, n_packets=0, n_bytes=0, idle_timeout=10, hard_timeout=20, "
        "priority=5,tcp actions=output:1",
    ),
    (
        "in_port=3,actions=output:1,output:2",
        " cookie=0x0, table=0, n_packets=0, n_bytes=0, in_port=3 actions=output:1,output:2",
    ),
    (
        "priority=0,actions=drop",
        " cookie=0x0, table=0, n_packets=0, n_bytes=0, priority=0 actions=drop",
    ),
    ("table=2,actions=drop", " cookie=0x0, table=2, n_packets=0, n_bytes=0, actions=drop"),
]


@pytest.mark.parametrize(("rule_line", "ovs_line"), REAL_OVS)
def test_line_layout_matches_real_ovs(rule_line, ovs_line):
    (rule,) = parse_flows(rule_line)
    assert format_flow(rule) == ovs_line


def test_counters_and_no_wall_clock_fields():
    (rule,) = parse_flows("priority=10,ct_state=-trk,udp,actions=ct(commit,table=0,zone=5)")
    text = format_dump_flows([rule], [(3, 180)])
    assert text == (
        " cookie=0x0, table=0, n_packets=3, n_bytes=180, priority=10,"
        "ct_state=-trk,udp actions=ct(commit,table=0,zone=5)\n"
    )
    assert "duration" not in text and "idle_age" not in text


def test_dump_order_table_priority_file():
    rules = parse_flows(
        "table=1,priority=1,ip,actions=drop\n"
        "priority=5,ip,nw_src=1.1.1.1,actions=drop\n"
        "priority=5,ip,nw_src=1.1.1.2,actions=drop\n"
        "priority=50,actions=drop\n"
        "table=1,priority=9,ip,actions=drop\n"
    )
    assert [r.line for r in dump_order(rules)] == [4, 2, 3, 5, 1]
    assert [r.line for r in FlowTables(rules).all_rules()] == [4, 2, 3, 5, 1]


def test_same_match_replaces_earlier_rule_as_ovs_add_flows():
    rules = parse_flows("ip,actions=output:1\nip,actions=output:2\ntcp,actions=output:3\n")
    assert [(r.line, r.format_actions()) for r in rules] == [(2, "output:2"), (3, "output:3")]


OFCTL = shutil.which("ovs-ofctl")


@pytest.mark.oracle
def test_match_and_actions_agree_with_ovs_ofctl_parse_flows(tmp_path):
    if OFCTL is None:
        pytest.skip("ovs-ofctl is not installed: cannot compare with the real OVS")
    lines = [line for line, _ in REAL_OVS]
    path = tmp_path / "f.flows"
    path.write_text("\n".join(lines) + "\n")
    out = subprocess.run(
        [OFCTL, "parse-flows", str(path)], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    mods = [line for line in out.splitlines() if "FLOW_MOD" in line]
    for rule, mod in zip([parse_rule(x) for x in lines], mods, strict=True):
        assert f" actions={rule.format_actions()}" in mod
        if rule.format_match():
            assert f" {rule.format_match()} " in mod
