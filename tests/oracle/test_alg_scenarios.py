"""ct(alg=ftp|tftp) against the real OVS 3.1, packet by packet, in the three engines.

Two oracles: the dummy-port one (ovs_driver.py: ct_state, outputs, frames, conntrack) for
every ALG scenario, and for the scenarios whose commands NAT rewrites, OVS on real (veth)
ports (veth_oracle.py), since on dummy ports OVS never rewrites (its buffers have no room):
there the frames each packet made, rewritten commands and every later adjusted sequence
number included, must be ctaccel's byte for byte, and the conntrack tables the same.
"""

from __future__ import annotations

import dataclasses

import pytest

from support.oracle.compare import differences, frame_difference, ovs_result, run_ctaccel
from support.oracle.scenarios_alg import ALG_SCENARIOS
from support.oracle.veth_oracle import VethOvs, available

pytestmark = pytest.mark.oracle

MODES = ["reference", "recirc", "assume-established"]
REWRITTEN = [s for s in ALG_SCENARIOS if s.rewrites]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("scenario", ALG_SCENARIOS, ids=[s.name for s in ALG_SCENARIOS])
def test_alg_matches_ovs(scenario, mode, ovs_oracle, tmp_path):
    """ct_state, outputs and conntrack as OVS; the frames too where OVS's dummy ports do not
    stop a rewrite (the rewritten ones are the next test's)."""
    compared = dataclasses.replace(scenario, deterministic_frames=not scenario.rewrites)
    ovs = ovs_result(ovs_oracle, compared)
    ours, conntrack = run_ctaccel(compared, tmp_path, mode)
    report = differences(compared, ovs, ours, conntrack)
    assert report is None, "\n" + report


_VETH: dict = {}


@pytest.fixture(scope="module")
def veth_ovs():
    why = available()
    if why:
        pytest.skip(f"OVS on veths: {why}")
    with VethOvs(3) as v:
        yield v


def _veth_result(veth_ovs, scenario):
    if scenario.name not in _VETH:
        frames = veth_ovs.run(scenario.flows, scenario.packets)
        _VETH[scenario.name] = (frames, veth_ovs.conntrack())
    return _VETH[scenario.name]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("scenario", REWRITTEN, ids=[s.name for s in REWRITTEN])
def test_rewritten_commands_match_ovs_on_real_ports(scenario, mode, veth_ovs, tmp_path):
    ovs_frames, ovs_conntrack = _veth_result(veth_ovs, scenario)
    ours, conntrack = run_ctaccel(scenario, tmp_path, mode)
    assert len(ours) == len(ovs_frames)
    grown = 0
    for i, (theirs, rec) in enumerate(zip(ovs_frames, ours, strict=True)):
        note = frame_difference(theirs, rec.get("frames") or [])
        assert note is None, f"packet {i + 1}: {note}"
        sent = scenario.packets[i][1]
        grown += any(len(f) != len(sent) for _p, f in theirs)
    assert grown >= 1  # the scenario really made OVS rewrite a command
    assert conntrack == ovs_conntrack
