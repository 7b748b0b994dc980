"""Slim fast-path entries: a connection and a shared template instead of a key and a line.

What: IPv4 TCP entries of one ct step without NAT are slim (datapath/entries.py). They must
answer as the reference engine does, share one template per direction and outcome, keep
their templates counted and their storage chained when entries are replaced, and never
serve a packet once their connection is gone, even when the same 5-tuple comes back as a
new connection (in the same conntrack row or another).

Design: workload A's flows through rules whose established outcome depends on the client
port's low bits (four templates: two outcomes in each direction); every run is compared
packet for packet with the reference engine; :func:`_check_store` walks the store's arrays
and checks its invariants from scratch.
"""

from __future__ import annotations

import numpy as np
import pytest

from ctaccel.datapath import layout as L
from ctaccel.datapath.engine import DatapathEngine
from support import equivalence as H
from support import workloads as WL

AE = "assume-established"
FAST = "fast"

_BY_PORT = """\
table=0,priority=100,ip,actions=ct(table=1,zone=3)
table=0,priority=0,actions=drop
table=1,priority=200,ct_state=+trk+inv,actions=drop
table=1,priority=100,ct_state=+trk+new,in_port=1,tcp,actions=ct(commit,zone=3),output:2
table=1,priority=110,ct_state=+trk+est,tcp,in_port=1,tp_src=0x0/0x1,actions=output:2
table=1,priority=100,ct_state=+trk+est,tcp,in_port=1,actions=output:4
table=1,priority=110,ct_state=+trk+est,tcp,in_port=2,tp_dst=0x0/0x1,actions=output:1
table=1,priority=100,ct_state=+trk+est,tcp,in_port=2,actions=output:3
table=1,priority=0,actions=drop
"""


def _run(packets, plan, **engine_args):
    expected = H.run_reference(_BY_PORT, packets, plan)
    engine = lambda *a, **k: DatapathEngine(*a, **engine_args, **k)  # noqa: E731
    run = H.run_engine(engine, AE, _BY_PORT, packets, plan, keep_engine=True)
    report = H.first_divergence(packets, expected, run, AE, plan)
    assert report is None, report
    return run


def _chain(head: int, nxt) -> list[int]:
    out, seen = [], set()
    while head > 0:
        assert head - 1 not in seen, "a free chain loops"
        seen.add(head - 1)
        out.append(head - 1)
        head = int(nxt(head - 1))
    return out


def _check_store(fast) -> dict:
    """The store's invariants, from its arrays: every slim entry's template indexed and
    counting exactly its entries; rows and slim rows each either in use or free, never both,
    and together all those ever taken. Returns the counts."""
    st = fast.state
    refs = fast.exact.entries()
    slim = refs[refs >= L.SLIM_TAG] - L.SLIM_TAG
    classic = refs[refs < L.SLIM_TAG]
    tpl_rows = fast.templates.entries()
    users = np.bincount(fast.slim[slim, L.SL_TPL], minlength=fast.rows.shape[0])
    assert set(np.flatnonzero(users).tolist()) == set(tpl_rows.tolist())
    assert (fast.rows[tpl_rows, L.FC_REFS] == users[tpl_rows]).all()
    free_rows = _chain(int(st[L.FP_ROW_FREE]), lambda r: fast.rows[r, L.FC_SLOT])
    used_rows = classic.tolist() + tpl_rows.tolist()
    assert len(set(used_rows)) == len(used_rows) and not set(used_rows) & set(free_rows)
    assert sorted(used_rows + free_rows) == list(range(int(st[L.FP_ROWS])))
    free_slim = _chain(int(st[L.FP_SLIM_FREE]), lambda s: fast.slim[s, L.SL_CONN])
    assert not set(slim.tolist()) & set(free_slim)
    assert sorted(slim.tolist() + free_slim) == list(range(int(st[L.FP_SLIMS])))
    assert len(refs) <= st[L.FP_CAP]
    return {"slim": len(slim), "classic": len(classic), "templates": len(tpl_rows)}


def test_slim_entries_share_templates_and_answer_alike():
    n_flows, rounds = 200, 4
    packets, _convs = WL.workload_a_with_conversations(n_flows, rounds, seed=21)
    run = _run(packets, H.Plan((len(packets),)))
    steady = run.results[3 * n_flows + 2 * n_flows :]
    assert all(r.path == FAST for r in steady)
    outs = {tuple(r.out_ports) for r in steady}
    assert outs == {(1,), (2,), (3,), (4,)}  # both outcomes in both directions
    counts = _check_store(run.engine.fast)
    assert counts == {"slim": 2 * n_flows, "classic": 0, "templates": 4}


@pytest.mark.parametrize("admit", [1, 3])
def test_replacing_slim_entries_keeps_templates_counted(admit):
    """60 entries wanted, room for 24: installs evict entries (and, with their last user,
    templates) in many orders; every packet still gets the reference's answer and the
    store stays consistent."""
    n_flows, rounds = 30, 8
    packets, _convs = WL.workload_a_with_conversations(n_flows, rounds, seed=22)
    plan = H.Plan(tuple(n for n in [17] * (len(packets) // 17) + [len(packets) % 17] if n))
    run = _run(packets, plan, max_fast_path=24, fast_path_admit=admit)
    stats = run.engine.stats
    assert stats["fast_path_replaced"] > 0 and stats["fast_path_hits"] > 0
    counts = _check_store(run.engine.fast)
    assert 0 < counts["slim"] <= 24 and counts["templates"] <= 4


def test_a_tuple_back_as_a_new_connection_is_not_served_by_the_old_entry():
    """Each connection is reset once its entries are in, then its 5-tuple opens again (new
    sequence numbers): the old slim entries name a connection that is gone (or a row that
    now holds another generation), so the new connection's first packets take full
    processing, get new entries, and its data goes fast again."""
    n_flows = 60
    warm, convs = WL.workload_a_with_conversations(n_flows, 2, seed=23)
    t = warm[-1][2] + 1
    probes = [(*c.rst(True), t) for c in convs]
    for i, c in enumerate(convs):
        c.restart(1000 + i, 900_000 + i)
    t += 1
    probes += [(*p, t) for c in convs for p in c.handshake()]
    for _round in range(3):
        t += 1
        probes += [(*c.data(d, 64), t) for c in convs for d in (True, False)]
    packets = warm + probes
    run = _run(packets, H.Plan((len(warm), len(probes))))
    last = run.results[-2 * n_flows :]
    assert all(r.path == FAST for r in last)
    counts = _check_store(run.engine.fast)
    # the dead connections' entries stay until replaced; they answer nothing
    assert counts["slim"] >= 2 * n_flows
    assert len(run.engine.conntrack) >= n_flows


def test_a_fast_path_too_large_for_the_slim_tag_is_refused():
    """Row numbers share the index's values with slim rows + SLIM_TAG: a maximum that would
    reach the tag is refused when the engine is made, not corrupted later."""
    with pytest.raises(ValueError, match="fast-path entries"):
        DatapathEngine(_rules(), max_fast_path=L.SLIM_TAG)


def _rules():
    from ctaccel.ofproto.rules import parse_flows

    return parse_flows(_BY_PORT, "by-port.flows")
