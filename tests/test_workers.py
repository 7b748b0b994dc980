"""Connection-sharded workers (ctaccel/workers.py): the shard hash, and N engines as one.

The shard hash is checked on hand-built frames (both directions, VLAN tags, IPv6, an ICMP
error and the packet it quotes, fragments, non-IP); the sharded engine against one engine on
the equivalence tests' random traffic (TCP lives with mistakes, UDP, ICMP echo and errors,
fragments, oddities, clock jumps) and rule sets, in both modes, packet by packet (outputs
and their frames, ct_state, drop reason), plus rule counters and the conntrack table.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from ctaccel.bench import workloads as W
from ctaccel.datapath.engine import DatapathEngine
from ctaccel.ofproto.classifier import FlowTables
from ctaccel.ofproto.rules import parse_flows
from ctaccel.packet import build as B
from ctaccel.workers import ShardedEngine, shard_of, sharding_blockers
from support import rulesets
from support.equivalence import conntrack_for_tests
from support.random_traffic import TrafficParams, random_traffic, write_captures

SHARDABLE = [n for n, text in rulesets.RULE_SETS.items()
             if not sharding_blockers(FlowTables(parse_flows(text, n)))]  # fmt: skip


def _arrays(frames):
    lengths = np.array([len(f) for f in frames], np.int64)
    offsets = np.zeros(len(frames), np.int64)
    np.cumsum(lengths[:-1], out=offsets[1:])
    return np.frombuffer(b"".join(frames), np.uint8).copy(), offsets, lengths


def _shards(frames, workers=7):
    buf, offsets, lengths = _arrays(frames)
    return shard_of(buf, offsets, lengths, workers).tolist()


# --- the hash ---------------------------------------------------------------------------------


def test_both_directions_fragments_and_tags_share_a_shard():
    mac = ("02:00:00:00:00:01", "02:00:00:00:00:02")
    fwd = [B.tcp_frame(*mac, f"10.0.0.{i}", f"172.16.0.{i}", 1000 + i, 80, flags="S")
           for i in range(1, 40)]  # fmt: skip
    rev = [B.tcp_frame(*mac[::-1], f"172.16.0.{i}", f"10.0.0.{i}", 80, 1000 + i, flags="SA")
           for i in range(1, 40)]  # fmt: skip
    assert _shards(fwd) == _shards(rev)
    assert len(set(_shards(fwd))) > 3  # spread over the shards
    other_ports = [B.udp_frame(*mac, f"10.0.0.{i}", f"172.16.0.{i}", 5, 6) for i in range(1, 40)]
    assert _shards(other_ports) == _shards(fwd)  # the address pair decides, not the ports
    tagged = [B.tcp_frame(*mac, f"10.0.0.{i}", f"172.16.0.{i}", 1000 + i, 80, flags="S",
                          hdr=B.HeaderFields(vlan=7)) for i in range(1, 40)]  # fmt: skip
    assert _shards(tagged) == _shards(fwd)
    v6 = [B.tcp_frame(*mac, f"fd00::{i}", f"fd00:1::{i}", 1, 2) for i in range(1, 40)]
    v6r = [B.tcp_frame(*mac, f"fd00:1::{i}", f"fd00::{i}", 2, 1) for i in range(1, 40)]
    assert _shards(v6) == _shards(v6r) and len(set(_shards(v6))) > 3


def test_icmp_errors_follow_the_packet_they_quote():
    mac = ("02:00:00:00:00:01", "02:00:00:00:00:02")
    quoted = [B.udp_frame(*mac, f"10.0.0.{i}", f"172.16.0.{i}", 999, 53) for i in range(1, 30)]
    errors = [B.icmp_frame(*mac[::-1], "192.168.9.9", f"10.0.0.{i}", type=3, code=3,
                           payload=B.l3_of(q)[:28])
              for i, q in zip(range(1, 30), quoted, strict=True)]  # fmt: skip
    assert _shards(errors) == _shards(quoted)
    quoted6 = [B.udp_frame(*mac, f"fd00::{i}", f"fd00:1::{i}", 999, 53) for i in range(1, 30)]
    errors6 = [B.icmp_frame(*mac[::-1], "fd00:9::9", f"fd00::{i}", type=1, code=4,
                            payload=B.l3_of(q))
               for i, q in zip(range(1, 30), quoted6, strict=True)]  # fmt: skip
    assert _shards(errors6) == _shards(quoted6)


def test_fragments_follow_their_datagram():
    mac = ("02:00:00:00:00:01", "02:00:00:00:00:02")
    for i in range(1, 20):
        whole = B.udp_frame(*mac, f"10.0.0.{i}", f"172.16.0.{i}", 999, 53, payload=bytes(600))
        parts = B.fragment_ipv4(whole, 200)
        assert len(parts) > 2 and len(set(_shards([whole, *parts]))) == 1


def test_non_ip_goes_to_shard_zero():
    arp = B.arp_frame("02:00:00:00:00:01", "ff:ff:ff:ff:ff:ff", 1, "10.0.0.1", "10.0.0.2")
    assert _shards([arp, arp[:20]]) == [0, 0]


# --- N engines as one -------------------------------------------------------------------------


def _run(engine, packets, batch: int):
    frames = [f for _p, f, _t in packets]
    buf, offsets, lengths = _arrays(frames)
    ports = np.array([p for p, _f, _t in packets], np.int64)
    now = np.array([t for _p, _f, t in packets], np.int64)
    out = []
    for lo in range(0, len(frames), batch):
        hi = min(len(frames), lo + batch)
        br = engine.run(buf, offsets[lo:hi], lengths[lo:hi], ports[lo:hi], now[lo:hi])
        for j in range(hi - lo):
            out.append((br.outputs(j, frames[lo + j]), br.ct_state(j), br.drop_reason(j)))
    return out, int(now[-1])


@pytest.mark.parametrize("name", SHARDABLE)
@pytest.mark.parametrize("mode", ["recirc", "assume-established"])
def test_sharded_engine_gives_one_engines_results(name, mode):
    tables = FlowTables(parse_flows(rulesets.RULE_SETS[name], name))
    seed = zlib.crc32(name.encode()) % 1000
    packets = random_traffic(TrafficParams(seed=seed, n_packets=1500, n_live=16,
                                           jump_prob=0.002, n_hosts=6))  # fmt: skip
    one = DatapathEngine(tables, mode=mode, conntrack=conntrack_for_tests(), batch_size=512)
    want, end = _run(one, packets, 200)
    for workers in (2, 3):
        sharded = ShardedEngine(tables, workers, mode, batch_size=512,
                                make_conntrack=conntrack_for_tests)  # fmt: skip
        try:
            got, _ = _run(sharded, packets, 200)
            assert got == want, f"{workers} workers"
            assert sharded.rule_counters() == one.rule_counters()
            assert sharded.conntrack.dump(end) == sorted(one.conntrack.dump(end))
            assert len(sharded.conntrack) == len(one.conntrack)
            assert sharded.stats["workers"] == workers
        finally:
            sharded.close()


def test_workload_a_spreads_and_agrees():
    traffic = W.build("A", flows=500, packets=500 * 3 + 1000 * 4)
    frames = [bytes(f) for f in traffic.frames]
    packets = [(W.IN_PORT, f, i // 1000) for i, f in enumerate(frames)]
    tables = FlowTables(parse_flows(W.rules("A"), "A"))
    want, _ = _run(DatapathEngine(tables, batch_size=1024), packets, 1024)
    sharded = ShardedEngine(tables, 2, batch_size=1024)
    try:
        got, _ = _run(sharded, packets, 1024)
        assert got == want
        per_shard = [e.stats["fast_path_hits"] for e in sharded.shards]
        assert min(per_shard) > 0.35 * sum(per_shard)  # both shards did a fair share
    finally:
        sharded.close()


def test_blockers_name_what_crosses_connections():
    from ctaccel.conntrack import Conntrack

    nat = FlowTables(parse_flows(rulesets.RULE_SETS["nat_ranges"], "nat"))
    assert any("NAT" in b for b in sharding_blockers(nat))
    normal = FlowTables(parse_flows("priority=1,actions=NORMAL\n", "normal"))
    assert any("NORMAL" in b for b in sharding_blockers(normal))
    plain = FlowTables(parse_flows(W.rules("A"), "A"))
    assert sharding_blockers(plain) == []
    limited = Conntrack(zone_limits={5: 10})
    assert any("zone limits" in b for b in sharding_blockers(plain, limited))


# --- ctaccel replay --workers -----------------------------------------------------------------


def _capture_files(tmp, seed: int) -> list[tuple[int, str]]:
    packets = random_traffic(TrafficParams(seed=seed, n_packets=3000, n_live=24, n_hosts=6,
                                           jump_prob=0.002))  # fmt: skip
    return write_captures(packets, tmp)


def _outputs(out) -> dict:
    import json

    files = {}
    for path in sorted(out.iterdir()):
        if path.name == "packets.jsonl":  # "path" says which cache served it: per worker
            rows = [json.loads(line) for line in path.read_text().splitlines()]
            files[path.name] = [{k: v for k, v in r.items() if k != "path"} for r in rows]
        elif path.name != "stats.json":
            files[path.name] = path.read_bytes()
    return files


@pytest.mark.parametrize("mode", ["assume-established", "recirc"])
def test_replay_with_workers_writes_what_one_writes(tmp_path, monkeypatch, mode):
    from ctaccel import replay as RP

    monkeypatch.setattr(RP, "REPLAY_BATCH", 256)  # many batches
    inputs = _capture_files(tmp_path, seed=5)
    flows = tmp_path / "rules.flows"
    flows.write_text(rulesets.RULE_SETS["zones_by_port"])
    runs = {}
    for workers in (1, 2, 3):
        out = tmp_path / f"out-{workers}"
        summary = RP.replay(flows, inputs, out, mode=mode, workers=workers)
        assert (summary.workers, summary.workers_note) == (workers, "")
        runs[workers] = _outputs(out)
    assert runs[1].keys() >= {"packets.jsonl", "conntrack.txt", "flows.txt", "port-2.pcap"}
    assert runs[2] == runs[1] and runs[3] == runs[1]


def test_replay_runs_one_worker_when_state_crosses_connections(tmp_path):
    from ctaccel import replay as RP

    inputs = _capture_files(tmp_path, seed=6)
    flows = tmp_path / "nat.flows"
    flows.write_text(rulesets.RULE_SETS["nat_ranges"])
    s = RP.replay(flows, inputs, tmp_path / "o", mode="recirc", workers=2, packets="none")
    assert s.workers == 1 and "NAT" in s.workers_note
    plain = tmp_path / "plain.flows"
    plain.write_text(rulesets.RULE_SETS["zones_by_port"])
    s = RP.replay(plain, inputs, tmp_path / "o2", workers=2, zone_limits={"default": 100},
                  packets="none")  # fmt: skip
    assert s.workers == 1 and "zone limits" in s.workers_note
    # NAT arriving later, in a --flows-at rule set, keeps one worker too
    s = RP.replay(plain, inputs, tmp_path / "o3", workers=2, packets="none",
                  flows_at=(f"1={flows}",))  # fmt: skip
    assert s.workers == 1 and "NAT" in s.workers_note


def test_cli_workers_option(tmp_path):
    import json

    from click.testing import CliRunner

    from ctaccel.cli import main

    inputs = _capture_files(tmp_path, seed=7)
    flows = tmp_path / "rules.flows"
    flows.write_text(rulesets.RULE_SETS["two_zone_pipeline"])
    args = ["replay", "--flows", str(flows), "--out-dir", str(tmp_path / "o"), "--workers", "2"]
    for port, path in inputs:
        args += ["--in", f"{port}={path}"]
    run = CliRunner().invoke(main, args)
    assert run.exit_code == 0, run.output
    assert "workers" in run.output
    assert json.loads((tmp_path / "o" / "stats.json").read_text())["workers"] == 2
    bad = CliRunner().invoke(main, [*args, "--workers", "0"])
    assert bad.exit_code == 2
