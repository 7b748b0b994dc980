"""Replay captures through the engine and write what happened.

What: ``ctaccel replay``: load rules, read every input capture, merge their packets by
timestamp (ties: order of the inputs, then file order), run each packet through the engine
with its timestamp as the clock, and write DIR/port-N.pcap, DIR/controller.pcap,
DIR/packets.jsonl, DIR/conntrack.txt, DIR/flows.txt.

Design: everything that can fail on bad input (rules, captures) is checked before DIR is
touched, so a bad invocation writes nothing. The compiled modes stream (replay_batches.py):
inputs are read and merged a chunk at a time and outputs written a batch at a time, so
memory holds the tables, the open writers and one batch, whatever the captures' size. The
reference mode works a packet at a time over whole-capture record indexes (24 bytes per
packet): it is the semantics, not the fast path.

Invariants: packets.jsonl has exactly one line per input packet, in processing order.
"""

from __future__ import annotations

import heapq
import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field

from ctaccel.conntrack import Conntrack
from ctaccel.datapath.reference import CONTROLLER, ReferenceEngine
from ctaccel.errors import InputError
from ctaccel.io.pcap import CaptureStream, PcapWriter, read_capture
from ctaccel.ofproto.bridge import Bridge
from ctaccel.ofproto.classifier import FlowTables
from ctaccel.ofproto.dumpflows import format_dump_flows
from ctaccel.ofproto.rules import load_flows

SWEEP_EVERY = 4096  # packets between sweep steps (Conntrack.sweep_some: memory bound only)
# Packets per engine call: the per-batch Python (engine call, output building) is ~0.2 ms,
# so small batches would cost more than the datapath; SWEEP_EVERY is a multiple of it.
REPLAY_BATCH = 4096


@dataclass
class ReplaySummary:
    packets_in: int = 0
    packets_out: int = 0  # frames emitted on ports (not the controller)
    to_controller: int = 0
    drops: Counter = field(default_factory=Counter)
    connections: int = 0
    out_dir: str = ""
    engine_counters: dict = field(default_factory=dict)
    conntrack_counters: dict = field(default_factory=dict)
    mode: str = "reference"
    seconds: float = 0.0
    warmup_seconds: float = 0.0
    paths: dict = field(default_factory=dict)
    datapath_stats: dict = field(default_factory=dict)
    time_split: dict = field(default_factory=dict)  # reading, datapath, writing, waiting (s)
    imported: dict = field(default_factory=dict)  # --ct-import: rows per outcome
    workers: int = 1  # engines the packets were sharded over
    workers_note: str = ""  # why fewer workers than asked ran


def merged_order(captures):
    """Yield (input index, record index) of every packet in processing order: a k-way merge
    by timestamp; ties go to the earlier input; within one input the file order is kept even
    if its timestamps step back (the clock then stands still: see ``iter_packets``). Streams,
    so memory does not grow with the number of packets."""

    def records(i, cap):
        ts = cap.ts_ns
        for r in range(len(ts)):
            yield int(ts[r]), i, r

    for _ts, i, r in heapq.merge(*(records(i, c) for i, c in enumerate(captures))):
        yield i, r


def parse_inputs(specs) -> list[tuple[int, str]]:
    """``["1=a.pcap", "2=b.pcapng"]`` -> ``[(1, "a.pcap"), (2, "b.pcapng")]``."""
    out = []
    for spec in specs:
        port, sep, path = str(spec).partition("=")
        if not sep or not port.strip().isdigit() or not path:
            raise InputError(f"--in {spec!r}: expected PORT=PCAP, e.g. 1=client.pcap")
        p = int(port)
        if not 1 <= p <= 0xFEFF:
            raise InputError(f"--in {spec!r}: port must be 1..65279")
        out.append((p, path))
    return out


def build_conntrack(zone_limits=None, timeout_policies=None, **ct_kwargs) -> Conntrack:
    """A connection tracker with ``--zone-limit`` style limits ({zone or "default": n}) and
    ``--timeout-policy`` policies ({zone or "default": {OVS name: seconds}})."""
    limits = dict(zone_limits or {})
    default = limits.pop("default", None)
    if default is not None:
        ct_kwargs["default_zone_limit"] = int(default)
    ct = Conntrack(**ct_kwargs)
    for zone, limit in limits.items():
        ct.set_zone_limit(int(zone), int(limit))
    for zone, values in (timeout_policies or {}).items():
        ct.set_timeout_policy(None if zone == "default" else int(zone), values)
    return ct


def load_inputs(inputs):
    """Read every capture (all before any output is written)."""
    return [read_capture(str(path)) for _port, path in inputs], [int(p) for p, _ in inputs]


def open_streams(inputs):
    """Every capture as a CaptureStream, each checked whole before any output is written."""
    return [CaptureStream(str(path)) for _port, path in inputs], [int(p) for p, _ in inputs]


def iter_packets(captures, ports):
    """Yield (n, in_port, frame ndarray, ts_ns, now_ms) in processing order (n 1-based)."""
    now_ms = 0
    for n, (i, r) in enumerate(merged_order(captures), 1):
        cap = captures[i]
        off, ln = int(cap.offsets[r]), int(cap.lengths[r])
        ts_ns = int(cap.ts_ns[r])
        now_ms = max(now_ms, ts_ns // 1_000_000)  # the clock never goes back
        yield n, ports[i], cap.data[off : off + ln], ts_ns, now_ms


MODES = ("assume-established", "recirc", "reference")
PACKET_FORMATS = ("jsonl", "parquet", "none")


def _reference_results(engine, packets, changes=()):
    """(n, in_port, ts_ns, now_ms, PacketResult) per packet, one packet at a time; the rule
    ``changes`` (ms after the first packet's clock, rules) put in place as the clock reaches
    them (see replay_batches.run_batches)."""
    pending, base = list(changes), None
    for n, in_port, frame, ts_ns, now_ms in packets:
        base = now_ms if base is None else base
        while pending and now_ms >= base + pending[0][0]:
            engine.replace_flows(pending.pop(0)[1])
        res = engine.process(frame, in_port, now_ms)
        res.path = "reference"
        yield n, in_port, ts_ns, now_ms, res


def run_quietly(flows_path, inputs, *, zone_limits=None, stop_before=None,
                mode="assume-established", bridge=None, timeout_policies=None):  # fmt: skip
    """Process the inputs and keep only the engine's final state (dump commands, trace).
    With ``stop_before=N``, packets 1..N-1 are processed and packet N is left in
    ``engine.next_packet`` as (n, in_port, frame, now_ms)."""
    engine = make_engine(flows_path, mode, zone_limits, bridge=bridge,
                         timeout_policies=timeout_policies)  # fmt: skip
    engine.last_now_ms = 0
    engine.next_packet = None
    if mode != "reference":
        from ctaccel.replay_batches import packet_at, run_batches

        streams, ports = open_streams(inputs)
        limit = None if stop_before is None else max(stop_before - 1, 0)
        engine.last_now_ms, _split = run_batches(engine, streams, ports, None, 0, limit=limit)
        if stop_before is not None:
            engine.next_packet = packet_at(*open_streams(inputs), stop_before)
        return engine
    captures, ports = load_inputs(inputs)

    def prefix():
        for item in iter_packets(captures, ports):
            if stop_before is not None and item[0] >= stop_before:
                engine.next_packet = (item[0], item[1], item[2], item[4])
                return
            yield item

    for _n, _port, _ts, now_ms, _res in _reference_results(engine, prefix()):
        engine.last_now_ms = now_ms
    return engine


def load_tables(flows_path) -> FlowTables:
    """The rule file as one FlowTables, to share between the engines that run it."""
    return FlowTables(load_flows(str(flows_path)))


def make_engine(flows_path, mode, zone_limits=None, tables: FlowTables | None = None,
                bridge: str | None = None, timeout_policies=None):  # fmt: skip
    """The engine for ``mode``: the reference engine or the compiled one, over ``tables``
    (loaded from ``flows_path`` when None). ``bridge``: NORMAL's ports (``--bridge``,
    ofproto/bridge.py parse_ports); None: the ports the rules name and packets arrive on.
    ``timeout_policies``: conntrack/timeouts.parse_timeout_policies' result."""
    if mode not in MODES:
        raise InputError(f"--mode {mode!r}: expected one of {', '.join(MODES)}")
    switch = Bridge.parse(bridge) if bridge else None
    if tables is None:
        tables = load_tables(flows_path)
    conntrack = build_conntrack(zone_limits, timeout_policies)
    if mode == "reference":
        return ReferenceEngine(tables, conntrack, bridge=switch)
    from ctaccel.datapath.engine import DatapathEngine

    return DatapathEngine(tables, mode=mode, conntrack=conntrack, batch_size=REPLAY_BATCH,
                          bridge=switch)  # fmt: skip


def _engine_for(flows_path, mode, zone_limits, bridge, timeout_policies, asked):
    """The replay's engine and, when ``asked`` = (workers, ct_import, rule changes) wanted
    more than one worker but one runs, why (workers.sharding_blockers; imported
    connections)."""
    workers, ct_import, changes = asked
    if workers < 1:
        raise InputError(f"--workers {workers}: expected 1 or more")
    tables = load_tables(flows_path)
    engine = make_engine(flows_path, mode, zone_limits, tables, bridge, timeout_policies)
    if workers == 1 or mode == "reference":
        return engine, ("the reference engine runs one packet at a time"
                        if workers > 1 else "")  # fmt: skip
    from ctaccel.workers import ShardedEngine, sharding_blockers

    why = sharding_blockers(tables, engine.conntrack, engine.bridge if bridge else None,
                            changes)  # fmt: skip
    if ct_import is not None:
        why.append("--ct-import (connections loaded into one table)")
    if why:
        return engine, "one worker: " + "; ".join(why) + " keep state across connections"
    return ShardedEngine(tables, workers, mode, REPLAY_BATCH,
                         lambda: build_conntrack(zone_limits, timeout_policies)), ""  # fmt: skip


def parse_flows_at(specs) -> list[tuple[int, FlowTables]]:
    """``SECONDS=FILE`` items (replay --flows-at) as (ms, the file's rules), in time order;
    every file read and checked now (InputError/RuleError), before anything is written."""
    out = []
    for spec in specs or ():
        secs, sep, path = str(spec).partition("=")
        try:
            ms = round(float(secs) * 1000)
        except ValueError:
            ms = -1
        if not sep or not path or ms < 0:
            raise InputError(f"--flows-at {spec!r}: expected SECONDS=FILE with SECONDS >= 0")
        out.append((ms, load_tables(path)))
    return sorted(out, key=lambda c: c[0])


def first_packet_ms(inputs) -> int:
    """The capture clock (ms) at the first packet of the inputs (0 when they are empty)."""
    firsts = []
    for _port, path in inputs:
        ts = CaptureStream(str(path)).next_chunk(1)[2]
        if len(ts):
            firsts.append(int(ts[0]) // 1_000_000)
    return min(firsts, default=0)


def import_table(engine, path, zone_map=None, *, inputs=()) -> dict:
    """``--ct-import``: the connections of a saved table (conntrack -L or dpctl/dump-conntrack
    lines, conntrack/ct_text.py) made live in ``engine``'s conntrack, their timeouts counted
    from the first packet of the inputs; rows per outcome."""
    from ctaccel.conntrack.ct_text import read_table

    entries, peers = read_table(str(path))
    return engine.conntrack.import_entries(entries, first_packet_ms(inputs), zone_map, peers)


def replay(flows_path, inputs, out_dir, *, zone_limits=None, progress=False,
           mode="assume-established", packets="jsonl", flows_at=(), bridge=None,
           ct_import=None, timeout_policies=None, workers: int = 1) -> ReplaySummary:  # fmt: skip
    """Run the replay; see the module docstring. Raises InputError/RuleError before writing.
    ``progress``: a rich Console to show progress on (long replays only), or False.
    ``workers``: connection-sharded engines run side by side (ctaccel/workers.py), when
    nothing in the configuration keeps state across connections (else one, and
    ``summary.workers_note`` says why).
    ``packets``: "jsonl" writes packets.jsonl, "parquet" packets.parquet (the compiled modes),
    "none" no per-packet results. ``flows_at``: SECONDS=FILE rule changes (the file's rules
    replace the rule set when the capture clock is SECONDS past the first packet's).
    ``ct_import``: (path, zone map) of a saved conntrack table to start from
    (:func:`import_table`). ``timeout_policies``: zone timeout policies (make_engine)."""
    changes = parse_flows_at(flows_at)
    if packets not in PACKET_FORMATS:
        raise InputError(f"--packets {packets!r}: expected one of {', '.join(PACKET_FORMATS)}")
    if packets == "parquet" and mode == "reference":
        raise InputError("--packets parquet: the reference mode writes jsonl (or none)")
    engine, note = _engine_for(flows_path, mode, zone_limits, bridge, timeout_policies,
                               (workers, ct_import, changes))  # fmt: skip
    imported = {} if ct_import is None else import_table(engine, *ct_import, inputs=inputs)
    if mode == "reference":
        captures, ports = load_inputs(inputs)
        total = sum(len(c.ts_ns) for c in captures)
    else:
        streams, ports = open_streams(inputs)
        total = sum(len(st) for st in streams)
    out_dir = str(out_dir)
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create output directory {out_dir!r}: {e.strerror}") from e

    summary = ReplaySummary(out_dir=out_dir, packets_in=total, mode=mode, imported=imported,
                            workers=getattr(engine, "workers", 1), workers_note=note)  # fmt: skip
    now_ms = 0
    paths: Counter = Counter()
    bar = _progress(total, progress)
    if mode != "reference":
        from ctaccel.datapath.warmup import warm_up
        from ctaccel.replay_batches import warm_up_writer

        # compile, or load compiled kernels from the cache: the engine's, the writer's
        summary.warmup_seconds = warm_up() + warm_up_writer()
    t0 = time.perf_counter()
    if mode == "reference":
        results = _reference_results(engine, iter_packets(captures, ports), changes)
        now_ms = _write_per_packet(engine, results, (out_dir, packets), summary, paths, bar)
    else:
        from ctaccel.replay_batches import BatchWriter, run_batches

        writer = BatchWriter(out_dir, packets)
        try:
            now_ms, summary.time_split = run_batches(engine, streams, ports, writer, SWEEP_EVERY,
                                                     bar, changes=changes)  # fmt: skip
        finally:
            writer.close()
            if bar is not None:
                bar.finish()
            if hasattr(engine, "close"):
                engine.close()
        summary.packets_out, summary.to_controller = writer.packets_out, writer.to_controller
        summary.drops.update(writer.drops)
        paths.update(writer.paths)
    summary.seconds = time.perf_counter() - t0
    with open(os.path.join(out_dir, "conntrack.txt"), "w") as f:
        lines = engine.conntrack.dump(now_ms)
        summary.connections = len(lines)
        f.write("".join(line + "\n" for line in lines))
    with open(os.path.join(out_dir, "flows.txt"), "w") as f:
        f.write(format_dump_flows(engine.tables.all_rules(), engine.rule_counters()))
    summary.paths = dict(paths)
    summary.engine_counters = dict(getattr(engine, "counters", {}))
    summary.conntrack_counters = dict(engine.conntrack.counters)
    summary.datapath_stats = dict(engine.stats) if mode != "reference" else {}
    with open(os.path.join(out_dir, "stats.json"), "w") as f:
        json.dump({"mode": mode, "workers": summary.workers, "packets": total,
                   "seconds": round(summary.seconds, 3),
                   "warmup_seconds": round(summary.warmup_seconds, 3),
                   "paths": summary.paths, "drops": dict(summary.drops),
                   "time_split": {k: round(v, 3) for k, v in summary.time_split.items()},
                   "datapath": summary.datapath_stats,
                   "conntrack": summary.conntrack_counters}, f, indent=2)  # fmt: skip
    return summary


def _write_per_packet(engine, results, out, summary, paths, bar) -> int:
    """The reference engine's results, a packet at a time (its engine works that way), to
    ``out`` = (directory, "jsonl" or "none")."""
    out_dir, packets = out
    writers: dict = {}
    now_ms = 0
    jsonl = os.path.join(out_dir, "packets.jsonl") if packets == "jsonl" else os.devnull
    try:
        with open(jsonl, "w") as jl:
            for n, in_port, ts_ns, now_ms, res in results:
                for port, out_frame in res.outputs:
                    w = writers.get(port)
                    if w is None:
                        name = "controller.pcap" if port == CONTROLLER else f"port-{port}.pcap"
                        w = writers[port] = PcapWriter(os.path.join(out_dir, name))
                    w.write(out_frame, ts_ns)
                    if port == CONTROLLER:
                        summary.to_controller += 1
                    else:
                        summary.packets_out += 1
                if res.drop_reason:
                    summary.drops[res.drop_reason] += 1
                paths[res.path] += 1
                record = {"n": n, "in_port": in_port, "out": res.out_ports,
                          "ct_state": res.ct_state, "drop_reason": res.drop_reason,
                          "path": res.path}  # fmt: skip
                jl.write(json.dumps(record) + "\n")
                if n % SWEEP_EVERY == 0:
                    engine.conntrack.sweep_some(now_ms)
                if bar is not None and n % 1024 == 0:
                    bar.advance(1024)
    finally:
        for w in writers.values():
            w.close()
        if bar is not None:
            bar.finish()
    return now_ms


class _Bar:
    """A rich progress bar (packets, packets/s, time left) for a replay that runs longer than
    SHOW_AFTER_S: it appears only then, and leaves no trace when done."""

    SHOW_AFTER_S = 2.0

    def __init__(self, total, console):
        self._total, self._console = total, console
        self._t0 = time.perf_counter()
        self._done = 0
        self._p = None

    def _start(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        self._p = Progress("replay", BarColumn(), MofNCompleteColumn(), _rate_column(),
                           TimeRemainingColumn(), console=self._console,
                           transient=True)  # fmt: skip
        self._p.start()
        self._task = self._p.add_task("replay", total=self._total, completed=self._done)

    def advance(self, n):
        self._done += n
        if self._p is None and time.perf_counter() - self._t0 >= self.SHOW_AFTER_S:
            self._start()
        elif self._p is not None:
            self._p.advance(self._task, n)

    def finish(self):
        if self._p is not None:
            self._p.stop()


def _rate_column():
    """A progress column showing packets per second."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task):
            return Text(f"{task.speed / 1e3:,.0f} kpps" if task.speed else "", style="cyan")

    return RateColumn()


def _progress(total, console):
    """The bar, where a person watches: not with --quiet, not on a non-terminal (CI logs)."""
    if not console or total < 20_000 or not console.is_terminal:
        return None
    if os.environ.get("CI") == "true":
        return None
    return _Bar(total, console)
