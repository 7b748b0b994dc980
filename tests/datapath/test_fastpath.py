"""The fast path's guarantees (assume-established mode) and the recirc mode's shape.

What: on the talk's workload A, established data takes path "fast"; in recirc mode every
packet recirculates exactly once; on workload B upcalls are per megaflow, not per
connection; a spoofed or out-of-window packet on a cached 5-tuple, a RST, a FIN, a packet
after a flush or after expiry, are all left to full processing and get the reference
engine's verdict; a run of fast hits creates no connection.

Design: each scenario is a packet list from ``support.workloads`` (warm-up, then probe packets in a
batch of their own); the reference engine runs the same list for the expected verdicts, and
the whole run is also compared packet for packet (``equivalence.first_divergence``).
"""

from __future__ import annotations

import pytest

from support import equivalence as H
from support import random_traffic as R
from support import rulesets as RS
from support import workloads as WL

try:
    from ctaccel.datapath.engine import DatapathEngine
except ImportError as exc:  # the engine is not there yet
    pytest.skip(f"ctaccel.datapath.engine unavailable: {exc}", allow_module_level=True)

FAST = "fast"
AE = "assume-established"


def run_checked(packets, plan: H.Plan, mode: str = AE, rules: str = WL.WORKLOAD_FLOWS):
    """(reference run, engine run), after checking they agree packet for packet."""
    expected = H.run_reference(rules, packets, plan)
    got = H.run_engine(DatapathEngine, mode, rules, packets, plan)
    report = H.first_divergence(packets, expected, got, mode, plan,
                                compare_recirculations=(mode == "recirc"))  # fmt: skip
    assert report is None, report
    return expected, got


def warm_then(n_flows: int, probe, rounds: int = 2, seed: int = 3, v6: bool = False):
    """Workload A with ``rounds`` data rounds (fast-path entries installed and used), then
    the packets ``probe(convs)`` returns, one ms later, in a batch of their own."""
    warm, convs = WL.workload_a_with_conversations(n_flows, rounds, seed, v6)
    now = warm[-1][2] + 1
    probes = [(p, f, now) for p, f in probe(convs)]
    return warm + probes, H.Plan((len(warm), len(probes))), len(warm)


def data_round(convs):
    return [c.data(d, 64) for c in convs for d in (True, False)]


# --- workload A ---------------------------------------------------------------------------------


def test_established_data_takes_the_fast_path():
    n_flows, rounds = 2000, 6
    packets, _convs = WL.workload_a_with_conversations(n_flows, rounds, seed=5)
    plan = H.Plan(tuple(R.batch_sizes(len(packets), 5, 256, 256)))
    run = H.run_engine(DatapathEngine, AE, WL.WORKLOAD_FLOWS, packets, plan, keep_engine=True)
    handshakes, per_round = 3 * n_flows, 2 * n_flows
    # Round 1 holds each direction's first data segment (its fast-path entry is installed
    # then); from round 2 on, established data must go fast.
    steady = run.results[handshakes + per_round :]
    assert len(steady) == (rounds - 1) * per_round
    fast = [r for r in steady if r.path == FAST]
    assert len(fast) >= 0.99 * len(steady), _path_histogram(steady)
    for (port, _f, _t), r in zip(packets[handshakes + per_round :], steady, strict=True):
        assert r.out_ports == [2 if port == 1 else 1] and r.ct_state.startswith("est")
    assert run.stats["fast_path_hits"] >= len(fast)
    assert len(run.engine.conntrack) == n_flows


def _path_histogram(results) -> dict:
    hist: dict = {}
    for r in results:
        key = (r.path, getattr(r, "punt", ""))
        hist[key] = hist.get(key, 0) + 1
    return hist


def test_recirc_mode_recirculates_every_packet_exactly_once():
    packets = WL.workload_a(300, 4, seed=6)
    _expected, got = run_checked(packets, H.plan_for(packets, 6), mode="recirc")
    assert all(r.recirculations == 1 for r in got.results)
    assert not any(r.path == FAST for r in got.results)
    assert got.stats["recirculations"] == len(packets)


# --- workload B: upcalls per megaflow --------------------------------------------------------


@pytest.mark.parametrize("mode", ["recirc", AE])
def test_upcalls_are_per_megaflow_not_per_connection(mode):
    upcalls = {}
    for n_flows in (40, 400):
        packets = WL.workload_b(n_flows, 4, seed=n_flows)
        plan = H.Plan(tuple(R.batch_sizes(len(packets), 1, 256, 256)))
        run = H.run_engine(DatapathEngine, mode, WL.WORKLOAD_FLOWS, packets, plan)
        new = sum(r.ct_state == "new|trk" for r in run.results)
        assert new >= len(packets) // 4  # ~1 in 3 NEW (the first round of SYNs included)
        upcalls[n_flows] = run.stats["upcalls"]
    assert upcalls[40] == upcalls[400], upcalls
    assert upcalls[400] <= 32, upcalls


# --- what the fast path must not accept --------------------------------------------------------

SPOOFS = {
    "out_of_window": lambda c: c.out_of_window(True),
    "seq_behind": lambda c: c.blind_data(False),
    "ack_of_unsent_data": lambda c: c.ack_unsent(True),
    "blind_rst": lambda c: c.blind_rst(False),
    "bad_checksum": lambda c: c.bad_checksum(True),
}


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("spoof", sorted(SPOOFS))
def test_spoofed_packet_on_an_established_flow_is_not_fast(spoof, v6):
    def probe(convs):
        c = convs[3]
        return [SPOOFS[spoof](c), c.data(True, 10), c.data(False, 10)]

    packets, plan, at = warm_then(20, probe, v6=v6)
    expected, got = run_checked(packets, plan)
    assert got.results[at - 1].path == FAST  # the 5-tuple's entries are live
    spoofed = got.results[at]
    assert spoofed.path != FAST
    assert spoofed.ct_state == expected.results[at].ct_state == "inv|trk"
    assert spoofed.out_ports == [] and spoofed.drop_reason == "rule_drop"
    # the connection is unharmed: the next genuine segments go fast again
    assert [r.path for r in got.results[at + 1 :]] == [FAST, FAST]


@pytest.mark.parametrize("kind", ["rst_client", "rst_server", "fin_client", "fin_server"])
def test_rst_or_fin_on_an_established_flow_is_punted(kind):
    def probe(convs):
        c = convs[5]
        from_client = kind.endswith("client")
        first = c.rst(from_client) if kind.startswith("rst") else c.fin(from_client)
        return [first, c.data(not from_client, 10), c.data(from_client, 10)]

    packets, plan, at = warm_then(20, probe)
    expected, got = run_checked(packets, plan)
    assert got.results[at].path != FAST
    assert got.results[at].ct_state == expected.results[at].ct_state
    # after the state change, packets still get the reference verdict (checked above) and
    # none is accepted on the strength of an entry recorded before it
    assert got.results[at].out_ports == expected.results[at].out_ports


def test_flush_invalidates_cached_entries():
    packets, _plan, at = warm_then(30, data_round)
    plan = H.Plan((at, len(packets) - at), flush_at=at)
    expected, got = run_checked(packets, plan)
    probe = got.results[at:]
    assert not any(r.path == FAST for r in probe[:2])
    # as in the reference: the first segment after the flush is new again (picked up)
    assert probe[0].ct_state == expected.results[at].ct_state == "new|trk"


def test_expired_connection_is_not_served_from_the_cache():
    warm, convs = WL.workload_a_with_conversations(30, 2, seed=4)
    later = warm[-1][2] + R.TEST_TIMEOUTS_MS["tcp_established"] + 1
    probes = [(p, f, later) for p, f in data_round(convs)]
    packets = warm + probes
    at = len(warm)
    expected, got = run_checked(packets, H.Plan((at, len(probes))))
    assert not any(r.path == FAST for r in got.results[at : at + 2])
    assert got.results[at].ct_state == expected.results[at].ct_state
    assert expected.results[at].ct_state != "est|trk"  # the reference saw it expired too


def test_fast_hits_create_no_state():
    n_flows = 50
    packets, plan, at = warm_then(n_flows, lambda convs: data_round(convs) + data_round(convs))
    got = H.run_engine(
        DatapathEngine, AE, WL.WORKLOAD_FLOWS, packets[:at], H.Plan((at,)), keep_engine=True
    )
    eng = got.engine
    conns_before = len(eng.conntrack)
    tuples_before = {_tuple_of(line) for line in eng.conntrack.dump(packets[at][2])}
    hits_before = eng.stats["fast_path_hits"]
    probe = packets[at:]
    results = eng.process_batch([f for _p, f, _t in probe], [p for p, _f, _t in probe],
                                [t for _p, _f, t in probe])  # fmt: skip
    assert all(r.path == FAST for r in results), _path_histogram(results)
    assert len(eng.conntrack) == conns_before == n_flows
    assert {_tuple_of(line) for line in eng.conntrack.dump(probe[-1][2])} == tuples_before
    assert eng.stats["fast_path_hits"] - hits_before == len(probe)


def _tuple_of(dump_line: str) -> str:
    """The connection part of a dump line (without timers or protocol state)."""
    return dump_line.split("),reply=")[0]


@pytest.mark.parametrize("mode", [AE, "recirc"])
def test_frames_wider_than_the_rewrite_rows_grow_them_mid_batch(mode):
    # 3,000-byte segments under ct(nat): wider than the engine's first rewrite rows (2,048
    # bytes), so the kernel stops at the first one, Python widens them and the batch resumes
    packets, _convs = WL.workload_a_with_conversations(40, 3, seed=9, data_size=3000)
    assert max(len(f) for _p, f, _t in packets) > 2048
    run_checked(packets, H.Plan((len(packets),)), mode, RS.NAT_KEEP)


# An entry's compact line packs ct_mark, ct_label, the output port and the rule ids into
# one cache line; values that do not fit (a label word with its top bit set, two outputs)
# leave the entry to the full layout. Both kinds must answer like the reference engine and
# serve established data from the fast path.
_WIDE = """\
table=0,priority=100,ip,actions=ct(table=1,zone=3)
table=0,priority=0,actions=drop
table=1,priority=200,ct_state=+trk+inv,actions=drop
table=1,priority=100,ct_state=+trk+new,in_port=1,tcp,actions=ct(commit,zone=3,exec(set_field:{set}->{field})),output:2
table=1,priority=100,ct_state=+trk+est,{field}={value},in_port=1,actions={orig_out}
table=1,priority=100,ct_state=+trk+est,{field}={value},in_port=2,actions={reply_out}
table=1,priority=0,actions=drop
"""
_COMPACT_CASES = {
    # the largest ct_mark: packed at the top of its word
    "mark-max": (
        dict(
            set="0xffffffff",
            field="ct_mark",
            value="0xffffffff",
            orig_out="output:2",
            reply_out="output:1",
        ),
        True,
    ),
    # a label word >= 2**31 does not fit; nor do two outputs
    "label-high-bit": (
        dict(
            set="0x80000000",
            field="ct_label",
            value="0x80000000",
            orig_out="output:2",
            reply_out="output:1",
        ),
        False,
    ),
    "two-outputs": (
        dict(
            set="0x1",
            field="ct_mark",
            value="0x1",
            orig_out="output:2,output:4",
            reply_out="output:1,output:3",
        ),
        False,
    ),
}


def _wide_run(case, seed, engine_class=DatapathEngine):
    """Workload A's 120 flows (4 rounds) through _WIDE's rules for ``case`` in the reference
    engine and ``engine_class`` (assume-established), checked packet for packet; the run,
    whether the case's entries are compact, and the flow count."""
    fields, compact = _COMPACT_CASES[case]
    rules = _WIDE.format(**fields)
    n_flows, rounds = 120, 4
    packets, _convs = WL.workload_a_with_conversations(n_flows, rounds, seed=seed)
    plan = H.Plan((len(packets),))
    expected = H.run_reference(rules, packets, plan)
    run = H.run_engine(engine_class, AE, rules, packets, plan, keep_engine=True)
    report = H.first_divergence(packets, expected, run, AE, plan)
    assert report is None, report
    return run, compact, n_flows


@pytest.mark.parametrize("case", sorted(_COMPACT_CASES))
def test_compact_and_full_entries_answer_alike(case):
    run, compact, n_flows = _wide_run(case, 13)
    steady = run.results[3 * n_flows + 2 * n_flows :]
    assert all(r.path == FAST for r in steady), _path_histogram(steady)
    stats = run.engine.stats
    assert stats["fast_path_entries"] == 2 * n_flows
    assert stats["fast_path_compact_entries"] == (2 * n_flows if compact else 0)
    # only entries without a compact line take a full layout (896 bytes); the others their
    # row (128 bytes: line and key) and index slots
    assert stats["fast_path_full_layouts"] == (0 if compact else 2 * n_flows)
    # compact entries of IPv4 TCP connections without NAT are all slim (16 bytes and index
    # slots), sharing one template per direction and outcome
    assert stats["fast_path_slim_entries"] == (2 * n_flows if compact else 0)
    assert stats["fast_path_templates"] == (2 if compact else 0), stats
    eng = run.engine
    fp_bytes = eng.memory_bytes()["fast_path_bytes"]
    fast = eng.fast
    assert fp_bytes == (fast.rows.nbytes + fast.slim.nbytes + fast.full.nbytes
                        + fast.exact.index.nbytes + fast.templates.index.nbytes + 64)  # fmt: skip
    if not compact:
        assert fp_bytes > 2 * n_flows * 896


@pytest.mark.parametrize("admit", [1, 7])
@pytest.mark.parametrize("case", ["mark-max", "two-outputs"])
def test_a_fast_path_smaller_than_the_flows_answers_alike(case, admit):
    """240 entries wanted, room for 64: installs replace entries (compact and full ones), one
    in ``admit`` of those that find the cache full, and every packet still gets full
    processing's answer."""
    small = lambda *a, **k: DatapathEngine(*a, max_fast_path=64, fast_path_admit=admit, **k)  # noqa: E731
    run, compact, _n_flows = _wide_run(case, 17, small)
    stats = run.engine.stats
    assert stats["fast_path_full"] > 0 and stats["fast_path_entries"] <= 64
    assert stats["fast_path_replaced"] == (stats["fast_path_full"] + admit - 1) // admit
    assert stats["fast_path_hits"] > 0
    assert stats["fast_path_full_layouts"] <= (0 if compact else 64)
