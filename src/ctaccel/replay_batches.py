"""Replay through the compiled engine a batch at a time, in bounded memory: inputs merged
and gathered, outputs written per batch, nothing done per packet in Python.

What: :class:`MergedStream` gives the packets of all inputs (io/pcap.CaptureStream) in
processing order, a batch at a time; :func:`run_batches` runs the batches through a
DatapathEngine and :class:`BatchWriter` writes each batch's ``packets.jsonl`` lines (or
``packets.parquet`` rows) and per-port pcap records with one compiled call and one write
each (io/records.py). The files are byte for byte what the per-packet path writes (tests
compare them). :func:`packet_at` finds packet N in the same order (trace).

Design:
- The merge order: ``heapq.merge`` of the inputs by (timestamp, input, record), whose heads
  go in timestamp order even where an input's own timestamps step back, is exactly a stable
  sort by (the running maximum of the input's timestamps, input, record). MergedStream takes
  it chunk by chunk (see its docstring); the clock (``now_ms``) is the running maximum of
  the merged timestamps in ms, carried from batch to batch, so it never goes back.
- Memory does not grow with the captures: each input is read a chunk of records at a time
  and the mapped pages behind each batch are given back; one batch of frames is gathered
  into one buffer (a batch from one input is one copy of its stretch of the file).
- The engine's results are read as arrays (BatchResult): outputs, ct_state codes, drop
  codes, paths. The few packets the reference engine processed (fragments) carry their own
  results, which are spliced into the same arrays; their frames go to a third buffer.
- Strings are tokens of a closed vocabulary (every ct_state spelling, the drop reasons, the
  paths, ``controller``), mapped from codes with lookup arrays.

Invariants: one jsonl line per input packet, in processing order; every output frame is
written to its port's capture in packet order (outputs of one packet in their order);
expired connections are swept after the packet whose number is a multiple of SWEEP_EVERY, as
the per-packet path does (batches end on those packets).
"""

from __future__ import annotations

import os
import time
from collections import Counter

import numpy as np

from ctaccel.datapath import layout as L
from ctaccel.datapath.reference import CONTROLLER
from ctaccel.io import records as R
from ctaccel.io.pcap import PcapWriter
from ctaccel.ofproto.program import CONTROLLER_PORT, DROP_CODE, DROP_REASON_NAMES
from ctaccel.packet.key import format_ct_state

CT_CODES = 1 << 12  # ct_state codes the lookup covers (the bits OVS prints)


def clock_ms(ts_ns: np.ndarray, start: int = 0) -> np.ndarray:
    """The engine's clock per packet: the running maximum of the timestamps in ms, from
    ``start`` (the clock after the packets before)."""
    ms = np.maximum(ts_ns // 1_000_000, start)
    return np.maximum.accumulate(ms) if len(ms) else ms


class _Vocab:
    """Codes -> JSON token indexes (lookup arrays), the token table for json_lines."""

    def __init__(self):
        self.table = R.TokenTable()
        self.ct = np.full(CT_CODES + 1, -1, np.int64)  # code + 1 -> token (filled lazily)
        self.ct[0] = self.table.add(None)
        self.drop = np.array([self.table.add(name or None) for name in DROP_REASON_NAMES],
                             np.int64)  # fmt: skip
        self.path = np.array([self.table.add(name) for name in L.PATH_NAMES], np.int64)
        self.controller = self.table.add(CONTROLLER)
        self._arrays = None

    def ct_tokens(self, codes: np.ndarray) -> np.ndarray:
        idx = codes + 1
        missing = np.unique(idx[self.ct[idx] < 0])
        for m in missing:
            self.ct[m] = self.table.add(format_ct_state(int(m) - 1))
            self._arrays = None
        return self.ct[idx]

    def token_of(self, value) -> int:
        before = len(self.table)
        t = self.table.add(value)
        if len(self.table) != before:
            self._arrays = None
        return t

    def arrays(self):
        if self._arrays is None:
            self._arrays = self.table.arrays()
        return self._arrays


class BatchWriter:
    """packets.jsonl and the per-port captures of a replay, written a batch at a time."""

    def __init__(self, out_dir: str, packets: str = "jsonl"):
        self.out_dir = out_dir
        self.writers: dict[int, PcapWriter] = {}
        self.jsonl = None
        self.parquet = None
        if packets == "jsonl":
            self.jsonl = open(os.path.join(out_dir, "packets.jsonl"), "wb", buffering=1 << 20)  # noqa: SIM115
        elif packets == "parquet":
            self.parquet = ParquetPackets(os.path.join(out_dir, "packets.parquet"))
        self.vocab = _Vocab()
        self.parts = R.json_parts()
        self.packets_out = 0
        self.to_controller = 0
        self.drops: Counter = Counter()
        self.paths: Counter = Counter()

    def close(self) -> None:
        for w in self.writers.values():
            w.close()
        if self.jsonl is not None:
            self.jsonl.close()
        if self.parquet is not None:
            self.parquet.close()

    def _writer(self, port: int) -> PcapWriter:
        w = self.writers.get(port)
        if w is None:
            name = "controller.pcap" if port == CONTROLLER_PORT else f"port-{port}.pcap"
            w = self.writers[port] = PcapWriter(os.path.join(self.out_dir, name))
        return w

    def write(self, first_n: int, in_ports, ts_ns, frames, br) -> None:
        """One batch: ``frames`` = (buf, offsets, lengths) as given to the engine, ``br`` its
        BatchResult."""
        buf, offsets, lengths = frames
        res = br.res
        nb = len(lengths)
        count = res[:, L.R_NOUT].copy()
        ct = res[:, L.R_CT_STATE].copy()
        drop = res[:, L.R_DROP].copy()
        path = res[:, L.R_PATH]
        # every output of the compiled packets, in packet order
        pkt = np.repeat(np.arange(nb, dtype=np.int64), count)
        within = np.arange(len(pkt), dtype=np.int64) - np.repeat(np.cumsum(count) - count, count)
        idx = res[pkt, L.R_OUT_START] + within
        port = br.out_ports[idx]
        which = np.zeros(len(pkt), np.int64)
        off = offsets[pkt]
        if br.out_fofs is not None and len(pkt):
            fofs = br.out_fofs[idx]
            rewritten = (fofs >= 0) & (res[pkt, L.R_REWRITTEN] != 0)
            which[rewritten] = 1
            off = np.where(rewritten, fofs, off)
        out_len = lengths[pkt]
        ct_tok = self.vocab.ct_tokens(ct)
        drop_tok = self.vocab.drop[drop]
        extra = np.zeros(0, np.uint8)
        if br.slow:
            outs = self._splice_slow(br.slow, count, (ct_tok, drop_tok),
                                     (pkt, port, which, off, out_len))  # fmt: skip
            pkt, port, which, off, out_len, extra = outs
            for j, r in br.slow.items():
                drop[j] = DROP_CODE.get(r.drop_reason, 0) if r.drop_reason else 0
        fbuf = br.out_fbuf if br.out_fbuf is not None else extra
        self._write_pcaps(ts_ns[pkt], port, which, off, out_len, (buf, fbuf, extra))
        toks = (ct_tok, drop_tok, self.vocab.path[path])
        self._write_packets(first_n, in_ports, ts_ns, count, port, toks)
        self.packets_out += int(np.count_nonzero(port != CONTROLLER_PORT))
        self.to_controller += int(np.count_nonzero(port == CONTROLLER_PORT))
        for code, n in enumerate(np.bincount(drop, minlength=len(DROP_REASON_NAMES))):
            if code and n:
                self.drops[DROP_REASON_NAMES[code]] += int(n)
        for code, n in enumerate(np.bincount(path, minlength=len(L.PATH_NAMES))):
            if n:
                self.paths[L.PATH_NAMES[code]] += int(n)

    def _splice_slow(self, slow, count, toks, outs):
        """The reference engine's results into the batch's arrays (its packets' outputs,
        counts and tokens); its frames into a third buffer. Returns the outputs, in packet
        order, and that buffer."""
        ct_tok, drop_tok = toks
        s_pkt, s_port, s_len, frames = [], [], [], []
        for j in sorted(slow):
            r = slow[j]
            count[j] = len(r.outputs)
            ct_tok[j] = self.vocab.token_of(r.ct_state)
            drop_tok[j] = self.vocab.token_of(r.drop_reason)
            for p, frame in r.outputs:
                b = bytes(frame)
                s_pkt.append(j)
                s_port.append(CONTROLLER_PORT if p == CONTROLLER else int(p))
                s_len.append(len(b))
                frames.append(b)
        s_len_a = np.array(s_len, np.int64)
        s_off = np.zeros(len(s_len_a), np.int64)
        if len(s_len_a):
            np.cumsum(s_len_a[:-1], out=s_off[1:])
        extra = (
            np.frombuffer(b"".join(frames), np.uint8).copy() if frames else np.zeros(0, np.uint8)
        )
        pkt, port, which, off, length = outs
        pkt = np.concatenate([pkt, np.array(s_pkt, np.int64)])
        order = np.argsort(pkt, kind="stable")
        port = np.concatenate([port, np.array(s_port, np.int64)])[order]
        which = np.concatenate([which, np.full(len(s_pkt), 2, np.int64)])[order]
        off = np.concatenate([off, s_off])[order]
        length = np.concatenate([length, s_len_a])[order]
        return pkt[order], port, which, off, length, extra

    def _write_pcaps(self, ts, port, which, off, length, bufs) -> None:
        for p in np.unique(port):
            sel = port == p
            w = self._writer(int(p))
            blob = np.empty(R.pcap_records_size(length[sel], w.snaplen), np.uint8)
            used = R.pcap_records(blob, ts[sel], which[sel], off[sel], length[sel], bufs,
                                  w.snaplen, w.nanosecond)  # fmt: skip
            w.write_records(blob[:used], int(np.count_nonzero(sel)))

    def _write_packets(self, first_n, in_ports, ts_ns, count, port, toks) -> None:
        """The batch's per-packet results: packets.jsonl lines or packets.parquet rows."""
        if self.parquet is not None:
            self.parquet.write(first_n, in_ports, ts_ns, count, port, toks, self.vocab.table)
        if self.jsonl is None:
            return
        nb = len(count)
        cols = np.empty((nb, R.JL_WIDTH), np.int64)
        cols[:, R.JL_N] = np.arange(first_n, first_n + nb)
        cols[:, R.JL_IN_PORT] = in_ports
        cols[:, R.JL_OUT_START] = np.cumsum(count) - count
        cols[:, R.JL_OUT_COUNT] = count
        cols[:, R.JL_CT], cols[:, R.JL_DROP], cols[:, R.JL_PATH] = toks
        tokens, token_len = self.vocab.arrays()
        out = np.empty(R.json_lines_size(nb, len(port), tokens.shape[1]), np.uint8)
        used = R.json_lines(out, cols, port, self.parts, tokens, token_len,
                            self.vocab.controller)  # fmt: skip
        self.jsonl.write(out[:used].data)


OFPP_CONTROLLER = 0xFFFD  # the controller's OpenFlow port number, in packets.parquet


class ParquetPackets:
    """packets.parquet: the per-packet results as columns, in row groups of ROW_GROUP rows:
    n, timestamp, in_port, out (list of ports; the controller is OFPP_CONTROLLER, 65533),
    ct_state, drop_reason, path (strings, null where packets.jsonl has null)."""

    ROW_GROUP = 1 << 16

    def __init__(self, path: str):
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.pa = pa
        self.schema = pa.schema([
            ("n", pa.int64()), ("timestamp", pa.timestamp("ns")), ("in_port", pa.int64()),
            ("out", pa.list_(pa.int64())), ("ct_state", pa.string()),
            ("drop_reason", pa.string()), ("path", pa.string()),
        ])  # fmt: skip
        self.writer = pq.ParquetWriter(path, self.schema)
        self._values = None
        self._pending: list = []
        self._rows = 0

    def write(self, first_n, in_ports, ts_ns, count, port, toks, table) -> None:
        pa = self.pa
        if self._values is None or len(self._values) != len(table):
            self._values = pa.array(table.values, pa.string())
        offsets = np.zeros(len(count) + 1, np.int32)
        np.cumsum(count, out=offsets[1:])
        ports = np.where(port == CONTROLLER_PORT, OFPP_CONTROLLER, port)
        ct_tok, drop_tok, path_tok = toks
        columns = [
            pa.array(np.arange(first_n, first_n + len(count), dtype=np.int64)),
            pa.array(ts_ns, pa.timestamp("ns")),
            pa.array(np.asarray(in_ports, np.int64)),
            pa.ListArray.from_arrays(pa.array(offsets), pa.array(ports, pa.int64())),
            *(self._values.take(pa.array(t)) for t in (ct_tok, drop_tok, path_tok)),
        ]
        self._pending.append(pa.Table.from_arrays(columns, schema=self.schema))
        self._rows += len(count)
        if self._rows >= self.ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            table = self.pa.concat_tables(self._pending).combine_chunks()
            self.writer.write_table(table, row_group_size=max(len(table), 1))
            self._pending, self._rows = [], 0

    def close(self) -> None:
        self._flush()
        self.writer.close()


def packet_at(streams, ports, n: int, batch: int = 1 << 16):
    """Packet ``n`` (1-based, processing order) of fresh CaptureStreams as (n, in_port,
    frame, now_ms), or None past the end."""
    done, now_ms = 0, 0
    for inp, off, length, ts in MergedStream(streams).batches(batch):
        now = clock_ms(ts, now_ms)
        if done + len(inp) >= n:
            j = n - 1 - done
            frame = streams[int(inp[j])].data[int(off[j]) : int(off[j] + length[j])]
            return n, int(ports[int(inp[j])]), frame, int(now[j])
        done, now_ms = done + len(inp), int(now[-1])
    return None


class MergedStream:
    """The packets of several CaptureStreams in processing order, a batch at a time, without
    the whole merge order in memory: heapq.merge's order, which is a stable sort by (each
    input's running-maximum timestamp, input, record), taken chunk by chunk.

    Each input keeps a window of records read ahead. The horizon is the smallest (last key
    read, input) among the inputs that have more to read: no record still unread can sort
    before it, so every record in the windows that sorts before it can go, and so can the
    whole window of the input that sets it."""

    def __init__(self, streams, chunk: int = 1 << 16):
        self.streams, self.chunk = streams, chunk
        k = len(streams)
        self.window = [_empty_window() for _ in range(k)]
        self.top = [np.iinfo(np.int64).min] * k  # running maximum of each input's timestamps
        self.done = [len(st) == 0 for st in streams]
        self.queue = _empty_window()

    def _refill(self, i: int) -> None:
        if self.done[i] or len(self.window[i][0]):
            return
        off, length, ts = self.streams[i].next_chunk(self.chunk)
        if not len(off):
            self.done[i] = True
            return
        key = np.maximum.accumulate(np.maximum(ts, self.top[i]))
        self.top[i] = int(key[-1])
        self.window[i] = (off, length, ts, key)

    def _advance(self) -> bool:
        """Move what can go from the windows to the queue; False when nothing is left."""
        for i in range(len(self.streams)):
            self._refill(i)
        live = [i for i in range(len(self.streams)) if not self.done[i]]
        if not live and not any(len(w[0]) for w in self.window):
            return False
        horizon = min(((int(self.window[i][3][-1]), i) for i in live), default=None)
        parts = []
        for i, (off, length, ts, key) in enumerate(self.window):
            if not len(off):
                continue
            if horizon is None or i == horizon[1]:
                n = len(off)
            else:  # records with (key, i) < horizon
                n = int(np.searchsorted(key, horizon[0], side="left" if i > horizon[1]
                                        else "right"))  # fmt: skip
            if n:
                parts.append((np.full(n, i, np.int64), off[:n], length[:n], ts[:n], key[:n]))
                self.window[i] = (off[n:], length[n:], ts[n:], key[n:])
        inp, off, length, ts, key = (np.concatenate(c) for c in zip(*parts, strict=True))
        order = np.lexsort((off, inp, key))  # within one input, file order is offset order
        q = self.queue
        self.queue = tuple(np.concatenate((a, b[order])) for a, b in
                           zip(q, (inp, off, length, ts), strict=True))  # fmt: skip
        return True

    def batches(self, size: int):
        """(input, offset, length, ts_ns) arrays of ``size`` packets (the last may be fewer)."""
        while True:
            while len(self.queue[0]) < size and self._advance():
                pass
            if not len(self.queue[0]):
                return
            yield tuple(a[:size] for a in self.queue)
            self.queue = tuple(a[size:] for a in self.queue)


def _empty_window() -> tuple:
    return tuple(np.zeros(0, np.int64) for _ in range(4))


def gather_stream_frames(streams, inp, off, length) -> tuple[np.ndarray, np.ndarray]:
    """The batch's frames in one writable buffer: (buf, offsets). A batch from one input (its
    frames in file order) is one copy of its stretch of the file."""
    if len(inp) and (inp == inp[0]).all():
        lo, hi = int(off[0]), int(off[-1] + length[-1])
        return streams[int(inp[0])].data[lo:hi].copy(), off - lo
    offsets = np.zeros(len(inp), np.int64)
    if len(inp):
        np.cumsum(length[:-1], out=offsets[1:])
    buf = np.empty(int(length.sum()), np.uint8)
    for i, st in enumerate(streams):
        sel = np.flatnonzero(inp == i)
        if len(sel):
            R.gather(buf, offsets[sel], st.data, off[sel], length[sel])
    return buf, offsets


def run_batches(engine, streams, ports, writer, sweep_every: int, bar=None, limit=None):
    """The first ``limit`` packets (all: None) of ``streams`` (CaptureStreams; port
    ``ports[i]`` for input i) through ``engine`` in batches, each batch's outputs to
    ``writer`` (None: none); connections swept after each packet numbered a multiple of
    ``sweep_every`` (0: never); the pages of the inputs behind each batch given back. Returns
    the clock (ms) after the last packet and the seconds spent reading (merging, gathering
    frames), in the datapath (the engine and the sweeps) and writing the outputs."""
    clock = time.perf_counter
    port_of = np.asarray(ports, np.int64)
    split = {"reading": 0.0, "datapath": 0.0, "writing": 0.0}
    now_ms, done = 0, 0
    batches = MergedStream(streams).batches(engine.batch_size)
    while limit is None or done < limit:
        t0 = clock()
        batch = next(batches, None)
        if batch is None:
            break
        inp, off, length, ts = batch
        if limit is not None and done + len(inp) > limit:
            inp, off, length, ts = (x[: limit - done] for x in batch)
        buf, offsets = gather_stream_frames(streams, inp, off, length)
        now = clock_ms(ts, now_ms)
        in_port = port_of[inp]
        t1 = clock()
        br = engine.run(buf, offsets, length, in_port, now)
        a, b = done, done + len(inp)
        if sweep_every:
            for n in range(-(-(a + 1) // sweep_every) * sweep_every, b + 1, sweep_every):
                engine.conntrack.sweep(int(now[n - 1 - a]))
        t2 = clock()
        if writer is not None:
            writer.write(a + 1, in_port, ts, (buf, offsets, length), br)
        for i in np.unique(inp):
            streams[int(i)].release_before(int(off[inp == i][-1]))
        t3 = clock()
        split["reading"] += t1 - t0
        split["datapath"] += t2 - t1
        split["writing"] += t3 - t2
        now_ms, done = int(now[-1]), b
        if bar is not None:
            bar.advance(b - a)
    return now_ms, split
