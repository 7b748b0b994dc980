"""PNG plots of a ``ctaccel bench`` report (and of the OVS-DPDK comparison).

What: :func:`write_plots` draws, from the report dict that ``runner.run_bench`` builds:
throughput (Mpps) against flow count per mode (log x), the assume-established / recirc
speedup, Mpps per mode against the NEW-packet share, and a bar chart of the main A/B runs
per mode (+ OVS-DPDK bars when a comparison is given). :func:`plot_comparison` draws
ctaccel next to OVS-DPDK from ``comparison.json``'s dict.

Design: matplotlib with the Agg backend (no display needed), selected before pyplot is
imported. Every plot shows medians; the whiskers span the fastest and slowest repeat. Titles
name the machine and date, because figures from different machines must not be mixed.

Invariants: the plots read only the report; each function writes one file and returns its
path; a figure is always closed after saving (no growth over many plots).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
from matplotlib.ticker import NullFormatter  # noqa: E402

STATELESS = "stateless"
SERIES = ("recirc", "assume-established", STATELESS)
COLOURS = {"recirc": "tab:blue", "assume-established": "tab:orange", STATELESS: "tab:gray",
           "ovs-dpdk": "tab:green", "ovs-dpdk stateless": "tab:olive"}  # fmt: skip
LABELS = {"recirc": "recirc (OVS model)", "assume-established": "assume-established",
          STATELESS: "stateless rules (recirc): ceiling"}  # fmt: skip
MARKERS = {"A": "o", "B": "s"}


def _series(result: dict) -> str:
    return STATELESS if result["rules"] == STATELESS else result["mode"]


def _subtitle(report: dict) -> str:
    m = report["machine"]
    return f"{m['cpu']}, {m['cores']} cores, {m['date'][:10]}, one core, medians"


def _spread(result: dict) -> tuple[float, float, float]:
    """(median, median - slowest, fastest - median) in Mpps over the repeats."""
    values = [r["mpps"] for r in result["repeats"]]
    med = result["median"]["mpps"]
    return med, med - min(values), max(values) - med


def _flows_axis(ax, flows) -> None:
    """Log x axis with the measured flow counts as plain tick labels (1,000 not 10^3)."""
    ax.set_xscale("log")
    ticks = sorted(set(flows))
    if ticks:
        ax.set_xticks(ticks, [f"{t:,}" for t in ticks])
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("established TCP flows")


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_throughput_vs_flows(report: dict, path) -> Path:
    """Mpps against established flows (log x), one line per workload kind and mode."""
    fig, ax = plt.subplots(figsize=(8, 5))
    main = [r for r in report["results"] if r.get("role") == "flows"]
    for kind in ("A", "B"):
        for series in SERIES:
            pts = sorted((r["workload"]["flows"], *_spread(r)) for r in main
                         if r["workload"]["kind"] == kind and _series(r) == series)  # fmt: skip
            if not pts:
                continue
            x, y, lo, hi = zip(*pts, strict=True)
            ax.errorbar(x, y, yerr=[lo, hi], marker=MARKERS[kind], capsize=3,
                        color=COLOURS[series], linestyle="-" if kind == "A" else "--",
                        label=f"{kind}: {LABELS[series]}")  # fmt: skip
    _flows_axis(ax, [r["workload"]["flows"] for r in main])
    ax.set_ylabel("throughput (Mpps, one core)")
    ax.set_ylim(bottom=0)
    ax.set_title(f"Throughput vs flows\n{_subtitle(report)}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, Path(path))


def plot_speedup(report: dict, path) -> Path:
    """assume-established / recirc against flows (and against the NEW share if swept)."""
    rows = report.get("ratios", [])
    by_name = {r["workload"]["name"]: r["workload"] for r in report["results"]}
    roles = {r["workload"]["name"]: r.get("role") for r in report["results"]}
    swept = any(role == "new_fraction" for role in roles.values())
    fig, axes = plt.subplots(1, 2 if swept else 1, figsize=(11 if swept else 7, 4.5))
    axes = list(axes) if swept else [axes]
    ax = axes[0]
    for kind in ("A", "B"):
        pts = sorted((by_name[r["workload"]]["flows"], r["ae_over_recirc"]) for r in rows
                     if r["kind"] == kind and roles.get(r["workload"]) == "flows"
                     and r["ae_over_recirc"])  # fmt: skip
        if pts:
            x, y = zip(*pts, strict=True)
            ax.plot(x, y, marker=MARKERS[kind], label=f"workload {kind}")
    ax.axhline(1.0, color="black", linewidth=0.8)
    _flows_axis(ax, [w["flows"] for n, w in by_name.items() if roles.get(n) == "flows"])
    ax.set_ylabel("speedup: assume-established / recirc (Mpps)")
    ax.set_ylim(bottom=0)
    ax.set_title(f"Speedup vs flows\n{_subtitle(report)}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    if swept:
        ax = axes[1]
        first = report["settings"]["flows"][0]
        pts = sorted((100 * by_name[r["workload"]]["new_share"], r["ae_over_recirc"]) for r in rows
                     if by_name[r["workload"]]["flows"] == first and r["ae_over_recirc"])  # fmt: skip
        if pts:
            x, y = zip(*pts, strict=True)
            ax.plot(x, y, marker="o", color="tab:purple")
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xlabel("NEW packets (% of the capture)")
        ax.set_ylabel("speedup: assume-established / recirc")
        ax.set_ylim(bottom=0)
        ax.set_title(f"Speedup vs NEW share ({first:,} flows)", fontsize=10)
        ax.grid(True, alpha=0.3)
    return _save(fig, Path(path))


def plot_new_fraction(report: dict, path) -> Path:
    """Mpps per mode against the NEW share, at the first flow count (A, B and the sweep)."""
    first = report["settings"]["flows"][0]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    chosen = [r for r in report["results"] if r["workload"]["flows"] == first]
    for series in SERIES:
        pts = sorted((100 * r["workload"]["new_share"], *_spread(r)) for r in chosen
                     if _series(r) == series)  # fmt: skip
        if not pts:
            continue
        x, y, lo, hi = zip(*pts, strict=True)
        ax.errorbar(x, y, yerr=[lo, hi], marker="o", capsize=3, color=COLOURS[series],
                    label=LABELS[series])  # fmt: skip
    ax.set_xlabel("NEW packets (% of the capture)")
    ax.set_ylabel("throughput (Mpps, one core)")
    ax.set_ylim(bottom=0)
    ax.set_title(f"Throughput vs NEW share ({first:,} established flows)\n{_subtitle(report)}",
                 fontsize=10)  # fmt: skip
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, Path(path))


def _bars(ax, groups: list[str], series: dict[str, dict[str, tuple]], ylabel: str) -> None:
    """Grouped bars: ``series[name][group] = (median, down, up)``."""
    names = [s for s in series if series[s]]
    width = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        xs, ys, lo, hi = [], [], [], []
        for g, group in enumerate(groups):
            if group in series[name]:
                med, down, up = series[name][group]
                xs.append(g + (i - (len(names) - 1) / 2) * width)
                ys.append(med)
                lo.append(down)
                hi.append(up)
        bars = ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3, label=LABELS.get(name, name),
                      color=COLOURS.get(name))  # fmt: skip
        ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=2)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)


def plot_run_bars(report: dict, path, comparison: dict | None = None) -> Path:
    """One run's A and B at the first flow count, per mode (+ OVS-DPDK when given)."""
    first = report["settings"]["flows"][0]
    main = [r for r in report["results"] if r.get("role") == "flows"
            and r["workload"]["flows"] == first]  # fmt: skip
    groups = [f"workload {k}" for k in ("A", "B") if any(r["workload"]["kind"] == k for r in main)]
    series: dict = {s: {} for s in SERIES}
    for r in main:
        series[_series(r)][f"workload {r['workload']['kind']}"] = _spread(r)
    for row in (comparison or {}).get("rows", []):
        name = "ovs-dpdk stateless" if row["rules"] == "stateless" else "ovs-dpdk"
        if row.get("ovs_dpdk_mpps"):
            series.setdefault(name, {})[f"workload {row['kind']}"] = (row["ovs_dpdk_mpps"], 0, 0)
    fig, ax = plt.subplots(figsize=(8, 5))
    _bars(ax, groups, series, "throughput (Mpps, one core)")
    ax.set_title(f"Workloads A and B, {first:,} established flows\n{_subtitle(report)}",
                 fontsize=10)  # fmt: skip
    return _save(fig, Path(path))


def _round_range(median, rounds) -> tuple:
    """(median, down, up): the whiskers reach the lowest and highest round (none when the
    rounds were not recorded)."""
    vals = [v for v in rounds or [] if v is not None]
    if median is None or not vals:
        return (median, 0, 0)
    return (median, max(median - min(vals), 0), max(max(vals) - median, 0))


def plot_comparison(comparison: dict, path) -> Path:
    """ctaccel (each mode) next to OVS-DPDK, per workload and rule set."""
    groups: list[str] = []
    series: dict = {"recirc": {}, "assume-established": {}, STATELESS: {}, "ovs-dpdk": {}}
    for row in comparison.get("rows", []):
        group = f"{row['kind']} {'stateless' if row['rules'] == 'stateless' else 'firewall'}"
        if row["rules"] == "stateless":  # the stateless rounds also run AE on the firewall rules
            group += "\n(assume-established: firewall rules)"
        if group not in groups:
            groups.append(group)
        series[row["ours_mode"]][group] = _round_range(row["ours_mpps"],
                                                       row.get("ours_mpps_rounds"))  # fmt: skip
        if row.get("ovs_dpdk_mpps"):
            series["ovs-dpdk"][group] = _round_range(row["ovs_dpdk_mpps"],
                                                     row.get("ovs_dpdk_mpps_rounds"))  # fmt: skip
    fig, ax = plt.subplots(figsize=(8, 5))
    _bars(ax, groups, series, "throughput (Mpps, one core)")
    m = comparison.get("machine", {})
    ax.set_title("ctaccel vs OVS-DPDK 3.1: same captures and rules, medians (whiskers: "
                 "lowest and highest round)\n"
                 f"{m.get('cpu', '?')}, {m.get('date', '?')[:10]}", fontsize=10)  # fmt: skip
    return _save(fig, Path(path))


def write_plots(report: dict, out_dir, comparison: dict | None = None) -> list[Path]:
    """Every plot of the report into ``out_dir``; returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return [
        plot_throughput_vs_flows(report, out / "throughput-vs-flows.png"),
        plot_speedup(report, out / "speedup.png"),
        plot_new_fraction(report, out / "new-fraction.png"),
        plot_run_bars(report, out / "modes.png", comparison),
    ]


CPU_HOSTS = (("recirc", "recirc (software)", "tab:blue", "o-"),
             ("assume-established", "assume-established (software)", "tab:orange", "s-"),
             ("offload-stub", "offloaded: device stub (measured)", "tab:green", "^-"),
             ("offload-model", "offloaded: model", "tab:green", "x--"))  # fmt: skip


def _cpu_axes(ax, points: list[dict], xkey, xlabel: str, share: str) -> None:
    for host, label, colour, style in CPU_HOSTS:
        xs = [xkey(p) for p in points]
        ys = [100 * (p["hosts"][host][share] or float("nan")) for p in points]
        ax.plot(xs, ys, style, color=colour, label=label)
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("host CPU, % of one core")
    ax.set_ylim(bottom=0)
    ax.grid(True, which="both", alpha=0.3)


def _cpu_figure(report: dict, points: list[dict], xkey, xlabel: str, title: str, path: Path,
                load=None) -> Path:  # fmt: skip
    """Two panels: the steady established phase (the talk's figure) and the whole run
    (set-up, installing, established, teardown and expiry over the whole traffic)."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    talk = report["talk"]
    for ax, share, what in ((axes[0], "established_share", "established connections only"),
                            (axes[1], "total_share", "whole run: set-up to expiry")):  # fmt: skip
        _cpu_axes(ax, points, xkey, xlabel, share)
        if load:
            ax.axvline(load / 1e6, color="gray", ls=":", label="the talk's load (recirc at 52%)")
        if share == "established_share":
            ax.axhline(100 * talk["baseline_share"], color="tab:red", ls="--", lw=1,
                       label="the talk, software conntrack: 52%")  # fmt: skip
            ax.axhline(100 * talk["offload_share"], color="tab:red", ls=":", lw=1,
                       label="the talk, offloaded: 2%")  # fmt: skip
        ax.set_title(what, fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(f"{title}\n{_subtitle(report)}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_cpu(report: dict, out_dir) -> list[Path]:
    """The CPU experiment's plots: host CPU against offered load (``cpu-load.png``) and
    against the number of flows at the talk's load (``cpu-flows.png``, when measured)."""
    out, paths = Path(out_dir), []
    at = [report["at_talk_load"]] if report.get("at_talk_load") else []
    points = sorted(report.get("load", []) + at, key=lambda p: p["offered_pps"])
    if points:
        paths.append(_cpu_figure(report, points, lambda p: p["offered_pps"] / 1e6,
                                 "offered load (Mpps, log)",
                                 f"Host CPU, {report['settings']['flows']:,} TCP flows",
                                 out / "cpu-load.png", report.get("talk_load_pps")))  # fmt: skip
    sweep = report.get("flows_sweep") or []
    if sweep:
        title = f"Host CPU at the talk's load, {sweep[0]['offered_pps'] / 1e6:.2f} Mpps"
        paths.append(_cpu_figure(report, sweep, lambda p: p["flows"],
                                 "established TCP flows (log)", title,
                                 out / "cpu-flows.png"))  # fmt: skip
    return paths
