"""ctaccel against the real OVS userspace datapath, scenario by scenario, packet by packet."""

from __future__ import annotations

import pytest

from support.oracle.compare import differences, ovs_result, run_ctaccel
from support.oracle.scenarios import SCENARIOS
from support.oracle.scenarios_nat import NAT_SCENARIOS

ALL = SCENARIOS + NAT_SCENARIOS

pytestmark = pytest.mark.oracle


@pytest.mark.parametrize("mode", ["reference", "recirc", "assume-established"])
@pytest.mark.parametrize("scenario", ALL, ids=[s.name for s in ALL])
def test_ctaccel_matches_ovs(scenario, mode, ovs_oracle, tmp_path):
    ovs = ovs_result(ovs_oracle, scenario)
    ours, conntrack = run_ctaccel(scenario, tmp_path, mode)
    report = differences(scenario, ovs, ours, conntrack)
    assert report is None, "\n" + report
