"""``ctaccel bench``: the quick smoke run end to end, and the pieces it is built from.

The smoke run goes through click's CliRunner into a temporary directory and checks what the
report claims against facts known independently of the runner: what the workload generator
says the capture holds (NEW packets, connections) and, for the two modes' agreement, a
per-packet comparison made here through the engine's public BatchResult API.
"""

from __future__ import annotations

import json
import statistics

import numpy as np
import pytest
from click.testing import CliRunner

from ctaccel.bench import compare, measure, runner, startup
from ctaccel.bench import workloads as W
from ctaccel.bench.bench_cli import _flow_counts, bench
from ctaccel.bench.report import STATELESS, Startup

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    result = CliRunner().invoke(bench, ["--quick", "--out-dir", str(out)],
                                catch_exceptions=False)  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "latest.json").read_text())
    return out, report, result.output


def _result(report, kind, series):
    for r in report["results"]:
        name = STATELESS if r["rules"] == STATELESS else r["mode"]
        if r["workload"]["kind"] == kind and name == series and r["role"] == "flows":
            return r
    raise AssertionError(f"no {kind}/{series} result in the report")


def test_smoke_writes_json_and_plots(smoke):
    out, report, output = smoke
    assert report["files"]["json"].startswith(str(out))
    stamped = json.loads(open(report["files"]["json"]).read())
    assert stamped["results"] == report["results"]
    for png in ("throughput-vs-flows.png", "speedup.png", "new-fraction.png", "modes.png"):
        data = (out / png).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5_000, png
    assert "ratios (same run, same machine)" in output  # the ratio table was printed
    m = report["machine"]
    assert m["cores"] >= 1 and m["numba"] and m["numpy"] and m["cpu"]


def test_smoke_has_both_modes_and_the_ceiling(smoke):
    _out, report, _ = smoke
    for kind in ("A", "B"):
        for series in ("recirc", "assume-established", STATELESS):
            r = _result(report, kind, series)
            assert len(r["repeats"]) == runner.QUICK_REPEATS
            assert r["median"]["mpps"] > 0
            assert r["median"]["packets"] == runner.QUICK_PACKETS
    ratios = {row["kind"]: row for row in report["ratios"]}
    assert set(ratios) == {"A", "B", "A+snat"}
    snat = ratios["A+snat"]
    assert snat["same_results"] and set(snat["mpps"]) == {"recirc", "assume-established"}
    for row in ratios.values():
        mpps = row["mpps"]
        assert row["ae_over_recirc_of_medians"] == pytest.approx(
            mpps["assume-established"] / mpps["recirc"])  # fmt: skip
        # The headline ratio pairs repeat i of one mode with repeat i of the other.
        runs = {r["mode"]: r["repeats"] for r in report["results"]
                if r["workload"]["name"] == row["workload"] and r["rules"] == "ct"}  # fmt: skip
        pairs = [a["mpps"] / r["mpps"]
                 for a, r in zip(runs["assume-established"], runs["recirc"], strict=True)]  # fmt: skip
        assert row["ae_over_recirc_pairs"] == pytest.approx(pairs)
        assert row["ae_over_recirc"] == pytest.approx(statistics.median(pairs))


def test_smoke_replays_the_main_workloads_through_the_batched_outputs(smoke):
    """The flows workloads are also replayed from their capture files to output files (the
    replay's batched path) in both modes, each repeat, beside the engine's own runs."""
    _out, report, output = smoke
    for kind in ("A", "B"):
        for mode in ("recirc", "assume-established"):
            r = _result(report, kind, mode)
            runs = r["replay"]["repeats"]
            assert len(runs) == runner.QUICK_REPEATS
            for run in runs:
                assert run["packets"] == runner.QUICK_PACKETS and run["mpps"] > 0
                assert set(run["time_split"]) == {"reading", "datapath", "writing", "waiting"}
                assert run["ns_per_packet"] == pytest.approx(
                    run["seconds"] * 1e9 / run["packets"])  # fmt: skip
                # the main thread's parts (read, datapath, wait for the writer) lie inside
                # the timed whole; the writer's thread works beside them. (Not compared
                # with the engine's own runs: on a shared machine either may be the faster.)
                split = run["time_split"]
                assert split["datapath"] > 0 and min(split.values()) >= 0
                main_thread = split["reading"] + split["datapath"] + split["waiting"]
                assert main_thread <= run["seconds"] + 2e-3
        assert "replay" not in _result(report, kind, STATELESS)
    assert "replay, capture file to output files" in output


def test_smoke_fast_path_and_recirculation_counts(smoke):
    _out, report, _ = smoke
    ae = _result(report, "A", "assume-established")["median"]
    rec = _result(report, "A", "recirc")["median"]
    assert ae["fast_path_share"] > 0.9
    assert ae["recirculations_per_packet"] < 0.1
    # recirc mode: every packet passes ct() once and is recirculated once.
    assert rec["recirculations_per_packet"] == pytest.approx(1.0, abs=0.01)
    assert rec["fast_path_share"] == 0
    # stateless rules never recirculate.
    assert _result(report, "A", STATELESS)["median"]["recirculations_per_packet"] == 0


def test_smoke_counts_match_the_generated_workloads(smoke):
    out, report, _ = smoke
    for kind in ("A", "B"):
        w = W.generate(kind, runner.QUICK_FLOWS, runner.QUICK_PACKETS,
                       out_dir=out / "regenerated")  # fmt: skip
        for series in ("recirc", "assume-established"):
            first = _result(report, kind, series)["repeats"][0]
            assert first["new_packets"] == w.expected_new
            assert first["connections_created"] == w.flows
            assert first["memory"]["connections"] == w.flows
            assert first["memory"]["bytes_per_connection_conntrack"] >= first["memory"][
                "conn_row_bytes"]  # fmt: skip


def test_smoke_modes_agree(smoke):
    _out, report, _ = smoke
    for row in report["ratios"]:
        assert row["same_results"] is True, row["workload"]


def test_modes_agree_packet_by_packet(smoke):
    """Independent of the runner's digest: outputs, ct_state and drop reason per packet."""
    _out, report, _ = smoke
    from ctaccel.datapath.engine import DatapathEngine
    from ctaccel.ofproto.rules import parse_flows

    for kind in ("A", "B"):
        info = _result(report, kind, "recirc")["workload"]
        cap = measure.load_capture(info["pcap"])
        seen = {}
        for mode in ("recirc", "assume-established"):
            text = open(info["rules"]).read()
            eng = DatapathEngine(parse_flows(text, info["rules"]), mode=mode)
            per_packet = []
            for lo in range(0, cap.packets, 1024):
                hi = min(cap.packets, lo + 1024)
                br = eng.run(cap.buf, cap.offsets[lo:hi], cap.lengths[lo:hi],
                             cap.in_ports[lo:hi], cap.now_ms[lo:hi])  # fmt: skip
                per_packet += [(tuple(br.ports(j)), br.ct_state(j), br.drop_reason(j))
                               for j in range(hi - lo)]  # fmt: skip
            seen[mode] = per_packet
        assert seen["recirc"] == seen["assume-established"]
        # The firewall forwards every packet of these captures to port 2.
        assert {p for p, _s, _d in seen["recirc"]} == {(W.OUT_PORT,)}


def test_smoke_startup_and_slow_path_share(smoke):
    _out, report, _ = smoke
    warm = report["startup"]["warm"]
    assert warm.get("warm_up_seconds", 0) > 0, warm
    assert report["startup"]["cold"].get("skipped")
    for r in report["results"]:
        md = r["median"]
        assert 0 <= md["slow_path_share"] < 1
        assert md["slow_path_seconds"] + md["fast_path_seconds"] == pytest.approx(md["seconds"])
        assert md["upcalls"] >= 1  # the first packet of every fresh engine misses


def test_sweeps_over_flows_and_new_fraction(tmp_path):
    args = ["--flows", "200,400", "--new-fraction", "0.5", "--packets", "6000", "--repeats", "1",
            "--no-startup", "--out-dir", str(tmp_path)]  # fmt: skip
    result = CliRunner().invoke(bench, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "latest.json").read_text())
    seen = {(r["workload"]["kind"], r["workload"]["flows"], r["role"], r["mode"], r["rules"])
            for r in report["results"]}  # fmt: skip
    for flows in (200, 400):
        for kind in ("A", "B"):
            for mode in ("recirc", "assume-established"):
                assert (kind, flows, "flows", mode, "ct") in seen
            assert (kind, flows, "flows", "recirc", STATELESS) in seen
    swept = [r for r in report["results"] if r["role"] == "new_fraction"]
    assert {r["mode"] for r in swept} == {"recirc", "assume-established"}
    for r in swept:  # at the first flow count; NEW share as asked (handshakes dilute it)
        assert r["workload"]["flows"] == 200
        assert 0.4 < r["repeats"][0]["new_packets"] / r["median"]["packets"] < 0.55
    assert len(report["ratios"]) == 6 and all(row["same_results"] for row in report["ratios"])
    assert [r["workload"]["flows"] for r in report["results"] if r["role"] == "snat"] == [200, 200]
    assert "startup" not in report
    assert (tmp_path / "speedup.png").read_bytes().startswith(PNG_MAGIC)


def test_workload_cache_reuses_files(tmp_path):
    first = measure.cached_workload("A", 40, 400, None, tmp_path)
    stamp = first.pcap_path.stat().st_mtime_ns
    again = measure.cached_workload("A", 40, 400, None, tmp_path)
    assert again == first
    assert again.pcap_path.stat().st_mtime_ns == stamp
    other = measure.cached_workload("B", 40, 400, 0.2, tmp_path)
    assert other.pcap_path != first.pcap_path and other.unidirectional_flows > 0


def test_load_capture_is_writable_and_monotonic(tmp_path):
    w = measure.cached_workload("B", 40, 500, None, tmp_path)
    cap = measure.load_capture(w.pcap_path)
    assert cap.packets == 500 and cap.buf.flags.writeable and cap.buf.flags.c_contiguous
    assert np.all(np.diff(cap.now_ms) >= 0)
    assert np.all(cap.in_ports == W.IN_PORT)
    assert np.all(cap.offsets + cap.lengths <= len(cap.buf))


def test_measure_rejects_bad_arguments(tmp_path):
    w = measure.cached_workload("A", 40, 200, None, tmp_path)
    with pytest.raises(ValueError):
        measure.measure(w, "fast", repeats=1)
    with pytest.raises(ValueError):
        measure.measure(w, "recirc", repeats=0)


def test_flow_count_option_parsing():
    assert _flow_counts(["1000", "10k,100K", "1M"]) == [1000, 10_000, 100_000, 1_000_000]
    result = CliRunner().invoke(bench, ["--flows", "many"])
    assert result.exit_code == 2 and "flow count" in result.output
    result = CliRunner().invoke(bench, ["--new-fraction", "1.5"])
    assert result.exit_code == 2


def test_comparison_pairs_each_round_with_ovs_dpdk(smoke, tmp_path, monkeypatch):
    """compare_with_ovs_dpdk without OVS-DPDK: a stand-in for its process answers a different
    rate each round, so the per-round pairing and the median of the rounds' ratios show."""
    _out, report, _ = smoke
    rates = iter([1.0, 2.0, 4.0, 1.5, 3.0, 6.0, 0.5, 1.0, 2.0])  # three rounds x three captures
    calls = []

    def fake_ovs_dpdk(pcap, rules_file, repeat, json_out):
        mpps = next(rates)
        calls.append((str(rules_file), mpps))
        return {"median": {"mpps": mpps, "cycles_per_packet": 100.0}, "tsc_hz": 2e9,
                "runs": [{"mpps": mpps}]}  # fmt: skip

    monkeypatch.setattr(compare, "ovs_dpdk_unavailable", lambda: None)
    monkeypatch.setattr(compare, "run_ovs_dpdk", fake_ovs_dpdk)
    comparison = compare.compare_with_ovs_dpdk(report, tmp_path, repeat=3)
    assert len(calls) == 9
    rows = {(r["kind"], r["rules"], r["ours_mode"]): r for r in comparison["rows"]}
    assert set(rows) == {("A", "ct", "recirc"), ("A", "ct", "assume-established"),
                         ("A", "stateless", STATELESS),
                         ("A", "stateless", "assume-established"),
                         ("B", "ct", "recirc"), ("B", "ct", "assume-established")}  # fmt: skip
    # The stateless rounds run assume-established on the firewall rules beside OVS-DPDK's
    # stateless rules: the target "AE >= OVS-DPDK stateless" is read from that pair.
    assert rows["A", "stateless", "assume-established"]["ours_rules"] == "ct"
    assert rows["A", "stateless", STATELESS]["ours_rules"] == STATELESS
    for row in rows.values():
        theirs = [m for f, m in calls if f == str(_rules_file(report, row))]
        assert len(row["ratio_per_round"]) == len(theirs) == 3
        assert row["ovs_dpdk_mpps"] == pytest.approx(statistics.median(theirs))
        ours = [x * t for x, t in zip(row["ratio_per_round"], theirs, strict=True)]
        assert row["ours_mpps"] == pytest.approx(statistics.median(ours))  # one run per round
        # the rounds themselves are kept: the plot's whiskers span them
        assert row["ovs_dpdk_mpps_rounds"] == theirs
        assert row["ours_mpps_rounds"] == pytest.approx(ours)
        assert row["ratio_ours_over_ovs_dpdk"] == pytest.approx(
            statistics.median(row["ratio_per_round"]))  # fmt: skip
    assert (tmp_path / "comparison.json").is_file()
    assert (tmp_path / "comparison.png").read_bytes().startswith(PNG_MAGIC)
    # The targets are read from those rows and from the bench's paired AE / recirc ratios.
    targets = {t["target"]: t for t in comparison["targets"]}
    assert len(targets) == len(compare.TARGETS) == 5
    for name, source, key, threshold in compare.TARGETS:
        t = targets[name]
        if source == "comparison":
            assert t["value"] == rows[key]["ratio_ours_over_ovs_dpdk"]
            assert t["lowest"] == min(rows[key]["ratio_per_round"])
        else:
            ratio = next(r for r in report["ratios"] if r["kind"] == key[0])
            assert t["value"] == ratio[key[1]]
        assert t["met"] == (t["value"] >= threshold)


def test_comparison_whiskers_span_the_rounds():
    from ctaccel.bench.plots import _round_range

    assert _round_range(2.0, [1.5, 2.0, 3.5]) == (2.0, 0.5, 1.5)
    assert _round_range(2.0, None) == (2.0, 0, 0)  # a comparison written before rounds were kept
    assert _round_range(2.0, [None, 2.5]) == (2.0, 0, 0.5)


def _rules_file(report, row):
    r = _result(report, row["kind"], "recirc")["workload"]
    return r["stateless_rules"] if row["rules"] == "stateless" else r["rules"]


def test_cold_startup_reuses_this_build_s_figure(tmp_path, monkeypatch):
    """The cold start-up is measured once per build of the kernels (a cache directory) and
    reused; "measure" always measures (the fresh process is stood in for here: it takes
    minutes)."""
    from ctaccel import jit

    measured = []

    def fake_startup(cold, timeout=0):
        measured.append(cold)
        return Startup(cold, warm_up_seconds=123.0, total_seconds=124.0)

    monkeypatch.setattr(jit, "CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(startup, "startup", fake_startup)
    assert startup.cache_is_empty()
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "kernel.nbi").write_bytes(b"x")
    assert not startup.cache_is_empty()
    # No record yet: "auto" measures, and records.
    first = startup.cold_startup("auto")
    assert measured == [True] and first.warm_up_seconds == 123.0
    record = json.loads((tmp_path / startup.COLD_START_RECORD).read_text())
    assert record["warm_up_seconds"] == 123.0
    # Recorded: "auto" reuses it and says so; "measure" measures again.
    again = startup.cold_startup("auto")
    assert measured == [True] and again.warm_up_seconds == 123.0
    assert again.how.startswith("recorded") and first.measured_at in again.how
    startup.cold_startup("measure")
    assert measured == [True, True]
    # A process that compiled from an empty cache reports its own warm-up, and records it.
    own = startup.cold_startup("auto", own_cold_warm_up=42.0)
    assert measured == [True, True] and own.warm_up_seconds == 42.0 and "own" in own.how
    assert own.to_json()["total_seconds"] is None  # reported as unknown, not left out
    assert startup.cold_startup("auto").warm_up_seconds == 42.0
    with pytest.raises(ValueError):
        startup.cold_startup("sometimes")
