"""Conjunctive matches (``conjunction(id,k/n)`` actions, ``conj_id=`` matches): parsing and
printing as ovs-ofctl does, and the lookup semantics of ovs-fields(7) checked against a
brute-force reading of them (the real OVS: tests/support/oracle/scenarios_conj.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctaccel.ofproto.classifier import FlowTables
from ctaccel.ofproto.rules import parse_flows, parse_rule
from ctaccel.packet import key as K
from support.ofctl import assert_ovs_ofctl_agrees, rejection

PRINTED = [
    ("conj_id=1234,ip,actions=output:1", "conj_id=1234,ip", "output:1"),
    ("ip,nw_src=10.0.0.1,actions=conjunction(1234, 1/2)", "ip,nw_src=10.0.0.1",
     "conjunction(1234,1/2)"),
    ("ip,nw_src=10.0.0.1,actions=conjunction(1234,1/2),conjunction(5,2/3)",
     "ip,nw_src=10.0.0.1", "conjunction(1234,1/2),conjunction(5,2/3)"),
    ("ip,actions=conjunction(1,1/2),note:41", "ip", "conjunction(1,1/2),note:41.00.00.00.00.00"),
    ("conj_id=7,tcp,tp_dst=80,in_port=3,priority=5,actions=drop",
     "priority=5,conj_id=7,tcp,in_port=3,tp_dst=80", "drop"),
    ("ct_state=+trk,reg0=1,conj_id=3,ip,actions=drop", "conj_id=3,ct_state=+trk,ip,reg0=0x1",
     "drop"),
    ("conj_id=0x10,actions=drop", "conj_id=16", "drop"),
    ("ip,actions=conjunction(1,1/64)", "ip", "conjunction(1,1/64)"),
]  # fmt: skip

REJECTED = [
    ("ip,actions=conjunction(1,1/1)", "conjunction must have at least 2 clauses"),
    ("ip,actions=conjunction(1,3/2)",
     "clause index must be less than or equal to number of clauses"),
    ("ip,actions=conjunction(1,0/2)", "clause index must be positive"),
    ("ip,actions=conjunction(1,1/65)", "conjunction must have at most 64 clauses"),
    ("ip,actions=conjunction(1,1/2),output:1",
     '"conjunction" actions may be used along with "note" but not any other kind of action '
     '(such as the "output" action used here)'),
    ("conj_id=5/0xff,actions=drop", "5/0xff: invalid mask for field conj_id"),
]  # fmt: skip


@pytest.mark.parametrize(("line", "match", "actions"), PRINTED)
def test_printed_as_ovs_ofctl_prints(line, match, actions):
    rule = parse_rule(line)
    assert (rule.format_match(), rule.format_actions()) == (match, actions)


@pytest.mark.parametrize(("line", "reason"), REJECTED)
def test_rejected_as_ovs_ofctl_rejects(line, reason):
    assert rejection(line) == reason


@pytest.mark.oracle
def test_ovs_ofctl_prints_and_rejects_the_same():
    printed = [(line, f"ADD {match} actions={actions}") for line, match, actions in PRINTED]
    assert_ovs_ofctl_agrees(printed, REJECTED)


def _key(src: int, dst: int, port: int, in_port: int = 1) -> np.ndarray:
    key = np.zeros(K.KEY_WIDTH, np.int64)
    key[K.IN_PORT], key[K.DL_TYPE], key[K.NW_PROTO] = in_port, K.ETH_TYPE_IP, K.IPPROTO_TCP
    key[K.NW_SRC + 3], key[K.NW_DST + 3], key[K.TP_DST] = src, dst, port
    return key


MAN_PAGE_EXAMPLE = """
conj_id=1234 actions=controller
ip,ip_src=10.0.0.1 actions=conjunction(1234, 1/2)
ip,ip_src=10.0.0.4 actions=conjunction(1234, 1/2)
ip,ip_src=10.0.0.6 actions=conjunction(1234, 1/2)
ip,ip_src=10.0.0.7 actions=conjunction(1234, 1/2)
ip,ip_dst=10.0.0.2 actions=conjunction(1234, 2/2)
ip,ip_dst=10.0.0.5 actions=conjunction(1234, 2/2)
ip,ip_dst=10.0.0.7 actions=conjunction(1234, 2/2)
ip,ip_dst=10.0.0.8 actions=conjunction(1234, 2/2)
priority=0,actions=drop
"""


def test_the_man_page_example():
    rules = parse_flows(MAN_PAGE_EXAMPLE.replace(" actions", ",actions"))
    tables = FlowTables(rules)
    net = 0x0A000000
    assert tables.lookup(0, _key(net | 4, net | 8, 80)) is rules[0]
    assert tables.lookup(0, _key(net | 7, net | 7, 80)) is rules[0]
    assert tables.lookup(0, _key(net | 4, net | 3, 80)) is rules[-1]  # one dimension only
    assert tables.lookup(0, _key(net | 3, net | 8, 80)) is rules[-1]
    # a conj_id lookup ignores the conjunction rules; a plain lookup never returns them
    for r in rules[1:-1]:
        assert r.conjunctions and r.priority == 32768


def test_a_higher_priority_rule_wins_and_a_missing_conj_id_rule_falls_through():
    rules = parse_flows(
        "priority=10,ip,nw_src=10.0.0.1,actions=conjunction(1,1/2),conjunction(2,1/2)\n"
        "priority=10,tcp,tp_dst=80,actions=conjunction(1,2/2)\n"
        "priority=10,tcp,tp_dst=443,actions=conjunction(2,2/2)\n"
        "priority=20,tcp,nw_dst=10.0.0.9,actions=output:9\n"
        "priority=5,conj_id=1,actions=output:1\n"
        "priority=1,actions=output:7\n"
    )
    tables = FlowTables(rules)
    assert tables.lookup(0, _key(0x0A000001, 0x0A000002, 80)).actions[0].port == 1
    assert tables.lookup(0, _key(0x0A000001, 0x0A000009, 80)).actions[0].port == 9
    # conjunction 2 is met but no rule has conj_id=2: as if it had not matched
    assert tables.lookup(0, _key(0x0A000001, 0x0A000002, 443)).actions[0].port == 7
    # the conj_id lookup is a whole lookup: a rule without conj_id can answer it
    rules2 = parse_flows(
        "priority=10,ip,nw_src=10.0.0.1,actions=conjunction(1,1/2)\n"
        "priority=10,tcp,tp_dst=80,actions=conjunction(1,2/2)\n"
        "priority=8,tcp,actions=output:8\n"
        "priority=5,conj_id=1,actions=output:1\n"
    )
    assert FlowTables(rules2).lookup(0, _key(0x0A000001, 2, 80)).actions[0].port == 8


# --- the lookup against a brute-force reading of ovs-fields(7) --------------------------------

CONJ_N = {1: 2, 2: 3, 3: 2}  # each conjunction id has one number of dimensions


@st.composite
def conj_rule_lines(draw):
    prio = draw(st.integers(0, 3))
    parts = [f"priority={prio}"]
    if draw(st.booleans()):
        parts.append("tcp")
        if draw(st.booleans()):
            parts.append(f"tp_dst={draw(st.integers(0, 3))}")
    if draw(st.booleans()):
        parts.append(f"in_port={draw(st.integers(1, 3))}")
    if draw(st.booleans()):
        parts.append(f"reg0={draw(st.integers(0, 3))}")
    kind = draw(st.sampled_from(["conj", "conj", "conj_id", "plain"]))
    if kind == "conj":
        ids = draw(st.lists(st.sampled_from(sorted(CONJ_N)), min_size=1, max_size=2, unique=True))
        acts = ",".join(f"conjunction({i},{draw(st.integers(1, CONJ_N[i]))}/{CONJ_N[i]})"
                        for i in ids)  # fmt: skip
        return ",".join(parts) + ",actions=" + acts
    if kind == "conj_id":
        parts.insert(1, f"conj_id={draw(st.sampled_from([0, *sorted(CONJ_N)]))}")
    return ",".join(parts) + f",actions=output:{draw(st.integers(1, 9))}"


@st.composite
def conj_keys(draw):
    key = _key(0, 0, draw(st.integers(0, 3)), draw(st.integers(1, 3)))
    key[K.REG0] = draw(st.integers(0, 3))
    return key


def brute_force(rules, key, conj_id=0, allow_conj=True):
    """ovs-fields(7), read literally: the highest-priority matching rule that has no
    conjunction actions; unless a conjunctive flow of higher priority is met (a matching rule
    in each of its dimensions), whose conj_id lookup (conjunction rules ignored) answers;
    a met conjunction whose conj_id lookup finds nothing counts as not met."""
    probe = key.copy()
    probe[K.CONJ_ID] = conj_id
    hits = sorted((r for r in rules if r.matches(probe)), key=lambda r: (-r.priority, r.order))
    hard = next((r for r in hits if not r.conjunctions), None)
    if allow_conj:
        floor = hard.priority if hard else -1
        seen: dict[tuple[int, int], set[int]] = {}
        for r in hits:
            if r.conjunctions and r.priority > floor:
                for cid, k, _n in r.conjunctions:
                    seen.setdefault((r.priority, cid), set()).add(k)
        met = sorted(((p, c) for (p, c), ks in seen.items() if len(ks) == CONJ_N[c]),
                     key=lambda pc: (-pc[0], pc[1]))  # fmt: skip
        for _prio, cid in met:
            found = brute_force(rules, key, cid, allow_conj=False)
            if found is not None:
                return found
    return hard


@settings(max_examples=300, deadline=None)
@given(st.lists(conj_rule_lines(), min_size=1, max_size=20), st.lists(conj_keys(), max_size=6))
def test_lookups_equal_the_brute_force_reading_and_wildcards_are_sound(lines, key_list):
    rules = parse_flows("\n".join(lines))
    tables = FlowTables(rules)
    for key in key_list:
        expected = brute_force(rules, key)
        for lookup in (tables.lookup, tables.lookup_linear):
            wc = np.zeros(K.KEY_WIDTH, np.int64)
            assert lookup(0, key, wc) is expected
            assert wc[K.CONJ_ID] == 0  # never part of a packet's megaflow
            other = key.copy()
            other[K.TP_DST] ^= 1
            other[K.REG0] ^= 2
            mixed = (key & wc) | (other & ~wc)
            assert lookup(0, mixed) is expected
