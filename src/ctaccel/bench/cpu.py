"""The talk's host-CPU experiment: ``ctaccel bench --experiment cpu``.

What: :func:`run_cpu_experiment` offers workload A's connections through their whole life
(set-up, established rounds, teardown, then expiry; workloads.build_lifecycle) at fixed
packet rates (bench/paced.py) to three hosts and measures each one's CPU time per second of
traffic: ``recirc`` and ``assume-established`` in software, and ``offload-stub``, the
assume-established host with a device stub that consumes the packets an Agilio-class NIC
would take (bench/offload.py) and does the driver's pushes and statistics syncs for real.
Beside them, ``offload-model``: the host CPU the offload model predicts from the software
runs' own measurements, checked against the stub's run. It finds the talk's load (the rate
at which recirc takes 52% of a core in the established phase, the talk's baseline figure)
and measures there, then sweeps the number of flows at that load. Writes ``cpu-<time>.json``
and ``cpu-latest.json``, ``cpu-load.png`` and ``cpu-flows.png``; prints a table.

Design: every point (flows, rate) takes ``repeats`` rounds in which the three hosts run in
turn (fresh engines, one untimed reference run before them), so they share the machine's
drift; figures are medians over the rounds, ratios medians of per-round ratios. The model
of a round uses that round's software runs and the stub's costs measured right after that
round's stub run (offload.DeviceStub.calibrate), and is checked against that stub run.
Host CPU is the datapath thread's CPU time (``time.thread_time``) over the traffic's
duration (or the wall time it took, when longer), as a share of one core.

Invariants: the three hosts give the same rule counters (checked per round and reported);
nothing is written outside ``out_dir``.
"""

from __future__ import annotations

import json
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from ctaccel.bench import offload as O
from ctaccel.bench import paced as P
from ctaccel.bench import workloads as W

TALK_FLOWS = 10_000
TALK_BASELINE_SHARE = 0.52  # the talk: host CPU with conntrack in software, 10,000 flows
TALK_OFFLOAD_SHARE = 0.02  # ... and with established connections on the SmartNIC
DEFAULT_RATES = (100e3, 250e3, 500e3, 1e6, 2e6, 4e6)
QUICK_RATES = (250e3, 1e6, 4e6)
DEFAULT_FLOWS_SWEEP = (1_000, 10_000, 100_000)
EST_SECONDS = 2.0  # the steady established phase's traffic time (at most MAX_EST_PACKETS)
QUICK_EST_SECONDS = 0.5
MAX_EST_PACKETS = 10_000_000  # 600 MB of 60-byte frames
HOSTS = ("recirc", "assume-established", "offload-stub")
EXPIRY_AFTER_MS = 901_000  # past every closing state's timeout (fin_wait: 900 s)
# The stub's costs are measured after this much sleep (or the statistics interval, if
# shorter), as its syncs meet them in the run: measured after 50 ms, the model fell 10-20%
# short of the stub on steady traffic; after 500 ms, within 10%.
CALIBRATION_IDLE_S = 0.5
# Before each host's turn at a phase the caches are evicted, so that every turn meets them
# alike (as a host whose cores serve other work, VMs, meets them), not warm with whatever
# the previous turn left: more than the last-level cache of any machine this runs on.
EVICT_BYTES = 64 << 20


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


class _Traffic:
    """Workload A's lifecycle for ``flows`` at ``rate``: established traffic for the time
    the device takes to accept every entry it can, then ``est_seconds`` more."""

    def __init__(self, flows: int, rate: float, est_seconds: float, params: O.OffloadParams):
        installing_s = min(2 * flows, params.capacity) / params.insert_rate
        target = min(rate * (est_seconds + installing_s), MAX_EST_PACKETS)
        self.rounds = max(3, int(np.ceil(target / (2 * flows))))
        frames, self.ends = W.build_lifecycle(flows, self.rounds)
        self.phase_ends = None  # with the installing phase, once the device's plan is known
        self.flows, self.rate = flows, rate
        self.frame_len = frames.shape[1]
        self.n = len(frames)
        self.buf = frames.reshape(-1)

    def split(self, arrival_s: np.ndarray, installed_s: float) -> None:
        """Phase ends with the installing phase: established packets before the device had
        accepted its last entry."""
        at = int(np.searchsorted(arrival_s, installed_s, "left"))
        at = min(max(at, self.ends[0]), self.ends[1])
        self.phase_ends = (self.ends[0], at, self.ends[1], self.ends[2])

    def stream(self, keep=None) -> P.HostStream:
        ends = self.phase_ends or (self.ends[0], self.ends[0], *self.ends[1:])
        return P.offered_stream(self.buf, self.frame_len, self.n, ends, self.rate,
                                W.IN_PORT, keep)  # fmt: skip


def _engine(tables, mode: str):
    from ctaccel.datapath.engine import DatapathEngine

    return DatapathEngine(tables, mode=mode, batch_size=P.MAX_BATCH)


def _one_round(tables, tr: _Traffic, ref: O.Reference, dplan: O.DevicePlan,
               calibrate: float | None = None) -> dict:  # fmt: skip
    """The three hosts once each over ``tr``, phase by phase in turn (paced.interleaved);
    per host its phases' JSON and expiry; with ``calibrate`` (the statistics interval), the
    device stub's costs measured afterwards."""
    full = tr.stream()
    end_ms = int(full.now_ms()[-1]) + EXPIRY_AFTER_MS
    engines, runs = {}, []
    for host in HOSTS:
        engine = _engine(tables, "recirc" if host == "recirc" else "assume-established")
        work, stream = None, full
        if host == "offload-stub":
            keep = ~dplan.consumed
            stream = tr.stream(keep)
            stub = O.DeviceStub(engine, ref, dplan, dplan.push[keep])
            stub.host_entry = ref.entry[keep]
            work = P.HostWork(stub.on_batch, stub.sync, dplan.sync_t)
        engines[host] = engine
        runs.append(P.paced_phases(engine, stream, work))
    scratch = np.zeros(EVICT_BYTES, np.uint8)
    out = {}
    turns = P.interleaved(runs, lambda: P.evict_caches(scratch))
    for host, phases in zip(HOSTS, turns, strict=True):
        engine = engines[host]
        exp_cpu, freed = P.expiry_cpu(engine, end_ms)
        out[host] = {
            "phases": [ph.to_json() for ph in phases],
            "expiry_cpu_s": exp_cpu,
            "expired": freed,
            "same_rule_counters": bool(np.array_equal(engine.rule_stats, ref.rule_stats)),
        }
    if calibrate is not None:
        out["calibration"] = stub.calibrate(calibrate) | {
            "wake_s": P.wake_cost(engines["offload-stub"])
        }
    return out


def _device_per_phase(tr: _Traffic, dplan: O.DevicePlan, phase_span) -> dict:
    phase_of = np.searchsorted(np.asarray(tr.phase_ends), np.arange(tr.n), "right")
    bounds = np.cumsum(phase_span)
    sp = np.minimum(np.searchsorted(bounds, dplan.sync_t, "left"), len(P.PHASES) - 1)
    per = {"device_packets": [], "pushes": [], "syncs": [], "synced_entries": [],
           "host_wakes": []}  # fmt: skip
    arrival = tr.stream().arrival_s
    for p in range(len(P.PHASES)):
        host = ~dplan.consumed & (phase_of == p)
        per["host_wakes"].append(P.predicted_wakes(arrival[host]))
        per["device_packets"].append(int(np.count_nonzero(dplan.consumed & (phase_of == p))))
        per["pushes"].append(int(np.count_nonzero((dplan.push != 0) & (phase_of == p))))
        per["syncs"].append(int(np.count_nonzero(sp == p)))
        per["synced_entries"].append(int(sum(len(dplan.sync_ids[j]) for j in
                                             np.flatnonzero(sp == p))))  # fmt: skip
    return per


def _host_summary(rounds: list[dict], host: str, traffic_s: float) -> dict:
    """Medians over the rounds of one host: CPU per phase, expiry, shares of a core."""
    runs = [r[host] for r in rounds]
    phases = []
    for p, name in enumerate(P.PHASES):
        phases.append({"phase": name,
                       "cpu_s": _median([r["phases"][p]["cpu_s"] for r in runs]),
                       "cpu_share": _median([r["phases"][p]["cpu_share"] for r in runs]),
                       "packets": runs[0]["phases"][p]["packets"],
                       "python_s": _median([r["phases"][p]["python_s"] for r in runs]),
                       "sync_cpu_s": _median([r["phases"][p].get("sync_cpu_s", 0.0)
                                              for r in runs]),
                       "stats": runs[0]["phases"][p]["stats"]})  # fmt: skip
    totals = [sum(ph["cpu_s"] for ph in r["phases"]) + r.get("expiry_cpu_s", 0.0) for r in runs]
    spans = [max(traffic_s, sum(ph.get("wall_s", 0.0) for ph in r["phases"])) for r in runs]
    return {
        "phases": phases,
        "expiry_cpu_s": _median([r.get("expiry_cpu_s", 0.0) for r in runs]),
        "total_cpu_s": _median(totals),
        "established_share": _median(
            [r["phases"][P.EST]["cpu_share"] for r in runs if r["phases"][P.EST]["traffic_s"] > 0]
        ),
        "total_share": _median([t / s for t, s in zip(totals, spans, strict=True)]),
        "same_rule_counters": all(r.get("same_rule_counters", True) for r in runs),
    }


def _model_rounds(rounds: list[dict], dev: dict, span) -> None:
    """Add the modelled host ("offload-model") to every round, from its own runs."""
    for r in rounds:
        cpu = O.model_cpu(r["assume-established"]["phases"], r["recirc"]["phases"], dev,
                          r["calibration"], dev["synced_entries"], P.EST)  # fmt: skip
        r["offload-model"] = {
            "phases": [
                {
                    "phase": n,
                    "cpu_s": c,
                    "cpu_share": c / max(s, 1e-9),
                    "traffic_s": float(s),
                    "packets": 0,
                    "python_s": 0.0,
                    "stats": {},
                }
                for n, c, s in zip(P.PHASES, cpu, span, strict=True)
            ],  # fmt: skip
            "expiry_cpu_s": r["assume-established"]["expiry_cpu_s"],
        }


def _per_path(hosts: dict, flows: int) -> dict:
    """Per-event host costs (ns) from the medians: the fast path's hit, a megaflow
    packet, an upcall, set-up / teardown / expiry per connection."""
    ae, rc = hosts["assume-established"]["phases"], hosts["recirc"]["phases"]
    est_ae, est_rc = ae[P.EST], rc[P.EST]
    hits = est_ae["stats"].get("fast_path_hits", 0)
    per_mf = est_rc["cpu_s"] / max(est_rc["packets"], 1)
    per_hit = max(est_ae["cpu_s"] - (est_ae["packets"] - hits) * per_mf, 0.0) / max(hits, 1)
    upcalls = sum(p["stats"].get("upcalls", 0) for p in rc)
    py = sum(p["python_s"] for p in rc)
    out = {"fast_path_hit_ns": per_hit * 1e9, "megaflow_packet_ns": per_mf * 1e9,
           "upcall_us": py / upcalls * 1e6 if upcalls else None}  # fmt: skip
    for host in ("recirc", "assume-established"):
        ph = hosts[host]["phases"]
        out[host] = {"set-up_per_connection_us": ph[0]["cpu_s"] / flows * 1e6,
                     "teardown_per_connection_us": ph[-1]["cpu_s"] / flows * 1e6,
                     "expiry_per_connection_us": hosts[host]["expiry_cpu_s"] / flows * 1e6,
                     "python_share": sum(p["python_s"] for p in ph)
                     / max(sum(p["cpu_s"] for p in ph), 1e-12)}  # fmt: skip
    return out


def measure_point(tables, flows: int, rate: float, repeats: int, params: O.OffloadParams,
                  est_seconds: float = EST_SECONDS, on_round=None) -> dict:  # fmt: skip
    """One (flows, rate) point: a reference run, the device plan, ``repeats`` rounds of the
    three hosts, the model per round; medians, ratios and the model's check."""
    tr = _Traffic(flows, rate, est_seconds, params)
    full = tr.stream()
    ref = O.reference(_engine(tables, "assume-established"), tr.buf, tr.frame_len, tr.n,
                      W.IN_PORT, full.now_ms())  # fmt: skip
    dplan = O.plan(ref, full.arrival_s, tr.ends[1], params, full.base_ms)
    tr.split(full.arrival_s, dplan.summary["last_install_s"])
    full = tr.stream()
    dev = _device_per_phase(tr, dplan, full.phase_span_s)
    rounds = []
    idle = min(params.stats_interval_s, CALIBRATION_IDLE_S)
    for _ in range(repeats):  # each round also measures its model's costs
        rounds.append(_one_round(tables, tr, ref, dplan, idle))
        if on_round:
            on_round()
    _model_rounds(rounds, dev, full.phase_span_s)
    traffic_s = float(full.phase_span_s.sum())
    est_s = float(full.phase_span_s[P.EST])
    hosts = {h: _host_summary(rounds, h, traffic_s) for h in (*HOSTS, "offload-model")}

    def ratio(a: str, b: str, key: str) -> float | None:
        if key == "established" and est_s <= 0:
            return None
        vals = [_share(r, a, key, full.phase_span_s) / max(_share(r, b, key, full.phase_span_s),
                                                            1e-12) for r in rounds]  # fmt: skip
        return _median(vals)

    check = {key: ratio("offload-model", "offload-stub", key) for key in ("total", "established")}
    for key in ("total", "established"):
        check[f"{key}_within_10_percent"] = check[key] is not None and abs(check[key] - 1) <= 0.1
    return {
        "flows": flows, "offered_pps": rate, "rounds": tr.rounds, "packets": tr.n,
        "traffic_s": traffic_s, "established_s": est_s, "repeats": repeats,
        "hosts": hosts,
        "ratios": {f"{a}/recirc": {k: ratio(a, "recirc", k) for k in ("established", "total")}
                   for a in ("assume-established", "offload-stub", "offload-model")},
        "model_check": check,
        "device": dplan.summary | {"per_phase": dev},
        "calibration": {k: _median([r["calibration"][k] for r in rounds])
                        for k in rounds[0]["calibration"]},
        "per_path": _per_path(hosts, flows),
        "runs": [{h: r[h] for h in (*HOSTS, "offload-model")} for r in rounds],
    }  # fmt: skip


def _share(r: dict, host: str, key: str, span) -> float:
    ph = r[host]["phases"]
    if key == "established":
        return ph[P.EST]["cpu_s"] / max(float(span[P.EST]), 1e-9)
    total = sum(p["cpu_s"] for p in ph) + r[host].get("expiry_cpu_s", 0.0)
    return total / max(float(np.sum(span)), 1e-9)


def talk_load(points: list[dict], target: float = TALK_BASELINE_SHARE) -> float | None:
    """The offered rate at which recirc's established-phase share reaches ``target``,
    interpolated (in log rate) between the measured points; None if no point reaches it."""
    pts = sorted((p["offered_pps"], p["hosts"]["recirc"]["established_share"]) for p in points)
    for (r0, s0), (r1, s1) in zip(pts, pts[1:], strict=False):
        if s0 <= target <= s1 and s1 > s0:
            f = (target - s0) / (s1 - s0)
            return float(np.exp(np.log(r0) + f * (np.log(r1) - np.log(r0))))
    return None


def run_cpu_experiment(rates=None, flows: int = TALK_FLOWS, flows_sweep=None, repeats: int = 3,
                       params: O.OffloadParams | None = None, out_dir="benchmarks/results",
                       quick: bool = False, console=None, progress: bool = True,
                       est_seconds: float = EST_SECONDS) -> dict:  # fmt: skip
    """Measure host CPU against offered load (``rates``, pps) at ``flows`` flows, find the
    talk's load and measure there, then against the number of flows (``flows_sweep``) at
    that load; write the JSON and PNGs under ``out_dir``; return the report."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from ctaccel.bench.runner import machine_info
    from ctaccel.datapath.warmup import warm_up
    from ctaccel.ofproto.classifier import FlowTables
    from ctaccel.ofproto.rules import parse_flows

    console = console or Console()
    params = params or O.OffloadParams()
    rates = sorted(float(r) for r in (rates or (QUICK_RATES if quick else DEFAULT_RATES)))
    repeats = min(repeats, 2) if quick else repeats
    est_seconds = min(est_seconds, QUICK_EST_SECONDS) if quick else est_seconds
    sweep = [] if quick else [int(f) for f in (flows_sweep or DEFAULT_FLOWS_SWEEP)]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    tables = FlowTables(parse_flows(W.rules("A"), "workload A's firewall"))
    report = {"experiment": "cpu", "machine": machine_info(), "offload": params.to_json(),
              "settings": {"flows": flows, "rates": rates, "flows_sweep": sweep,
                           "repeats": repeats, "established_seconds": est_seconds,
                           "poll_s": P.POLL_S, "max_batch": P.MAX_BATCH, "quick": quick},
              "talk": {"flows": TALK_FLOWS, "baseline_share": TALK_BASELINE_SHARE,
                       "offload_share": TALK_OFFLOAD_SHARE}}  # fmt: skip
    steps = (len(rates) + 1 + len(sweep)) * repeats
    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                  console=console, disable=not progress, transient=True) as bar:  # fmt: skip
        task = bar.add_task("host CPU: warming up", total=steps)
        warm_up()
        advance = lambda: bar.advance(task)  # noqa: E731
        points = []
        for rate in rates:
            bar.update(task, description=f"host CPU: {flows:,} flows at {rate / 1e6:g} Mpps")
            points.append(measure_point(tables, flows, rate, repeats, params, est_seconds,
                                        advance))  # fmt: skip
        report["load"] = points
        load = talk_load(points)
        report["talk_load_pps"] = load
        if load is not None:
            bar.update(task, description=f"host CPU: the talk's load, {load / 1e6:.2f} Mpps")
            report["at_talk_load"] = measure_point(tables, flows, load, repeats, params,
                                                   est_seconds, advance)  # fmt: skip
            report["flows_sweep"] = []
            for f in sweep:
                bar.update(task, description=f"host CPU: {f:,} flows at {load / 1e6:.2f} Mpps")
                report["flows_sweep"].append(
                    measure_point(tables, f, load, repeats, params, est_seconds, advance)
                )
    report["seconds"] = time.perf_counter() - started
    write_cpu_report(report, out)
    print_cpu_report(report, console)
    return report


def write_cpu_report(report: dict, out: Path) -> Path:
    from ctaccel.bench import plots

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    text = json.dumps(report, indent=1, default=float) + "\n"
    path = out / f"cpu-{stamp}.json"
    path.write_text(text, encoding="utf-8")
    (out / "cpu-latest.json").write_text(text, encoding="utf-8")
    plots.plot_cpu(report, out)
    return path


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def print_cpu_report(report: dict, console) -> None:
    from rich.table import Table

    t = Table(title=f"Host CPU, {report['settings']['flows']:,} flows (established phase, "
                    f"share of one core; whole run in brackets)")  # fmt: skip
    for col in ("offered", "recirc", "AE (software)", "offload stub", "offload model",
                "model/stub"):  # fmt: skip
        t.add_column(col, justify="right")
    rows = list(report.get("load", []))
    if report.get("at_talk_load"):
        rows.append(report["at_talk_load"])
    for p in sorted(rows, key=lambda p: p["offered_pps"]):
        h = p["hosts"]
        mark = " (talk's load)" if p is report.get("at_talk_load") else ""
        t.add_row(f"{p['offered_pps'] / 1e6:.2f} Mpps{mark}",
                  *(f"{_pct(h[k]['established_share'])} ({_pct(h[k]['total_share'])})"
                    for k in ("recirc", "assume-established", "offload-stub", "offload-model")),
                  _num(p["model_check"]["total"]))  # fmt: skip
    console.print(t)
    at = report.get("at_talk_load")
    if at:
        r = {k: v["established"] for k, v in at["ratios"].items()}
        console.print(
            f"At the talk's load ({at['offered_pps'] / 1e6:.2f} Mpps, recirc at "
            f"{_pct(at['hosts']['recirc']['established_share'])}), host CPU against recirc: "
            f"assume-established {_num(r['assume-established/recirc'])}, offloaded "
            f"{_num(r['offload-stub/recirc'])} (model {_num(r['offload-model/recirc'])}); "
            f"the talk: {TALK_OFFLOAD_SHARE / TALK_BASELINE_SHARE:.3f} (52% -> 2%)"
        )

    if at:
        _print_paths(at, console)


def _print_paths(at: dict, console) -> None:
    """Where the host's CPU goes at the talk's load: per path and per connection."""
    from rich.table import Table

    pp, dev = at["per_path"], at["device"]
    t = Table(title="Host cost per event at the talk's load (medians)")
    for col in ("path", "recirc", "assume-established"):
        t.add_column(col, justify="right")
    t.add_row("fast-path hit", "-", f"{pp['fast_path_hit_ns']:.0f} ns")
    t.add_row("megaflow packet (ct + recirculation)", f"{pp['megaflow_packet_ns']:.0f} ns", "-")
    t.add_row("upcall (Python translation)", _us(pp["upcall_us"]), "-")
    for key in ("set-up", "teardown", "expiry"):
        per = (pp[h][f"{key}_per_connection_us"] for h in ("recirc", "assume-established"))
        t.add_row(f"{key}, per connection", *(_us(x) for x in per))
    console.print(t)
    console.print(
        f"Offload model: {dev['installed']:,} of {dev['entries']:,} entries installed "
        f"({dev['refused_capacity']:,} refused for capacity), the last at "
        f"{dev['last_install_s']:.2f} s; {dev['device_packets']:,} packets on the device, "
        f"{dev['host_kept_hits']:,} fast-path hits kept by the host; {dev['syncs']} syncs."
    )


def _us(x) -> str:
    return "-" if x is None else f"{x:.2f} µs"


def _num(x) -> str:
    return "-" if x is None else f"{x:.3f}"
