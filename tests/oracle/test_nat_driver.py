"""The NAT scenarios against OVS alone: expectations, decoded facts about the emitted frames,
checksums, dump-conntrack text; plus the frame comparison of compare.py (no OVS needed)."""

from __future__ import annotations

import ipaddress

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, TCPerror, UDPerror
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    IPerror6,
    IPv6,
)
from scapy.layers.l2 import Ether

from support.oracle.compare import differences, frame_difference, mask_reply_ports, ovs_result
from support.oracle.frames import tcp, udp
from support.oracle.ovs_driver import OracleRun, PacketOutcome
from support.oracle.scenarios import SCENARIOS
from support.oracle.scenarios_nat import NAT4, NAT_SCENARIOS, NONDETERMINISTIC_FRAMES, NatScenario

IDS = [s.name for s in NAT_SCENARIOS]
CHECKSUMMED = (
    IP,
    TCP,
    UDP,
    ICMP,
    IPerror,
    TCPerror,
    UDPerror,
    ICMPv6DestUnreach,
    ICMPv6EchoRequest,
    ICMPv6EchoReply,
)


def checksum_problems(frame: bytes) -> list[str]:
    """Every checksum in ``frame`` that differs from what scapy computes (IPv4 UDP without
    checksum, 0, is fine; the L4 checksum of a truncated quoted packet cannot be checked)."""
    pkt = Ether(frame)
    truncated = False
    if IPerror in pkt:
        truncated = pkt[IPerror].len > len(bytes(pkt[IPerror]))
    elif IPerror6 in pkt:
        truncated = pkt[IPerror6].plen + 40 > len(bytes(pkt[IPerror6]))
    problems = []
    for layer in CHECKSUMMED:
        if layer not in pkt or (truncated and layer in (TCPerror, UDPerror)):
            continue
        name = "cksum" if any(f.name == "cksum" for f in layer.fields_desc) else "chksum"
        got = getattr(pkt[layer], name)
        if layer is UDP and got == 0 and IP in pkt:
            continue
        redo = Ether(frame)
        setattr(redo[layer], name, None)
        want = getattr(Ether(bytes(redo))[layer], name)
        if got != want:
            problems.append(f"{layer.__name__} {name} 0x{got:04x}, should be 0x{want:04x}")
    return problems


def decode_facts(frame: bytes) -> dict:
    """The facts a NatScenario's frame_facts can name, read from ``frame``."""
    pkt = Ether(frame)
    facts: dict = {}
    l3 = pkt[IP] if IP in pkt else pkt[IPv6] if IPv6 in pkt else None
    if l3 is not None:
        facts["src"], facts["dst"] = l3.src, l3.dst
    for layer in (TCP, UDP):
        if layer in pkt:
            facts["sport"], facts["dport"] = pkt[layer].sport, pkt[layer].dport
    if UDP in pkt:
        facts["udp_chksum"] = pkt[UDP].chksum
    if ICMP in pkt and pkt[ICMP].type in (0, 8):
        facts["id"] = pkt[ICMP].id
    for layer in (ICMPv6EchoRequest, ICMPv6EchoReply):
        if layer in pkt:
            facts["id"] = pkt[layer].id
    inner = pkt[IPerror] if IPerror in pkt else pkt[IPerror6] if IPerror6 in pkt else None
    if inner is not None:
        facts["inner_src"], facts["inner_dst"] = inner.src, inner.dst
        for layer in (TCPerror, UDPerror):
            if layer in pkt:
                facts["inner_sport"], facts["inner_dport"] = pkt[layer].sport, pkt[layer].dport
        if UDPerror in pkt:
            facts["inner_udp_chksum"] = pkt[UDPerror].chksum
    return facts


def _same(fact: str, want, got) -> bool:
    if isinstance(want, frozenset):
        return any(_same(fact, w, got) for w in want)
    if fact in ("src", "dst", "inner_src", "inner_dst") and got is not None:
        return ipaddress.ip_address(want) == ipaddress.ip_address(got)
    return want == got


def fact_mismatches(outcome: PacketOutcome, expected: list[tuple[int, dict]]) -> list[str]:
    """How the frames of ``outcome`` fail ``expected`` ([(port, facts)], per port in order)."""
    by_port: dict[int, list[bytes]] = {}
    for port, frame in outcome.frames:
        by_port.setdefault(port, []).append(frame)
    seen: dict[int, int] = {}
    bad = []
    for port, facts in expected:
        k = seen.get(port, 0)
        seen[port] = k + 1
        frames = by_port.get(port, [])
        if k >= len(frames):
            bad.append(f"no frame #{k + 1} on port {port} (out={outcome.out})")
            continue
        got = decode_facts(frames[k])
        for fact, want in facts.items():
            if not _same(fact, want, got.get(fact)):
                bad.append(f"port {port} frame #{k + 1}: {fact}={got.get(fact)!r}, want {want!r}")
    return bad


# -- pure parts (no OVS needed) ---------------------------------------------------------------
def test_nat_scenarios_are_well_formed_and_separate():
    names = [s.name for s in NAT_SCENARIOS]
    assert len(NAT_SCENARIOS) >= 12
    assert len(set(names)) == len(names)
    assert not set(names) & {s.name for s in SCENARIOS}
    assert not any(isinstance(s, NatScenario) for s in SCENARIOS)
    assert NONDETERMINISTIC_FRAMES == {s.name for s in NAT_SCENARIOS if not s.deterministic_frames}
    for s in NAT_SCENARIOS:
        times = [t for _port, _frame, t in s.packets]
        assert all(a < b for a, b in zip(times, times[1:], strict=False)), s.name
        assert 3 <= len(s.packets) <= 30, s.name
        assert s.expect, s.name
        assert all(1 <= n <= len(s.packets) for n in s.expect), s.name
        assert all(1 <= n <= len(s.packets) for n in s.frame_facts), s.name
        assert "nat" in s.flows, s.name


def test_checksum_and_fact_helpers():
    good = udp("A", "B", 40000, 53, src_ip=NAT4)
    assert checksum_problems(good) == []
    assert checksum_problems(udp("A", "B", 1, 2, chksum=0)) == []
    broken = bytearray(good)
    broken[26] ^= 1  # IP source, checksums unchanged
    assert {p.split()[0] for p in checksum_problems(bytes(broken))} == {"IP", "UDP"}
    facts = decode_facts(tcp("A", "B", 40000, 80, "S", 1, src_ip=NAT4))
    assert facts == {"src": NAT4, "dst": "10.1.1.2", "sport": 40000, "dport": 80}
    outcome = PacketOutcome([2], "new|trk", [], frames=[(2, good)])
    assert fact_mismatches(outcome, [(2, {"src": NAT4, "sport": frozenset({1, 40000})})]) == []
    assert fact_mismatches(outcome, [(2, {"sport": 5000})]) == [
        "port 2 frame #1: sport=40000, want 5000"
    ]
    assert "no frame #1 on port 1" in fact_mismatches(outcome, [(1, {})])[0]


def test_frame_comparison_reports_first_differing_byte():
    sent = udp("A", "B", 40000, 53, src_ip=NAT4)
    plain = udp("A", "B", 40000, 53)
    assert frame_difference([(2, sent), (3, plain)], [[3, plain.hex()], [2, sent.hex()]]) is None
    hint = frame_difference([(2, sent)], [[2, plain.hex()]])
    assert hint.startswith("p2 frame 1: first difference at byte 24")
    assert "ip src" in hint and "l4 csum" in hint
    assert frame_difference([(2, sent)], []) == "p2: OVS emitted 1 frame(s), ctaccel 0"

    s = NatScenario("t", "ip,actions=ct(nat)", [(1, plain, 1), (2, plain, 2), (1, plain, 3)])
    ovs = OracleRun([PacketOutcome([2], "new|trk", [], frames=[(2, sent)])] * 3, [], None, 0.0)
    ours = [{"out": [2], "ct_state": "new|trk", "frames": [[2, plain.hex()]]}] * 3
    report = differences(s, ovs, ours, [])
    assert "first divergence at packet 1" in report and "frames differ" in report
    s.deterministic_frames = False
    assert differences(s, ovs, ours, []) is None


def test_nondeterministic_conntrack_is_compared_with_reply_ports_masked():
    line = (
        "udp,orig=(src=10.1.1.1,dst=10.1.1.2,sport=40000,dport=53),"
        "reply=(src=10.1.1.2,dst=10.1.1.240,sport=53,dport=5001),zone=7"
    )
    masked = mask_reply_ports(line)
    assert "sport=40000,dport=53)" in masked and "reply=(src=10.1.1.2" in masked
    assert "dst=10.1.1.240,sport=*,dport=*)" in masked
    s = NatScenario("t", "", [(1, b"x" * 60, 1)] * 3, deterministic_frames=False)
    ovs = OracleRun([], [line], None, 0.0)
    assert differences(s, ovs, [], [line.replace("5001", "5000")]) is None
    assert differences(s, ovs, [], [line.replace("40000", "40001")]) is not None


# -- against OVS ------------------------------------------------------------------------------
@pytest.mark.oracle
@pytest.mark.parametrize("scenario", NAT_SCENARIOS, ids=IDS)
def test_nat_frames_on_ovs(scenario, ovs_oracle):
    """Decoded facts hold and every checksum OVS leaves in a NATed frame is right."""
    run = ovs_result(ovs_oracle, scenario)
    bad = []
    for n, expected in scenario.frame_facts.items():
        bad += [f"packet {n}: {m}" for m in fact_mismatches(run.packets[n - 1], expected)]
    for n, outcome in enumerate(run.packets, 1):
        for port, frame in outcome.frames:
            bad += [f"packet {n} port {port}: {m}" for m in checksum_problems(frame)]
    assert not bad, "\n".join(bad)


@pytest.mark.oracle
def test_snat_reply_tuple_in_dump_conntrack(ovs_oracle):
    scenario = next(s for s in NAT_SCENARIOS if s.name == "nat_snat_udp")
    run = ovs_result(ovs_oracle, scenario)
    assert (
        "udp,orig=(src=10.1.1.1,dst=10.1.1.2,sport=40000,dport=53),"
        "reply=(src=10.1.1.2,dst=10.1.1.240,sport=53,dport=40000),zone=7"
    ) in run.conntrack


@pytest.mark.oracle
@pytest.mark.parametrize("scenario", NAT_SCENARIOS, ids=IDS)
def test_nat_instrumentation_does_not_change_verdicts(scenario, ovs_oracle):
    instrumented = ovs_result(ovs_oracle, scenario)
    plain = ovs_oracle.run(scenario.flows, scenario.packets, scenario.zone_limits, instrument=False)
    assert [sorted(p.out) for p in plain.packets] == [sorted(p.out) for p in instrumented.packets]
    if scenario.deterministic_frames:  # same process, same hash basis: even then only these
        assert [p.frames for p in plain.packets] == [p.frames for p in instrumented.packets]
        assert plain.conntrack == instrumented.conntrack
    else:
        assert len(plain.conntrack) == len(instrumented.conntrack)
