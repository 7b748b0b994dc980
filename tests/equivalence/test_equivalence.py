"""The two datapath modes against the reference engine, packet for packet.

What: for every rule set of ``rulesets.RULE_SETS`` and random, adversarial sequences (TCP
lives with mistakes, UDP, ICMP, errors quoting live connections, IPv6, fragments, garbage,
clock jumps past timeouts), run the reference engine (one packet at a time) and
``DatapathEngine`` in "recirc" and "assume-established" modes (random batch sizes 1..300),
then compare each packet's outputs (ports and frames, in order), ct_state and drop reason,
the final conntrack dump and the rule counters. Also: rule replacement and a conntrack flush
between two batches, and the talk's two workloads.

Design: hypothesis draws the sequence parameters (derandomized: the same examples on every
run); the sequence itself is a pure function of them (``random_traffic.random_traffic``). A
failure names the first diverging packet with both results. The recirc mode must also
recirculate as often as the reference. The last test checks that a full run of this file
pushed at least 100,000 packets through the comparison.

``CTACCEL_EQUIV_ENGINE=reference`` runs the harness with the reference engine on both sides.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from support import alg_traffic as ALG
from support import equivalence as H
from support import random_traffic as R
from support import rulesets as RS
from support import workloads as WL

if os.environ.get("CTACCEL_EQUIV_ENGINE") == "reference":
    ENGINE = H.ReferenceBatchEngine
else:
    try:
        from ctaccel.datapath.engine import DatapathEngine as ENGINE
    except ImportError as exc:  # the engine is not there yet
        pytest.skip(f"ctaccel.datapath.engine unavailable: {exc}", allow_module_level=True)

MODES = ("recirc", "assume-established")
MIN_TOTAL_PACKETS = 100_000

# Packets compared per test (a test counts once, when it has finished all its examples).
_packets_by_test: dict[str, int] = {}


# CTACCEL_EQUIV_EXPLORE=N: draw N fresh random examples per test instead of the fixed ones
# (for a developer hunting divergences; CI keeps the derandomized set).
_EXPLORE = int(os.environ.get("CTACCEL_EQUIV_EXPLORE", "0") or 0)


def _settings(n: int):
    return settings(
        max_examples=_EXPLORE or n,
        deadline=None,
        derandomize=not _EXPLORE,
        database=None,
        # No shrinking: an example takes seconds and the report already names the first
        # diverging packet (and hypothesis prints the parameters to replay it).
        phases=(Phase.explicit, Phase.generate),
        suppress_health_check=list(HealthCheck),
    )


def check_equivalent(rules_text: str, packets, plan: H.Plan, test: str) -> None:
    """Reference vs both modes on one sequence; fail with the first difference."""
    report = _compare(rules_text, packets, plan)
    if report:  # raised here, where no engine is alive (failing examples are retained)
        pytest.fail(report, pytrace=False)
    _packets_by_test[test] = _packets_by_test.get(test, 0) + len(packets)


def _compare(rules_text: str, packets, plan: H.Plan) -> str | None:
    expected = H.run_reference(rules_text, packets, plan)
    for mode in MODES:
        got = H.run_engine(ENGINE, mode, rules_text, packets, plan)
        report = H.first_divergence(packets, expected, got, mode, plan,
                                    compare_recirculations=(mode == "recirc"))  # fmt: skip
        if report:
            return report
    return None


# --- random traffic over every rule set ------------------------------------------------------


@pytest.mark.parametrize("rule_set", sorted(RS.RULE_SETS))
def test_random_traffic_gives_the_reference_results(rule_set):
    @_settings(7)
    @given(params=R.traffic_params(500, 3000), batch_seed=st.integers(0, 2**31))
    def run(params, batch_seed):
        packets = R.random_traffic(params)
        check_equivalent(RS.RULE_SETS[rule_set], packets, H.plan_for(packets, batch_seed),
                         f"random[{rule_set}]")  # fmt: skip

    run()


# --- rules replaced, conntrack flushed, between two batches ------------------------------------


@pytest.mark.parametrize("before,after", RS.REPLACEMENTS)
def test_rule_replacement_mid_stream(before, after):
    @_settings(4)
    @given(params=R.traffic_params(500, 2000), batch_seed=st.integers(0, 2**31),
           flush=st.booleans())  # fmt: skip
    def run(params, batch_seed, flush):
        packets = R.random_traffic(params)
        plan = H.plan_for(packets, batch_seed, replace=RS.RULE_SETS[after], flush=flush)
        check_equivalent(RS.RULE_SETS[before], packets, plan, f"replace[{before}->{after}]")

    run()


# --- the talk's workloads ----------------------------------------------------------------------


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_workload_a_established_flows(v6):
    packets = WL.workload_a(250, 12, seed=7, v6=v6)
    check_equivalent(WL.WORKLOAD_FLOWS, packets, H.plan_for(packets, 11), f"workload_a[{v6}]")


def test_workload_a_with_flush_and_expiry():
    # A flush between two batches, then the clock jumps past the established timeout: the
    # fast path must not use entries whose connections are gone.
    packets = WL.workload_a(150, 12, seed=8)
    packets = R.with_clock_jump(packets, len(packets) * 3 // 4, 151_000)
    check_equivalent(WL.WORKLOAD_FLOWS, packets, H.plan_for(packets, 12, flush=True),
                     "workload_a_flush_expiry")  # fmt: skip


def test_workload_b_one_in_three_new():
    packets = WL.workload_b(200, 10, seed=9)
    check_equivalent(WL.WORKLOAD_FLOWS, packets, H.plan_for(packets, 13), "workload_b")


@_settings(6)
@given(seed=st.integers(0, 2**31), attack_prob=st.sampled_from((0.02, 0.1, 0.3)),
       v6=st.booleans(), rule_set=st.sampled_from(("zones_by_port", "mark_label",
                                                   "two_zone_pipeline")))  # fmt: skip
def test_attacks_on_established_flows(seed, attack_prob, v6, rule_set):
    packets = WL.established_with_attacks(60, 10, seed, attack_prob, v6)
    check_equivalent(RS.RULE_SETS[rule_set], packets, H.plan_for(packets, seed), "attacks")


# --- FTP and TFTP helpers (ct(alg=...)) -----------------------------------------------------------

_SNAT = {1: ("10.0.9.250", "fd00:9::fa")}


@pytest.mark.parametrize("rule_set", ["alg_ftp", "alg_nat", "zones_by_port"])
def test_alg_traffic_gives_the_reference_results(rule_set):
    """FTP sessions (announcements, hostile commands, data connections announced or not,
    NAT rewrites and the sequence adjustment after them) and TFTP reads, among other
    traffic; also through rules that know no helper."""

    @_settings(5)
    @given(seed=st.integers(0, 2**31), n=st.integers(400, 2500))
    def run(seed, n):
        packets = ALG.alg_traffic(seed, n, snat=_SNAT if rule_set == "alg_nat" else None)
        check_equivalent(RS.RULE_SETS[rule_set], packets, H.plan_for(packets, seed),
                         f"alg[{rule_set}]")  # fmt: skip

    run()


# --- the harness itself --------------------------------------------------------------------------


def test_harness_reports_a_divergence():
    """The comparison is not vacuous: a wrong result is reported with the packet."""
    packets = WL.workload_a(3, 2, seed=1)
    plan = H.plan_for(packets, 1)
    expected = H.run_reference(WL.WORKLOAD_FLOWS, packets, plan)
    tampered = H.run_reference(WL.WORKLOAD_FLOWS, packets, plan)
    tampered.results[10].ct_state = "inv|trk"
    report = H.first_divergence(packets, expected, tampered, "tampered", plan)
    assert report is not None and "packet #10 differs" in report
    tampered = H.run_reference(WL.WORKLOAD_FLOWS, packets, plan)
    tampered.counters[0] = (0, 0)
    assert "rule counters differ" in H.first_divergence(packets, expected, tampered, "t", plan)


def test_total_packets_compared():
    """After a full run of this file, at least 100,000 packets went through the comparison."""
    expected_tests = len(RS.RULE_SETS) + len(RS.REPLACEMENTS) + 8
    if len(_packets_by_test) < expected_tests:
        pytest.skip(f"only {len(_packets_by_test)} of {expected_tests} comparisons ran")
    total = sum(_packets_by_test.values())
    print(f"equivalence: {total} packets compared over {len(_packets_by_test)} tests")
    assert total >= MIN_TOTAL_PACKETS, _packets_by_test
