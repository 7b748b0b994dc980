"""``ctaccel sg compile`` against Neutron's own OVS firewall driver, by replaying traffic.

What: for every case in tests/data/sg (groups.json, ports.json and neutron.flows, the flows
Neutron's driver installs, made by tools/neutron_flows.py; cases with groups-v2.json also
have neutron-v2.flows, the same groups with a rule removed), generated traffic
(support/sg_traffic.py: allowed and denied connections both ways, replies, remote-group
members and strangers, IPv4 and IPv6, spoofed MAC and IP, ARP, ND, RA, DHCP, ICMP) is replayed
through Neutron's flows and through the compiled flows, by the reference engine and by the
datapath engine in both modes. Outputs per packet (ports and frames), ct_state, drop reason
and the final conntrack table must be identical; each engine must also match the reference
engine on the same flows rule counter for rule counter. In cases with a rule change, both
sides replace their flows with the v2 flows between the two phases of the traffic (opened
connections, then their continuation), so connections the new rules no longer allow are cut
(ct_mark=1) on both sides alike.

Design: the bridge has a trunk patch port 1 (traffic from other hosts, tagged with the local
VLAN) and each VM port as an access port of its network's VLAN, for NORMAL. Data:
``python tools/sg_generate.py --seed N --out tests/data/sg/random-N`` and
``/tmp/nvenv/bin/python tools/neutron_flows.py --groups G --ports P -o neutron.flows``.
"""

from __future__ import annotations

import dataclasses

import pytest

from ctaccel.sg import compile_flows, load_groups, load_ports
from support import equivalence as H
from support.conversations import TcpConversation
from support.hosts import START_MS, Host
from support.sg_flows import cases
from support.sg_traffic import OUTSIDE_MAC, PATCH, bridge_spec, sg_traffic

CASES = cases()
MODES = ("recirc", "assume-established")
BATCH = 64


def _bridge(ports):
    """A fresh bridge for each run: it holds NORMAL's MAC learning."""
    from ctaccel.ofproto.bridge import Bridge

    return Bridge.parse(bridge_spec(ports))


def _run_reference(rules_text: str, packets, plan: H.Plan, bridge) -> H.Run:
    from ctaccel.datapath.reference import ReferenceEngine
    from ctaccel.ofproto.rules import parse_flows

    ref = ReferenceEngine(parse_flows(rules_text, "rules"), H.conntrack_for_tests(),
                          bridge=bridge)  # fmt: skip
    results, before = [], None
    for i, (port, frame, now) in enumerate(packets):
        if i == plan.replace_at:
            before = ref.rule_counters()
            ref.replace_flows(parse_flows(plan.new_rules, "new-rules"))
        results.append(ref.process(frame, port, now))
    return H.Run(results, ref.conntrack.dump(packets[-1][2]), ref.rule_counters(), before)


def _run_engine(mode: str, rules_text: str, packets, plan: H.Plan, bridge) -> H.Run:
    from ctaccel.datapath.engine import DatapathEngine
    from ctaccel.ofproto.rules import parse_flows

    eng = DatapathEngine(parse_flows(rules_text, "rules"), mode=mode,
                         conntrack=H.conntrack_for_tests(), bridge=bridge)  # fmt: skip
    results, before, pos = [], None, 0
    for size in plan.sizes:
        if pos == plan.replace_at:
            before = list(eng.rule_counters())
            eng.replace_flows(parse_flows(plan.new_rules, "new-rules"))
        chunk = packets[pos : pos + size]
        results.extend(eng.process_batch([f for _p, f, _t in chunk], [p for p, _f, _t in chunk],
                                         [t for _p, _f, t in chunk]))  # fmt: skip
        pos += size
    return H.Run(results, eng.conntrack.dump(packets[-1][2]), list(eng.rule_counters()), before)


def _sizes(n: int, split: int) -> tuple:
    """Batches of BATCH with a boundary at ``split``."""
    out = []
    for lo, hi in ((0, split), (split, n)):
        out += [min(BATCH, hi - i) for i in range(lo, hi, BATCH)]
    return tuple(out)


def _verdicts(run: H.Run) -> H.Run:
    """Without rule counters: the two flow sets have different rules."""
    return dataclasses.replace(run, counters=[], counters_before_replace=None)


def _flows(case, variant: str):
    groups = load_groups(case / f"groups{variant}.json")
    ports = load_ports(case / "ports.json", groups)
    return groups, ports, "\n".join(compile_flows(groups, ports))


def _check(packets, split, sides: dict, ports) -> H.Run:
    """sides: label -> (rules text, new rules text or None); reference across the sides,
    then each engine mode against the reference on its own side's flows."""
    plans = {label: H.Plan(_sizes(len(packets), split), split if new else None, new)
             for label, (_rules, new) in sides.items()}  # fmt: skip
    refs = {label: _run_reference(rules, packets, plans[label], _bridge(ports))
            for label, (rules, _new) in sides.items()}  # fmt: skip
    (base, expected), *others = refs.items()
    for label, got in others:
        report = H.first_divergence(packets, _verdicts(expected), _verdicts(got),
                                    f"{label} vs {base} flows", plans[label])  # fmt: skip
        assert report is None, report
    for label, (rules, _new) in sides.items():
        for mode in MODES:
            got = _run_engine(mode, rules, packets, plans[label], _bridge(ports))
            report = H.first_divergence(packets, refs[label], got, f"{mode} on {label} flows",
                                        plans[label], compare_recirculations=(mode == "recirc"))  # fmt: skip
            assert report is None, report
    results = expected.results
    assert any(r.outputs for r in results) and any(not r.outputs for r in results)
    return expected


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_compiled_flows_give_neutrons_verdicts(case):
    groups, ports, compiled = _flows(case, "")
    packets, split = sg_traffic(groups, ports, seed=len(case.name))
    v2 = (case / "groups-v2.json").exists()
    sides = {
        "neutron": ((case / "neutron.flows").read_text(),
                    (case / "neutron-v2.flows").read_text() if v2 else None),
        "compiled": (compiled, _flows(case, "-v2")[2] if v2 else None),
    }  # fmt: skip
    expected = _check(packets, split, sides, ports)
    _committed[case.name] = len(expected.dump)


_committed: dict[str, int] = {}


def test_the_traffic_commits_connections_in_most_cases():
    """Runs after the cases (file order): a security group that allows nothing stateful can
    come out of the generator, but most cases must exercise conntrack."""
    if len(_committed) < len(CASES):
        pytest.skip("needs the whole file")
    assert sum(n > 0 for n in _committed.values()) >= len(CASES) - 2, _committed


def test_a_removed_rule_cuts_its_established_connections_alike():
    """stateless: v2 removes sg-stateless's ingress TCP 80 rule (port 5); a connection to
    port 5:80 opened before the change is cut after it, one to port 6:80 (sg-stateful, whose
    rule stays) lives on, on Neutron's flows and on the compiled flows alike."""
    case = next(c for c in CASES if c.name == "stateless")
    groups, ports, compiled = _flows(case, "")
    by_port = {p.ofport: p for p in ports}
    from ctaccel.packet import build as B

    outside = Host(PATCH, B.mac_bytes(OUTSIDE_MAC), B.ip_bytes("198.51.100.7"))
    convs = [TcpConversation(outside, Host(of, B.mac_bytes(by_port[of].mac_address),
                                           B.ip_bytes(by_port[of].fixed_ips[0])), 40000 + of, 80)
             for of in (5, 6)]  # fmt: skip
    opened = [pf for c in convs for pf in c.handshake()]
    later = [pf for c in convs for pf in (c.data(True), c.data(False), c.data(True))]
    tag = by_port[5].local_vlan

    def tagged(port, frame):
        return (
            frame[:12] + b"\x81\x00" + tag.to_bytes(2, "big") + frame[12:]
            if port == PATCH
            else frame
        )

    packets = [(p, tagged(p, f), START_MS + i) for i, (p, f) in enumerate(opened + later)]
    sides = {"neutron": ((case / "neutron.flows").read_text(), (case / "neutron-v2.flows").read_text()),
             "compiled": (compiled, _flows(case, "-v2")[2])}  # fmt: skip
    _check(packets, len(opened), sides, ports)
    plan = H.Plan(_sizes(len(packets), len(opened)), len(opened), sides["compiled"][1])
    run = _run_reference(compiled, packets, plan, _bridge(ports))
    after = run.results[len(opened) :]
    assert [bool(r.outputs) for r in after] == [False, False, False, True, True, True]
    marked = [c for c in run.dump if "mark=1" in str(c)]
    assert marked, run.dump
