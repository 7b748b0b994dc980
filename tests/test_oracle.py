"""ctaccel against the real OVS userspace datapath, scenario by scenario, packet by packet."""

from __future__ import annotations

import importlib.util

import pytest

from oracle.compare import differences, ovs_result, run_ctaccel
from oracle.scenarios import SCENARIOS

pytestmark = pytest.mark.oracle


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_ctaccel_matches_ovs(scenario, ovs_oracle, tmp_path):
    ovs = ovs_result(ovs_oracle, scenario)
    if importlib.util.find_spec("ctaccel.replay") is None:
        pytest.skip("ctaccel.replay is not written yet (OVS side ran)")
    ours, conntrack = run_ctaccel(scenario, tmp_path)
    report = differences(scenario, ovs, ours, conntrack)
    assert report is None, "\n" + report
