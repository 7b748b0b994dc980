"""Timed runs of a workload through the datapath engine: the benchmark's measurements.

What: the workload files (:func:`cached_workload`, :func:`workload_info`), the capture in
memory (:func:`load_capture`), one timed run through a fresh engine (:func:`one_run`: Mpps,
ns/packet, recirculations/packet, fast-path share, upcalls, connections created and NEW
packets per second, memory per connection, the share of the time spent in the Python slow
path, a digest of the per-packet results), one timed replay of the capture from its file to
output files through the replay's batched path (:func:`replay_run`: what ``ctaccel replay``
does once started), and :func:`measure` / :func:`measure_interleaved`, which take several
runs of one or more configurations of a workload in turn.

Design:
- The capture is loaded once into one contiguous writable buffer with offset, length,
  in_port and now_ms arrays; none of that is timed. Each run builds a fresh engine (fresh
  conntrack, empty caches) over the configuration's one FlowTables (parsed once, shared by
  every run) and times only the ``engine.run`` calls, batch by batch, with
  ``time.perf_counter``. Before the runs one untimed run over the start of the capture
  makes numba compile (or load) the kernels for exactly these argument types. The
  configurations of one workload take their runs in turn, so a machine whose speed drifts
  (shared hosts do) slows them alike.
- Everything is read through the engine's public hooks: ``slow_path_seconds`` (the engine
  times its upcalls and reference-engine packets itself), ``stats``, ``memory_bytes()`` and
  BatchResult's whole-batch arrays. The slow-path share is slow-path time / total ``run``
  time; the rest is compiled code.
- Per-packet results of the first run are folded into a digest (output ports per packet in
  order, ct_state seen, drop reason) outside the timed region, so the two modes can be
  checked to agree on every packet of the benchmark captures.

Invariants: medians are over runs of the same measurement; every run starts from an empty
conntrack and empty caches; nothing is written but the workload files asked for (a replay
run writes its outputs into a temporary directory, removed after it).
"""

from __future__ import annotations

import gc
import hashlib
import json
import time
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from ctaccel.bench import workloads as W
from ctaccel.bench.report import STATELESS, Measurement, RunResult

DEFAULT_REPEATS = 5
DEFAULT_BATCH = 1024
WARM_RUN_PACKETS = 20_000  # untimed run before the repeats: compiles for these argument types
MODES = ("recirc", "assume-established")
_CS_NEW = 0x01  # ct_state bit "new" (packet/key.py CS_NEW)


# --- the workload files -----------------------------------------------------------------------


def workload_info(w: W.Workload) -> dict:
    """What the report says about a workload (its JSON ``workload`` field)."""
    return {
        "name": w.pcap_path.stem,
        "kind": w.kind + ("+snat" if "-snat-" in w.pcap_path.name else ""),
        "packets": w.packets,
        "flows": w.established_flows,
        "unidirectional_flows": w.unidirectional_flows,
        "connections": w.flows,
        "new_share": w.new_share,
        "frame_size": w.frame_size,
        "pcap": str(w.pcap_path),
        "rules": str(w.flows_path),
        "stateless_rules": str(w.stateless_flows_path),
    }


def cached_workload(kind: str, flows: int, packets: int | None, new_fraction: float | None,
                    directory, nat: str | None = None) -> W.Workload:  # fmt: skip
    """The workload from ``directory`` if it was generated before, else generate it."""
    # _check resolves the default packet count and frame size exactly as generate() does.
    kind, frame_size, _u, n = W._check(kind, flows, packets, None, False, 0, new_fraction)
    stem = W.workload_stem(kind, flows, n, frame_size, False, 0, new_fraction, nat)
    directory = Path(directory)
    w = workload_from_manifest(directory / f"{stem}.json")
    if w is not None:
        return w
    return W.generate(kind, flows, packets, new_fraction=new_fraction, out_dir=directory, nat=nat)


def workload_from_manifest(manifest: Path) -> W.Workload | None:
    """The workload a manifest (``<stem>.json`` next to its pcap) describes, or None when it
    is missing, unreadable or names files that are gone."""
    if not manifest.is_file():
        return None
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
        names = {f.name for f in fields(W.Workload)}
        args = {k: v for k, v in data.items() if k in names}
        for k in ("pcap_path", "flows_path", "stateless_flows_path", "manifest_path"):
            args[k] = Path(args[k])
        w = W.Workload(**args)
    except (ValueError, KeyError, TypeError):
        return None
    if all(Path(p).is_file() for p in (w.pcap_path, w.flows_path, w.stateless_flows_path)):
        return w
    return None


# --- the capture in memory --------------------------------------------------------------------


@dataclass
class LoadedCapture:
    """A capture as the engine takes it: one writable buffer plus per-packet arrays."""

    path: str
    buf: np.ndarray  # uint8, contiguous, writable
    offsets: np.ndarray  # int64
    lengths: np.ndarray  # int64
    in_ports: np.ndarray  # int64
    now_ms: np.ndarray  # int64, never decreasing

    @property
    def packets(self) -> int:
        return int(self.offsets.shape[0])

    def head(self, n: int) -> LoadedCapture:
        """The first ``n`` packets (views, same buffer)."""
        return LoadedCapture(self.path, self.buf, *(a[:n] for a in (
            self.offsets, self.lengths, self.in_ports, self.now_ms)))  # fmt: skip


def load_capture(path, in_port: int = W.IN_PORT) -> LoadedCapture:
    """Read a capture into memory (copied out of the memory map, so it is writable)."""
    from ctaccel.io.pcap import read_capture

    cap = read_capture(str(path))
    buf = np.array(cap.data, dtype=np.uint8, copy=True, order="C")
    now_ms = np.maximum.accumulate(cap.ts_ns // 1_000_000) if len(cap) else cap.ts_ns.copy()
    return LoadedCapture(
        path=str(path),
        buf=buf,
        offsets=np.ascontiguousarray(cap.offsets, np.int64),
        lengths=np.ascontiguousarray(cap.lengths, np.int64),
        in_ports=np.full(len(cap), in_port, np.int64),
        now_ms=np.ascontiguousarray(now_ms, np.int64),
    )


# --- one run ----------------------------------------------------------------------------------


def load_tables(workload: W.Workload, rules: str):
    """The FlowTables of ``workload``'s "ct" or stateless rules: one per configuration,
    shared by the engines of all its runs."""
    from ctaccel.ofproto.classifier import FlowTables
    from ctaccel.ofproto.rules import parse_flows

    path = workload.stateless_flows_path if rules == STATELESS else workload.flows_path
    return FlowTables(parse_flows(Path(path).read_text(encoding="utf-8"), str(path)))


def _fold_results(digest, br) -> int:
    """Add one batch's per-packet results to ``digest``; returns its NEW packets."""
    nout = br.n_outputs().copy()
    ct_state = br.ct_state_codes().copy()
    drop = br.drop_codes().copy()
    ports = br.output_ports()  # every packet's outputs, in packet order (no per-packet Python)
    slow_ports = []
    for i, r in sorted(br.slow.items()):  # packets the reference engine processed (rare)
        nout[i], drop[i] = len(r.out_ports), -1
        slow_ports.append(f"{i}:{r.out_ports}:{r.ct_state}:{r.drop_reason}")
        ct_state[i] = -2
    for part in (np.int64(len(nout)), nout, ct_state, drop, np.asarray(ports, np.int64)):
        digest.update(np.ascontiguousarray(part, np.int64).tobytes())
    digest.update("|".join(slow_ports).encode())
    return int(np.count_nonzero((ct_state >= 0) & ((ct_state & _CS_NEW) != 0)))


def memory_summary(engine) -> dict:
    """The engine's table bytes (conntrack, megaflow, fast path) and per connection."""
    mem = engine.memory_bytes()
    conns = mem["connections"]
    table = mem["conntrack_bytes"]
    caches = table + mem["megaflow_bytes"] + mem["fast_path_bytes"]
    mem["bytes_per_connection_conntrack"] = table / conns if conns else None
    mem["bytes_per_connection_total"] = caches / conns if conns else None
    return mem


def _conntrack(policies):
    """The engine's connection tracker: the default one, or one with ``--timeout-policy``."""
    from ctaccel.replay import build_conntrack

    return build_conntrack(None, policies) if policies else None


def one_run(tables, loaded: LoadedCapture, mode: str, batch_size: int = DEFAULT_BATCH,
            fingerprint: bool = False, policies=None) -> RunResult:  # fmt: skip
    """``loaded`` through a fresh engine in ``mode`` over ``tables``, timed batch by batch
    (``policies``: zone timeout policies, conntrack/timeouts.parse_timeout_policies)."""
    from ctaccel.datapath.engine import DatapathEngine

    engine = DatapathEngine(tables, mode=mode, batch_size=batch_size,
                            conntrack=_conntrack(policies))  # fmt: skip
    created_before = engine.conntrack.counters["created"]
    digest = hashlib.sha256() if fingerprint else None
    new_packets = 0
    buf, offs, lens, ports, now = (loaded.buf, loaded.offsets, loaded.lengths,
                                   loaded.in_ports, loaded.now_ms)  # fmt: skip
    n = loaded.packets
    gc.collect()
    elapsed = 0.0
    for lo in range(0, n, batch_size):
        hi = min(n, lo + batch_size)
        o, ln, p, t = offs[lo:hi], lens[lo:hi], ports[lo:hi], now[lo:hi]
        t0 = time.perf_counter()
        br = engine.run(buf, o, ln, p, t)
        elapsed += time.perf_counter() - t0
        if digest is not None:
            new_packets += _fold_results(digest, br)
    stats = engine.stats
    created = engine.conntrack.counters["created"] - created_before
    packets = max(n, 1)
    seconds = max(elapsed, 1e-12)
    slow = engine.slow_path_seconds
    return RunResult(
        seconds=elapsed,
        packets=n,
        mpps=n / seconds / 1e6,
        ns_per_packet=seconds * 1e9 / packets,
        recirculations_per_packet=stats["recirculations"] / packets,
        fast_path_share=stats["fast_path_hits"] / packets,
        ct_executions_per_packet=stats["ct_executions"] / packets,
        upcalls=stats["upcalls"],
        slow_path_packets=stats["slow_path_packets"],
        connections_created=created,
        connections_per_s=created / seconds,
        slow_path_seconds=slow,
        slow_path_share=slow / seconds,
        fast_path_seconds=elapsed - slow,
        memory=memory_summary(engine),
        engine_stats=stats,
        results_digest=digest.hexdigest() if digest is not None else None,
        new_packets=new_packets if digest is not None else None,
        new_packets_per_s=new_packets / seconds if digest is not None else None,
    )


# --- measurements -----------------------------------------------------------------------------


def measure(workload: W.Workload, mode: str, repeats: int = DEFAULT_REPEATS,
            batch_size: int = DEFAULT_BATCH, *, rules: str = "ct",
            loaded: LoadedCapture | None = None) -> Measurement:  # fmt: skip
    """Run ``workload`` through a fresh engine in ``mode``, ``repeats`` times.

    ``rules`` is "ct" (the conntrack firewall) or "stateless"; ``loaded`` is the capture
    already in memory (loaded here when None)."""
    return measure_interleaved(workload, [(mode, rules)], repeats, batch_size,
                               loaded=loaded)[0]  # fmt: skip


def replay_run(tables, pcap_path, mode: str, policies=None) -> dict:
    """The capture through a fresh engine in ``mode`` the way ``ctaccel replay`` runs it
    (replay_batches.run_batches: streamed from the file, packets.jsonl and the per-port
    captures written by the writer's thread), timed from the first read to the last write:
    seconds, Mpps, ns/packet and the time split."""
    import shutil
    import tempfile

    from ctaccel import replay as RP
    from ctaccel.datapath.engine import DatapathEngine
    from ctaccel.io.pcap import CaptureStream
    from ctaccel.replay_batches import BatchWriter, run_batches

    engine = DatapathEngine(tables, mode=mode, batch_size=RP.REPLAY_BATCH,
                            conntrack=_conntrack(policies))  # fmt: skip
    out = tempfile.mkdtemp(prefix="ctaccel-bench-replay-")
    try:
        streams = [CaptureStream(str(pcap_path))]
        packets = len(streams[0])
        writer = BatchWriter(out, "jsonl")
        gc.collect()
        t0 = time.perf_counter()
        try:
            _now, split = run_batches(engine, streams, [W.IN_PORT], writer, RP.SWEEP_EVERY)
        finally:
            writer.close()
        seconds = time.perf_counter() - t0
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {"seconds": seconds, "packets": packets, "mpps": packets / seconds / 1e6,
            "ns_per_packet": seconds * 1e9 / max(packets, 1),
            "time_split": {k: round(v, 4) for k, v in split.items()}}  # fmt: skip


def measure_interleaved(workload: W.Workload, runs, repeats: int = DEFAULT_REPEATS,
                        batch_size: int = DEFAULT_BATCH, *, loaded: LoadedCapture | None = None,
                        on_run=None, replay: bool = False,
                        policies=None) -> list[Measurement]:  # fmt: skip
    """:func:`measure` for several ``(mode, rules)`` on one workload, their repeats taken in
    turn (repeat 1 of each, then repeat 2 of each, ...): on a shared machine whose speed drifts,
    every configuration then sees the same stretch of time and the ratios of their medians
    stay fair. ``on_run()`` is called after each run (progress). One result per ``runs`` item.
    ``replay``: each repeat also replays the capture file to output files
    (:func:`replay_run`) in each conntrack configuration's mode, the same way in turn.
    ``policies``: zone timeout policies for every engine."""
    for mode, rules in runs:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if rules not in ("ct", STATELESS):
            raise ValueError(f"rules must be 'ct' or 'stateless', not {rules!r}")
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    if loaded is None:
        loaded = load_capture(workload.pcap_path)
    tables = {rules: load_tables(workload, rules) for _m, rules in runs}
    # Untimed: compile or load the kernels for these exact argument types.
    warm = loaded.head(WARM_RUN_PACKETS)
    for mode, rules in runs:
        one_run(tables[rules], warm, mode, batch_size, policies=policies)
        if on_run:
            on_run()
    if replay:
        from ctaccel.replay_batches import warm_up_writer

        warm_up_writer()
    done: list[list[RunResult]] = [[] for _ in runs]
    replays: list[list[dict]] = [[] for _ in runs]
    for i in range(repeats):
        for k, (mode, rules) in enumerate(runs):
            done[k].append(one_run(tables[rules], loaded, mode, batch_size, fingerprint=(i == 0),
                                   policies=policies))  # fmt: skip
            if on_run:
                on_run()
        for k, (mode, rules) in enumerate(runs):
            if replay and rules == "ct":
                replays[k].append(replay_run(tables[rules], workload.pcap_path, mode, policies))
    info = workload_info(workload)
    return [Measurement(info, mode, rules, done[k], batch_size, replay=replays[k] or None)
            for k, (mode, rules) in enumerate(runs)]  # fmt: skip
