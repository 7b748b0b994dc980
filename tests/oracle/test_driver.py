"""The OVS oracle driver itself: time control, instrumentation, scenarios' expectations on OVS."""

from __future__ import annotations

import time

import pytest

from support.oracle.compare import differences, ovs_result, write_inputs
from support.oracle.frames import tcp, udp
from support.oracle.ovs_driver import (
    MARKER_USERDATA,
    OvsOracle,
    flow_lines,
    instrument_flows,
    ovs_installed,
    read_pcap_records,
)
from support.oracle.scenarios import SCENARIOS, Scenario
from support.oracle.scenarios_nat import NAT_SCENARIOS

ALL = SCENARIOS + NAT_SCENARIOS

FORWARD_UDP = """
table=0,priority=10,udp,actions=ct(table=1)
table=1,priority=10,in_port=1,udp,ct_state=+trk+new,actions=ct(commit),output:2
table=1,priority=10,in_port=2,udp,ct_state=+trk+est,actions=output:1
table=1,priority=1,actions=drop
"""


# -- pure parts (no OVS needed) ---------------------------------------------------------------
def test_at_least_30_well_formed_scenarios():
    names = [s.name for s in SCENARIOS]
    assert len(SCENARIOS) >= 30
    assert len(set(names)) == len(names)
    for s in SCENARIOS:
        times = [t for _port, _frame, t in s.packets]
        assert all(a < b for a, b in zip(times, times[1:], strict=False)), s.name
        assert 3 <= len(s.packets) <= 30, s.name
        assert all(len(frame) >= 14 for _p, frame, _t in s.packets), s.name
        assert all(1 <= n <= len(s.packets) for n in s.expect), s.name
        assert flow_lines(s.flows), s.name


def test_instrumentation_prepends_controller_to_every_rule():
    text = instrument_flows(
        "# c\ntable=0,ip,actions=ct(table=1)\n\ntable=1,priority=1,action=drop\n"
    )
    lines = text.splitlines()
    assert lines[0].endswith(f"controller(userdata={MARKER_USERDATA})")
    assert lines[1] == "table=0,ip,actions=controller(userdata=00.00.00.00),ct(table=1)"
    assert lines[2] == "table=1,priority=1,actions=controller(userdata=00.00.00.01)"


def test_written_pcaps_carry_exact_times(tmp_path):
    s = Scenario(
        "t", FORWARD_UDP, [(1, b"a" * 60, 5), (2, b"b" * 61, 1_234_567), (1, b"c" * 62, 1_234_568)]
    )
    _flows, inputs = write_inputs(s, tmp_path)
    assert [port for port, _ in inputs] == [1, 2]
    recs, _ = read_pcap_records(inputs[0][1], 0)
    assert [(round(ts * 1000), len(f)) for ts, f in recs] == [(5, 60), (1_234_568, 62)]


def test_differences_table_marks_first_divergence():
    from support.oracle.ovs_driver import OracleRun, PacketOutcome

    s = Scenario("t", FORWARD_UDP, [(1, b"a" * 60, 1), (2, b"b" * 60, 2), (1, b"c" * 60, 3)])
    ovs = OracleRun(
        [
            PacketOutcome([2], "new|trk", []),
            PacketOutcome([1], "est|rpl|trk", []),
            PacketOutcome([], None, []),
        ],
        ["x"],
        None,
        0.0,
    )
    ours = [
        {"out": [2], "ct_state": "new|trk"},
        {"out": [], "ct_state": "new|trk", "drop_reason": "r"},
        {"out": [], "ct_state": None},
    ]
    report = differences(s, ovs, ours, ["x"])
    assert "first divergence at packet 2" in report
    assert "<<" in report.splitlines()[3] and "est|rpl|trk" in report
    assert (
        differences(s, ovs, [ours[0], {"out": [1], "ct_state": "est|rpl|trk"}, ours[2]], ["x"])
        is None
    )


# -- against OVS ------------------------------------------------------------------------------


@pytest.mark.oracle
def test_time_warp_drives_conntrack_expiry(ovs_oracle):
    """A UDP connection (60 s unreplied) is visible at T-1 ms and gone at T."""
    run = ovs_oracle.run(
        FORWARD_UDP,
        [
            (1, udp("A", "B", 1111, 53), 0),
            (1, udp("A", "B", 1112, 53), 5),
            (1, udp("A", "B", 1113, 53), 10),
        ],
    )
    assert len(run.conntrack) == 3
    start = ovs_oracle.now_ms - 10
    ovs_oracle.advance_to(start + 59_999)
    assert len(ovs_oracle.conntrack()) == 3
    ovs_oracle.advance_to(start + 60_000)
    left = ovs_oracle.conntrack()
    assert len(left) == 2 and not any("sport=1111" in line for line in left)
    ovs_oracle.advance_to(start + 60_010)
    assert ovs_oracle.conntrack() == []


@pytest.mark.oracle
def test_reset_forgets_previous_scenario(ovs_oracle):
    ovs_oracle.run(
        FORWARD_UDP,
        [
            (1, udp("A", "B", 2222, 53), 0),
            (1, udp("A", "B", 2223, 53), 1),
            (1, udp("A", "B", 2224, 53), 2),
        ],
        zone_limits={0: 1},
    )
    run = ovs_oracle.run(
        FORWARD_UDP,
        [
            (2, udp("B", "A", 53, 2222), 0),
            (1, udp("A", "B", 2225, 53), 1),
            (1, udp("A", "B", 2226, 53), 2),
        ],
    )
    assert run.packets[0].ct_state == "new|trk" and run.packets[0].out == []
    assert len(run.conntrack) == 2  # the zone limit of 1 is gone too


@pytest.mark.oracle
def test_driver_is_fast_enough(ovs_oracle):
    frames = [(1, tcp("A", "B", 3000 + i, 80, "S", 1), i) for i in range(20)]
    started = time.perf_counter()
    run = ovs_oracle.run(FORWARD_UDP.replace("udp", "tcp"), frames)
    elapsed = time.perf_counter() - started
    assert all(p.out == [2] for p in run.packets)
    assert elapsed / len(frames) < 0.1


@pytest.mark.oracle
@pytest.mark.parametrize("scenario", ALL, ids=[s.name for s in ALL])
def test_expectations_hold_on_ovs(scenario, ovs_oracle):
    run = ovs_result(ovs_oracle, scenario)
    assert len(run.packets) == len(scenario.packets)
    for n, (ct_state, out) in scenario.expect.items():
        got = run.packets[n - 1]
        assert (got.ct_state, sorted(got.out)) == (ct_state, sorted(out)), f"packet {n}: {got.hits}"
    if scenario.expect_conntrack_lines is not None:
        assert len(run.conntrack) == scenario.expect_conntrack_lines, run.conntrack
    for text in getattr(scenario, "conntrack_contains", ()):  # NAT scenarios: reply tuples
        assert any(text in line for line in run.conntrack), (text, run.conntrack)
    for p in run.packets:  # the reported ct_state is the last matched rule's
        assert p.ct_state == (p.hits[-1][1] if p.hits else None)
        assert [port for port, _frame in p.frames] == p.out


@pytest.mark.oracle
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_instrumentation_does_not_change_verdicts(scenario, ovs_oracle):
    instrumented = ovs_result(ovs_oracle, scenario)
    plain = ovs_oracle.run(scenario.flows, scenario.packets, scenario.zone_limits, instrument=False,
                           bridge=scenario.bridge,
                           timeout_policies=scenario.timeout_policies)  # fmt: skip
    assert [sorted(p.out) for p in plain.packets] == [sorted(p.out) for p in instrumented.packets]
    assert plain.conntrack == instrumented.conntrack


@pytest.mark.oracle
def test_stop_ends_only_its_own_daemons(tmp_path):
    if not ovs_installed():
        pytest.skip("Open vSwitch is not installed")
    oracle = OvsOracle(tmp_path, n_ports=1).start()
    pids = dict(oracle.ovs.pids)
    assert all(oracle.ovs.alive(name) for name in pids)
    oracle.stop()
    assert not any(oracle.ovs.alive(name) for name in pids)
