"""The OVS-DPDK peer's parts that run without root or DPDK: its configuration object, the
command-line wrapper, the parsers of OVS's counters, how the bench calls it, and the private
OVS helper it shares with the oracle (started here with the plain ovs-vswitchd when Open
vSwitch is installed)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from ctaccel.bench import compare, ovs_stats
from ctaccel.bench import ovs_dpdk as peer
from ctaccel.bench.private_ovs import OvsError, PrivateOvs

WRAPPER = Path(__file__).resolve().parents[2] / "benchmarks" / "ovs_dpdk.py"

PMD_STATS = """\
pmd thread numa_id 0 core_id 1:
  packets received: 3030000
  packet recirculations: 3030000
  avg. datapath passes per packet: 2.00
  emc hits: 5000000
  smc hits: 0
  megaflow hits: 1059990
  miss with success upcall: 10
  miss with failed upcall: 0
  idle cycles: 1000
  processing cycles: 909000000
main thread:
  packets received: 0
"""


def _wrapper():
    spec = importlib.util.spec_from_file_location("ovs_dpdk_cli", WRAPPER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pmd_stats_and_rule_counts_parse():
    stats = ovs_stats.parse_pmd_stats(PMD_STATS, 1)
    assert stats["packets"] == 3030000 and stats["upcalls"] == 10
    assert stats["passes_per_packet"] == 2.0 and stats["processing_cycles"] == 909000000
    with pytest.raises(OvsError):
        ovs_stats.parse_pmd_stats(PMD_STATS, 7)
    dump = (" cookie=0x0, duration=1.2s, table=0, n_packets=12, n_bytes=720, idle_age=0, "
            "priority=10,tcp,in_port=1 actions=output:2\n")  # fmt: skip
    assert ovs_stats.parse_rule_counts(dump) == [
        {"rule": "table=0, priority=10,tcp,in_port=1 actions=output:2", "n_packets": 12,
         "n_bytes": 720}]  # fmt: skip


def test_wrapper_fills_the_config(monkeypatch, tmp_path, capsys):
    seen = []

    def fake_benchmark(config):
        seen.append(config)
        raise peer.BenchError("no DPDK here")

    monkeypatch.setattr(peer, "benchmark", fake_benchmark)
    rc = _wrapper().main(["--pcap", "a.pcap", "--flows", "r.flows", "--repeat", "2", "--loop",
                          "--pmd-core", "3", "--json", str(tmp_path / "x.json")])  # fmt: skip
    assert rc == 2 and "no DPDK here" in capsys.readouterr().err
    (config,) = seen
    assert isinstance(config, peer.PeerConfig)
    assert (config.pcap, config.flows, config.repeat, config.loop, config.pmd_core) == (
        "a.pcap", "r.flows", 2, True, 3)  # fmt: skip
    assert config.memory == "huge" and not (tmp_path / "x.json").exists()


def test_make_capture_is_the_project_generator(tmp_path, capsys):
    from ctaccel.bench import workloads as W

    assert _wrapper().main(["make-capture", "B", str(tmp_path), "--conns", "40",
                            "--packets", "300"]) == 0  # fmt: skip
    w = W.generate("B", 40, 300, out_dir=tmp_path / "again")
    (pcap,) = tmp_path.glob("*.pcap")
    assert pcap.name == w.pcap_path.name and pcap.read_bytes() == w.pcap_path.read_bytes()
    assert str(pcap) in capsys.readouterr().out


def test_bench_runs_the_peer_in_process(monkeypatch, tmp_path):
    calls = []

    def fake_benchmark(config):
        calls.append(config)
        return {"median": {"mpps": 1.5}, "runs": []}

    monkeypatch.setattr(peer, "benchmark", fake_benchmark)
    out = compare.run_ovs_dpdk("c.pcap", "r.flows", 1, tmp_path / "o.json")
    assert out["median"]["mpps"] == 1.5 and calls[0].repeat == 1 and calls[0].pcap == "c.pcap"
    assert json.loads((tmp_path / "o.json").read_text()) == out

    def failing(config):
        raise peer.BenchError("needs root")

    monkeypatch.setattr(peer, "benchmark", failing)
    assert compare.run_ovs_dpdk("c.pcap", "r.flows", 1, tmp_path / "p.json") == {
        "error": "needs root"}  # fmt: skip


def test_private_ovs_starts_and_stops_only_its_daemons(tmp_path):
    from support.oracle.ovs_driver import ovs_installed

    if not ovs_installed():
        pytest.skip("Open vSwitch is not installed")
    ovs = PrivateOvs(tmp_path / "run", cmd_timeout=30)
    try:
        ovs.start_ovsdb()
        ovs.start_vswitchd(extra=["--enable-dummy=override"])
        assert set(ovs.pids) == {"ovsdb-server", "ovs-vswitchd"}
        assert all(ovs.alive(name) for name in ovs.pids)
        ovs.vsctl("add-br", "br0", "--", "set", "bridge", "br0", "datapath_type=netdev")
        assert "br0" in ovs.vsctl("list-br")
        assert "n_packets=0" in ovs.ofctl("dump-flows", "br0")
        assert ovs.appctl("version")
        with pytest.raises(OvsError):
            ovs.vsctl("no-such-command")
    finally:
        assert ovs.stop() == []
    assert not any(ovs.alive(name) for name in ovs.pids)
