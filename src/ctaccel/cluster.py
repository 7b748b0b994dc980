"""Replay on a Dask cluster: the captures split by connection, the shards replayed on the
cluster's workers, their outputs merged into what one replay writes.

What: :func:`replay_dask` (``ctaccel replay --dask ADDRESS``; ``local`` or ``local:N``
starts a local cluster of N processes) splits the inputs into shards (:func:`split`),
runs :func:`replay_shard` for each on the cluster, and merges (:func:`merge`): per-port
captures by packet number (the order one replay writes them in), packets.jsonl renumbered
in processing order, packets.parquet likewise, conntrack dumps unioned and sorted, rule
counters and statistics summed.

Design:
- The shard of a packet is workers.shard_of's (both directions of a connection, its ICMP
  errors, its helpers' data connections on one shard). The split reads the inputs once in
  processing order (replay_batches.MergedStream) and writes, per shard, one capture per
  input (nanosecond timestamps, the input's records in file order) and the global number
  of each of its packets. A shard's replay then merges its inputs in the same order as
  the whole replay restricted to its packets, with the same clock: inputs whose timestamps
  never step back make processing order a sort by (timestamp, input, record).
- Everything lives under OUT_DIR/.shards, which the cluster's workers must see (a shared
  filesystem: what clusters that replay captures use); it is removed after the merge.
- A shard's replay is the plain replay's (replay_batches.run_batches) with three things
  told from outside: the first packet's clock (rule changes count from it), the last
  packet's (the conntrack dump's ``now``; rule changes due by then), and its packets'
  global numbers, kept per output record for the merge (:func:`_numbered_writer`).
- What a shard cannot reproduce runs as one shard, on the cluster, with a note: rules
  with NAT or NORMAL and zone limits (workers.sharding_blockers), IP fragments (one
  reassembly with global limits), inputs whose timestamps step back. The reference mode
  and ``--ct-import`` are refused.

Invariants: the merged outputs are byte for byte one replay's, but for packets.jsonl's
``path`` (which cache served a packet: per shard) and stats.json; every input packet is
in exactly one shard.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from ctaccel.errors import InputError
from ctaccel.jit import njit

SHARD_DIR = ".shards"
SPLIT_BATCH = 1 << 16  # packets read, hashed and written per step of the split
SPLIT_SNAPLEN = 0x7FFFFFFF  # the shards' captures cut no frame (an input's may be > 64 KiB)
MERGE_BLOCK = 1 << 20  # packets per step of the merge
_WARM = threading.Lock()  # one warm-up at a time in a worker process of several threads


@dataclass
class Split:
    """The shards of a replay: per shard its inputs ((port, path) per input it has packets
    of) and the file of its packets' global numbers (1-based, processing order)."""

    inputs: list = field(default_factory=list)  # per shard
    numbers: list = field(default_factory=list)  # per shard: its file of raw int64 numbers
    total: int = 0
    base_ms: int | None = 0  # the first packet's clock (None: the shard's own, one shard)
    final_ms: int | None = 0  # the last packet's clock
    note: str = ""  # why one shard


def _blockers(flows_path, mode, zone_limits, bridge, timeout_policies, changes) -> list[str]:
    """What keeps state across connections in the rules, the rule changes (``changes``:
    parse_flows_at's) and the conntrack configuration (workers.sharding_blockers)."""
    from ctaccel.replay import make_engine
    from ctaccel.workers import sharding_blockers

    engine = make_engine(flows_path, mode, zone_limits, None, bridge, timeout_policies)
    return sharding_blockers(engine.tables, engine.conntrack, engine.bridge if bridge else None,
                             changes)  # fmt: skip


def split(inputs, shards: int, root: str) -> Split:
    """The inputs' packets into ``shards`` shards under ``root`` (see the module
    docstring); one shard (the inputs as they are) when fragments or timestamps stepping
    back make shards differ from one replay."""
    from ctaccel.io.pcap import PcapWriter
    from ctaccel.replay import open_streams
    from ctaccel.replay_batches import MergedStream, _release, clock_ms, gather_stream_frames
    from ctaccel.workers import _shards

    streams, _ports = open_streams(inputs)
    out = Split(total=sum(len(s) for s in streams))
    writers: dict = {}
    numbers: dict = {}  # per shard: its file of global packet numbers (int64, appended)
    last_ts = np.full(len(streams), np.iinfo(np.int64).min)
    done, now = 0, 0
    for inp, off, length, ts in MergedStream(streams).batches(SPLIT_BATCH):
        buf, offsets = gather_stream_frames(streams, inp, off, length)
        shard, frag = np.empty(len(inp), np.int64), np.empty(len(inp), np.int64)
        _shards(buf, offsets, length, np.int64(shards), shard, frag)
        why = _unshardable(inp, ts, frag, last_ts)
        if why:
            for w in (*writers.values(), *numbers.values()):
                w.close()
            return Split(inputs=[list(inputs)], numbers=[None], total=out.total, base_ms=None,
                         final_ms=None, note=why)  # fmt: skip
        clock = clock_ms(ts, now)
        out.base_ms = int(clock[0]) if done == 0 else out.base_ms
        now = int(clock[-1])
        for s in np.unique(shard).tolist():
            sel = np.flatnonzero(shard == s)
            if s not in numbers:
                os.makedirs(os.path.join(root, str(s)), exist_ok=True)
                numbers[s] = open(os.path.join(root, str(s), "numbers.i64"), "wb")  # noqa: SIM115
            numbers[s].write((done + 1 + sel).astype(np.int64).tobytes())
            for i in np.unique(inp[sel]).tolist():
                mine = sel[inp[sel] == i]
                w = writers.get((s, i))
                if w is None:
                    w = writers[(s, i)] = PcapWriter(os.path.join(root, str(s), f"in-{i}.pcap"),
                                                     SPLIT_SNAPLEN, nanosecond=True)  # fmt: skip
                w.write_batch(buf, offsets[mine], length[mine], ts[mine])
        _release(streams, inp, off)
        done += len(inp)
    for w in (*writers.values(), *numbers.values()):
        w.close()
    out.final_ms = now
    for s in sorted(numbers):
        mine = sorted(i for t, i in writers if t == s)
        out.inputs.append([(inputs[i][0], os.path.join(root, str(s), f"in-{i}.pcap"))
                           for i in mine])  # fmt: skip
        out.numbers.append(numbers[s].name)
    if not out.inputs:  # no packets: the one replay of nothing
        return Split(inputs=[list(inputs)], numbers=[None], base_ms=None, final_ms=None)
    return out


def _unshardable(inp, ts, frag, last_ts) -> str:
    """Why these packets cannot be split exactly ('' if they can); ``last_ts`` per input,
    updated."""
    if frag.any():
        return "one shard: IP fragments (one reassembly, global limits)"
    for i in np.unique(inp).tolist():
        t = ts[inp == i]
        if t[0] < last_ts[i] or (len(t) > 1 and np.any(np.diff(t) < 0)):
            return f"one shard: input {i + 1}'s timestamps step back"
        last_ts[i] = t[-1]
    return ""


# --- a shard's replay (on a worker) ----------------------------------------------------------


def _numbered_writer(out_dir: str, packets: str, numbers):
    """A replay_batches.BatchWriter that also keeps, per output port, the global number of
    the packet behind each record it writes (raw int64, appended to ``<capture>.n.i64``)."""
    from ctaccel import replay_emit as E
    from ctaccel.replay_batches import BatchWriter

    class NumberedWriter(BatchWriter):
        def __init__(self):
            super().__init__(out_dir, packets)
            self.numbers = numbers
            self.kept: dict = {}  # port -> its open file of numbers

        def _write_out(self, first_n, in_ports, ts_ns, pk) -> None:
            super()._write_out(first_n, in_ports, ts_ns, pk)
            flat, tally = self.sink[E.S_FLAT], self.sink[E.S_TALLY]
            ports = flat[: int(tally[E.T_OUTPUTS])]
            local = np.repeat(np.arange(first_n, first_n + len(pk)), pk[:, E.PK_COUNT])
            glob = self.numbers[local - 1] if self.numbers is not None else local
            for p in np.unique(ports).tolist():
                f = self.kept.get(p)
                if f is None:
                    path = _capture_path(out_dir, p) + ".n.i64"
                    f = self.kept[p] = open(path, "wb")  # noqa: SIM115 (closed in close())
                f.write(np.ascontiguousarray(glob[ports == p], np.int64).tobytes())

        def close(self) -> None:
            super().close()
            for f in self.kept.values():
                f.close()

    return NumberedWriter()


def _numbers(path):
    """A shard's global packet numbers (a file of raw int64, mapped), or None (one shard)."""
    if not path:
        return None
    if not os.path.getsize(path):
        return np.zeros(0, np.int64)
    return np.memmap(path, np.int64, mode="r")


def _capture_path(out_dir: str, port: int) -> str:
    name = "controller.pcap" if port < 0 else f"port-{port}.pcap"
    return os.path.join(out_dir, name)


def replay_shard(job: dict) -> dict:
    """One shard's replay into ``job["out_dir"]`` (on a cluster worker): its captures,
    lines, conntrack dump (at the whole replay's last clock) and what the merge sums."""
    from ctaccel.datapath.warmup import warm_up
    from ctaccel.replay import SWEEP_EVERY, make_engine, open_streams, parse_flows_at
    from ctaccel.replay_batches import run_batches, warm_up_writer

    with _WARM:
        warm = warm_up() + warm_up_writer()
    engine = make_engine(job["flows_path"], job["mode"], job["zone_limits"], None, job["bridge"],
                         job["timeout_policies"])  # fmt: skip
    streams, ports = open_streams(job["inputs"])
    changes = parse_flows_at(job["flows_at"])
    out = job["out_dir"]
    os.makedirs(out, exist_ok=True)
    numbers = _numbers(job["numbers"])
    writer = _numbered_writer(out, job["packets"], numbers)
    t0 = time.perf_counter()
    try:
        now_ms, time_split = run_batches(engine, streams, ports, writer, SWEEP_EVERY,
                                         changes=changes, base=job["base_ms"])  # fmt: skip
    finally:
        writer.close()
    seconds = time.perf_counter() - t0
    final = now_ms if job["final_ms"] is None else job["final_ms"]
    if job["base_ms"] is not None:  # changes the whole replay made after this shard's end
        for ms, tables in changes:
            if now_ms < job["base_ms"] + ms <= final:
                engine.replace_flows(tables)
    with open(os.path.join(out, "conntrack.txt"), "w") as f:
        f.write("".join(line + "\n" for line in engine.conntrack.dump(final)))
    return {"rule_counters": engine.rule_counters(), "stats": dict(engine.stats),
            "conntrack": dict(engine.conntrack.counters), "paths": dict(writer.paths),
            "drops": dict(writer.drops), "packets_out": writer.packets_out,
            "to_controller": writer.to_controller, "ports": sorted(writer.writers),
            "seconds": seconds, "warmup_seconds": warm, "time_split": time_split,
            "now_ms": now_ms, "rules": engine.tables.all_rules()}  # fmt: skip


# --- the merge -------------------------------------------------------------------------------


def merge_captures(dest: str, parts: list[tuple[str, np.ndarray]]) -> int:
    """One capture at ``dest`` from the shards' (``parts``: path, each record's global
    packet number), records in packet-number order (a packet's own records in their order);
    a block of packet numbers at a time. Returns the records written."""
    from ctaccel.io.pcap import read_capture
    from ctaccel.io.records import gather

    caps = [(read_capture(path), nums) for path, nums in parts]
    written = 0
    with open(dest, "wb") as f:
        f.write(bytes(caps[0][0].data[:24]))  # the shards' file header: the replay's
        top = max(int(nums[-1]) for _c, nums in caps if len(nums)) if caps else 0
        for g0 in range(1, top + 1, MERGE_BLOCK):
            spans, keys, chunks, base = [], [], [], 0
            for cap, nums in caps:
                lo, hi = np.searchsorted(nums, [g0, g0 + MERGE_BLOCK], "left")
                if hi <= lo:
                    continue
                start, end = (
                    int(cap.offsets[lo]) - 16,
                    int(cap.offsets[hi - 1] + cap.lengths[hi - 1]),
                )
                chunks.append(np.asarray(cap.data[start:end]))
                spans.append(np.stack([cap.offsets[lo:hi] - 16 - start + base,
                                       cap.lengths[lo:hi] + 16], axis=1))  # fmt: skip
                keys.append(nums[lo:hi])
                base += end - start
            if not keys:
                continue
            order = np.argsort(np.concatenate(keys), kind="stable")
            span = np.ascontiguousarray(np.concatenate(spans)[order])
            at = np.zeros(len(span), np.int64)
            np.cumsum(span[:-1, 1], out=at[1:])
            out = np.empty(int(span[:, 1].sum()), np.uint8)
            gather(out, at, np.concatenate(chunks), span[:, 0].copy(), span[:, 1].copy())
            f.write(out.data)
            written += len(order)
    return written


_HEAD = np.frombuffer(b'{"n": ', np.uint8).copy()


@njit
def _renumbered(src, tails, ends, nums, head, digits, out):
    """Lines ``src[tails[j]:ends[j]]`` (each line past its number) after ``head`` and
    ``nums[j]`` in decimal, one after the other into ``out``; the bytes written (``digits``:
    20 bytes of scratch)."""
    pos = 0
    for j in range(tails.shape[0]):
        for b in range(head.shape[0]):
            out[pos + b] = head[b]
        pos += head.shape[0]
        v, k = nums[j], 0
        while True:
            digits[k] = 48 + v % 10
            v //= 10
            k += 1
            if v == 0:
                break
        for d in range(k):
            out[pos + d] = digits[k - 1 - d]
        pos += k
        for b in range(tails[j], ends[j]):
            out[pos] = src[b]
            pos += 1
    return pos


def _line_spans(path: str):
    """A packets.jsonl's bytes and, per line, where its text after the number starts and
    where the line (its newline included) ends."""
    buf = np.memmap(path, np.uint8, mode="r") if os.path.getsize(path) else np.zeros(0, np.uint8)
    ends = np.flatnonzero(buf == 10) + 1
    starts = np.concatenate([[0], ends[:-1]]).astype(np.int64)
    local = np.arange(1, len(ends) + 1)
    width = 1 + np.searchsorted(10 ** np.arange(1, 19), local, "right")
    return buf, starts + len(_HEAD) + width, ends


def merge_lines(dest: str, parts: list[tuple[str, np.ndarray]]) -> None:
    """packets.jsonl at ``dest`` from the shards' (``parts``: path, each line's global packet
    number), in packet-number order and numbered by it; a block of numbers at a time."""
    shards = [(*_line_spans(path), nums) for path, nums in parts]
    top = max((int(nums[-1]) for *_x, nums in shards if len(nums)), default=0)
    with open(dest, "wb") as f:
        for g0 in range(1, top + 1, MERGE_BLOCK):
            src, tails, ends, keys, base = [], [], [], [], 0
            for buf, t, e, nums in shards:
                lo, hi = np.searchsorted(nums, [g0, g0 + MERGE_BLOCK], "left")
                if hi <= lo:
                    continue
                first = int(e[lo - 1]) if lo else 0
                src.append(buf[first : e[hi - 1]])
                tails.append(t[lo:hi] - first + base)
                ends.append(e[lo:hi] - first + base)
                keys.append(nums[lo:hi])
                base += int(e[hi - 1]) - first
            if not keys:
                continue
            nums = np.concatenate(keys)
            order = np.argsort(nums, kind="stable")
            tail, end = np.concatenate(tails)[order], np.concatenate(ends)[order]
            out = np.empty(int((end - tail).sum()) + len(order) * (len(_HEAD) + 20), np.uint8)
            used = _renumbered(np.concatenate(src), tail, end, nums[order], _HEAD,
                               np.empty(20, np.uint8), out)  # fmt: skip
            f.write(out[:used].data)


def merge_parquet(dest: str, parts: list[tuple[str, np.ndarray]]) -> None:
    """packets.parquet at ``dest`` from the shards' (path, each row's global number): rows
    renumbered and in number order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for path, nums in parts:
        t = pq.read_table(path)
        at = t.schema.get_field_index("n")
        tables.append(t.set_column(at, t.schema.field(at), pa.array(nums, t.schema.field(at).type)))
    from ctaccel.replay_batches import ParquetPackets

    merged = pa.concat_tables(tables).sort_by("n")
    pq.write_table(merged, dest, row_group_size=ParquetPackets.ROW_GROUP)


# --- the whole ---------------------------------------------------------------------------------


def connect(scheduler):
    """A dask.distributed Client for ``scheduler``: an address (``tcp://host:8786``),
    ``local`` or ``local:N`` (a local cluster of N single-threaded processes; N: the cores),
    or a Client already made. Returns (client, what to close after)."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError as e:
        raise InputError("--dask needs Dask: pip install 'ctaccel[dask]'") from e
    if not isinstance(scheduler, str):
        return scheduler, []
    if scheduler == "local" or scheduler.startswith("local:"):
        n = scheduler.partition(":")[2]
        if n and not (n.isdigit() and int(n) > 0):
            raise InputError(f"--dask {scheduler!r}: expected local:N with N >= 1")
        cluster = LocalCluster(n_workers=int(n or os.cpu_count() or 1), threads_per_worker=1,
                               processes=True, dashboard_address=":0")  # fmt: skip
        client = Client(cluster)
        return client, [client, cluster]
    try:
        client = Client(scheduler, timeout="10s")
    except (OSError, TimeoutError, ValueError) as e:
        raise InputError(f"--dask {scheduler!r}: cannot reach the scheduler ({e})") from e
    return client, [client]


def replay_dask(flows_path, inputs, out_dir, scheduler, *, shards: int | None = None,
                mode="assume-established", packets="jsonl", flows_at=(), zone_limits=None,
                bridge=None, timeout_policies=None, progress=False):  # fmt: skip
    """The replay of ``inputs`` through ``flows_path`` on the Dask cluster ``scheduler``
    (:func:`connect`), in ``shards`` shards (None: one per worker); the outputs one replay
    writes, in ``out_dir``; a replay.ReplaySummary (``workers``: the shards)."""
    from ctaccel.replay import PACKET_FORMATS, ReplaySummary, open_streams, parse_flows_at

    if mode == "reference":
        raise InputError("--dask: the compiled modes only (recirc, assume-established)")
    if packets not in PACKET_FORMATS:
        raise InputError(f"--packets {packets!r}: expected one of {', '.join(PACKET_FORMATS)}")
    if shards is not None and shards < 1:
        raise InputError(f"--workers {shards}: expected 1 or more")
    changes = parse_flows_at(flows_at)  # every file checked before anything is written
    blockers = _blockers(flows_path, mode, zone_limits, bridge, timeout_policies, changes)
    total = sum(len(st) for st in open_streams(inputs)[0])  # every capture checked whole
    out_dir = str(out_dir)
    root = os.path.join(out_dir, SHARD_DIR)
    try:
        os.makedirs(out_dir, exist_ok=True)
        shutil.rmtree(root, ignore_errors=True)
    except OSError as e:
        raise InputError(f"cannot create output directory {out_dir!r}: {e.strerror}") from e
    from ctaccel.datapath.warmup import warm_up

    warm_up()  # a first run compiles here, once, and shows it (not in every worker at once)
    client, to_close = connect(scheduler)
    try:
        if shards is None:  # one shard per worker thread: the workers that have joined
            try:
                client.wait_for_workers(1, timeout=60)
            except TimeoutError as e:
                raise InputError("--dask: no worker joined the cluster within 60 s") from e
        n = shards or max(sum(client.nthreads().values()), 1)
        t0 = time.perf_counter()
        if blockers or n == 1:
            why = "; ".join(blockers) + " keep state across connections" if blockers else ""
            sp = Split(inputs=[list(inputs)], numbers=[None], base_ms=None, final_ms=None,
                       note=f"one shard: {why}" if why else "")  # fmt: skip
        else:
            sp = split(inputs, n, root)
        jobs = [{"flows_path": str(flows_path), "inputs": ins, "numbers": nums,
                 "out_dir": os.path.join(root, str(k), "out"), "mode": mode, "packets": packets,
                 "flows_at": tuple(flows_at), "zone_limits": zone_limits, "bridge": bridge,
                 "timeout_policies": timeout_policies, "base_ms": sp.base_ms,
                 "final_ms": sp.final_ms}
                for k, (ins, nums) in enumerate(zip(sp.inputs, sp.numbers,
                                                    strict=True))]  # fmt: skip
        t1 = time.perf_counter()
        results = _run(client, jobs, progress)
        t2 = time.perf_counter()
    finally:
        for c in to_close:
            c.close()
    summary = ReplaySummary(out_dir=out_dir, packets_in=total, mode=mode, workers=len(jobs),
                            workers_note=sp.note)  # fmt: skip
    merge(out_dir, jobs, results, packets, summary)
    t3 = time.perf_counter()
    summary.seconds = t3 - t0  # split, shards, merge: the cluster's start and warm-ups apart
    summary.time_split = {"split": t1 - t0, "shards": t2 - t1, "merge": t3 - t2}
    _write_stats(out_dir, summary, results, scheduler)
    shutil.rmtree(root, ignore_errors=True)
    return summary


def _run(client, jobs: list[dict], progress) -> list[dict]:
    """Every job on the cluster; their results in job order (rich progress on ``progress``)."""
    from dask.distributed import as_completed

    futures = client.map(replay_shard, jobs, pure=False)
    if progress:
        from rich.progress import Progress

        with Progress(console=progress, transient=True) as bar:
            task = bar.add_task("replaying shards on the cluster", total=len(futures))
            for _f in as_completed(futures):
                bar.advance(task)
    return client.gather(futures)


def merge(out_dir: str, jobs: list[dict], results: list[dict], packets: str, summary) -> None:
    """The shards' outputs into ``out_dir`` as one replay's, and ``summary`` filled."""
    from ctaccel.ofproto.dumpflows import format_dump_flows
    from ctaccel.workers import _summed

    numbers = [_numbers(j["numbers"]) for j in jobs]
    for port in sorted({p for r in results for p in r["ports"]}):
        parts = [(_capture_path(j["out_dir"], port), _numbers(_capture_path(j["out_dir"], port)
                                                              + ".n.i64"))
                 for j, r in zip(jobs, results, strict=True) if port in r["ports"]]  # fmt: skip
        merge_captures(_capture_path(out_dir, port), parts)
    name = {"jsonl": "packets.jsonl", "parquet": "packets.parquet"}.get(packets)
    if name:
        parts = [(os.path.join(j["out_dir"], name),
                  nums if nums is not None else np.arange(1, summary.packets_in + 1))
                 for j, nums in zip(jobs, numbers, strict=True)]  # fmt: skip
        (merge_lines if packets == "jsonl" else merge_parquet)(os.path.join(out_dir, name), parts)
    lines = sorted(line for j in jobs for line in _read_lines(j["out_dir"], "conntrack.txt"))
    with open(os.path.join(out_dir, "conntrack.txt"), "w") as f:
        f.write("".join(line + "\n" for line in lines))
    counters = np.sum([np.asarray(r["rule_counters"], np.int64).reshape(-1, 2) for r in results],
                      axis=0)  # fmt: skip
    with open(os.path.join(out_dir, "flows.txt"), "w") as f:
        f.write(format_dump_flows(results[0]["rules"], [tuple(map(int, c)) for c in counters]))
    summary.connections = len(lines)
    summary.packets_out = sum(r["packets_out"] for r in results)
    summary.to_controller = sum(r["to_controller"] for r in results)
    summary.drops.update(_summed(r["drops"] for r in results))
    summary.paths = _summed(r["paths"] for r in results)
    summary.datapath_stats = _summed(r["stats"] for r in results)
    summary.conntrack_counters = _summed(r["conntrack"] for r in results)
    summary.time_split = {}  # replay_dask's: split, shards, merge
    summary.warmup_seconds = max(r["warmup_seconds"] for r in results)


def _read_lines(directory: str, name: str) -> list[str]:
    with open(os.path.join(directory, name)) as f:
        return f.read().splitlines()


def _write_stats(out_dir: str, s, results, scheduler) -> None:
    with open(os.path.join(out_dir, "stats.json"), "w") as f:
        json.dump({"mode": s.mode, "workers": s.workers, "packets": s.packets_in,
                   "seconds": round(s.seconds, 3), "warmup_seconds": round(s.warmup_seconds, 3),
                   "paths": s.paths, "drops": dict(s.drops),
                   "time_split": {k: round(v, 3) for k, v in s.time_split.items()},
                   "datapath": s.datapath_stats, "conntrack": s.conntrack_counters,
                   "dask": {"scheduler": scheduler if isinstance(scheduler, str) else "client",
                            "shards": s.workers, "note": s.workers_note,
                            "shard_time_split": [{k: round(v, 3) for k, v in
                                                  r["time_split"].items()} for r in results],
                            "shard_seconds": [round(r["seconds"], 3) for r in results]}},
                  f, indent=2)  # fmt: skip
