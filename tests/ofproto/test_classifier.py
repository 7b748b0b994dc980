"""FlowTables: the indexed lookup against the linear reference (OVS test-classifier idea)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ctaccel.ofproto.classifier import FlowTables
from ctaccel.ofproto.rules import parse_flows
from ctaccel.packet import key as K

PROTOS = ["ip", "ipv6", "tcp", "udp", "tcp6", "arp", None]


@st.composite
def rule_lines(draw):
    parts = [f"table={draw(st.integers(0, 1))}", f"priority={draw(st.integers(0, 3))}"]
    proto = draw(st.sampled_from(PROTOS))
    if proto:
        parts.append(proto)
    if draw(st.booleans()):
        parts.append(f"in_port={draw(st.integers(1, 3))}")
    if proto in ("tcp", "udp", "tcp6") and draw(st.booleans()):
        parts.append(f"tp_dst={draw(st.integers(0, 3))}/{draw(st.integers(0, 3))}")
    if proto in ("ip", "tcp", "udp") and draw(st.booleans()):
        parts.append(f"nw_src=10.0.0.{draw(st.integers(0, 3))}/{draw(st.integers(30, 32))}")
    if draw(st.booleans()):
        parts.append(f"reg0={draw(st.integers(0, 7))}/{draw(st.integers(0, 7))}")
    if draw(st.booleans()):
        parts.append(f"ct_state={draw(st.sampled_from(['+trk', '-trk', '+trk+est', '0']))}")
    return ",".join(parts) + ",actions=drop"


@st.composite
def keys(draw):
    key = np.zeros(K.KEY_WIDTH, np.int64)
    key[K.IN_PORT] = draw(st.integers(1, 3))
    key[K.DL_TYPE] = draw(st.sampled_from([K.ETH_TYPE_IP, K.ETH_TYPE_IPV6, K.ETH_TYPE_ARP, 0x88CC]))
    key[K.NW_PROTO] = draw(st.sampled_from([K.IPPROTO_TCP, K.IPPROTO_UDP, 1, 0]))
    key[K.NW_SRC + 3] = 0x0A000000 | draw(st.integers(0, 3))
    key[K.TP_DST] = draw(st.integers(0, 3))
    key[K.REG0] = draw(st.integers(0, 7))
    key[K.CT_STATE] = draw(
        st.sampled_from([0, K.CS_TRACKED | K.CS_NEW, K.CS_TRACKED | K.CS_ESTABLISHED])
    )
    return key


def brute_force(rules, table, key):
    hits = [r for r in rules if r.table == table and r.matches(key)]
    return min(hits, key=lambda r: (-r.priority, r.order)) if hits else None


@settings(max_examples=150, deadline=None)
@given(st.lists(rule_lines(), min_size=1, max_size=25), st.lists(keys(), min_size=1, max_size=8))
def test_fast_lookup_equals_linear(lines, key_list):
    rules = parse_flows("\n".join(lines))
    tables = FlowTables(rules)
    for key in key_list:
        for table in (0, 1, 2):
            expected = brute_force(rules, table, key)
            assert tables.lookup_linear(table, key) is expected
            assert tables.lookup(table, key) is expected
            wc_fast = np.zeros(K.KEY_WIDTH, np.int64)
            wc_lin = np.zeros(K.KEY_WIDTH, np.int64)
            assert tables.lookup(table, key, wc_fast) is expected
            assert tables.lookup_linear(table, key, wc_lin) is expected


@settings(max_examples=100, deadline=None)
@given(
    st.lists(rule_lines(), min_size=1, max_size=20),
    keys(),
    keys(),
    st.sampled_from(["fast", "linear"]),
)
def test_wildcards_are_sound(lines, key, other, which):
    """A key that agrees with `key` on every wildcard bit gets the same rule."""
    tables = FlowTables(parse_flows("\n".join(lines)))
    lookup = tables.lookup if which == "fast" else tables.lookup_linear
    for table in (0, 1):
        wc = np.zeros(K.KEY_WIDTH, np.int64)
        hit = lookup(table, key, wc)
        mixed = (key & wc) | (other & ~wc)
        assert lookup(table, mixed) is hit


def test_priority_then_file_order_and_dump_order():
    rules = parse_flows(
        "table=1,priority=5,ip,actions=output:1\n"
        "priority=5,ip,actions=output:2\n"
        "priority=5,ip,nw_src=10.0.0.0/8,actions=output:3\n"
        "priority=9,actions=output:4\n"
        "priority=7,ipv6,actions=output:5\n"
    )
    tables = FlowTables(rules)
    key = np.zeros(K.KEY_WIDTH, np.int64)
    key[K.DL_TYPE] = K.ETH_TYPE_IP
    assert tables.lookup(0, key) is rules[3]  # priority 9, no dl_type
    assert [r.line for r in tables.all_rules()] == [4, 5, 2, 3, 1]
    assert [r.line for r in tables.tables[0]] == [4, 5, 2, 3]
    assert tables.lookup(7, key) is None and len(tables) == 5


def test_wildcards_record_examined_fields():
    rules = parse_flows(
        "priority=9,ip,reg0=1/0xf,actions=drop\n"
        "priority=8,tcp,tp_dst=80,actions=drop\n"
        "priority=1,ip,actions=drop\n"
    )
    tables = FlowTables(rules)
    key = np.zeros(K.KEY_WIDTH, np.int64)
    key[K.DL_TYPE], key[K.NW_PROTO], key[K.TP_DST] = K.ETH_TYPE_IP, K.IPPROTO_TCP, 80
    wc = np.zeros(K.KEY_WIDTH, np.int64)
    assert tables.lookup(0, key, wc) is rules[1]
    assert wc[K.REG0] == 0xF and wc[K.TP_DST] == 0xFFFF and wc[K.DL_TYPE] == 0xFFFF
    assert wc[K.NW_PROTO] == 0xFF and wc[K.NW_SRC + 3] == 0


def test_rule_ids_belong_to_the_tables_not_the_rules():
    rules = parse_flows(
        "priority=3,ip,actions=drop\npriority=2,udp,actions=drop\npriority=1,actions=drop\n"
    )
    whole, tail = FlowTables(rules), FlowTables(rules[1:])
    assert [whole.rule_id(r) for r in rules] == [0, 1, 2]
    assert [tail.rule_id(r) for r in rules[1:]] == [0, 1]
    assert whole.rule_id(rules[1]) == 1  # building ``tail`` did not renumber ``whole``
