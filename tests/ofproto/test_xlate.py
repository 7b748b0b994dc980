"""Translation of OpenFlow tables into datapath programs (ofproto/xlate.py).

Three kinds of checks:
1. Equivalence: running the translated programs (tests/support/xlate_exec.py, real conntrack, a
   megaflow cache) gives exactly the reference engine's per-packet results, conntrack table
   and rule counters, on random rule sets and random conversations.
2. Megaflow soundness: a key agreeing with the translated key on ``wc`` gets the same
   program; and ``wc`` stays small when the rules look at little.
3. The encoding of hand-written rule sets, against programs written out here.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctaccel.conntrack import Conntrack
from ctaccel.datapath.reference import MAX_RESUBMIT_DEPTH, ReferenceEngine
from ctaccel.demo import TCP_FLOWS, UDP_FLOWS, tcp_packets, udp_packets
from ctaccel.ofproto import program as P
from ctaccel.ofproto.classifier import FlowTables
from ctaccel.ofproto.rules import parse_flows
from ctaccel.ofproto.xlate import translate
from ctaccel.packet import build as B
from ctaccel.packet import key as K
from ctaccel.packet.parse import parse_frame
from support.xlate_exec import ProgramExecutor

MA, MB, MC = "50:54:00:00:00:01", "50:54:00:00:00:02", "50:54:00:00:00:03"
IA, IB, IC = "10.1.1.1", "10.1.1.2", "10.1.2.3"
NO_LABEL = [0, 0, 0, 0]
FULL = 0xFFFFFFFF


def op(code, *args):
    row = [0] * P.OPW
    row[0] = code
    row[1 : 1 + len(args)] = args
    return row


def ct_op(zone, flags=0, mark=0, mark_mask=0, label=NO_LABEL, label_mask=NO_LABEL):
    return op(P.OP_CT, zone, flags, mark, mark_mask, *label, *label_mask)


def program(*rows):
    return np.array(rows, np.int64).reshape(-1, P.OPW)


def assert_program(actual, expected_rows):
    expected = program(*expected_rows)
    assert np.array_equal(actual, expected), (
        f"\n{P.format_program(actual)}\n--- expected ---\n{P.format_program(expected)}"
    )


def parse(frame, in_port):
    key = np.zeros(K.KEY_WIDTH, np.int64)
    parse_frame(np.frombuffer(frame, np.uint8), np.int64(in_port), key)
    return key


def tables_of(text):
    return FlowTables(parse_flows(text, "test.flows"))


# ---------------------------------------------------------------------- traffic
def _catalogue():
    """(in_port, frame) steps of a few conversations, each in conversation order."""

    def tcp(src, dst, sport, dport, flags, seq, ack, data=b""):
        smac, dmac = (MA, MB) if src == IA else (MB, MA) if src == IB else (MC, MB)
        return B.tcp_frame(smac, dmac, src, dst, sport, dport, flags, seq, ack, data)

    port = {IA: 1, IB: 2, IC: 3}
    steps = [
        (IA, B.udp_frame(MA, MB, IA, IB, 1234, 53, b"query")),
        (IB, B.udp_frame(MB, MA, IB, IA, 53, 1234, b"answer")),
        (IA, B.udp_frame(MA, MB, IA, IB, 1234, 53, b"query2")),
        (IA, B.udp_frame(MA, MB, IA, IB, 5000, 0x55, b"x")),
        (IB, B.udp_frame(MB, MA, IB, IA, 0x55, 5000, b"y")),
        (IA, tcp(IA, IB, 40000, 80, "S", 1000, 0)),
        (IB, tcp(IB, IA, 80, 40000, "SA", 5000, 1001)),
        (IA, tcp(IA, IB, 40000, 80, "A", 1001, 5001)),
        (IA, tcp(IA, IB, 40000, 80, "PA", 1001, 5001, b"GET /\r\n")),
        (IB, tcp(IB, IA, 80, 40000, "PA", 5001, 1008, b"200 OK")),
        (IA, tcp(IA, IB, 40000, 80, "FA", 1008, 5007)),
        (IB, tcp(IB, IA, 80, 40000, "FA", 5007, 1009)),
        (IA, tcp(IA, IB, 40000, 80, "A", 1009, 5008)),
        (IC, tcp(IC, IB, 5555, 22, "S", 9000, 0)),
        (IB, tcp(IB, IC, 22, 5555, "SA", 7000, 9001)),
        (IA, B.icmp_frame(MA, MB, IA, IB, id=7, seq=1)),
        (IB, B.icmp_frame(MB, MA, IB, IA, type=0, id=7, seq=1)),
        (IA, B.arp_frame(MA, "ff:ff:ff:ff:ff:ff", 1, IA, IB)),
    ]
    return [(port[src], frame) for src, frame in steps]


CATALOGUE = _catalogue()


@st.composite
def packet_sequences(draw):
    picks = draw(st.lists(st.integers(0, len(CATALOGUE) - 1), min_size=3, max_size=12))
    if draw(st.booleans()):
        picks.sort()  # conversation order: requests before replies, handshakes in order
    return [CATALOGUE[i] for i in picks]


# ---------------------------------------------------------------------- random rules
CT_STATES = ["-trk", "+trk", "+trk+new", "+trk+est", "+trk+est+rpl", "+trk-rpl", "+trk+inv"]


@st.composite
def rule_line(draw, table, n_tables, recirc_budget, catch_all=False):
    if catch_all:
        parts = [f"table={table}", "priority=0"]
    else:
        parts = [f"table={table}", f"priority={draw(st.integers(1, 3))}"]

    def ask():
        return draw(st.booleans())

    def match_on():  # a catch-all rule matches nothing
        return not catch_all and ask() and ask()

    proto = "" if catch_all else draw(st.sampled_from(["", "ip", "udp", "tcp", "udp", "tcp"]))
    if proto:
        parts.append(proto)
    if match_on():
        parts.append(f"in_port={draw(st.integers(1, 3))}")
    if proto and match_on():
        parts.append("nw_src=" + draw(st.sampled_from(["10.1.1.0/24", IA, "10.1.1.2/31"])))
    if proto in ("udp", "tcp") and match_on():
        parts.append("tp_dst=" + draw(st.sampled_from(["80", "53", "0x50/0xfff0", "22"])))
    ct_state = draw(st.sampled_from(CT_STATES)) if not catch_all and ask() else ""
    if ct_state:
        parts.append("ct_state=" + ct_state)
    if match_on():
        parts.append(f"ct_zone={draw(st.sampled_from([0, 1, 5]))}")
    if match_on():
        parts.append(draw(st.sampled_from(["ct_mark=0x1", "ct_mark=0x2/0x2", "ct_mark=0"])))
    if match_on():
        reg = draw(st.integers(0, 3))
        parts.append(
            draw(st.sampled_from([f"reg{reg}=5", f"reg{reg}=0x100/0xff00", f"reg{reg}=0"]))
        )

    later = list(range(table + 1, n_tables))
    choices = ["output:1", "output:2", "output:3", "output:4", "in_port", "controller"]
    choices += [
        "load:5->NXM_NX_REG0[]",
        "set_field:0x101/0xffff->reg1",
        "load:2->NXM_NX_REG2[4..7]",
    ]
    choices += ["move:NXM_NX_REG0[0..7]->NXM_NX_REG1[8..15]", "set_field:0x7->metadata"]
    choices += ["move:NXM_OF_IN_PORT[]->NXM_NX_REG3[0..15]", "ct_clear"]
    if later:
        choices += [f"resubmit(,{t})" for t in later] + [f"resubmit(2,{t})" for t in later]
        choices += [f"resubmit(3,{t})" for t in later]
    if proto == "tcp":
        choices.append("move:NXM_OF_TCP_DST[]->NXM_NX_REG3[0..15]")
    if proto:
        choices += ["ct(commit,zone=5)", "ct(zone=1)", "ct(commit,zone=NXM_NX_REG0[0..15])"]
        choices += ["ct(commit,exec(set_field:0x1->ct_mark))", "ct(commit,zone=NXM_NX_REG1[8..23],exec(set_field:0x5/0xf->ct_label))"]  # fmt: skip
        choices += ["ct(commit,zone=1,exec(load:0x1->NXM_NX_CT_MARK[1]))"]
    if "+inv" in ct_state:  # OVS refuses ct(commit) on a rule matching +inv
        choices = [c for c in choices if "commit" not in c]
    actions = draw(st.lists(st.sampled_from(choices), max_size=4))
    if proto and recirc_budget[0] > 0 and ask():
        recirc_budget[0] -= 1
        target = draw(st.integers(0, n_tables - 1))
        args = ["zone=5", "commit,zone=1", "zone=NXM_NX_REG0[0..15]", "commit,exec(set_field:0x3->ct_mark)"]  # fmt: skip
        arg = draw(st.sampled_from([a for a in args if "+inv" not in ct_state or "commit" not in a]))  # fmt: skip
        actions.insert(draw(st.integers(0, len(actions))), f"ct({arg},table={target})")
    if later and ask():
        actions.append(f"goto_table:{draw(st.sampled_from(later))}")
    if not actions:
        actions = ["drop"]
    return ",".join(parts) + ",actions=" + ",".join(actions)


@st.composite
def rule_sets(draw):
    n_tables = draw(st.integers(2, 4))
    budget = [2]  # ct(table=N) actions: each can fork every pass, keep the tree small
    lines = []
    if draw(st.booleans()):
        # The usual stateful entry: untracked IP goes through conntrack and comes back.
        budget[0] -= 1
        commit = draw(st.sampled_from(["", "commit,"]))
        zone = draw(st.sampled_from(["zone=5", "zone=1", "zone=NXM_NX_REG0[0..15]"]))
        target = draw(st.integers(0, n_tables - 1))
        lines.append(
            f"table=0,priority=3,ip,ct_state=-trk,actions=ct({commit}{zone},table={target})"
        )
    for table in range(n_tables):
        for _ in range(draw(st.integers(1, 4))):
            lines.append(draw(rule_line(table, n_tables, budget)))
        if draw(st.booleans()):  # a table-miss rule (it has the lowest priority)
            lines.append(draw(rule_line(table, n_tables, budget, catch_all=True)))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- 1. equivalence
def run_both(text, packets, cache=True):
    """Reference engine and program executor side by side; assert identical results.
    Returns the reference results and the executor."""
    ref = ReferenceEngine(parse_flows(text, "test.flows"), Conntrack())
    exe = ProgramExecutor(parse_flows(text, "test.flows"), Conntrack(), cache=cache)
    results = []
    now = 1_000
    for port, frame in packets:
        now += 250
        expected = ref.process(frame, port, now)
        actual = exe.process(frame, port, now)
        assert actual == expected, f"packet {len(results)} in_port {port}"
        results.append(expected)
    assert exe.conntrack.dump(now) == ref.conntrack.dump(now)
    assert exe.conntrack.counters == ref.conntrack.counters
    assert exe.rule_counters() == ref.rule_counters()
    assert exe.counters == ref.counters
    return results, exe


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rule_sets(), packet_sequences())
def test_programs_reproduce_the_reference_engine(text, packets):
    run_both(text, packets)


def test_demo_rule_sets_reproduce_the_reference_engine_new_est_rpl():
    udp_results, udp_exe = run_both(UDP_FLOWS, [(p, f) for p, f, _w in udp_packets()])
    tcp_results, tcp_exe = run_both(TCP_FLOWS, [(p, f) for p, f, _w in tcp_packets()])
    states = {r.ct_state for r in udp_results + tcp_results}
    assert {"new|trk", "est|trk", "est|rpl|trk", "inv|trk"} <= states
    # Later packets of a connection reuse installed megaflows instead of translating again.
    assert udp_exe.hits > 0 and tcp_exe.hits > 0


def test_recirculation_loop_reaches_the_depth_cap_like_the_reference():
    text = "table=0,priority=1,udp,actions=ct(zone=1,table=0),output:3\n"
    results, exe = run_both(text, CATALOGUE[:2])
    assert results[0].recirc_dropped and exe.counters["recirc_depth_exceeded"] == 2


def test_resubmit_depth_limit_drops_like_the_reference():
    text = "table=0,priority=1,actions=output:2,resubmit(,0)\n"
    results, _exe = run_both(text, CATALOGUE[:1])
    assert results[0].out_ports == [2] * (MAX_RESUBMIT_DEPTH + 1)
    tables = tables_of("table=0,priority=1,actions=resubmit(,0),output:2\n")
    ops = translate(tables, parse(CATALOGUE[0][1], 1), 0).ops
    assert len(ops) == MAX_RESUBMIT_DEPTH + 2
    assert list(ops[-1][:2]) == [P.OP_DROP, P.DROP_CODE["resubmit_depth"]]
    results, _exe = run_both("table=0,priority=1,actions=resubmit(,0),output:2\n", CATALOGUE[:1])
    assert results[0].drop_reason == "resubmit_depth"


# ---------------------------------------------------------------------- 2. soundness
INTERESTING = [0, 1, 2, 3, 5, 0x20, 0x21, 0x22, 0x2A, 0x30, 0x100, 0x101, 53, 80, 0x55, 0x800]


def _column_bits():
    """Width of each matchable column: a real key never holds more (random keys must not)."""
    bits = np.full(K.PARSE_FIRST, 32, np.int64)
    narrow = {
        K.DL_SRC: 48, K.DL_DST: 48, K.DL_TYPE: 16, K.VLAN_TCI: 16, K.NW_PROTO: 8, K.NW_TOS: 8,
        K.NW_TTL: 8, K.NW_FRAG: 2, K.IPV6_LABEL: 20, K.TP_SRC: 16, K.TP_DST: 16,
        K.TCP_FLAGS: 12, K.CT_STATE: 8, K.CT_ZONE: 16, K.CT_NW_PROTO: 8, K.CT_TP_SRC: 16,
        K.CT_TP_DST: 16, K.IN_PORT: 16,
    }  # fmt: skip
    for col, n in narrow.items():
        bits[col] = n
    return (1 << bits) - 1


COLUMN_MASKS = _column_bits()


def noisy_key(key, wc, rng):
    """A key equal to ``key`` on ``wc`` and random (often plausible values) elsewhere."""
    noise = rng.integers(0, 1 << 48, K.KEY_WIDTH, dtype=np.int64)
    plausible = rng.random(K.KEY_WIDTH) < 0.5
    noise[plausible] = rng.choice(INTERESTING, int(plausible.sum()))
    noise[: K.PARSE_FIRST] &= COLUMN_MASKS
    k2 = key.copy()
    m = slice(0, K.PARSE_FIRST)
    k2[m] = (key[m] & wc[m]) | (noise[m] & ~wc[m])
    return k2


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rule_sets(), packet_sequences(), st.integers(0, 2**32 - 1))
def test_keys_agreeing_on_wc_get_the_same_program(text, packets, seed):
    rng = np.random.default_rng(seed)
    tables = tables_of(text)
    # Pass-start keys as the datapath meets them (ct fields from real conntrack, registers
    # from earlier passes), plus the same keys with random ct fields and registers.
    exe = ProgramExecutor(parse_flows(text, "test.flows"), Conntrack(), cache=False)
    for i, (port, frame) in enumerate(packets):
        exe.process(frame, port, 1_000 + 250 * i)
    samples = [(t, k) for t, k, _ops in exe.passes[:40]]
    for _table, key in list(samples[:10]):
        k = noisy_key(key, np.zeros(K.KEY_WIDTH, np.int64), rng)
        k[: K.CT_STATE] = key[: K.CT_STATE]  # the packet's headers, random metadata
        samples.append((int(rng.integers(0, len(tables.tables))), k))
    for table, key in samples:
        before = key.copy()
        tr = translate(tables, key, table)
        assert np.array_equal(key, before), "translate modified the caller's key"
        assert not tr.wc[K.PARSE_FIRST :].any()
        for _ in range(4):
            k2 = noisy_key(key, tr.wc, rng)
            ops2 = translate(tables, k2, table).ops
            assert np.array_equal(ops2, tr.ops), (
                f"table {table}\n{P.format_program(tr.ops)}\n--- k2 ---\n{P.format_program(ops2)}"
                f"\nkey {key.tolist()}\nk2  {k2.tolist()}\nwc  {tr.wc.tolist()}"
            )


def test_rules_on_in_port_only_leave_network_and_transport_bits_wildcarded():
    tables = tables_of(
        "priority=10,in_port=1,actions=output:2\npriority=10,in_port=2,actions=output:1\n"
    )
    port, frame = CATALOGUE[5]  # a TCP SYN
    tr = translate(tables, parse(frame, port), 0)
    assert_program(tr.ops, [op(P.OP_RULE, 0), op(P.OP_OUTPUT, 2)])
    assert tr.wc[K.IN_PORT] == FULL and tr.wc[K.DL_TYPE] == 0xFFFF
    assert tr.wc[K.NW_FRAG] == K.FRAG_ANY | K.FRAG_LATER
    others = np.delete(np.arange(K.PARSE_FIRST), [K.IN_PORT, K.DL_TYPE, K.NW_FRAG])
    assert not tr.wc[others].any()


def test_fragment_lookups_do_not_depend_on_ports():
    tables = tables_of("priority=10,udp,tp_dst=53,actions=output:2\npriority=1,actions=drop\n")
    frame = B.udp_frame(MA, MB, IA, IB, 1234, 53, b"q" * 64)
    first = B.fragment_ipv4(frame, 32)[0]
    key = parse(first, 1)
    assert key[K.NW_FRAG] & K.FRAG_ANY
    tr = translate(tables, key, 0)
    assert_program(tr.ops, [op(P.OP_RULE, 1)])  # ports hidden: tp_dst=53 does not match
    assert tr.wc[K.TP_SRC] == 0 and tr.wc[K.TP_DST] == 0
    whole = translate(tables, parse(frame, 1), 0)
    assert_program(whole.ops, [op(P.OP_RULE, 0), op(P.OP_OUTPUT, 2)])
    assert whole.wc[K.TP_DST] == 0xFFFF


# ---------------------------------------------------------------------- 3. encodings
def with_ct(key, state, zone=0, mark=0):
    key = key.copy()
    key[K.CT_STATE], key[K.CT_ZONE], key[K.CT_MARK] = state, zone, mark
    return key


def test_talks_zone5_udp_example_programs():
    tables = tables_of(UDP_FLOWS)
    a2b = parse(CATALOGUE[0][1], 1)
    b2a = parse(CATALOGUE[1][1], 2)
    # First pass: untracked -> ct(commit,zone=5) and recirculate to table 0.
    tr = translate(tables, a2b, 0)
    assert_program(
        tr.ops,
        [
            op(P.OP_RULE, 0),
            ct_op(5, P.CTF_COMMIT),
            op(P.OP_RECIRC, P.recirc_id_for_table(0)),
            op(P.OP_CLEAR_CT_FIELDS),
        ],
    )
    assert tr.wc[K.CT_STATE] == K.CS_TRACKED and tr.wc[K.NW_PROTO] == 0xFF
    assert not tr.wc[K.NW_SRC : K.NW_SRC + 4].any() and not tr.wc[K.TP_SRC : K.TP_DST + 1].any()
    new = with_ct(a2b, K.CS_TRACKED | K.CS_NEW, zone=5)
    assert_program(translate(tables, new, 0).ops, [op(P.OP_RULE, 1), op(P.OP_OUTPUT, 2)])
    est_reply = with_ct(b2a, K.CS_TRACKED | K.CS_ESTABLISHED | K.CS_REPLY_DIR, zone=5)
    assert_program(translate(tables, est_reply, 0).ops, [op(P.OP_RULE, 3), op(P.OP_OUTPUT, 1)])
    new_from_outside = with_ct(b2a, K.CS_TRACKED | K.CS_NEW, zone=5)
    tr = translate(tables, new_from_outside, 0)
    assert_program(tr.ops, [op(P.OP_RULE, 4)])  # priority-0 drop
    assert tr.wc[K.CT_ZONE] == 0xFFFF


def test_tcp_firewall_programs():
    tables = tables_of(TCP_FLOWS)
    syn = parse(CATALOGUE[5][1], 1)
    assert_program(
        translate(tables, syn, 0).ops,
        [
            op(P.OP_RULE, 0),
            ct_op(1),
            op(P.OP_RECIRC, P.recirc_id_for_table(1)),
            op(P.OP_CLEAR_CT_FIELDS),
        ],
    )
    # Table 1 ids follow table 0's two rules, in lookup order.
    new = with_ct(syn, K.CS_TRACKED | K.CS_NEW, zone=1)
    assert_program(
        translate(tables, new, 1).ops,
        [op(P.OP_RULE, 3), ct_op(1, P.CTF_COMMIT), op(P.OP_CLEAR_CT_FIELDS), op(P.OP_OUTPUT, 2)],
    )
    synack = parse(CATALOGUE[6][1], 2)
    est = with_ct(synack, K.CS_TRACKED | K.CS_ESTABLISHED | K.CS_REPLY_DIR, zone=1)
    assert_program(translate(tables, est, 1).ops, [op(P.OP_RULE, 5), op(P.OP_OUTPUT, 1)])
    inv = with_ct(synack, K.CS_TRACKED | K.CS_INVALID, zone=1)
    assert_program(translate(tables, inv, 1).ops, [op(P.OP_RULE, 2)])
    udp = parse(CATALOGUE[0][1], 1)
    assert_program(translate(tables, udp, 0).ops, [op(P.OP_RULE, 1)])
    assert_program(translate(tables, udp, 7).ops, [op(P.OP_MISS)])


def test_key_writes_moves_and_zone_from_register():
    tables = tables_of(
        "table=0,udp,actions=load:0x1234->NXM_NX_REG0[],set_field:0xab00/0xff00->reg1,"
        "move:NXM_OF_UDP_DST[]->NXM_NX_REG2[16..31],set_field:0x1122334455667788->metadata,"
        "ct(commit,zone=NXM_NX_REG0[4..19],exec(set_field:0x5/0xf->ct_mark,"
        "load:0x1->NXM_NX_CT_LABEL[100])),output:1,in_port,output:9,goto_table:1\n"
        "table=1,actions=controller\n"
    )
    key = parse(CATALOGUE[0][1], 1)  # udp dst 53
    before = key.copy()
    tr = translate(tables, key, 0)
    label = [1 << (100 - 96), 0, 0, 0]
    assert_program(
        tr.ops,
        [
            op(P.OP_RULE, 0),
            op(P.OP_SET, K.REG0, 0x1234, FULL),
            op(P.OP_SET, K.REG0 + 1, 0xAB00, 0xFF00),
            op(P.OP_SET, K.REG0 + 2, 53 << 16, 0xFFFF0000),
            op(P.OP_SET, K.METADATA, 0x11223344, FULL),
            op(P.OP_SET, K.METADATA + 1, 0x55667788, FULL),
            ct_op(0x123, P.CTF_COMMIT | P.CTF_SET_MARK | P.CTF_SET_LABEL, 5, 0xF, label, label),
            op(P.OP_CLEAR_CT_FIELDS),
            # output:1 is the input port: nothing; in_port outputs there.
            op(P.OP_OUTPUT, 1),
            op(P.OP_OUTPUT, 9),
            op(P.OP_RULE, 1),
            op(P.OP_CONTROLLER),
        ],
    )
    assert np.array_equal(key, before)
    assert tr.wc[K.TP_DST] == 0xFFFF  # read by move
    # The zone's register bits were written by this pass, but they are in wc all the same
    # (over-approximation, like OVS): bits 4..19 of reg0.
    assert tr.wc[K.REG0] & 0xFFFF0 == 0xFFFF0


def test_resubmit_with_port_sets_and_restores_in_port_and_ct_inside_recirculates():
    tables = tables_of(
        "table=0,udp,actions=resubmit(7,1),output:7,output:2\n"
        "table=1,in_port=7,udp,actions=output:7,in_port,ct(zone=2,table=2),resubmit(,3)\n"
        "table=3,actions=ct_clear,output:4\n"
    )
    tr = translate(tables, parse(CATALOGUE[0][1], 1), 0)
    assert_program(
        tr.ops,
        [
            op(P.OP_RULE, 0),
            op(P.OP_SET, K.IN_PORT, 7, FULL),
            op(P.OP_RULE, 1),
            # output:7 is the (resubmitted) input port: nothing; in_port outputs there.
            op(P.OP_OUTPUT, 7),
            ct_op(2),
            op(P.OP_RECIRC, P.recirc_id_for_table(2)),
            op(P.OP_CLEAR_CT_FIELDS),
            op(P.OP_RULE, 2),
            op(P.OP_CT_CLEAR),
            op(P.OP_OUTPUT, 4),
            op(P.OP_SET, K.IN_PORT, 1, FULL),
            op(P.OP_OUTPUT, 7),
            op(P.OP_OUTPUT, 2),
        ],
    )
    # The recirculated copy sees in_port 7 (table 2 has no rule for it: a miss there).
    text = (
        "table=0,udp,actions=resubmit(7,1),output:7,output:2\n"
        "table=1,in_port=7,udp,actions=output:7,in_port,ct(zone=2,table=2),resubmit(,3)\n"
        "table=2,in_port=7,ct_state=+trk,actions=output:5\n"
        "table=3,actions=ct_clear,output:4\n"
    )
    results, _exe = run_both(text, CATALOGUE[:3])
    assert results[0].out_ports == [7, 5, 4, 7, 2]
