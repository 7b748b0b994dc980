"""Neutron's own flows through the real OVS and through ctaccel, packet by packet.

What: for each case in tests/data/sg, the flows Neutron's OVS firewall driver installs
(neutron.flows, made by tools/neutron_flows.py) and the generated security-group traffic
(support/sg_traffic.py: allowed and denied connections both ways, replies, remote-group
members and strangers, IPv4 and IPv6, spoofed MAC and IP, ARP, ND, DHCP, ICMP) run through a
private OVS userspace switch whose ports have the VLAN modes Neutron's agent gives them (VM
ports access ports of their network's VLAN, the patch port a trunk), and through ``ctaccel
replay`` with the same ``--bridge``, in the reference engine and both compiled modes. Output
ports, frames (byte for byte), ct_state and the conntrack table must be OVS's.

Design: one OVS with 12 ports for the module (the cases use ofports 1, 5-12); the same
comparison as the oracle scenarios (support/oracle/compare.py).
"""

from __future__ import annotations

import pytest

from ctaccel.sg import load_groups, load_ports
from support.oracle.compare import differences, run_ctaccel
from support.oracle.ovs_driver import OvsOracle, ovs_installed
from support.oracle.scenarios import Scenario
from support.sg_flows import cases
from support.sg_traffic import bridge_spec, sg_traffic

pytestmark = pytest.mark.oracle
CASES = cases()
N_PORTS = 12
_RUNS: dict[str, tuple] = {}


@pytest.fixture(scope="module")
def big_oracle(tmp_path_factory):
    if not ovs_installed():
        pytest.skip("Open vSwitch is not installed")
    oracle = OvsOracle(tmp_path_factory.mktemp("ovs-neutron"), n_ports=N_PORTS).start()
    yield oracle
    oracle.stop()


def _scenario(case) -> Scenario:
    groups = load_groups(case / "groups.json")
    ports = load_ports(case / "ports.json", groups)
    packets, _split = sg_traffic(groups, ports, seed=len(case.name))
    t0 = packets[0][2]
    spec = bridge_spec(ports)  # and the oracle's other ports, trunks of every VLAN as on OVS
    named = {int(item.split(":")[0]) for item in spec.split(",")}
    spec = ",".join([spec] + [str(n) for n in range(1, N_PORTS + 1) if n not in named])
    return Scenario(f"neutron-{case.name}", (case / "neutron.flows").read_text(),
                    [(port, frame, now - t0) for port, frame, now in packets],
                    bridge=spec)  # fmt: skip


@pytest.mark.parametrize("mode", ["reference", "recirc", "assume-established"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_neutron_flows_give_ovs_results(case, mode, big_oracle, tmp_path):
    if case.name not in _RUNS:
        s = _scenario(case)
        _RUNS[case.name] = (s, big_oracle.run(s.flows, s.packets, bridge=s.bridge))
    scenario, ovs = _RUNS[case.name]
    assert any(p.out for p in ovs.packets) and any(not p.out for p in ovs.packets)
    ours, conntrack = run_ctaccel(scenario, tmp_path, mode)
    report = differences(scenario, ovs, ours, conntrack)
    assert report is None, "\n" + report
