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
a sweep step (Conntrack.sweep_some) runs after the packet whose number is a multiple of
SWEEP_EVERY, as the per-packet path does (batches end on those packets).
"""

from __future__ import annotations

import os
import time
from collections import Counter

import numpy as np

from ctaccel import replay_emit as E
from ctaccel.datapath import layout as L
from ctaccel.io import records as R
from ctaccel.io.pcap import PcapWriter
from ctaccel.ofproto.program import CONTROLLER_PORT, DROP_REASON_NAMES
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
        self._arrays = None

    def ct_tokens(self, codes: np.ndarray) -> np.ndarray:
        idx = codes + 1
        tok = self.ct[idx]
        if not len(tok) or tok.min() >= 0:
            return tok
        for m in np.unique(idx[tok < 0]):
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
        """(token table, tail cache) for json_line: rebuilt, the cache emptied, when the
        table has grown."""
        if self._arrays is None:
            self._arrays = (self.table.arrays(), R.new_tails(self.table.max_len))
        return self._arrays


class BatchWriter:
    """packets.jsonl (or packets.parquet) and the per-port captures of a replay, written a
    batch at a time: one compiled call (replay_emit.emit_batch) builds a batch's records and
    lines, then one write per port and one for the lines."""

    def __init__(self, out_dir: str, packets: str = "jsonl"):
        self.out_dir = out_dir
        self.writers: dict[int, PcapWriter] = {}
        self.jsonl = None
        self.parquet = None
        if packets == "jsonl":
            self.jsonl = _open_new(os.path.join(out_dir, "packets.jsonl"))
        elif packets == "parquet":
            self.parquet = ParquetPackets(os.path.join(out_dir, "packets.parquet"))
        self.vocab = _Vocab()
        self.sink = E.new_sink()
        self._pk = np.zeros((0, E.PK_WIDTH), np.int64)
        self._opts = np.zeros(4, np.int64)
        self._no_slow = (np.zeros(0, np.int64),) * 3
        self._no_bytes = np.zeros(0, np.uint8)
        self._no_fofs = np.zeros(0, np.int64)

    @property
    def packets_out(self) -> int:
        return int(self.sink[E.S_TALLY][E.T_FRAMES_OUT])

    @property
    def to_controller(self) -> int:
        return int(self.sink[E.S_TALLY][E.T_TO_CONTROLLER])

    @property
    def drops(self) -> Counter:
        """Packets per drop reason."""
        return self._token_counts(0, skip_null=True)

    @property
    def paths(self) -> Counter:
        """Packets per path."""
        return self._token_counts(1, skip_null=False)

    def _token_counts(self, row: int, skip_null: bool) -> Counter:
        counts = self.sink[E.S_TOKENS][row]
        values = self.vocab.table.values
        return Counter({values[t]: int(counts[t]) for t in np.flatnonzero(counts)
                        if not (skip_null and values[t] is None)})  # fmt: skip

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
            path = os.path.join(self.out_dir, name)
            _remove_old(path)
            w = self.writers[port] = PcapWriter(path)
        return w

    def write(self, first_n: int, in_ports, ts_ns, frames, br) -> None:
        """One batch: ``frames`` = (buf, offsets, lengths) as given to the engine, ``br`` its
        BatchResult."""
        buf, offsets, lengths = frames
        res = br.res
        nb = len(lengths)
        if len(self._pk) < nb:
            self._pk = np.zeros((nb, E.PK_WIDTH), np.int64)
        pk = self._pk[:nb]
        pk[:, E.PK_IN_PORT] = in_ports
        pk[:, E.PK_TS] = ts_ns
        pk[:, E.PK_CT] = self.vocab.ct_tokens(res[:, L.R_CT_STATE])
        pk[:, E.PK_DROP] = self.vocab.drop[res[:, L.R_DROP]]
        pk[:, E.PK_PATH] = self.vocab.path[res[:, L.R_PATH]]
        pk[:, E.PK_SLOW_COUNT] = -1
        slow, extra = self._no_slow, self._no_bytes
        if br.slow:
            slow, extra = self._slow_outputs(br, pk)
        m = len(br.out_ports) + len(slow[0])
        self._make_room(nb, m)
        fofs = br.out_fofs if br.out_fofs is not None else self._no_fofs
        flens = br.out_flen if br.out_flen is not None else self._no_fofs
        fbuf = br.out_fbuf if br.out_fbuf is not None else self._no_bytes
        args = ((buf, offsets, lengths, fbuf, extra), (res, br.out_ports, fofs, flens), slow, pk)
        self._opts[:] = (first_n, self.jsonl is not None, PCAP_SNAPLEN, 0)
        text = (self.vocab.arrays(), self._opts)
        while E.emit_batch(*args, text, tuple(self.sink)) == E.NEED_ROOM:
            self.sink[E.S_PCAP] = np.empty(int(self.sink[E.S_TALLY][E.T_PCAP_NEED]) * 2, np.uint8)
        self._write_out(first_n, in_ports, ts_ns, pk)

    def _make_room(self, nb: int, m: int) -> None:
        """The JSON buffer and the flat port array large enough for ``nb`` packets with ``m``
        outputs; the token tallies for every token."""
        if len(self.sink[E.S_FLAT]) < m:
            self.sink[E.S_FLAT] = np.empty(2 * m, np.int64)
        if self.jsonl is not None:
            need = R.json_lines_size(nb, m, self.vocab.table.max_len)
            if len(self.sink[E.S_JSON]) < need:
                self.sink[E.S_JSON] = np.empty(2 * need, np.uint8)
        tt = self.sink[E.S_TOKENS]
        if tt.shape[1] < len(self.vocab.table):
            grown = np.zeros((2, 2 * len(self.vocab.table)), np.int64)
            grown[:, : tt.shape[1]] = tt
            self.sink[E.S_TOKENS] = grown

    def _write_out(self, first_n, in_ports, ts_ns, pk) -> None:
        """The batch's bytes, once emit_batch has built them: one write per port region,
        one for the lines (or the batch's rows of packets.parquet)."""
        portmap, slots, pcap_out, json_out, flat, tally, _tt = self.sink
        for s in range(int(tally[E.T_SLOTS])):
            n = int(slots[E.SL_RECORDS, s])
            if n:
                lo = int(slots[E.SL_START, s])
                self._writer(int(slots[E.SL_PORT, s])).write_records(
                    pcap_out[lo : lo + int(slots[E.SL_BYTES, s])].data, n)  # fmt: skip
        if self.jsonl is not None:
            self.jsonl.write(json_out[: int(tally[E.T_JSON_USED])].data)
        if self.parquet is not None:
            m = int(tally[E.T_OUTPUTS])
            toks = (pk[:, E.PK_CT], pk[:, E.PK_DROP], pk[:, E.PK_PATH])
            self.parquet.write(first_n, in_ports, ts_ns, pk[:, E.PK_COUNT], flat[:m], toks,
                               self.vocab.table)  # fmt: skip

    def _slow_outputs(self, br, pk):
        """The reference engine's results into the PK_* table (tokens, where its outputs
        are); their (port, offset, length) arrays and frames, in packet order."""
        first, count, s_port, s_off, s_len, extra = br.slow_outputs()
        pk[:, E.PK_SLOW_START], pk[:, E.PK_SLOW_COUNT] = first, count
        for j, r in br.slow.items():
            pk[j, E.PK_CT] = self.vocab.token_of(r.ct_state)
            pk[j, E.PK_DROP] = self.vocab.token_of(r.drop_reason)
        return (s_port, s_off, s_len), extra if len(extra) else self._no_bytes


def warm_up_writer() -> float:
    """Compile (first run) or load the writer's kernel by writing one packet into a
    throwaway directory, so that a replay's writing time is writing; returns the seconds."""
    import tempfile

    from ctaccel.datapath.engine import BatchResult

    t0 = time.perf_counter()
    res = np.zeros((1, L.RES_WIDTH), np.int64)
    res[0, L.R_NOUT], res[0, L.R_CT_STATE] = 1, -1
    frames = (np.zeros(60, np.uint8), np.zeros(1, np.int64), np.full(1, 60, np.int64))
    with tempfile.TemporaryDirectory(prefix="ctaccel-warm-up-") as d:
        w = BatchWriter(d, "jsonl")
        w.write(1, np.ones(1, np.int64), np.zeros(1, np.int64), frames,
                BatchResult(res, np.array([2], np.int64), {}))  # fmt: skip
        w.close()
    return time.perf_counter() - t0


PCAP_SNAPLEN = 65535  # the captures are PcapWriter's defaults: this snaplen, microseconds


def _remove_old(path: str) -> None:
    """Remove an output left by an earlier run before writing it again: truncating a large
    file in place costs as much as removing it, and some file systems then flush the new
    one to disk on close (ext4's replace-by-truncate heuristic)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        pass  # opening it says why, if it matters


def _open_new(path: str):
    _remove_old(path)
    return open(path, "wb", buffering=1 << 20)  # noqa: SIM115


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
        if len(parts) == 1:  # one input's records: already in order (file order)
            inp, off, length, ts, _key = parts[0]
        else:
            inp, off, length, ts, key = (np.concatenate(c) for c in zip(*parts, strict=True))
            order = np.lexsort((off, inp, key))  # within one input, file order is offset order
            inp, off, length, ts = inp[order], off[order], length[order], ts[order]
        q = self.queue
        self.queue = tuple(np.concatenate((a, b)) if len(a) else b for a, b in
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


def run_batches(engine, streams, ports, writer, sweep_every: int, bar=None, limit=None,
                changes=None, base=None):  # fmt: skip
    """The first ``limit`` packets (all: None) of ``streams`` (CaptureStreams; port
    ``ports[i]`` for input i) through ``engine`` in batches, each batch's outputs to
    ``writer`` (None: none) on a second thread, a batch or two behind the datapath;
    a sweep step (Conntrack.sweep_some) after each packet numbered a multiple of
    ``sweep_every`` (0: never);
    ``changes``: (ms after the first packet's clock, or after ``base`` if given, rules) to put
    in place, in time order, before the first packet whose clock reaches that time; the pages
    of the inputs behind each batch given back. Returns the clock (ms) after the last packet and the seconds spent
    reading (merging, gathering frames), in the datapath (the engine, sweeps and rule
    changes), and writing the outputs (on the writer's thread, alongside the other two) or
    waiting for the writer to catch up."""
    clock = time.perf_counter
    port_of = np.asarray(ports, np.int64)
    split = {"reading": 0.0, "datapath": 0.0, "writing": 0.0, "waiting": 0.0}
    now_ms, done = 0, 0
    pending = list(changes or [])
    batches = MergedStream(streams).batches(engine.batch_size)
    behind = WriterThread(writer) if writer is not None else None
    try:
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
            base = int(now[0]) if base is None else base
            in_port = port_of[inp]
            t1 = clock()
            results = []
            for lo, hi in _between_changes(engine, now, pending, base):
                br = engine.run(buf, offsets[lo:hi], length[lo:hi], in_port[lo:hi], now[lo:hi])
                a, b = done + lo, done + hi
                if sweep_every:
                    for n in range(-(-(a + 1) // sweep_every) * sweep_every, b + 1, sweep_every):
                        engine.conntrack.sweep_some(int(now[n - 1 - done]))
                results.append((a + 1, in_port[lo:hi], ts[lo:hi],
                                (buf, offsets[lo:hi], length[lo:hi]), br))  # fmt: skip
            t2 = clock()
            for item in results if behind is not None else ():
                behind.submit(*item)
            _release(streams, inp, off)
            split["reading"] += t1 - t0
            split["datapath"] += t2 - t1
            split["waiting"] += clock() - t2
            now_ms, done = int(now[-1]), done + len(inp)
            if bar is not None:
                bar.advance(len(inp))
    finally:
        if behind is not None:
            t3 = clock()
            behind.finish()
            split["waiting"] += clock() - t3
            split["writing"] = behind.busy
    return now_ms, split


def _between_changes(engine, now, pending, base):
    """(lo, hi) stretches of a batch with one rule set each: a change in ``pending`` ((ms
    after ``base``, rules), in time order) is put in place, and taken off the list, before
    the first packet whose clock ``now`` (never going back) has reached its time."""
    lo, n = 0, len(now)
    while lo < n:
        if pending and now[lo] >= base + pending[0][0]:
            engine.replace_flows(pending.pop(0)[1])
            continue
        hi = n if not pending else int(np.searchsorted(now, base + pending[0][0], "left"))
        yield lo, hi
        lo = hi


def _release(streams, inp, off) -> None:
    """Give back the mapped pages of the inputs up to the batch's last frame of each."""
    if len(streams) == 1:
        if len(off):
            streams[0].release_before(int(off[-1]))
        return
    for i in np.unique(inp):
        streams[int(i)].release_before(int(off[inp == i][-1]))


class WriterThread:
    """A writer's ``write`` calls run on a thread of their own, in order, while the caller
    goes on with the next batches: its compiled kernels and file writes release the GIL, so on
    a second core the outputs cost the datapath little. At most DEPTH batches wait; an error
    in the thread stops the writing and is raised to the caller at its next submit or at
    finish."""

    DEPTH = 2

    def __init__(self, writer):
        import queue
        import threading

        self.writer = writer
        self.busy = 0.0  # seconds the thread spent writing
        self._queue: queue.Queue = queue.Queue(maxsize=self.DEPTH)
        self._error: BaseException | None = None
        self._failed = False
        self._thread = threading.Thread(target=self._loop, name="ctaccel-writer", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._failed:
                continue  # drain: the caller learns of the error at its next call
            t0 = time.perf_counter()
            try:
                self.writer.write(*item)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                self._error, self._failed = exc, True
            self.busy += time.perf_counter() - t0

    def submit(self, *args) -> None:
        self._raise_error()
        self._queue.put(args)

    def finish(self) -> None:
        """Wait for every batch submitted to be written; raise the thread's error if any (once)."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._raise_error()

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error
