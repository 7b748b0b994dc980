"""No Python-level work per packet on the compiled paths: Python function calls during a run
grow with the number of batches and megaflows, not with the number of packets."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from ctaccel.bench import workloads as W
from ctaccel.datapath.engine import DatapathEngine
from ctaccel.ofproto.rules import parse_flows


def _established_traffic(flows: int, rounds: int) -> W.Traffic:
    """The talk's workload A from the product generator: handshakes, then ``rounds`` data
    segments each way per flow, every packet arriving on its port 1."""
    return W.build("A", flows, packets=3 * flows + 2 * flows * rounds)


def _python_calls_during(fn) -> int:
    calls = 0

    def prof(_frame, event, _arg):
        nonlocal calls
        if event == "call":
            calls += 1

    sys.setprofile(prof)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return calls


@pytest.mark.parametrize("mode", ["recirc", "assume-established"])
def test_python_calls_do_not_grow_with_packets(mode):
    traffic = _established_traffic(flows=64, rounds=40)  # 5,312 packets
    frames = traffic.frames
    lengths = np.full(len(frames), frames.shape[1], np.int64)
    offsets = np.arange(len(frames), dtype=np.int64) * frames.shape[1]
    buf = frames.reshape(-1).copy()
    ports = np.full(len(frames), W.IN_PORT, np.int64)
    now = traffic.ts_ns // 1_000_000
    batch = 1024

    def run(engine, lo_hi):
        for lo, hi in lo_hi:
            engine.run(buf, offsets[lo:hi], lengths[lo:hi], ports[lo:hi], now[lo:hi])

    eng = DatapathEngine(parse_flows(W.rules("A"), "fw"), mode=mode, batch_size=batch)
    run(eng, [(0, 256)])  # compile / load the kernels outside the measurement
    bounds = [(lo, min(lo + batch, len(frames))) for lo in range(256, len(frames), batch)]
    calls = _python_calls_during(lambda: run(eng, bounds))
    packets = len(frames) - 256
    # A few dozen calls per batch (array set-up, reserve, the kernel call) and a handful per
    # upcall; far fewer than one per packet.
    assert calls < 60 * len(bounds) + 50 * eng.upcalls, (calls, len(bounds), eng.upcalls)
    assert calls < packets / 10
    if mode == "assume-established":
        assert eng.stats["fast_path_hits"] > 0.9 * (packets - 3 * 64)
