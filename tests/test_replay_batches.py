"""replay_batches.py: the batched replay writes what the per-packet path writes.

- The merge order of several inputs equals heapq.merge's (replay.merged_order) for any
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
from ctaccel.io.pcap import PcapWriter
from support.random_traffic import TrafficParams, random_traffic
from support.rulesets import RULE_SETS


class _Cap:
    def __init__(self, ts):
        self.ts_ns = np.array(ts, np.int64)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.integers(0, 6), max_size=8), min_size=1, max_size=4))
def test_merge_order_is_heapq_merge(inputs):
    caps = [_Cap(ts) for ts in inputs]
    inp, rec, ts = RB.merged_order(caps)
    assert list(zip(inp.tolist(), rec.tolist(), strict=True)) == list(RP.merged_order(caps))
    assert ts.tolist() == [inputs[i][r] for i, r in zip(inp, rec, strict=True)]


def test_clock_never_goes_back():
    assert RB.clock_ms(np.array([5_000_000, 1_000_000, 9_000_000, -3])).tolist() == [5, 5, 9, 9]


CONTROLLER_RULES = "table=0,priority=65535,udp,tp_dst=22,actions=controller\n"
KINDS = (("tcp", 40), ("udp", 25), ("icmp", 10), ("frag", 20), ("odd", 5))


def _inputs(tmp: Path, seed: int) -> list[str]:
    packets = random_traffic(TrafficParams(seed=seed, n_packets=1500, kinds=KINDS))
    writers = {}
    for k, (port, frame, now_ms) in enumerate(packets):
        if port not in writers:
            writers[port] = PcapWriter(tmp / f"in-{port}.pcap", nanosecond=True)
        writers[port].write(frame, now_ms * 1_000_000 + k)
    for w in writers.values():
        w.close()
    return [f"{port}={tmp / f'in-{port}.pcap'}" for port in sorted(writers)]


@pytest.mark.parametrize("mode", ["assume-established", "recirc"])
@pytest.mark.parametrize("rules", ["zones_by_port", "nat_ranges", "mark_label"])
def test_batched_replay_writes_what_the_per_packet_path_writes(tmp_path, mode, rules):
    flows = tmp_path / "rules.flows"
    flows.write_text(RULE_SETS[rules] + CONTROLLER_RULES)
    inputs = RP.parse_inputs(_inputs(tmp_path, seed=len(rules)))
    batched = RP.replay(flows, inputs, tmp_path / "batched", mode=mode)

    engine = RP.make_engine(flows, mode)
    captures, ports = RP.load_inputs(inputs)
    (tmp_path / "per-packet").mkdir()
    summary, paths = RP.ReplaySummary(), Counter()
    results = RP._batched_results(engine, RP.iter_packets(captures, ports))
    RP._write_per_packet(engine, results, str(tmp_path / "per-packet"), summary, paths, None)

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
