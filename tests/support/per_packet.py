"""The compiled engine's results a packet at a time: the path replay took before it wrote
batches, kept as the reference tests/test_replay_batches.py compares the batched writer with.

Design: batches of ``engine.batch_size`` go through ``engine.run``; each packet's result is
read with BatchResult's per-packet accessors (or the reference engine's result for the
packets it processed), as (n, in_port, ts_ns, now_ms, PacketResult).
"""

from __future__ import annotations

import numpy as np

from ctaccel.datapath.reference import PacketResult


def batched_results(engine, packets):
    """The same, through the compiled engine in batches of ``engine.batch_size``."""
    batch: list = []

    def flush():
        frames = [b[2] for b in batch]
        lengths = np.array([len(f) for f in frames], np.int64)
        offsets = np.zeros(len(frames), np.int64)
        offsets[1:] = np.cumsum(lengths[:-1])
        buf = np.concatenate(frames) if frames else np.zeros(0, np.uint8)
        br = engine.run(buf, offsets, lengths, np.array([b[1] for b in batch], np.int64),
                        np.array([b[4] for b in batch], np.int64))  # fmt: skip
        for j, (n, in_port, frame, ts_ns, now_ms) in enumerate(batch):
            if j in br.slow:
                res = br.slow[j]
            else:
                res = PacketResult(outputs=br.outputs(j, frame),
                                   ct_state=br.ct_state(j), drop_reason=br.drop_reason(j),
                                   recirculations=br.recirculations(j))  # fmt: skip
            res.path = br.path(j)
            yield n, in_port, ts_ns, now_ms, res

    for item in packets:
        batch.append(item)
        if len(batch) == engine.batch_size:
            yield from flush()
            batch = []
    if batch:
        yield from flush()
