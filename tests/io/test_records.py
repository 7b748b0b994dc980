"""io/records.py: the compiled batch writers give the bytes of their per-packet references
(json.dumps of a packets.jsonl record; PcapWriter.write of a frame), compiled and as plain
Python."""

from __future__ import annotations

import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ctaccel.io import records as R
from ctaccel.io.pcap import PcapWriter

VALUES = st.one_of(st.none(), st.sampled_from(["", "new|trk", "est|rpl|trk", "table_miss",
                                               "fast", 'odd"\\é']))  # fmt: skip
PORTS = st.lists(st.one_of(st.integers(0, 2**40), st.just("controller")), max_size=4)
ROWS = st.lists(st.tuples(st.integers(0, 2**62), st.integers(-5, 2**31), PORTS, VALUES, VALUES,
                          VALUES), max_size=30)  # fmt: skip


def _lines(rows, kernel):
    table = R.TokenTable()
    cols = np.zeros((len(rows), R.JL_WIDTH), np.int64)
    ports: list[int] = []
    for i, (n, in_port, outs, ct, drop, path) in enumerate(rows):
        cols[i, R.JL_N], cols[i, R.JL_IN_PORT] = n, in_port
        cols[i, R.JL_OUT_START], cols[i, R.JL_OUT_COUNT] = len(ports), len(outs)
        ports += [-1 if p == "controller" else p for p in outs]
        cols[i, R.JL_CT], cols[i, R.JL_DROP] = table.add(ct), table.add(drop)
        cols[i, R.JL_PATH] = table.add(path)
    tokens = table.arrays()
    ports_a = np.array(ports, np.int64)
    out = np.zeros(R.json_lines_size(len(rows), len(ports), table.max_len), np.uint8)
    text = (tokens, R.new_tails(table.max_len))
    used = kernel(out, cols, ports_a, text)
    return out[:used].tobytes()


@settings(max_examples=200, deadline=None)
@given(ROWS)
def test_json_lines_are_json_dumps_of_the_records(rows):
    want = "".join(json.dumps({"n": n, "in_port": p, "out": outs, "ct_state": ct,
                               "drop_reason": drop, "path": path}) + "\n"
                   for n, p, outs, ct, drop, path in rows).encode()  # fmt: skip
    assert _lines(rows, R.json_lines) == want
    assert _lines(rows, R.json_lines.py_func) == want


FRAMES = st.lists(st.tuples(st.binary(min_size=0, max_size=200), st.integers(0, 2**62),
                            st.integers(0, 2)), max_size=20)  # fmt: skip


@settings(max_examples=100, deadline=None)
@given(FRAMES, st.sampled_from([65535, 64, 1]), st.booleans())
def test_pcap_records_are_what_the_writer_writes(tmp_path_factory, frames, snaplen, ns):
    d = tmp_path_factory.mktemp("pcap")
    with PcapWriter(d / "one.pcap", snaplen=snaplen, nanosecond=ns) as w:
        for frame, ts, _which in frames:
            w.write(frame, ts)
    # the same frames spread over three buffers, as a batch's frames are
    bufs = [bytearray(), bytearray(), bytearray()]
    which, offsets, lengths, ts = [], [], [], []
    for frame, t, k in frames:
        which.append(k)
        offsets.append(len(bufs[k]))
        bufs[k] += frame
        lengths.append(len(frame))
        ts.append(t)
    arrays = tuple(np.frombuffer(bytes(b) or b"\0", np.uint8).copy() for b in bufs)
    cols = [np.array(a, np.int64) for a in (ts, which, offsets, lengths)]
    for kernel in (R.pcap_records, R.pcap_records.py_func):
        out = np.zeros(R.pcap_records_size(cols[3], snaplen), np.uint8)
        used = kernel(out, *cols, arrays, snaplen, ns)
        assert out[:used].tobytes() == (d / "one.pcap").read_bytes()[24:]


def test_gather_copies_each_frame_to_its_place():
    src = np.arange(100, dtype=np.uint8)
    dst = np.zeros(10, np.uint8)
    for kernel in (R.gather, R.gather.py_func):
        dst[:] = 0
        kernel(dst, np.array([0, 4]), src, np.array([50, 10]), np.array([4, 3]))
        assert dst.tolist() == [50, 51, 52, 53, 10, 11, 12, 0, 0, 0]
