"""The engines' public hooks: slow-path time, whole-batch result arrays, memory, counters.

Counters belong to the engine that ran the packets (one array per engine, never the rules),
so two engines sharing one FlowTables count apart, and dump-flows prints what it is given.
"""

from __future__ import annotations

import numpy as np
import pytest

from ctaccel.conntrack import Conntrack
from ctaccel.datapath.engine import DatapathEngine
from ctaccel.datapath.reference import ReferenceEngine
from ctaccel.ofproto.classifier import FlowTables
from ctaccel.ofproto.dumpflows import format_dump_flows
from ctaccel.ofproto.program import DROP_REASON_NAMES
from ctaccel.ofproto.rules import parse_flows
from ctaccel.packet import build as B
from ctaccel.packet import key as K

FIREWALL = (
    "table=0,priority=10,ct_state=-trk,udp,actions=ct(table=1,zone=5)\n"
    "table=1,priority=10,ct_state=+trk+new,udp,in_port=1,actions=ct(commit,zone=5),output:2\n"
    "table=1,priority=10,ct_state=+trk+est,udp,actions=output:2\n"
    "table=1,priority=1,actions=drop\n"
)
MA, MB = "50:54:00:00:00:01", "50:54:00:00:00:02"


def udp(sport: int) -> bytes:
    return B.udp_frame(MA, MB, "10.1.1.1", "10.1.1.2", sport, 53, b"x" * 8)


def batch(frames, in_port=1, now=1_000):
    lengths = np.array([len(f) for f in frames], np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths[:-1])]).astype(np.int64)
    buf = np.frombuffer(b"".join(frames), np.uint8).copy()
    n = len(frames)
    return buf, offsets, lengths, np.full(n, in_port, np.int64), np.full(n, now, np.int64)


@pytest.mark.parametrize("mode", ["recirc", "assume-established"])
def test_slow_path_seconds_grow_only_with_upcalls(mode):
    eng = DatapathEngine(parse_flows(FIREWALL, "fw"), mode=mode)
    assert eng.slow_path_seconds == 0.0
    frames = [udp(1000 + i % 4) for i in range(64)]
    for _ in range(3):  # NEW, then established: every megaflow is there after this
        eng.run(*batch(frames))
    assert eng.upcalls > 0 and eng.slow_path_seconds > 0
    upcalls, spent = eng.upcalls, eng.slow_path_seconds
    eng.run(*batch(frames))
    assert eng.upcalls == upcalls and eng.slow_packets == 0
    assert eng.slow_path_seconds == spent  # no upcall, no slow-path time


def test_batch_arrays_match_the_per_packet_accessors():
    eng = DatapathEngine(parse_flows(FIREWALL, "fw"), mode="recirc")
    frames = [udp(1000 + i % 3) for i in range(10)]
    br = eng.run(*batch(frames, in_port=3))  # not from port 1: NEW is dropped
    br2 = eng.run(*batch(frames))
    for r in (br, br2):
        n = len(frames)
        assert r.n_outputs().tolist() == [len(r.ports(i)) for i in range(n)]
        assert r.output_ports().tolist() == [p for i in range(n) for p in r.ports(i)]
        names = [DROP_REASON_NAMES[c] or None for c in r.drop_codes().tolist()]
        assert names == [r.drop_reason(i) for i in range(n)]
        states = [None if s < 0 else K.format_ct_state(s) for s in r.ct_state_codes().tolist()]
        assert states == [r.ct_state(i) for i in range(n)]
    assert br.output_ports().size == 0 and br2.output_ports().tolist() == [2] * 10


def test_memory_bytes_counts_the_fast_path_in_its_mode_only():
    for mode in ("recirc", "assume-established"):
        eng = DatapathEngine(parse_flows(FIREWALL, "fw"), mode=mode)
        eng.run(*batch([udp(1000 + i) for i in range(8)]))
        mem = eng.memory_bytes()
        assert mem["connections"] == len(eng.conntrack) == 8
        assert mem["conntrack_bytes"] >= mem["conntrack_capacity"] * mem["conn_row_bytes"]
        assert mem["megaflow_bytes"] > 0
        assert (mem["fast_path_bytes"] > 0) == (mode == "assume-established")


def test_counters_are_the_engines_and_equal_in_every_mode():
    tables = FlowTables(parse_flows(FIREWALL, "fw"))
    ids = [tables.rule_id(r) for r in tables.all_rules()]
    frames = [udp(1000 + i % 5) for i in range(40)] + [udp(7)]
    engines = [DatapathEngine(tables, mode=m) for m in ("recirc", "assume-established")]
    ref = ReferenceEngine(tables, Conntrack())
    idle = DatapathEngine(tables, mode="recirc")  # shares the rules, runs nothing
    for eng in engines:
        eng.run(*batch(frames))
    for f in frames:
        ref.process(f, 1, 1_000)
    counts = ref.rule_counters()
    assert counts[0] == (41, 41 * len(frames[0]))  # every packet passes table 0
    assert [e.rule_counters() for e in engines] == [counts, counts]
    assert idle.rule_counters() == [(0, 0)] * len(ids)
    # Nothing was written into the shared rules.
    assert ids == list(range(len(ids)))
    assert not any(hasattr(r, "n_packets") or hasattr(r, "rule_id") for r in tables.all_rules())
    # dump-flows prints the counters it is given: the engine's.
    rules = tables.all_rules()
    busy = format_dump_flows(rules, engines[0].rule_counters())
    assert f"n_packets=41, n_bytes={41 * len(frames[0])}," in busy.splitlines()[0]
    assert "n_packets=41" not in format_dump_flows(rules, idle.rule_counters())


def test_replace_flows_keeps_the_counters_of_unchanged_rules_only():
    """As ovs-ofctl replace-flows: a rule identical to an old one (match, priority, table and
    actions) keeps its counters; a changed or new one starts at zero."""
    eng = DatapathEngine(parse_flows(FIREWALL, "fw"), mode="assume-established")
    eng.run(*batch([udp(1000)]))
    old = eng.rule_counters()
    assert old[0][0] == 1
    first = FIREWALL.splitlines()[0]
    eng.replace_flows(parse_flows(f"{first}\npriority=1,actions=output:3\n", "new"))
    assert eng.rule_counters() == [old[0], (0, 0)]
    eng.replace_flows(parse_flows("priority=1,actions=output:3\n", "new"))
    assert eng.rule_counters() == [(0, 0)]
    eng.run(*batch([udp(1000)] * 2))
    assert eng.rule_counters() == [(2, 2 * len(udp(1000)))]


@pytest.mark.parametrize("case", ["tcp", "nat"])
def test_replay_flows_txt_counters_equal_in_every_mode(tmp_path, case):
    """flows.txt (dump-flows of the engine's counters) is the same whichever engine ran."""
    from ctaccel import demo
    from ctaccel.replay import replay

    flows, packets = {"tcp": (demo.TCP_FLOWS, demo.tcp_packets()),
                      "nat": (demo.NAT_FLOWS, demo.nat_packets())}[case]  # fmt: skip
    _d, flows_path, inputs = demo._write_case(str(tmp_path), case, flows, packets)
    dumps = {}
    for mode in ("reference", "recirc", "assume-established"):
        out = tmp_path / mode
        replay(flows_path, inputs, out, mode=mode)
        dumps[mode] = (out / "flows.txt").read_text()
    assert dumps["recirc"] == dumps["reference"] == dumps["assume-established"]
    assert any(f"n_packets={len(packets)}," in line for line in dumps["reference"].splitlines())
