"""Replay on a Dask cluster (ctaccel/cluster.py): the merged outputs are one replay's.

A local cluster (in-process workers: the compiled kernels loaded once) replays the
equivalence tests' random traffic in shards; every output file is compared with the plain
replay's, byte for byte (packets.jsonl and .parquet without ``path``: which cache served a
packet is per shard), in both modes, with rule changes, with parquet, with timestamps that
tie within and across inputs; configurations that keep state
across connections, fragments and captures whose clock steps back run as one shard and say
why. The merge helpers are checked on their own, and the CLI on a cluster of processes.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("dask.distributed")

from ctaccel import cluster as CL  # noqa: E402
from ctaccel import replay as RP  # noqa: E402
from support import rulesets  # noqa: E402
from support.random_traffic import TrafficParams, random_traffic, write_captures  # noqa: E402

NO_FRAGMENTS = (("tcp", 60), ("udp", 18), ("icmp", 8), ("odd", 4))


@pytest.fixture(scope="module")
def client():
    from dask.distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                           dashboard_address=":0")  # fmt: skip
    c = Client(cluster)
    yield c
    c.close()
    cluster.close()


def _captures(tmp, seed: int, kinds=NO_FRAGMENTS, n=3000):
    packets = random_traffic(TrafficParams(seed=seed, n_packets=n, n_live=24, n_hosts=6,
                                           jump_prob=0.002, kinds=kinds))  # fmt: skip
    tmp.mkdir(parents=True, exist_ok=True)
    return write_captures(packets, tmp)


def _outputs(out) -> dict:
    files = {}
    for path in sorted(out.iterdir()):
        if path.name == "packets.jsonl":
            rows = [json.loads(line) for line in path.read_text().splitlines()]
            files[path.name] = [{k: v for k, v in r.items() if k != "path"} for r in rows]
        elif path.name == "packets.parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            t = pq.read_table(path).drop(["path"])
            ts = t.schema.get_field_index("timestamp")
            files[path.name] = t.set_column(
                ts, "timestamp", t["timestamp"].cast(pa.int64())
            ).to_pylist()
        elif path.name != "stats.json":
            files[path.name] = path.read_bytes()
    return files


def _rules(tmp, name: str):
    path = tmp / f"{name}.flows"
    path.write_text(rulesets.RULE_SETS[name])
    return path


@pytest.mark.parametrize("mode", ["assume-established", "recirc"])
def test_dask_replay_writes_what_one_replay_writes(tmp_path, client, monkeypatch, mode):
    monkeypatch.setattr(RP, "REPLAY_BATCH", 256)  # many batches in each shard
    monkeypatch.setattr(CL, "MERGE_BLOCK", 700)  # the merge in several blocks
    inputs = _captures(tmp_path / "in", seed=11)
    flows = _rules(tmp_path, "zones_by_port")
    RP.replay(flows, inputs, tmp_path / "one", mode=mode)
    s = CL.replay_dask(flows, inputs, tmp_path / "dask", client, shards=3, mode=mode)
    assert (s.workers, s.workers_note) == (3, "")
    one, dask = _outputs(tmp_path / "one"), _outputs(tmp_path / "dask")
    assert one.keys() >= {"packets.jsonl", "conntrack.txt", "flows.txt", "port-2.pcap"}
    assert dask == one
    assert not (tmp_path / "dask" / CL.SHARD_DIR).exists()
    stats = json.loads((tmp_path / "dask" / "stats.json").read_text())
    assert stats["workers"] == 3 and len(stats["dask"]["shard_seconds"]) == 3
    assert set(stats["time_split"]) == {"split", "shards", "merge"}
    assert sum(stats["time_split"].values()) <= stats["seconds"] + 0.01
    assert stats["packets"] == s.packets_in == 3000
    assert sum(stats["paths"].values()) == 3000


def test_dask_replay_with_rule_changes_and_parquet(tmp_path, client):
    inputs = _captures(tmp_path / "in", seed=12)
    flows = _rules(tmp_path, "zones_by_port")
    other = _rules(tmp_path, "two_zone_pipeline")
    changes = (f"{0.3}={other}", f"{2.0}={flows}")
    for packets in ("parquet", "none"):
        RP.replay(flows, inputs, tmp_path / f"one-{packets}", packets=packets, flows_at=changes)
        s = CL.replay_dask(flows, inputs, tmp_path / f"dask-{packets}", client, shards=2,
                           packets=packets, flows_at=changes)  # fmt: skip
        assert (s.workers, s.workers_note) == (2, "")
        assert _outputs(tmp_path / f"dask-{packets}") == _outputs(tmp_path / f"one-{packets}")


def test_ties_keep_the_order_of_the_inputs(tmp_path, client):
    """Timestamps cut to the millisecond: many packets share one, within an input and
    across inputs, and processing order falls back to the inputs' order, then the files'."""
    from ctaccel.io.pcap import PcapWriter, read_capture

    tied = []
    for port, path in _captures(tmp_path / "in", seed=16):
        cap = read_capture(path)
        out = tmp_path / f"tied-{port}.pcap"
        with PcapWriter(out, nanosecond=True) as w:
            for i in range(len(cap)):
                w.write(cap.frame_bytes(i), int(cap.ts_ns[i]) // 1_000_000 * 1_000_000)
        tied.append((port, str(out)))
    flows = _rules(tmp_path, "zones_by_port")
    RP.replay(flows, tied, tmp_path / "one")
    s = CL.replay_dask(flows, tied, tmp_path / "dask", client, shards=3)
    assert (s.workers, s.workers_note) == (3, "")
    assert _outputs(tmp_path / "dask") == _outputs(tmp_path / "one")


@pytest.mark.parametrize(("what", "note"), [("nat", "NAT"), ("fragments", "fragments"),
                                            ("step back", "step back"),
                                            ("nat later", "NAT")])  # fmt: skip
def test_what_cannot_be_split_runs_as_one_shard(tmp_path, client, what, note):
    flows = _rules(tmp_path, "nat_ranges" if what == "nat" else "zones_by_port")
    kinds = (("tcp", 60), ("frag", 20)) if what == "fragments" else NO_FRAGMENTS
    inputs = _captures(tmp_path / "in", seed=13, kinds=kinds, n=1500)
    if what == "step back":  # the first input's records in reverse: its clock steps back
        from ctaccel.io.pcap import PcapWriter, read_capture

        port, path = inputs[0]
        cap = read_capture(path)
        with PcapWriter(tmp_path / "back.pcap", nanosecond=True) as w:
            for i in reversed(range(len(cap))):
                w.write(cap.frame_bytes(i), int(cap.ts_ns[i]))
        inputs = [(port, str(tmp_path / "back.pcap")), *inputs[1:]]
    changes = ()
    if what == "nat later":  # NAT arrives in a rule change
        changes = (f"0.5={_rules(tmp_path, 'nat_ranges')}",)
    RP.replay(flows, inputs, tmp_path / "one", mode="recirc", flows_at=changes)
    s = CL.replay_dask(flows, inputs, tmp_path / "dask", client, shards=3, mode="recirc",
                       flows_at=changes)  # fmt: skip
    assert s.workers == 1 and note in s.workers_note
    assert s.packets_in == 1500
    assert _outputs(tmp_path / "dask") == _outputs(tmp_path / "one")


def test_bad_requests_are_refused_before_anything_is_written(tmp_path, client):
    from ctaccel.errors import InputError

    inputs = _captures(tmp_path / "in", seed=14, n=200)
    flows = _rules(tmp_path, "zones_by_port")
    for kwargs, words in [({"mode": "reference"}, "compiled modes"),
                          ({"packets": "csv"}, "--packets"),
                          ({"flows_at": ("x=y",)}, "--flows-at")]:  # fmt: skip
        with pytest.raises(InputError, match=words):
            CL.replay_dask(flows, inputs, tmp_path / "o", client, **kwargs)
    with pytest.raises(InputError):
        CL.replay_dask(flows, [(1, str(tmp_path / "missing.pcap"))], tmp_path / "o", client)
    assert not (tmp_path / "o").exists()
    with pytest.raises(InputError, match="local:N"):
        CL.connect("local:zero")


# --- the merge helpers ---------------------------------------------------------------------------


def test_merge_lines_renumbers_in_packet_order(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text('{"n": 1, "x": "a1"}\n{"n": 2, "x": "a2"}\n{"n": 3, "x": "a3"}\n')
    b.write_text("".join(f'{{"n": {i}, "x": "b{i}"}}\n' for i in range(1, 12)))
    nums_a = np.array([2, 9, 10])
    nums_b = np.array([1, 3, 4, 5, 6, 7, 8, 11, 12, 13, 100])
    CL.merge_lines(str(tmp_path / "m.jsonl"), [(str(a), nums_a), (str(b), nums_b)])
    rows = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [r["n"] for r in rows] == sorted([*nums_a, *nums_b])
    assert [r["x"] for r in rows][:4] == ["b1", "a1", "b2", "b3"]
    assert rows[-1] == {"n": 100, "x": "b11"}


def test_merge_captures_orders_records_by_packet(tmp_path):
    from ctaccel.io.pcap import PcapWriter, read_capture

    def cap(name, frames):
        with PcapWriter(tmp_path / name) as w:
            for k, f in enumerate(frames):
                w.write(f, 1_000_000_000 + k)
        return str(tmp_path / name)

    a = cap("a.pcap", [b"A1" * 30, b"A2" * 30, b"A3" * 31])
    b = cap("b.pcap", [b"B1" * 40, b"B2" * 30])
    # packet 2 has two records on this port (a's first two), packet 1 and 4 one each (b's)
    n = CL.merge_captures(str(tmp_path / "m.pcap"), [(a, np.array([2, 2, 5])),
                                                     (b, np.array([1, 4]))])  # fmt: skip
    m = read_capture(tmp_path / "m.pcap")
    assert n == len(m) == 5
    assert [m.frame_bytes(i)[:2] for i in range(5)] == [b"B1", b"A1", b"A2", b"B2", b"A3"]
    assert open(tmp_path / "m.pcap", "rb").read(24) == open(a, "rb").read(24)


# --- the CLI ------------------------------------------------------------------------------------


def test_cli_dask_on_a_local_cluster_of_processes(tmp_path):
    from click.testing import CliRunner

    from ctaccel.cli import main

    inputs = _captures(tmp_path / "in", seed=15, n=1000)
    flows = _rules(tmp_path, "zones_by_port")
    args = ["replay", "--flows", str(flows), "--out-dir", str(tmp_path / "o")]
    for port, path in inputs:
        args += ["--in", f"{port}={path}"]
    run = CliRunner().invoke(main, [*args, "--dask", "local:2"])
    assert run.exit_code == 0, run.output
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    assert stats["workers"] == 2 and stats["dask"]["scheduler"] == "local:2"
    RP.replay(flows, inputs, tmp_path / "one")
    assert _outputs(tmp_path / "o") == _outputs(tmp_path / "one")
    bad = CliRunner().invoke(main, [*args, "--dask", "tcp://127.0.0.1:9"])
    assert bad.exit_code != 0 and "cannot reach" in bad.output


# --- the oracle scenarios -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["assume-established", "recirc"])
def test_oracle_scenarios_sharded_write_what_one_writes(tmp_path, client, mode):
    """Every scenario the oracle tests compare with the real OVS (NAT, ALG helpers, NORMAL,
    VLANs, zone limits, timeout policies...), replayed by 1 worker, by 3 (ctaccel/workers.py)
    and on the cluster in 3 shards: the same files."""
    from support.oracle.compare import write_inputs
    from support.oracle.scenarios import SCENARIOS
    from support.oracle.scenarios_alg import ALG_SCENARIOS
    from support.oracle.scenarios_nat import NAT_SCENARIOS

    sharded = 0
    for sc in [*SCENARIOS, *NAT_SCENARIOS, *ALG_SCENARIOS]:
        flows, inputs = write_inputs(sc, tmp_path / sc.name / "in")
        inputs = [(port, str(path)) for port, path in inputs]
        kw = {"mode": mode, "zone_limits": sc.zone_limits or None, "bridge": sc.bridge,
              "timeout_policies": sc.timeout_policies or None}  # fmt: skip
        RP.replay(flows, inputs, tmp_path / sc.name / "one", **kw)
        RP.replay(flows, inputs, tmp_path / sc.name / "workers", workers=3, **kw)
        s = CL.replay_dask(flows, inputs, tmp_path / sc.name / "dask", client, shards=3, **kw)
        sharded += s.workers > 1
        one = _outputs(tmp_path / sc.name / "one")
        assert _outputs(tmp_path / sc.name / "workers") == one, sc.name
        assert _outputs(tmp_path / sc.name / "dask") == one, sc.name
    # most scenarios are one or two connections between two hosts (one shard); NAT, NORMAL
    # and zone limits run as one; the rest are split
    assert sharded >= 5


@pytest.mark.parametrize("kind", ["A", "B"])
def test_workloads_sharded_write_what_one_writes(tmp_path, client, kind):
    """The benchmark's workloads (A: long-lived connections; B: a share of new ones), in
    both modes, 1 worker against 2 workers and 3 shards on the cluster."""
    from ctaccel.bench.measure import cached_workload

    w = cached_workload(kind, 500, 20_000, None, tmp_path / "w")
    inputs = [(1, str(w.pcap_path))]
    for mode in ("assume-established", "recirc"):
        RP.replay(w.flows_path, inputs, tmp_path / f"one-{mode}", mode=mode)
        RP.replay(w.flows_path, inputs, tmp_path / f"workers-{mode}", mode=mode, workers=2)
        s = CL.replay_dask(w.flows_path, inputs, tmp_path / f"dask-{mode}", client, shards=3,
                           mode=mode)  # fmt: skip
        assert (s.workers, s.workers_note) == (3, "")
        one = _outputs(tmp_path / f"one-{mode}")
        assert _outputs(tmp_path / f"workers-{mode}") == one
        assert _outputs(tmp_path / f"dask-{mode}") == one
