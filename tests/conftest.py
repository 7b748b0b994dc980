"""Shared pytest fixtures and test order. Oracle part: one private OVS userspace switch per
session.

The oracle tests skip (with the reason) when Open vSwitch is not installed, except under CI
(``CI=true``), where a missing OVS is a failure: CI installs openvswitch-switch.
"""

from __future__ import annotations

import os

import pytest

FIRST = "test_a_first_run_compiles_the_batch_kernel_without_reference_counting"


def pytest_collection_modifyitems(session, config, items):
    """The first-run compile test goes first: on a machine whose kernel cache is empty it
    compiles into that cache (tests/datapath/test_compile.py), so the datapath is compiled once
    per session, not twice."""
    items.sort(key=lambda item: item.name != FIRST)


@pytest.fixture(scope="session")
def ovs_oracle(tmp_path_factory):
    from support.oracle.ovs_driver import OvsOracle, ovs_installed

    if not ovs_installed():
        reason = "Open vSwitch (ovs-vswitchd, ovsdb-server, ovs-ofctl) is not installed"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}, and CI=true: install openvswitch-switch", pytrace=False)
        pytest.skip(reason)
    oracle = OvsOracle(tmp_path_factory.mktemp("ovs"), n_ports=4)
    oracle.start()
    yield oracle
    oracle.stop()
