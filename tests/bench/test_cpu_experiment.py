"""The host-CPU experiment: lifecycle traffic, paced replay, the offload model and its stub.

The traffic is checked against the reference engine and scapy; the paced run's accounting
against the stream it was given; the device's admission against hand-computed schedules;
the device stub's run against the software run (same rule counters, same connections,
every device packet one the software fast path took); the model's arithmetic against a
hand computation; and the whole experiment end to end on a small workload (JSON, PNGs,
the CLI).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from ctaccel.bench import offload as O
from ctaccel.bench import paced as P
from ctaccel.bench import workloads as W
from ctaccel.bench.bench_cli import bench
from ctaccel.bench.cpu import run_cpu_experiment, talk_load
from ctaccel.datapath.engine import DatapathEngine
from ctaccel.datapath.reference import ReferenceEngine
from ctaccel.ofproto.classifier import FlowTables
from ctaccel.ofproto.rules import parse_flows

FLOWS = 60


@pytest.fixture(scope="module")
def tables():
    return FlowTables(parse_flows(W.rules("A"), "workload A"))


@pytest.fixture(scope="module")
def lifecycle():
    frames, (setup, est, end) = W.build_lifecycle(FLOWS, 4)
    return frames, (setup, setup + 2 * FLOWS, est, end)  # installing: the second round


def _engine(tables, mode="assume-established"):
    return DatapathEngine(tables, mode=mode, batch_size=P.MAX_BATCH)


# --- the traffic ------------------------------------------------------------------------------


def test_lifecycle_phases_and_teardown_frames(lifecycle):
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    frames, ends = lifecycle
    assert W.build_lifecycle(FLOWS, 4)[1] == (5 * FLOWS, 11 * FLOWS, 14 * FLOWS)
    assert len(frames) == ends[-1]
    flags = []
    for f in frames[ends[2] :]:
        pkt = Ether(f.tobytes())
        tcp = pkt[TCP]
        sent = tcp.chksum
        del pkt[TCP].chksum
        del pkt[IP].chksum
        assert Ether(bytes(pkt))[TCP].chksum == sent  # scapy recomputes: the same checksum
        flags.append(str(tcp.flags))
    assert flags == ["FA"] * FLOWS + ["FA"] * FLOWS + ["A"] * FLOWS


def test_lifecycle_is_accepted_and_every_connection_closes(tables, lifecycle):
    frames, ends = lifecycle
    ref = ReferenceEngine(parse_flows(W.rules("A"), "workload A"))
    results = [ref.process(f.tobytes(), W.IN_PORT, i) for i, f in enumerate(frames)]
    assert all(r.out_ports == [W.OUT_PORT] for r in results)
    assert [r.ct_state for r in results[:FLOWS]] == ["new|trk"] * FLOWS
    assert all("est" in r.ct_state for r in results[FLOWS:])  # teardown included
    ct = ref.conntrack
    assert len(ct) == FLOWS
    assert ct.sweep(len(frames) + 1_000) == 0  # closing, not yet expired
    assert ct.sweep(len(frames) + 901_000) == FLOWS


# --- the paced run ----------------------------------------------------------------------------


def test_paced_run_accounts_every_packet_and_phase(tables, lifecycle):
    frames, ends = lifecycle
    n = len(frames)
    rate = 200_000.0
    stream = P.offered_stream(frames.reshape(-1).copy(), frames.shape[1], n, ends, rate, 1)
    assert np.allclose(stream.arrival_s, np.arange(n) / rate)
    engine = _engine(tables)
    phases = P.paced_run(engine, stream)
    sizes = np.diff((0, *ends))
    assert [ph.packets for ph in phases] == sizes.tolist()
    assert [ph.traffic_s for ph in phases] == pytest.approx((sizes / rate).tolist())
    assert all(ph.cpu_s > 0 and ph.batches >= 1 for ph in phases)
    est = phases[P.EST]  # a host that keeps up wakes at most once per poll interval
    assert 0 < est.wakes <= est.batches and est.wakes <= P.predicted_wakes(
        stream.arrival_s[ends[0] : ends[1]]) + 1  # fmt: skip
    # the host kept up (2 ms of set-up traffic may take longer on a busy machine)
    assert phases[P.EST].wall_s >= phases[P.EST].traffic_s * 0.9
    assert sum(ph.stats["fast_path_hits"] for ph in phases) == engine.stats["fast_path_hits"]
    assert sum(ph.stats["connections_created"] for ph in phases) == FLOWS
    assert all(0 < ph.cpu_share <= 1.05 for ph in phases)
    cpu, freed = P.expiry_cpu(engine, int(stream.now_ms()[-1]) + 901_000)
    assert freed == FLOWS and cpu >= 0


def test_paced_run_beyond_saturation_takes_longer_than_its_traffic(tables, lifecycle):
    frames, ends = lifecycle
    stream = P.offered_stream(frames.reshape(-1).copy(), frames.shape[1], len(frames), ends,
                              1e10, 1)  # fmt: skip
    phases = P.paced_run(_engine(tables, "recirc"), stream)
    assert all(ph.wall_s > ph.traffic_s for ph in phases)
    # asleep only for the poll interval at a phase's tail (fewer than a batch waiting)
    assert sum(ph.wakes for ph in phases) <= len(phases) + 1
    assert all(ph.cpu_share <= 1.05 for ph in phases)  # at most one core


def test_interleaved_runs_each_get_their_own_phases_and_clock(tables, lifecycle):
    """Two hosts phase by phase in turn: each one's packets, counters and traffic time are
    those of a run alone, and no phase's wall time counts the other host's turn."""
    frames, ends = lifecycle
    rate = 200_000.0
    stream = P.offered_stream(frames.reshape(-1).copy(), frames.shape[1], len(frames), ends,
                              rate, 1)  # fmt: skip
    alone = P.paced_run(_engine(tables), stream)
    engines = [_engine(tables), _engine(tables, "recirc")]
    both = P.interleaved([P.paced_phases(e, stream) for e in engines])
    for phases in both:
        assert [ph.packets for ph in phases] == [ph.packets for ph in alone]
        assert [ph.traffic_s for ph in phases] == pytest.approx([ph.traffic_s for ph in alone])
        # the other host's turn (a whole phase of traffic) is not this phase's time
        assert all(ph.wall_s < ph.traffic_s + 0.05 for ph in phases)
    assert [ph.stats["fast_path_hits"] for ph in both[0]] == [
        ph.stats["fast_path_hits"] for ph in alone]  # fmt: skip
    assert sum(ph.stats["fast_path_hits"] for ph in both[1]) == 0  # recirc: no fast path
    assert np.array_equal(engines[0].rule_stats, engines[1].rule_stats)


def test_host_subset_keeps_arrival_times_and_phases():
    buf = np.zeros(10 * 60, np.uint8)
    keep = np.array([1, 0, 1, 1, 0, 0, 1, 0, 0, 1], bool)
    s = P.offered_stream(buf, 60, 10, (3, 3, 7, 10), 100.0, 1, keep)
    assert s.offsets.tolist() == [0, 120, 180, 360, 540]
    assert s.arrival_s.tolist() == pytest.approx([0.0, 0.02, 0.03, 0.06, 0.09])
    assert s.phase_ends.tolist() == [2, 2, 4, 5]
    assert s.phase_span_s.tolist() == pytest.approx([0.03, 0.0, 0.04, 0.03])
    assert P.predicted_wakes(s.arrival_s, poll_s=0.025) == 4  # slots 0, 0, 1, 2, 3


# --- the device -------------------------------------------------------------------------------


def test_admission_rate_limit_and_capacity():
    req = np.array([0.0, 0.0, 0.0, np.inf, 0.5])
    admit, refused = O._admit(req, rate=2.0, capacity=2)
    assert admit.tolist() == [0.0, 0.5, np.inf, np.inf, np.inf]
    assert sorted(refused.tolist()) == [2, 4]
    admit, _ = O._admit(np.array([0.0, 10.0, 10.0]), rate=1.0, capacity=10)
    assert admit.tolist() == [0.0, 10.0, 11.0]  # idle time is not saved up


def _stub_run(tables, frames, ends, rate, params):
    n, flen = len(frames), frames.shape[1]
    buf = frames.reshape(-1).copy()
    full = P.offered_stream(buf, flen, n, ends, rate, 1)
    ref = O.reference(_engine(tables), buf, flen, n, 1, full.now_ms())
    dplan = O.plan(ref, full.arrival_s, ends[2], params, full.base_ms)
    keep = ~dplan.consumed
    engine = _engine(tables)
    stub = O.DeviceStub(engine, ref, dplan, dplan.push[keep])
    stub.host_entry = ref.entry[keep]
    phases = P.paced_run(engine, P.offered_stream(buf, flen, n, ends, rate, 1, keep),
                         P.HostWork(stub.on_batch, stub.sync, dplan.sync_t))  # fmt: skip
    return ref, dplan, engine, stub, phases


def test_device_stub_gives_the_software_runs_counters(tables, lifecycle):
    frames, ends = lifecycle
    params = O.OffloadParams(stats_interval_s=0.002)
    ref, dplan, engine, stub, phases = _stub_run(tables, frames, ends, 100_000.0, params)
    assert not (dplan.consumed & ~ref.hit).any()  # only packets the fast path took
    assert dplan.consumed[ends[2] :].sum() == 0  # teardown: the device let go
    assert dplan.summary["installed"] == 2 * FLOWS
    assert dplan.summary["device_packets"] == int(dplan.consumed.sum()) > 0
    assert sum(ph.packets for ph in phases) == len(frames) - dplan.summary["device_packets"]
    assert np.array_equal(engine.rule_stats, ref.rule_stats)
    assert stub.synced_packets == dplan.summary["device_packets"]
    assert sum(ph.syncs for ph in phases) == len(dplan.sync_t) > 1
    assert (stub.flow_stats[:, 0].sum(), stub.pushed) == (stub.synced_packets, 4 * FLOWS)
    assert (ref.entry_slot >= 0).all()
    end = int(P.offered_stream(np.zeros(0, np.uint8), 60, len(frames), ends,
                               100_000.0, 1).now_ms()[-1])  # fmt: skip
    assert P.expiry_cpu(engine, end + 901_000)[1] == FLOWS


def test_entries_the_device_cannot_take_stay_on_the_host(tables, lifecycle):
    frames, ends = lifecycle
    params = O.OffloadParams(capacity=10, insert_rate=1e9)
    ref, dplan, engine, _stub, _ph = _stub_run(tables, frames, ends, 100_000.0, params)
    s = dplan.summary
    assert (s["installed"], s["refused_capacity"]) == (10, 2 * FLOWS - 10)
    assert s["host_kept_hits"] == int(ref.hit.sum()) - s["device_packets"] > 0
    assert np.array_equal(engine.rule_stats, ref.rule_stats)
    slow = O.plan(ref, np.arange(len(frames)) / 100_000.0, ends[2],
                  O.OffloadParams(insert_rate=10.0), 0).summary  # fmt: skip
    assert slow["last_install_s"] >= (2 * FLOWS - 1) / 10.0  # 10/s: one after the other...
    assert 0 < slow["device_packets"] < s["device_packets"]  # ...too late for most packets


def test_model_arithmetic():
    def ph(cpu, packets, wakes, hits):
        return {"cpu_s": cpu, "packets": packets, "wakes": wakes,
                "stats": {"fast_path_hits": hits}}  # fmt: skip

    ae = [ph(1.0, 100, 10, 0), ph(2.0, 1000, 20, 900), ph(0.5, 50, 5, 0)]
    rc = [ph(1.0, 100, 10, 0), ph(3.0, 1000, 20, 0), ph(0.5, 50, 5, 0)]  # est: phase 1 here
    cal = {"wake_s": 0.01, "push_s_per_entry": 0.001, "sync_s_fixed": 0.002,
           "sync_s_per_entry": 0.0001}  # fmt: skip
    dev = {"device_packets": [0, 800, 0], "pushes": [10, 0, 10], "syncs": [0, 2, 1],
           "host_wakes": [10, 5, 5]}  # fmt: skip
    per_other = (3.0 - 20 * 0.01) / 1000
    per_hit = (2.0 - 20 * 0.01 - 100 * per_other) / 900
    want = [1.0 + 10 * 0.001,
            # kept: 5 wakes, the 100 hits the device did not take, the 100 other packets
            5 * 0.01 + 100 * per_hit + 100 * per_other + 2 * 0.002 + 200 * 0.0001,
            0.5 + 10 * 0.001 + 0.002 + 100 * 0.0001]  # fmt: skip
    assert O.model_cpu(ae, rc, dev, cal, [0, 200, 100], est=1) == pytest.approx(want)
    # wakes measured dearer than a phase's whole CPU: the host keeps its wakes, nothing less
    cal["wake_s"] = 0.2
    dev["host_wakes"][1] = 0
    assert O.model_cpu(ae, rc, dev, cal, [0, 200, 100], est=1)[1] == pytest.approx(
        100 * 0.0 + 2 * 0.002 + 200 * 0.0001
    )  # per_hit and per_other are 0: all wakes


# --- the experiment ---------------------------------------------------------------------------


def test_talk_load_interpolates_in_log_rate():
    def point(rate, share):
        return {"offered_pps": rate, "hosts": {"recirc": {"established_share": share}}}

    pts = [point(1e5, 0.2), point(1e6, 0.84), point(4e6, 1.0)]
    assert talk_load(pts) == pytest.approx(10**5.5)
    assert talk_load(pts[:1]) is None


def test_cpu_experiment_end_to_end(tmp_path):
    report = run_cpu_experiment(rates=[30_000, 5_000_000], flows=200, flows_sweep=[100],
                                repeats=1, out_dir=tmp_path, progress=False, est_seconds=0.05,
                                params=O.OffloadParams(stats_interval_s=0.01))  # fmt: skip
    data = json.loads((tmp_path / "cpu-latest.json").read_text())
    assert data["settings"]["rates"] == [30_000, 5_000_000]
    assert (tmp_path / "cpu-load.png").stat().st_size > 10_000
    points = data["load"] + [data["at_talk_load"]] + data["flows_sweep"]
    for p in points:
        for host in ("recirc", "assume-established", "offload-stub"):
            assert p["hosts"][host]["same_rule_counters"]
        assert set(p["hosts"]) == {"recirc", "assume-established", "offload-stub",
                                   "offload-model"}  # fmt: skip
    low, high = data["load"]
    assert low["hosts"]["recirc"]["established_share"] < high["hosts"]["recirc"][
        "established_share"]  # fmt: skip
    assert low["offered_pps"] < data["talk_load_pps"] < high["offered_pps"]
    assert data["flows_sweep"][0]["flows"] == 100
    assert (tmp_path / "cpu-flows.png").is_file()
    assert report["talk_load_pps"] == data["talk_load_pps"]
    cal = data["at_talk_load"]["calibration"]
    assert cal["sync_s_fixed"] > 0 and cal["wake_s"] > 0


def test_cli_cpu_experiment(tmp_path):
    run = CliRunner().invoke(bench, ["--experiment", "cpu", "--quick", "--flows", "100",
                                     "--offered-rate", "20k", "--offered-rate", "5M",
                                     "--repeats", "1", "--stats-interval", "0.01",
                                     "--out-dir", str(tmp_path)])  # fmt: skip
    assert run.exit_code == 0, run.output
    assert "Host CPU" in run.output
    assert (tmp_path / "cpu-latest.json").is_file()
    bad = CliRunner().invoke(bench, ["--experiment", "cpu", "--offered-rate", "fast"])
    assert bad.exit_code == 2 and "--offered-rate" in bad.output
