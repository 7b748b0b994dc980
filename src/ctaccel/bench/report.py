"""The benchmark's results, typed, and their JSON: one run, a configuration, start-up, the report.

What: :class:`RunResult` (one timed run of a capture through a fresh engine),
:class:`Measurement` (a workload in one configuration: its runs and their medians),
:class:`Startup` (one start-up figure), :class:`BenchReport` (the whole ``ctaccel bench``
run); each ``to_json()`` gives the dict written to ``bench-*.json`` / ``latest.json``, whose
keys ``bench/plots.py``, ``bench/compare.py``, the README and earlier result files rely on.
Also the ratio rows (:func:`ratios`), the small numeric helpers the comparison shares, and
the printed table (:func:`print_report`).

Design: the objects are built by ``bench/measure.py``, ``bench/startup.py`` and
``bench/runner.py``; everything downstream of the report (plots, the OVS-DPDK comparison, a
later run reading ``latest.json``) reads the JSON form, so one shape serves both a fresh run
and a file. Medians are per field over the runs' JSON (one level of nesting, for
``memory``).

Invariants: ``to_json()`` keys are stable (tests and plots read them); a ratio is between
measurements of one run on one machine, never across runs.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path

STATELESS = "stateless"  # the stateless rule set, run in recirc mode: our own ceiling


@dataclass
class RunResult:
    """One timed run (see bench/measure.py for how each figure is taken)."""

    seconds: float
    packets: int
    mpps: float
    ns_per_packet: float
    recirculations_per_packet: float
    fast_path_share: float
    ct_executions_per_packet: float
    upcalls: int
    slow_path_packets: int
    connections_created: int
    connections_per_s: float
    slow_path_seconds: float
    slow_path_share: float
    fast_path_seconds: float
    memory: dict  # the engine's memory_bytes() plus the per-connection figures
    engine_stats: dict
    results_digest: str | None = None  # only for a run with the per-packet digest
    new_packets: int | None = None
    new_packets_per_s: float | None = None

    def to_json(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.results_digest is None:
            for k in ("results_digest", "new_packets", "new_packets_per_s"):
                del out[k]
        return out


def median_of(runs: list[dict]) -> dict:
    """Per-field medians of the numeric fields (one level of nesting for ``memory``)."""
    out: dict = {}
    for k, v in runs[0].items():
        if isinstance(v, bool) or k == "engine_stats":
            continue
        if v is None or isinstance(v, int | float):
            vals = [r[k] for r in runs if r.get(k) is not None]
            out[k] = statistics.median(vals) if vals else None
        elif isinstance(v, dict):
            out[k] = median_of([r[k] for r in runs])
    return out


@dataclass
class Measurement:
    """A workload in one configuration (mode and rule set): its runs and their medians."""

    workload: dict  # bench/measure.py workload_info()
    mode: str
    rules: str  # "ct" or STATELESS
    repeats: list[RunResult]
    batch_size: int | None = None
    role: str | None = None  # "flows", "new_fraction" or "snat" in a bench run
    new_fraction: float | None = None
    replay: list[dict] | None = None  # measure.replay_run per repeat: capture file to files

    @property
    def series(self) -> str:
        """STATELESS for the stateless rules, else the mode."""
        return STATELESS if self.rules == STATELESS else self.mode

    def to_json(self) -> dict:
        runs = [r.to_json() for r in self.repeats]
        out = {"workload": self.workload, "mode": self.mode, "rules": self.rules}
        if self.batch_size is not None:
            out["batch_size"] = self.batch_size
        out.update(repeats=runs, median=median_of(runs))
        if self.role is not None:
            out.update(role=self.role, new_fraction=self.new_fraction)
        if self.replay:
            out["replay"] = {"repeats": self.replay, "median": median_of(self.replay)}
        return out


@dataclass
class Startup:
    """One start-up figure: ``warm_up()`` in a fresh process (cold: with an empty cache),
    or why there is none (``error``, ``skipped``)."""

    cold: bool
    import_seconds: float | None = None
    warm_up_seconds: float | None = None
    total_seconds: float | None = None
    process_seconds: float | None = None
    how: str | None = None  # cold: where the figure comes from
    measured_at: str | None = None
    error: str | None = None
    skipped: str | None = None
    known_unknown: tuple = ()  # fields written as null (not measured this way) rather than left out

    def to_json(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name != "known_unknown" and (getattr(self, f.name) is not None
                                                  or f.name in self.known_unknown)}  # fmt: skip

    @classmethod
    def from_json(cls, data: dict) -> Startup:
        names = {f.name for f in fields(cls)} - {"known_unknown"}
        nulls = tuple(k for k in names if k in data and data[k] is None)
        return cls(**{k: v for k, v in data.items() if k in names}, known_unknown=nulls)


@dataclass
class BenchReport:
    """A whole ``ctaccel bench`` run."""

    machine: dict
    settings: dict
    results: list[Measurement] = field(default_factory=list)
    in_process_warm_up_seconds: float | None = None
    startup: dict[str, Startup] | None = None  # "warm", "cold"
    bench_seconds: float | None = None
    files: dict | None = None  # set by write_report

    def to_json(self) -> dict:
        results = [m.to_json() for m in self.results]
        out = {"tool": "ctaccel bench", "machine": self.machine, "settings": self.settings,
               "results": results,
               "in_process_warm_up_seconds": self.in_process_warm_up_seconds}  # fmt: skip
        if self.startup is not None:
            out["startup"] = {k: s.to_json() for k, s in self.startup.items()}
        out["ratios"] = ratios(results)
        out["bench_seconds"] = self.bench_seconds
        if self.files is not None:
            out["files"] = self.files
        return out


# --- ratios -----------------------------------------------------------------------------------


def ratio(a, b):
    return a / b if a and b else None


def paired_ratio(nums, dens) -> tuple[float | None, list[float]]:
    """Median of the ratios nums[i] / dens[i] of rates taken in turn (run i of one right
    after run i of the other), and those ratios. Pairs see the same stretch of a drifting
    machine, so this is steadier than the ratio of the medians."""
    if not nums or not dens:  # one side was not measured
        return None, []
    pairs = [ratio(a, b) for a, b in zip(nums, dens, strict=True)]
    pairs = [r for r in pairs if r is not None]
    return (statistics.median(pairs) if pairs else None), pairs


def rates(measured: dict | None) -> list:
    """The Mpps of each repeat of a measurement's JSON (none for a missing one)."""
    return [r["mpps"] for r in measured["repeats"]] if measured else []


def ratios(results: list[dict]) -> list[dict]:
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
            row[key], row[key + "_pairs"] = paired_ratio(rates(num), rates(den))
            row[key + "_of_medians"] = ratio(num and num["median"]["mpps"],
                                             den and den["median"]["mpps"])  # fmt: skip
        if rec and ae:
            a, b = rec["repeats"][0].get("results_digest"), ae["repeats"][0].get("results_digest")
            row["same_results"] = bool(a and a == b)
        if sl:
            row["stateless_mpps"] = sl["median"]["mpps"]
        out.append(row)
    return out


# --- output -----------------------------------------------------------------------------------


def write_report(report: BenchReport, out: Path) -> dict:
    """``bench-<timestamp>.json``, ``latest.json`` and the PNGs (names in ``report.files``);
    returns the JSON written."""
    from ctaccel.bench import plots

    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    report.files = {"json": str(out / f"bench-{stamp}.json"), "latest": str(out / "latest.json")}
    report.files["plots"] = [str(p) for p in plots.write_plots(report.to_json(), out)]
    data = report.to_json()
    text = json.dumps(data, indent=2, default=str) + "\n"
    Path(report.files["json"]).write_text(text, encoding="utf-8")
    Path(report.files["latest"]).write_text(text, encoding="utf-8")
    return data


def fmt(v, spec=".2f", none="–"):
    return none if v is None else format(v, spec)


def spread(values) -> str:
    """``lowest–highest`` of ``values`` for the tables ("–" when there are none)."""
    return f"{min(values):.2f}–{max(values):.2f}" if values else "–"


def print_report(report: dict, console=None) -> None:
    """The results table, the ratio table and the start-up line of a report's JSON."""
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
                  fmt(md["mpps"]), fmt(md["ns_per_packet"], ".0f"),
                  fmt(md["recirculations_per_packet"]), fmt(100 * md["fast_path_share"], ".1f"),
                  fmt(md["upcalls"], ".0f"), fmt(md["connections_per_s"], ",.0f"),
                  fmt(md["memory"]["bytes_per_connection_conntrack"], ",.0f"),
                  fmt((md["memory"]["megaflow_bytes"] + md["memory"]["fast_path_bytes"]) / 1e6,
                       ".1f"),
                  fmt(100 * md["slow_path_share"], ".2f"))  # fmt: skip
    console.print(t)
    r = Table(title="ratios (same run, same machine): medians of the per-repeat ratios")
    for col in ("workload", "assume-established / recirc", "(lowest–highest)", "AE / stateless",
                "same results"):  # fmt: skip
        r.add_column(col, justify="left" if col == "workload" else "right")
    for row in report["ratios"]:
        same = row.get("same_results")
        r.add_row(row["workload"], fmt(row["ae_over_recirc"]),
                  spread(row.get("ae_over_recirc_pairs")),
                  fmt(row["ae_over_stateless"]),
                  "–" if same is None else ("yes" if same else "[red]NO[/]"))  # fmt: skip
    console.print(r)
    _print_replay(report["results"], console)
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


def _print_replay(results: list[dict], console) -> None:
    """The replay path beside the engine: capture file to packets.jsonl and per-port
    captures (the runs that have one), and the modes' ratio both ways."""
    from rich.table import Table

    by = {}
    for r in results:
        if r.get("replay"):
            by.setdefault(r["workload"]["kind"] + f" {r['workload']['flows']:,}", {})[
                r["mode"]] = r  # fmt: skip
    if not by:
        return
    t = Table(title="replay, capture file to output files (packets.jsonl + pcaps), same run")
    for col in ("workload", "AE Mpps", "recirc Mpps", "recirc/AE per packet", "engine alone"):
        t.add_column(col, justify="left" if col == "workload" else "right")
    for name, modes in by.items():
        ae, rc = modes.get("assume-established"), modes.get("recirc")
        if not (ae and rc):
            continue
        e2e = rc["replay"]["median"]["ns_per_packet"] / ae["replay"]["median"]["ns_per_packet"]
        eng = rc["median"]["ns_per_packet"] / ae["median"]["ns_per_packet"]
        t.add_row(name, fmt(ae["replay"]["median"]["mpps"]), fmt(rc["replay"]["median"]["mpps"]),
                  fmt(e2e), fmt(eng))  # fmt: skip
    console.print(t)
