"""The talk's experiments, measured: throughput and costs of both datapath modes.

What: :func:`measure` runs one workload through :class:`DatapathEngine` in one mode, several
times, and returns the medians and every repeat: Mpps, ns/packet, recirculations/packet,
fast-path share, upcalls, connections created and NEW packets per second, memory per
connection, and the share of the time spent in the Python slow path. :func:`run_bench`
generates (or reuses) the workloads, measures experiments A and B in both modes plus the
stateless rule set (our own ceiling), the optional sweeps over flow count and NEW fraction,
cold and warm start-up, writes ``bench-<timestamp>.json`` + ``latest.json`` and the PNGs,
and prints a table with the assume-established / recirc ratios. :func:`compare_with_ovs_dpdk`
runs the real OVS-DPDK (``benchmarks/ovs_dpdk.py``) on the very same captures and rules.

Design:
- The capture is loaded once into one contiguous writable buffer with offset, length,
  in_port and now_ms arrays; none of that is timed. Each repeat builds a fresh engine (fresh
  conntrack, empty caches) and times only the ``engine.run`` calls, batch by batch, with
  ``time.perf_counter``. Before the repeats one untimed run over the start of the capture
  makes numba compile (or load) the kernels for exactly these argument types. The
  configurations of one workload (both modes, the stateless rules) take their repeats in
  turn, so a machine whose speed drifts (shared hosts do) slows them alike.
- The slow path is timed by wrapping the engine instance's ``_upcall`` and its reference
  engine's ``process`` (instance attributes shadow the methods; nothing in the engine
  changes). Its share is slow-path time / total ``run`` time; the rest is compiled code.
- Per-packet results of the first repeat are folded into a digest (output ports per packet
  in order, ct_state seen, drop reason) outside the timed region, so the two modes can be
  checked to agree on every packet of the benchmark captures.
- Start-up is measured in fresh subprocesses: cold with an empty ``NUMBA_CACHE_DIR`` under a
  temporary directory (compile everything), warm with this process's cache (load it).
- Ratios are taken between measurements of one run on one machine, never across runs: the
  median of the per-repeat ratios of configurations whose repeats alternated (and, beside
  it, the ratio of the medians).

Invariants: medians are over repeats of the same measurement; every repeat starts from an
empty conntrack and empty caches; nothing outside ``out_dir`` is written.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from ctaccel.bench import workloads as W

DEFAULT_FLOWS = 10_000
DEFAULT_REPEATS = 5
DEFAULT_BATCH = 1024
QUICK_FLOWS = 1_000
QUICK_PACKETS = 50_000
QUICK_REPEATS = 2
WARM_RUN_PACKETS = 20_000  # untimed run before the repeats: compiles for these argument types
STARTUP_TIMEOUT_S = 900
MODES = ("recirc", "assume-established")
STATELESS = "stateless"  # the stateless rule set, run in recirc mode: our own ceiling
_CS_NEW = 0x01  # ct_state bit "new" (packet/key.py CS_NEW)


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


# --- one measurement ------------------------------------------------------------------------


def _rules_text(workload: W.Workload, rules: str) -> tuple[str, str]:
    path = workload.stateless_flows_path if rules == STATELESS else workload.flows_path
    return Path(path).read_text(encoding="utf-8"), str(path)


def _new_engine(workload: W.Workload, mode: str, rules: str, batch_size: int):
    from ctaccel.datapath.engine import DatapathEngine
    from ctaccel.ofproto.rules import parse_flows

    text, name = _rules_text(workload, rules)
    return DatapathEngine(parse_flows(text, name), mode=mode, batch_size=batch_size)


def _instrument_slow_path(engine) -> list[float]:
    """Time every upcall and every packet left to the reference engine; returns the
    accumulator ``[seconds]`` the wrappers add to."""
    spent = [0.0]
    upcall, reference = engine._upcall, engine.reference.process

    def timed_upcall():
        t0 = time.perf_counter()
        try:
            upcall()
        finally:
            spent[0] += time.perf_counter() - t0

    def timed_reference(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return reference(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - t0

    engine._upcall = timed_upcall
    engine.reference.process = timed_reference
    return spent


def _fold_results(digest, br) -> int:
    """Add one batch's per-packet results to ``digest``; returns its NEW packets."""
    from ctaccel.datapath import layout as KR

    res = br.res
    n = res.shape[0]
    nout = res[:, KR.R_NOUT].copy()
    ct_state = res[:, KR.R_CT_STATE].copy()
    drop = res[:, KR.R_DROP].copy()
    starts = res[:, KR.R_OUT_START]
    # Outputs of every packet, in packet order (a gather: no per-packet Python).
    total = int(nout.sum())
    first = np.repeat(starts, nout)
    within = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(nout) - nout, nout)
    ports = br.out_ports[first + within] if total else np.zeros(0, np.int64)
    slow_ports = []
    for i, r in sorted(br.slow.items()):  # packets the reference engine processed (rare)
        nout[i], drop[i] = len(r.out_ports), -1
        slow_ports.append(f"{i}:{r.out_ports}:{r.ct_state}:{r.drop_reason}")
        ct_state[i] = -2
    for part in (np.int64(n), nout, ct_state, drop, np.asarray(ports, np.int64)):
        digest.update(np.ascontiguousarray(part, np.int64).tobytes())
    digest.update("|".join(slow_ports).encode())
    return int(np.count_nonzero((ct_state >= 0) & ((ct_state & _CS_NEW) != 0)))


def _array_bytes(arrays) -> int:
    return int(sum(a.nbytes for a in arrays))


def _memory(engine, mode: str) -> dict:
    """Bytes held by the conntrack, megaflow and (assume-established only) fast-path arrays."""
    ct = engine.conntrack
    conns = len(ct)
    conn_table = _array_bytes((ct.conns, ct.index, ct.free_slots))
    fixed = _array_bytes((ct.stats, ct.zone_limits, ct.timeouts))
    megaflow = _array_bytes(engine.megaflow.tables)
    fast_path = 0
    if mode == "assume-established":  # recirc mode allocates them too but never uses them
        fast_path = _array_bytes(engine.exact.tables) + _array_bytes((engine._fp_rows,))
    per = (lambda b: b / conns) if conns else (lambda b: None)
    return {
        "connections": conns,
        "conntrack_capacity": int(ct.conns.shape[0]),
        "conn_row_bytes": int(ct.conns.shape[1] * ct.conns.itemsize),
        "conntrack_bytes": conn_table,
        "conntrack_fixed_bytes": fixed,  # zone limits, timeouts, counters: not per connection
        "megaflow_bytes": megaflow,
        "fast_path_bytes": fast_path,
        "bytes_per_connection_conntrack": per(conn_table),
        "bytes_per_connection_total": per(conn_table + megaflow + fast_path),
    }


def _one_run(workload, loaded: LoadedCapture, mode, rules, batch_size, fingerprint) -> dict:
    engine = _new_engine(workload, mode, rules, batch_size)
    slow_spent = _instrument_slow_path(engine)
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
    run = {
        "seconds": elapsed,
        "packets": n,
        "mpps": n / seconds / 1e6,
        "ns_per_packet": seconds * 1e9 / packets,
        "recirculations_per_packet": stats["recirculations"] / packets,
        "fast_path_share": stats["fast_path_hits"] / packets,
        "ct_executions_per_packet": stats["ct_executions"] / packets,
        "upcalls": stats["upcalls"],
        "slow_path_packets": stats["slow_path_packets"],
        "connections_created": created,
        "connections_per_s": created / seconds,
        "slow_path_seconds": slow_spent[0],
        "slow_path_share": slow_spent[0] / seconds,
        "fast_path_seconds": elapsed - slow_spent[0],
        "memory": _memory(engine, mode),
        "engine_stats": stats,
    }
    if digest is not None:
        run["results_digest"] = digest.hexdigest()
        run["new_packets"] = new_packets
        run["new_packets_per_s"] = new_packets / seconds
    return run


def _median_of(runs: list[dict]) -> dict:
    """Per-field medians of the numeric fields (one level of nesting for ``memory``)."""
    out: dict = {}
    for k, v in runs[0].items():
        if isinstance(v, bool) or k == "engine_stats":
            continue
        if v is None or isinstance(v, int | float):
            vals = [r[k] for r in runs if r.get(k) is not None]
            out[k] = statistics.median(vals) if vals else None
        elif isinstance(v, dict):
            out[k] = _median_of([r[k] for r in runs])
    return out


def measure(workload: W.Workload, mode: str, repeats: int = DEFAULT_REPEATS,
            batch_size: int = DEFAULT_BATCH, *, rules: str = "ct",
            loaded: LoadedCapture | None = None) -> dict:  # fmt: skip
    """Run ``workload`` through a fresh engine in ``mode``, ``repeats`` times.

    ``rules`` is "ct" (the conntrack firewall) or "stateless"; ``loaded`` is the capture
    already in memory (loaded here when None). Returns ``{"workload", "mode", "rules",
    "repeats": [one dict per repeat], "median": {...}}``; see the module docstring."""
    return measure_interleaved(workload, [(mode, rules)], repeats, batch_size,
                               loaded=loaded)[0]  # fmt: skip


def measure_interleaved(workload: W.Workload, runs, repeats: int = DEFAULT_REPEATS,
                        batch_size: int = DEFAULT_BATCH, *, loaded: LoadedCapture | None = None,
                        on_run=None) -> list[dict]:  # fmt: skip
    """:func:`measure` for several ``(mode, rules)`` on one workload, their repeats taken in
    turn (repeat 1 of each, then repeat 2 of each, ...): on a shared machine whose speed drifts,
    every configuration then sees the same stretch of time and the ratios of their medians
    stay fair. ``on_run()`` is called after each run (progress). One dict per ``runs`` item."""
    for mode, rules in runs:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if rules not in ("ct", STATELESS):
            raise ValueError(f"rules must be 'ct' or 'stateless', not {rules!r}")
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    if loaded is None:
        loaded = load_capture(workload.pcap_path)
    # Untimed: compile or load the kernels for these exact argument types.
    warm = LoadedCapture(loaded.path, loaded.buf, *(a[:WARM_RUN_PACKETS] for a in (
        loaded.offsets, loaded.lengths, loaded.in_ports, loaded.now_ms)))  # fmt: skip
    for mode, rules in runs:
        _one_run(workload, warm, mode, rules, batch_size, fingerprint=False)
        if on_run:
            on_run()
    done: list[list[dict]] = [[] for _ in runs]
    for i in range(repeats):
        for k, (mode, rules) in enumerate(runs):
            done[k].append(_one_run(workload, loaded, mode, rules, batch_size,
                                    fingerprint=(i == 0)))  # fmt: skip
            if on_run:
                on_run()
    return [
        {
            "workload": workload_info(workload),
            "mode": mode,
            "rules": rules,
            "batch_size": batch_size,
            "repeats": done[k],
            "median": _median_of(done[k]),
        }
        for k, (mode, rules) in enumerate(runs)
    ]


# --- start-up -------------------------------------------------------------------------------

_STARTUP_CODE = """\
import json, time
t0 = time.perf_counter()
from ctaccel.datapath.warmup import warm_up
t1 = time.perf_counter()
w = warm_up()
print(json.dumps({"import_seconds": t1 - t0, "warm_up_seconds": w,
                  "total_seconds": time.perf_counter() - t0}))
"""


def startup(cold: bool, timeout: float = STARTUP_TIMEOUT_S) -> dict:
    """``warm_up()`` in a fresh interpreter: cold = empty numba cache, warm = this one's."""
    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="ctaccel-cold-cache-") as tmp:
        if cold:
            env["NUMBA_CACHE_DIR"] = tmp
        t0 = time.perf_counter()
        try:
            done = subprocess.run([sys.executable, "-c", _STARTUP_CODE], env=env, text=True,
                                  capture_output=True, timeout=timeout)  # fmt: skip
        except subprocess.TimeoutExpired:
            return {"cold": cold, "error": f"timed out after {timeout:.0f} s"}
        wall = time.perf_counter() - t0
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or [f"exit {done.returncode}"]
        return {"cold": cold, "error": tail[0]}
    out = json.loads(done.stdout.strip().splitlines()[-1])
    out.update(cold=cold, process_seconds=wall)
    return out


COLD_START_RECORD = "cold-start.json"  # in the kernel cache directory of this source build


def _cache_is_empty() -> bool:
    """No compiled kernel is cached yet for this build of the sources (jit.CACHE_DIR)."""
    from ctaccel import jit

    return jit.CACHE_DIR is None or not any(Path(jit.CACHE_DIR).rglob("*.nbi"))


def cold_startup(how: str = "auto", own_cold_warm_up: float | None = None) -> dict:
    """The cold start-up figure: compiling every kernel from an empty cache.

    ``how="measure"``: :func:`startup` in a fresh process with an empty cache (minutes). "auto":
    ``own_cold_warm_up`` when given (this process compiled from an empty cache: the same
    work, imports aside), else the figure recorded in the cache directory when this build of
    the kernels was measured, else a measurement. Measured figures are recorded there, so a
    changed source (a new cache directory) is measured again."""
    from ctaccel import jit

    if how not in ("auto", "measure"):
        raise ValueError(f"cold_start must be 'auto' or 'measure', not {how!r}")
    record = Path(jit.CACHE_DIR) / COLD_START_RECORD if jit.CACHE_DIR else None
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    out = None
    if how == "auto" and own_cold_warm_up is not None:
        out = {"cold": True, "warm_up_seconds": own_cold_warm_up, "total_seconds": None,
               "how": "this process's own warm-up: its kernel cache was empty",
               "measured_at": stamp}  # fmt: skip
    elif how == "auto" and record is not None and record.is_file():
        try:
            recorded = json.loads(record.read_text(encoding="utf-8"))
            when = recorded["measured_at"]
            return recorded | {"how": f"recorded when this build of the kernels was measured "
                                      f"({when})"}  # fmt: skip
        except (OSError, ValueError, KeyError):
            pass  # unreadable: measure again
    if out is None:
        out = startup(cold=True)
    out.setdefault("how", "a fresh process with an empty cache")
    out.setdefault("measured_at", stamp)
    if record is not None and "error" not in out:
        try:
            record.write_text(json.dumps(out) + "\n", encoding="utf-8")
        except OSError:
            pass  # a read-only cache: the figure is still reported
    return out


# --- workloads ------------------------------------------------------------------------------


def workload_info(w: W.Workload) -> dict:
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


# --- the whole benchmark --------------------------------------------------------------------


def machine_info() -> dict:
    import numba

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "numba": numba.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _plan(flows_list, new_fractions) -> list[tuple[str, int, float | None, str]]:
    """(kind, flows, new_fraction, role) for every workload of the run."""
    plan = []
    for flows in flows_list:
        plan.append(("A", flows, None, "flows"))
        plan.append(("B", flows, None, "flows"))
    for frac in new_fractions or ():
        plan.append(("B", flows_list[0], float(frac), "new_fraction"))
    if flows_list[0] <= W.MAX_SNAT_FLOWS:
        plan.append(("A", flows_list[0], None, "snat"))  # A through an SNAT firewall
    return plan


def _ratio(a, b):
    return a / b if a and b else None


def _paired_ratio(nums, dens) -> tuple[float | None, list[float]]:
    """Median of the ratios nums[i] / dens[i] of rates taken in turn (run i of one right
    after run i of the other), and those ratios. Pairs see the same stretch of a drifting
    machine, so this is steadier than the ratio of the medians."""
    if not nums or not dens:  # one side was not measured
        return None, []
    pairs = [_ratio(a, b) for a, b in zip(nums, dens, strict=True)]
    pairs = [r for r in pairs if r is not None]
    return (statistics.median(pairs) if pairs else None), pairs


def _rates(measured: dict | None) -> list:
    """The Mpps of each repeat of a measure dict (none for a missing one)."""
    return [r["mpps"] for r in measured["repeats"]] if measured else []


def _spread(values) -> str:
    """``lowest–highest`` of ``values`` for the tables ("–" when there are none)."""
    return f"{min(values):.2f}–{max(values):.2f}" if values else "–"


def _ratios(results: list[dict]) -> list[dict]:
    """assume-established / recirc (and against the stateless ceiling) per workload: the
    median of the per-repeat ratios (the repeats of a workload's configurations alternate);
    ``*_of_medians`` keeps the ratio of the medians for comparison."""
    by_name: dict = {}
    for r in results:
        by_name.setdefault(r["workload"]["name"], {})[
            STATELESS if r["rules"] == STATELESS else r["mode"]] = r  # fmt: skip
    out = []
    for name, runs in by_name.items():
        rec, ae, sl = runs.get("recirc"), runs.get("assume-established"), runs.get(STATELESS)
        mpps = {k: v["median"]["mpps"] for k, v in runs.items()}
        row = {
            "workload": name,
            "kind": next(iter(runs.values()))["workload"]["kind"],
            "mpps": mpps,
        }
        for key, num, den in (("ae_over_recirc", ae, rec), ("ae_over_stateless", ae, sl),
                              ("recirc_over_stateless", rec, sl)):  # fmt: skip
            row[key], row[key + "_pairs"] = _paired_ratio(_rates(num), _rates(den))
            row[key + "_of_medians"] = _ratio(num and num["median"]["mpps"],
                                              den and den["median"]["mpps"])  # fmt: skip
        if rec and ae:
            a, b = rec["repeats"][0].get("results_digest"), ae["repeats"][0].get("results_digest")
            row["same_results"] = bool(a and a == b)
        if sl:
            row["stateless_mpps"] = sl["median"]["mpps"]
        out.append(row)
    return out


def run_bench(flows_list=None, new_fractions=None, repeats: int = DEFAULT_REPEATS,
              packets: int | None = None, out_dir="benchmarks/results", quick: bool = False,
              progress: bool = True, batch_size: int = DEFAULT_BATCH, startup_times: bool = True,
              cold_start: str = "auto", console=None) -> dict:  # fmt: skip
    """Measure the talk's experiments; write JSON + PNGs under ``out_dir``; return the report.

    ``flows_list``: established flow counts (default 10,000; quick: 1,000); for each, A and B
    in both modes plus the stateless ceiling. ``new_fractions``: extra B workloads at the
    first flow count. ``quick``: tiny captures (50k packets, or the handshakes and a round for
    larger flow counts), at most 2 repeats, no cold start-up (it compiles everything: minutes).
    ``cold_start``: "measure" (a fresh process with an empty cache), or "auto": this process's
    own warm-up when its cache was empty, else the figure recorded when this build of the
    kernels was first measured, else "measure" (see :func:`cold_startup`)."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from ctaccel.datapath.warmup import warm_up

    console = console or Console()
    quick_packets = quick and packets is None  # per workload: at least its handshakes + rounds
    if quick:
        flows_list = flows_list or [QUICK_FLOWS]
        repeats = min(repeats, QUICK_REPEATS)
    flows_list = [int(f) for f in (flows_list or [DEFAULT_FLOWS])]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    report: dict = {
        "tool": "ctaccel bench",
        "machine": machine_info(),
        "settings": {
            "flows": flows_list,
            "new_fractions": list(new_fractions or []),
            "repeats": repeats,
            "packets": packets,
            "quick": quick,
            "batch_size": batch_size,
        },
        "results": [],
    }
    plan = _plan(flows_list, new_fractions)
    steps = sum(3 if role == "flows" else 2 for *_x, role in plan) * (repeats + 1)
    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                  console=console, disable=not progress, transient=True) as bar:  # fmt: skip
        task = bar.add_task("warming up (compiling or loading kernels)", total=steps + 1)
        cache_was_empty = _cache_is_empty()
        report["in_process_warm_up_seconds"] = warm_up()
        bar.advance(task)
        for kind, flows, frac, role in plan:
            bar.update(task, description=f"workload {kind}, {flows:,} flows: generating")
            n = max(QUICK_PACKETS, 5 * flows) if quick_packets else packets
            w = cached_workload(kind, flows, n, frac, out / "workloads",
                                "snat" if role == "snat" else None)  # fmt: skip
            loaded = load_capture(w.pcap_path)
            runs = [(m, "ct") for m in MODES]
            if role == "flows":
                runs.append(("recirc", STATELESS))
            labels = ", ".join(STATELESS if r == STATELESS else m for m, r in runs)
            bar.update(task, description=f"workload {kind}, {flows:,} flows"
                       f"{'' if frac is None else f', NEW {frac:g}'}: {labels}")  # fmt: skip
            for r in measure_interleaved(w, runs, repeats, batch_size, loaded=loaded,
                                         on_run=lambda: bar.advance(task)):  # fmt: skip
                r["role"] = role
                r["new_fraction"] = frac
                report["results"].append(r)
            del loaded
        if startup_times:
            bar.update(task, description="start-up: warm cache (fresh process)")
            report["startup"] = {"warm": startup(cold=False)}
            if quick:
                report["startup"]["cold"] = {"cold": True, "skipped": "quick run"}
            else:
                bar.update(task, description="start-up: empty cache (fresh process, compiles)")
                report["startup"]["cold"] = cold_startup(
                    cold_start, report["in_process_warm_up_seconds"] if cache_was_empty else None
                )
    report["ratios"] = _ratios(report["results"])
    report["bench_seconds"] = time.perf_counter() - started
    write_report(report, out)
    print_report(report, console)
    return report


def write_report(report: dict, out: Path) -> None:
    """``bench-<timestamp>.json``, ``latest.json`` and the PNGs (names in report["files"])."""
    from ctaccel.bench import plots

    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    report["files"] = {"json": str(out / f"bench-{stamp}.json"), "latest": str(out / "latest.json")}
    report["files"]["plots"] = [str(p) for p in plots.write_plots(report, out)]
    text = json.dumps(report, indent=2, default=str) + "\n"
    Path(report["files"]["json"]).write_text(text, encoding="utf-8")
    Path(report["files"]["latest"]).write_text(text, encoding="utf-8")


def _fmt(v, spec=".2f", none="–"):
    return none if v is None else format(v, spec)


def print_report(report: dict, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    m = report["machine"]
    t = Table(title=f"ctaccel bench — {m['cpu']}, {m['cores']} cores, {m['date'][:10]} "
              f"(medians of {report['settings']['repeats']}, per core)")  # fmt: skip
    for col in ("workload", "flows", "NEW %", "mode", "Mpps", "ns/pkt", "recirc/pkt",
                "fast %", "upcalls", "conns/s", "ct B/conn", "caches MB", "slow-path %"):  # fmt: skip
        t.add_column(col, justify="left" if col in ("workload", "mode") else "right")
    for r in report["results"]:
        md, wi = r["median"], r["workload"]
        label = STATELESS + " (recirc)" if r["rules"] == STATELESS else r["mode"]
        t.add_row(wi["kind"], f"{wi['flows']:,}", f"{100 * wi['new_share']:.1f}", label,
                  _fmt(md["mpps"]), _fmt(md["ns_per_packet"], ".0f"),
                  _fmt(md["recirculations_per_packet"]), _fmt(100 * md["fast_path_share"], ".1f"),
                  _fmt(md["upcalls"], ".0f"), _fmt(md["connections_per_s"], ",.0f"),
                  _fmt(md["memory"]["bytes_per_connection_conntrack"], ",.0f"),
                  _fmt((md["memory"]["megaflow_bytes"] + md["memory"]["fast_path_bytes"]) / 1e6,
                       ".1f"),
                  _fmt(100 * md["slow_path_share"], ".2f"))  # fmt: skip
    console.print(t)
    r = Table(title="ratios (same run, same machine): medians of the per-repeat ratios")
    for col in ("workload", "assume-established / recirc", "(lowest–highest)", "AE / stateless",
                "same results"):  # fmt: skip
        r.add_column(col, justify="left" if col == "workload" else "right")
    for row in report["ratios"]:
        same = row.get("same_results")
        r.add_row(row["workload"], _fmt(row["ae_over_recirc"]),
                  _spread(row.get("ae_over_recirc_pairs")),
                  _fmt(row["ae_over_stateless"]),
                  "–" if same is None else ("yes" if same else "[red]NO[/]"))  # fmt: skip
    console.print(r)
    st = report.get("startup") or {}
    parts = []
    for which in ("cold", "warm"):
        s = st.get(which)
        if not s:
            continue
        if "warm_up_seconds" in s:
            total = s.get("total_seconds")
            parts.append(f"{which} {s['warm_up_seconds']:.2f} s warm-up"
                         + (f" ({total:.2f} s with imports)" if total else "")
                         + (f" — {s.get('how', 'a fresh process with an empty cache')}"
                            if which == "cold" else " — a fresh process"))  # fmt: skip
        else:
            parts.append(f"{which}: {s.get('skipped') or s.get('error')}")
    if parts:
        console.print("start-up: " + "; ".join(parts), markup=False)
    files = report.get("files", {})
    if files:
        console.print(f"wrote {files['json']}, {files['latest']} and "
                      f"{len(files.get('plots', []))} plots in {Path(files['latest']).parent}")  # fmt: skip


# --- OVS-DPDK, side by side -----------------------------------------------------------------


def ovs_dpdk_script() -> Path | None:
    """``benchmarks/ovs_dpdk.py`` of this source tree (None for an installed package)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "benchmarks" / "ovs_dpdk.py"
        if candidate.is_file():
            return candidate
    return None


def ovs_dpdk_unavailable() -> str | None:
    """Why OVS-DPDK cannot run here (with how to fix it), or None when it can."""
    script = ovs_dpdk_script()
    if script is None:
        return ("benchmarks/ovs_dpdk.py is not found: run from a source checkout of ctaccel "
                "(git clone; pip install -e .)")  # fmt: skip
    if os.geteuid() != 0:
        return (f"OVS-DPDK needs root (hugepages, DPDK): sudo {sys.executable} "
                f"{script.parent / 'run_all.py'}")  # fmt: skip
    return None


def run_ovs_dpdk(pcap, rules_file, repeat: int, json_out, timeout: float = 1800) -> dict:
    """One ``benchmarks/ovs_dpdk.py`` run (its own process: it cleans up after itself)."""
    script = ovs_dpdk_script()
    cmd = [sys.executable, str(script), "--pcap", str(pcap), "--flows", str(rules_file),
           "--repeat", str(repeat), "--json", str(json_out)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0 or not Path(json_out).is_file():
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        return {"error": f"exit {done.returncode}: {tail}"}
    return json.loads(Path(json_out).read_text(encoding="utf-8"))


def _rounds_with_ovs_dpdk(wi: dict, rules_file, runs, rounds: int, json_out: Path):
    """``rounds`` times: one ctaccel run of each ``runs`` item, then one OVS-DPDK run. Returns
    (OVS-DPDK's report over the rounds, its per-round medians in ``round_mpps``; ctaccel's
    measure dict over the rounds per mode, the stateless rules under STATELESS)."""
    workload = workload_from_manifest(Path(wi["pcap"]).with_suffix(".json"))
    if workload is None:
        return {"error": f"no workload manifest next to {wi['pcap']}"}, {}
    loaded = load_capture(workload.pcap_path)
    mine: list[list[dict]] = [[] for _ in runs]
    theirs: list[dict] = []
    for k in range(rounds):
        for j, r in enumerate(measure_interleaved(workload, runs, 1, loaded=loaded)):
            mine[j].extend(r["repeats"])
        round_json = json_out.with_suffix(f".{k}.json")
        one = run_ovs_dpdk(workload.pcap_path, rules_file, 1, round_json)
        round_json.unlink(missing_ok=True)
        if "error" in one:
            return one, {}
        theirs.append(one)
    peer = dict(theirs[0])
    peer["repeat"] = rounds
    peer["runs"] = [run for one in theirs for run in one.get("runs", [])]
    peer["median"] = _median_of([one["median"] for one in theirs])
    peer["round_mpps"] = [one.get("median", {}).get("mpps") for one in theirs]
    json_out.write_text(json.dumps(peer, indent=2, default=str) + "\n", encoding="utf-8")
    ours = {STATELESS if rules == STATELESS else mode:
            {"workload": workload_info(workload), "mode": mode, "rules": rules,
             "repeats": mine[j], "median": _median_of(mine[j])}
            for j, (mode, rules) in enumerate(runs)}  # fmt: skip
    return peer, ours


def compare_with_ovs_dpdk(report: dict, out_dir, repeat: int = 3, console=None) -> dict:
    """OVS-DPDK on the captures and rules of ``report``'s main workloads: the conntrack
    firewall on A and B, the stateless rules on A; ratios ours / OVS-DPDK. Writes
    ``comparison.json`` and ``comparison.png`` in ``out_dir``.

    The two sides take turns: ``repeat`` rounds of one ctaccel run (each mode) then one
    OVS-DPDK run, so both see the same stretches of this machine's drifting speed; a ratio is
    the median of the rounds' ratios (each round's runs are minutes apart from the next
    round's), the Mpps are the medians of those adjacent runs (``report``'s own medians stay
    in the bench report). The stateless rounds also run assume-established on the firewall
    rules: that pair is the target "assume-established >= OVS-DPDK's stateless rate"."""
    from rich.console import Console

    from ctaccel.bench import plots

    console = console or Console()
    out = Path(out_dir)
    why = ovs_dpdk_unavailable()
    if why:
        console.print(f"[yellow]OVS-DPDK not run:[/] {why}")
        return {"error": why}
    main = [r for r in report["results"] if r.get("role") == "flows"]
    flows = main[0]["workload"]["flows"] if main else None
    peers = []
    ours: dict[tuple[str, str], dict] = {}  # (workload, rules) -> ctaccel's adjacent runs per mode
    for r in main:
        wi = r["workload"]
        if wi["flows"] != flows or r["mode"] != "recirc":
            continue
        rules = "stateless" if r["rules"] == STATELESS else "ct"
        if rules == "stateless" and wi["kind"] != "A":
            continue
        rules_file = wi["stateless_rules"] if rules == "stateless" else wi["rules"]
        json_out = out / f"ovs-dpdk-{wi['name']}-{rules}.json"
        console.print(f"OVS-DPDK and ctaccel in turn: workload {wi['kind']}, {rules} rules, "
                      f"{repeat} rounds ...")  # fmt: skip
        runs = ([("assume-established", "ct"), ("recirc", STATELESS)] if rules == "stateless"
                else [(m, "ct") for m in MODES])  # fmt: skip
        peer, ours[wi["name"], rules] = _rounds_with_ovs_dpdk(wi, rules_file, runs, repeat,
                                                             json_out)  # fmt: skip
        peers.append({"workload": wi["name"], "kind": wi["kind"], "rules": rules, "report": peer})
    comparison = {"machine": report["machine"], "ours": report.get("files", {}).get("json"),
                  "rounds": repeat, "rows": []}  # fmt: skip
    for p in peers:
        med = (p["report"].get("median") or {}) if "error" not in p["report"] else {}
        tsc = p["report"].get("tsc_hz")
        theirs = p["report"].get("round_mpps") or []
        modes = [STATELESS, "assume-established"] if p["rules"] == "stateless" else list(MODES)
        for mode in modes:
            mine = ours[p["workload"], p["rules"]].get(mode)
            if mine is None:
                continue
            mm = mine["median"]
            ours_rounds = _rates(mine)
            median, rounds = _paired_ratio(ours_rounds, theirs)
            row = {"workload": p["workload"], "kind": p["kind"], "rules": p["rules"],
                   "ours_mode": mode, "ours_rules": mine["rules"], "ours_mpps": mm["mpps"],
                   "ours_ns_per_packet": mm["ns_per_packet"],
                   "ours_cycles_per_packet": mm["ns_per_packet"] * tsc / 1e9 if tsc else None,
                   "ovs_dpdk_mpps": med.get("mpps"),
                   "ovs_dpdk_cycles_per_packet": med.get("cycles_per_packet"),
                   "ovs_dpdk_recirculations_per_packet": med.get("recirculations_per_packet"),
                   "ovs_dpdk_error": p["report"].get("error"),
                   "ratio_ours_over_ovs_dpdk": median,
                   "ratio_per_round": rounds,
                   "ours_mpps_rounds": ours_rounds,
                   "ovs_dpdk_mpps_rounds": list(theirs),
                   "ratio_of_medians": _ratio(mm["mpps"], med.get("mpps"))}  # fmt: skip
            comparison["rows"].append(row)
    comparison["ovs_dpdk_runs"] = peers
    comparison["targets"] = check_targets(report, comparison)
    (out / "comparison.json").write_text(json.dumps(comparison, indent=2, default=str) + "\n")
    comparison["plot"] = str(plots.plot_comparison(comparison, out / "comparison.png"))
    print_comparison(comparison, console)
    print_targets(comparison["targets"], console)
    return comparison


# The benchmark issue's targets: (name, where the figure comes from, key, threshold). "ratios"
# keys are (workload kind, field) of report["ratios"]; "comparison" keys are (kind, OVS-DPDK
# rules, our mode) of comparison["rows"].
TARGETS = (
    ("assume-established on A >= 3.5x OVS-DPDK's conntrack pipeline", "comparison",
     ("A", "ct", "assume-established"), 3.5),
    ("assume-established on A (firewall rules) >= 1x OVS-DPDK with stateless rules",
     "comparison", ("A", "stateless", "assume-established"), 1.0),
    ("assume-established / recirc on A >= 3x", "ratios", ("A", "ae_over_recirc"), 3.0),
    ("assume-established / recirc on B >= 1.5x", "ratios", ("B", "ae_over_recirc"), 1.5),
    ("workload B (assume-established) >= OVS-DPDK's rate", "comparison",
     ("B", "ct", "assume-established"), 1.0),
)  # fmt: skip


def check_targets(report: dict, comparison: dict) -> list[dict]:
    """Each target's figure from this run (a median of paired ratios), the lowest and highest
    pair, and whether the median meets it (None when the figure is missing)."""
    rows = {(r["kind"], r["rules"], r["ours_mode"]): r for r in comparison.get("rows", [])}
    compared = {r["workload"] for r in comparison.get("rows", [])}  # the first flow count's
    ratios = {r["kind"]: r for r in report.get("ratios", []) if r["workload"] in compared}
    out = []
    for name, source, key, threshold in TARGETS:
        if source == "comparison":
            row = rows.get(key) or {}
            value, pairs = row.get("ratio_ours_over_ovs_dpdk"), row.get("ratio_per_round") or []
        else:
            row = ratios.get(key[0]) or {}
            value, pairs = row.get(key[1]), row.get(key[1] + "_pairs") or []
        out.append({"target": name, "threshold": threshold, "value": value,
                    "lowest": min(pairs) if pairs else None,
                    "highest": max(pairs) if pairs else None,
                    "met": None if value is None else value >= threshold})  # fmt: skip
    return out


def print_targets(targets: list[dict], console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    t = Table(title="the benchmark's targets in this run (medians of paired ratios)")
    for col in ("target", "measured", "(lowest–highest)", "met"):
        t.add_column(col, justify="left" if col == "target" else "right")
    for row in targets:
        spread = _spread([row["lowest"], row["highest"]] if row["lowest"] is not None else [])
        met = {None: "–", True: "yes", False: "[red]no[/]"}[row["met"]]
        t.add_row(row["target"], _fmt(row["value"]), spread, met)
    console.print(t)


def print_comparison(comparison: dict, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    names = sorted({row["workload"] for row in comparison["rows"]})
    t = Table(title="ctaccel vs OVS-DPDK (same captures, same rules, one core each, same run): "
              + ", ".join(names))  # fmt: skip
    for col in ("workload", "OVS-DPDK rules", "ctaccel", "ctaccel Mpps", "cycles/pkt",
                "OVS-DPDK Mpps", "OVS cycles/pkt", "ours / OVS-DPDK", "(lowest–highest)"):  # fmt: skip
        t.add_column(
            col, justify="right" if "pkt" in col or "Mpps" in col or "/" in col else "left"
        )
    for row in comparison["rows"]:
        ours = row["ours_mode"]
        if row.get("ours_rules", "ct") == "ct" and row["rules"] == "stateless":
            ours += " (firewall rules)"
        rounds = row.get("ratio_per_round") or []
        t.add_row(row["kind"], row["rules"], ours, _fmt(row["ours_mpps"]),
                  _fmt(row["ours_cycles_per_packet"], ".0f"), _fmt(row["ovs_dpdk_mpps"]),
                  _fmt(row["ovs_dpdk_cycles_per_packet"], ".0f"),
                  _fmt(row["ratio_ours_over_ovs_dpdk"]),
                  _spread(rounds))  # fmt: skip
    console.print(t)
    console.print("ours / OVS-DPDK: the median of the rounds' ratios (one run of each side "
                  "per round, adjacent in time) and their range")  # fmt: skip
    for p in comparison.get("ovs_dpdk_runs", []):
        if "error" in p["report"]:
            console.print(f"[red]OVS-DPDK {p['workload']} {p['rules']}:[/] {p['report']['error']}")
