"""No Python-level work per packet on the compiled paths: Python function calls during a run
grow with the number of batches and megaflows, not with the number of packets."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from ctaccel.datapath.engine import DatapathEngine
from ctaccel.ofproto.rules import parse_flows
from ctaccel.packet import build as B

FIREWALL = (
    "table=0,priority=100,tcp,ct_state=-trk,actions=ct(table=1,zone=5)\n"
    "table=1,priority=100,tcp,in_port=1,ct_state=+trk+new,actions=ct(commit,zone=5),output:2\n"
    "table=1,priority=90,tcp,ct_state=+trk+est,actions=output:2\n"
    "table=0,priority=1,actions=drop\n"
)


def _established_traffic(flows: int, rounds: int):
    """Handshakes, then `rounds` data segments each way per flow, all arriving on port 1."""
    a, b = "02:00:00:00:00:01", "02:00:00:00:00:02"
    frames = []
    for i in range(flows):
        frames.append(B.tcp_frame(a, b, "10.1.0.1", "10.2.0.1", 1000 + i, 80, "S", 100, 0))
    for i in range(flows):
        frames.append(B.tcp_frame(b, a, "10.2.0.1", "10.1.0.1", 80, 1000 + i, "SA", 500, 101))
    for i in range(flows):
        frames.append(B.tcp_frame(a, b, "10.1.0.1", "10.2.0.1", 1000 + i, 80, "A", 101, 501))
    for r in range(rounds):
        for i in range(flows):
            frames.append(B.tcp_frame(a, b, "10.1.0.1", "10.2.0.1", 1000 + i, 80, "PA",
                                      101 + r, 501 + r, b"c"))  # fmt: skip
            frames.append(B.tcp_frame(b, a, "10.2.0.1", "10.1.0.1", 80, 1000 + i, "PA",
                                      501 + r, 102 + r, b"s"))  # fmt: skip
    return frames


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
    frames = _established_traffic(flows=64, rounds=40)  # 5,312 packets
    lengths = np.array([len(f) for f in frames], np.int64)
    offsets = np.zeros(len(frames), np.int64)
    offsets[1:] = np.cumsum(lengths[:-1])
    buf = np.frombuffer(b"".join(frames), np.uint8).copy()
    ports = np.ones(len(frames), np.int64)
    now = np.full(len(frames), 1000, np.int64)
    batch = 1024

    def run(engine, lo_hi):
        for lo, hi in lo_hi:
            engine.run(buf, offsets[lo:hi], lengths[lo:hi], ports[lo:hi], now[lo:hi])

    eng = DatapathEngine(parse_flows(FIREWALL, "fw"), mode=mode, batch_size=batch)
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
