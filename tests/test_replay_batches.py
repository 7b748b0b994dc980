"""replay_batches.py: the batched replay writes what the per-packet path writes.

- The merge order of several inputs (MergedStream) equals heapq.merge's (replay.merged_order) for any
  timestamps, steps back and ties included.
- End to end: random traffic with fragments (the reference engine's packets), NAT (rewritten
  frames) and controller outputs, on four ports, through both compiled modes: packets.jsonl
  and every port's capture are byte for byte those of the per-packet writer fed by the same
  engine, and the summary's counts agree.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctaccel import replay as RP
from ctaccel import replay_batches as RB
from ctaccel.errors import InputError
from ctaccel.io.pcap import PcapWriter
from support.per_packet import batched_results
from support.random_traffic import TrafficParams, random_traffic, write_captures
from support.rulesets import RULE_SETS


class _Cap:
    def __init__(self, ts):
        self.ts_ns = np.array(ts, np.int64)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.integers(0, 6), max_size=8), min_size=1, max_size=4))
def test_merge_order_is_heapq_merge(inputs):
    caps = [_Cap(ts) for ts in inputs]
    merged = RB.MergedStream([_Stream(ts) for ts in inputs], chunk=1 << 20)
    got = [(i, r, t) for inp, off, _n, ts in merged.batches(1 << 20)
           for i, r, t in zip(inp.tolist(), off.tolist(), ts.tolist(), strict=True)]  # fmt: skip
    assert [(i, r) for i, r, _t in got] == list(RP.merged_order(caps))
    assert [t for _i, _r, t in got] == [inputs[i][r] for i, r, _t in got]


class _Stream:
    """A CaptureStream stand-in: records with offsets 0, 1, ... and the given timestamps."""

    def __init__(self, ts):
        self.ts = np.array(ts, np.int64)
        self.pos = 0

    def __len__(self):
        return len(self.ts)

    def next_chunk(self, n):
        a, b = self.pos, min(self.pos + n, len(self.ts))
        self.pos = b
        off = np.arange(a, b, dtype=np.int64)
        return off, np.ones(b - a, np.int64), self.ts[a:b]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.integers(0, 6), max_size=12), min_size=1, max_size=4),
       st.integers(1, 5), st.integers(1, 7))  # fmt: skip
def test_the_streamed_merge_is_heapq_merge_whatever_the_chunks(inputs, chunk, batch):
    merged = RB.MergedStream([_Stream(ts) for ts in inputs], chunk=chunk)
    got = []
    for inp, off, _length, ts in merged.batches(batch):
        assert len(inp) <= batch
        got += list(zip(inp.tolist(), off.tolist(), ts.tolist(), strict=True))
    want = [(i, r, inputs[i][r]) for i, r in RP.merged_order([_Cap(ts) for ts in inputs])]
    assert got == want


def test_clock_never_goes_back():
    assert RB.clock_ms(np.array([5_000_000, 1_000_000, 9_000_000, -3])).tolist() == [5, 5, 9, 9]


CONTROLLER_RULES = "table=0,priority=65535,udp,tp_dst=22,actions=controller\n"
KINDS = (("tcp", 40), ("udp", 25), ("icmp", 10), ("frag", 20), ("odd", 5))


def _inputs(tmp: Path, seed: int) -> list[str]:
    packets = random_traffic(TrafficParams(seed=seed, n_packets=1500, kinds=KINDS))
    return [f"{port}={path}" for port, path in write_captures(packets, tmp)]


@pytest.mark.parametrize("mode", ["assume-established", "recirc"])
@pytest.mark.parametrize(
    "rules, batch",
    [("zones_by_port", 4096), ("nat_ranges", 4096), ("mark_label", 4096), ("nat_ranges", 64)],
)
def test_batched_replay_writes_what_the_per_packet_path_writes(tmp_path, monkeypatch, mode, rules,
                                                               batch):  # fmt: skip
    monkeypatch.setattr(RP, "REPLAY_BATCH", batch)  # 64: many batches, the writer one behind
    flows = tmp_path / "rules.flows"
    flows.write_text(RULE_SETS[rules] + CONTROLLER_RULES)
    inputs = RP.parse_inputs(_inputs(tmp_path, seed=len(rules)))
    batched = RP.replay(flows, inputs, tmp_path / "batched", mode=mode)

    engine = RP.make_engine(flows, mode)
    captures, ports = RP.load_inputs(inputs)
    (tmp_path / "per-packet").mkdir()
    summary, paths = RP.ReplaySummary(), Counter()
    results = batched_results(engine, RP.iter_packets(captures, ports))
    RP._write_per_packet(engine, results, (str(tmp_path / "per-packet"), "jsonl"), summary, paths,
                         None)  # fmt: skip

    names = sorted(p.name for p in (tmp_path / "per-packet").iterdir())
    assert "packets.jsonl" in names and any(n.startswith("port-") for n in names)
    assert sorted(p.name for p in (tmp_path / "batched").iterdir()
                  if p.suffix in (".pcap", ".jsonl")) == names  # fmt: skip
    for name in names:
        assert (tmp_path / "batched" / name).read_bytes() == (
            tmp_path / "per-packet" / name
        ).read_bytes(), name
    assert (batched.packets_out, batched.to_controller) == (summary.packets_out,
                                                             summary.to_controller)  # fmt: skip
    assert batched.drops == summary.drops and batched.paths == dict(paths)
    assert sum(paths.values()) == 1500
    assert batched.to_controller > 0 and batched.paths.get("slow", 0) > 0  # fragments


@pytest.mark.parametrize("mode", ["recirc", "reference"])
def test_packets_none_writes_everything_but_the_per_packet_lines(tmp_path, mode):
    flows = tmp_path / "rules.flows"
    flows.write_text(RULE_SETS["zones_by_port"] + CONTROLLER_RULES)
    inputs = RP.parse_inputs(_inputs(tmp_path, seed=3))
    full = RP.replay(flows, inputs, tmp_path / "full", mode=mode)
    bare = RP.replay(flows, inputs, tmp_path / "bare", mode=mode, packets="none")
    names = sorted(p.name for p in (tmp_path / "full").iterdir())
    assert sorted(p.name for p in (tmp_path / "bare").iterdir()) == [
        n for n in names if n != "packets.jsonl"
    ]
    for name in names:
        if name not in ("packets.jsonl", "stats.json"):
            assert (tmp_path / "bare" / name).read_bytes() == (
                tmp_path / "full" / name
            ).read_bytes()
    assert (bare.packets_out, bare.drops, bare.paths) == (full.packets_out, full.drops, full.paths)
    with pytest.raises(InputError, match="--packets"):
        RP.replay(flows, inputs, tmp_path / "x", mode=mode, packets="csv")


@pytest.mark.parametrize("mode", ["assume-established", "recirc"])
def test_parquet_holds_the_jsonl_values_row_for_row(tmp_path, mode):
    import json

    import pyarrow.parquet as pq

    flows = tmp_path / "rules.flows"
    flows.write_text(RULE_SETS["nat_ranges"] + CONTROLLER_RULES)
    inputs = RP.parse_inputs(_inputs(tmp_path, seed=5))
    RP.replay(flows, inputs, tmp_path / "j", mode=mode)
    RP.replay(flows, inputs, tmp_path / "p", mode=mode, packets="parquet")
    lines = [json.loads(x) for x in (tmp_path / "j" / "packets.jsonl").read_text().splitlines()]
    table = pq.read_table(tmp_path / "p" / "packets.parquet")
    i = table.schema.get_field_index("timestamp")
    rows = table.set_column(i, "timestamp", table.column(i).cast("int64")).to_pylist()
    assert len(rows) == len(lines) == 1500
    captures, _ports = RP.load_inputs(inputs)
    stamps = [int(captures[i].ts_ns[r]) for i, r in RP.merged_order(captures)]
    for line, row, ts in zip(lines, rows, stamps, strict=True):
        want = dict(line, out=[RB.OFPP_CONTROLLER if p == "controller" else p for p in line["out"]])
        assert {k: v for k, v in row.items() if k != "timestamp"} == want
        assert row["timestamp"] == ts  # ns since the epoch
    assert any(RB.OFPP_CONTROLLER in r["out"] for r in rows)
    assert any(r["ct_state"] is None for r in rows) or any(r["drop_reason"] for r in rows)
    for name in (p.name for p in (tmp_path / "j").iterdir()):
        if name.endswith(".pcap"):
            assert (tmp_path / "p" / name).read_bytes() == (tmp_path / "j" / name).read_bytes()


def _udp_capture(path: Path, n: int) -> None:
    from ctaccel.packet import build as B

    frame = B.udp_frame("02:00:00:00:00:01", "02:00:00:00:00:02", "10.0.0.1", "10.0.0.2", 5, 6)
    with PcapWriter(path) as w:
        for k in range(n):
            w.write(frame, 1_000_000_000 + k * 1000)


@pytest.mark.parametrize("show_after, shown", [(0.0, True), (3600.0, False)])
def test_progress_shows_on_a_terminal_once_a_replay_runs_long(tmp_path, monkeypatch, show_after,
                                                              shown):  # fmt: skip
    import io

    from rich.console import Console

    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(RP._Bar, "SHOW_AFTER_S", show_after)
    _udp_capture(tmp_path / "in.pcap", 20_000)
    (tmp_path / "r.flows").write_text("actions=output:2\n")
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    RP.replay(tmp_path / "r.flows", [(1, str(tmp_path / "in.pcap"))], tmp_path / "o",
              progress=console, mode="recirc")  # fmt: skip
    assert ("20,000" in out.getvalue() or "20000" in out.getvalue()) == shown


def test_no_progress_without_a_terminal_under_ci_or_quiet(monkeypatch):
    from rich.console import Console

    terminal = Console(force_terminal=True)
    monkeypatch.delenv("CI", raising=False)
    assert RP._progress(50_000, terminal) is not None
    assert RP._progress(50_000, False) is None  # --quiet
    assert RP._progress(50_000, Console(force_terminal=False)) is None  # a log file
    monkeypatch.setenv("CI", "true")
    assert RP._progress(50_000, terminal) is None


@pytest.mark.parametrize("stop_before", [None, 1, 700, 1500, 1501])
def test_dump_and_trace_prefix_run_in_batches_as_packet_by_packet(tmp_path, stop_before):
    flows = tmp_path / "rules.flows"
    flows.write_text(RULE_SETS["zones_by_port"] + CONTROLLER_RULES)
    inputs = RP.parse_inputs(_inputs(tmp_path, seed=11))
    ref = RP.run_quietly(flows, inputs, stop_before=stop_before, mode="reference")
    for mode in ("assume-established", "recirc"):
        eng = RP.run_quietly(flows, inputs, stop_before=stop_before, mode=mode)
        assert eng.last_now_ms == ref.last_now_ms
        assert eng.conntrack.dump(eng.last_now_ms) == ref.conntrack.dump(ref.last_now_ms)
        assert eng.rule_counters() == ref.rule_counters()
        if ref.next_packet is None:
            assert eng.next_packet is None
        else:
            n, port, frame, now = eng.next_packet
            assert (n, port, bytes(frame), now) == (ref.next_packet[0], ref.next_packet[1],
                                                    bytes(ref.next_packet[2]),
                                                    ref.next_packet[3])  # fmt: skip


class _Failing:
    """A writer whose second batch fails (a full disk, say)."""

    def __init__(self):
        self.written = []

    def write(self, n, *_rest):
        if n == 2:
            raise OSError(28, "No space left on device")
        self.written.append(n)


def test_an_error_on_the_writer_thread_reaches_the_caller_and_stops_the_writing():
    behind = RB.WriterThread(_Failing())
    with pytest.raises(OSError, match="No space left"):
        for n in range(1, 50):
            behind.submit(n)
        behind.finish()
    behind.finish()  # the thread is gone: nothing hangs, nothing is raised twice
    assert behind.writer.written == [1]


@pytest.mark.parametrize("batch", [4096, 64])
def test_flows_at_replaces_the_rules_when_the_capture_clock_gets_there(tmp_path, monkeypatch,
                                                                       batch):  # fmt: skip
    """--flows-at: every mode gives the same results (lines but their path, conntrack.txt,
    flows.txt, captures); the lines before the change are those of a replay without it, and
    the new rules decide the packets after it (here: no rule at all, so every packet after
    the change is dropped at a table miss)."""
    import json

    monkeypatch.setattr(RP, "REPLAY_BATCH", batch)
    flows = tmp_path / "rules.flows"
    flows.write_text(RULE_SETS["zones_by_port"] + CONTROLLER_RULES)
    empty = tmp_path / "empty.flows"
    empty.write_text("# no rules\n")
    inputs = RP.parse_inputs(_inputs(tmp_path, seed=21))
    captures, _ports = RP.load_inputs(inputs)
    clock = [now for _n, _p, _f, _ts, now in RP.iter_packets(captures, _ports)]
    at_ms = (clock[-1] - clock[0]) // 2
    first_after = next(i for i, now in enumerate(clock) if now >= clock[0] + at_ms)
    assert 100 < first_after < 1400
    outs = {}
    for mode in ("reference", "assume-established", "recirc"):
        RP.replay(flows, inputs, tmp_path / mode, mode=mode, flows_at=[f"{at_ms / 1000}={empty}"])
        outs[mode] = [
            {k: v for k, v in json.loads(x).items() if k != "path"}
            for x in (tmp_path / mode / "packets.jsonl").read_text().splitlines()
        ]
    RP.replay(flows, inputs, tmp_path / "unchanged", mode="recirc")
    unchanged = [
        {k: v for k, v in json.loads(x).items() if k != "path"}
        for x in (tmp_path / "unchanged" / "packets.jsonl").read_text().splitlines()
    ]
    assert outs["reference"] == outs["assume-established"] == outs["recirc"]
    for name in ("conntrack.txt", "flows.txt"):
        texts = {(tmp_path / m / name).read_text() for m in outs}
        assert len(texts) == 1, name
    lines = outs["recirc"]
    assert lines[:first_after] == unchanged[:first_after]
    assert all(x["out"] == [] and x["drop_reason"] for x in lines[first_after:])
    assert any(x["out"] for x in unchanged[first_after:])
    assert (tmp_path / "recirc" / "flows.txt").read_text().strip() == ""  # no rules left


def test_flows_at_rejects_a_bad_spec_or_rule_file_before_writing(tmp_path):
    from ctaccel.errors import RuleError

    flows = tmp_path / "rules.flows"
    flows.write_text("actions=output:2\n")
    bad = tmp_path / "bad.flows"
    bad.write_text("actions=output:2\nnonsense\n")
    inputs = RP.parse_inputs(_inputs(tmp_path, seed=2))
    with pytest.raises(InputError, match="SECONDS=FILE"):
        RP.replay(flows, inputs, tmp_path / "o1", flows_at=["soon=x.flows"])
    with pytest.raises(RuleError, match="bad.flows:2"):
        RP.replay(flows, inputs, tmp_path / "o2", flows_at=[f"1={bad}"])
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()
