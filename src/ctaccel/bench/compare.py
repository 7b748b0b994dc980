"""ctaccel next to the real OVS-DPDK: the same captures and rules, in alternating rounds.

What: :func:`compare_with_ovs_dpdk` runs the OVS-DPDK peer (``bench/ovs_dpdk.py``) on the
captures and rules of a bench report's main workloads -- the conntrack firewall on A and B,
the stateless rules on A -- in rounds that alternate one ctaccel run of each mode with one
OVS-DPDK run, writes ``comparison.json`` and ``comparison.png``, prints the table, and
checks the benchmark issue's :data:`TARGETS` (:func:`check_targets`).

Design: this machine's speed drifts within minutes, so a ratio is the median of the rounds'
ratios (each round's runs are adjacent in time) and the Mpps are the medians of those
adjacent runs. The peer is imported (``ctaccel.bench.ovs_dpdk.benchmark``) and run in this
process with SIGTERM turned into a clean exit; it needs root (:func:`ovs_dpdk_unavailable`
says why it cannot run, with what to do). The report is read in its JSON form (a fresh
run's or a ``latest.json``).

Invariants: nothing is compared across runs; everything is written under ``out_dir``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ctaccel.bench.measure import (
    MODES,
    load_capture,
    measure_interleaved,
    workload_from_manifest,
    workload_info,
)
from ctaccel.bench.report import (
    STATELESS,
    Measurement,
    fmt,
    median_of,
    paired_ratio,
    rates,
    ratio,
    spread,
)


def ovs_dpdk_unavailable() -> str | None:
    """Why OVS-DPDK cannot run here (with how to fix it), or None when it can."""
    if os.geteuid() != 0:
        return (f"OVS-DPDK needs root (hugepages, DPDK): sudo {sys.executable} -m ctaccel.cli "
                "bench --with-ovs-dpdk (or sudo python benchmarks/run_all.py)")  # fmt: skip
    return None


def run_ovs_dpdk(pcap, rules_file, repeat: int, json_out) -> dict:
    """One OVS-DPDK benchmark (``repeat`` runs) of ``pcap`` with ``rules_file``: its report,
    also written to ``json_out``, or ``{"error": ...}``."""
    from ctaccel.bench import ovs_dpdk as peer
    from ctaccel.bench.private_ovs import OvsError

    config = peer.PeerConfig(pcap=pcap, flows=rules_file, repeat=repeat)
    try:
        with peer.terminate_as_exit():
            report = peer.benchmark(config)
    except OvsError as exc:
        return {"error": str(exc)}
    Path(json_out).write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    return report


def _rounds_with_ovs_dpdk(wi: dict, rules_file, runs, rounds: int, json_out: Path):
    """``rounds`` times: one ctaccel run of each ``runs`` item, then one OVS-DPDK run. Returns
    (OVS-DPDK's report over the rounds, its per-round medians in ``round_mpps``; ctaccel's
    measure dict over the rounds per mode, the stateless rules under STATELESS)."""
    workload = workload_from_manifest(Path(wi["pcap"]).with_suffix(".json"))
    if workload is None:
        return {"error": f"no workload manifest next to {wi['pcap']}"}, {}
    loaded = load_capture(workload.pcap_path)
    mine: list[list] = [[] for _ in runs]  # RunResults per configuration
    theirs: list[dict] = []
    for k in range(rounds):
        for j, r in enumerate(measure_interleaved(workload, runs, 1, loaded=loaded)):
            mine[j].extend(r.repeats)
        round_json = json_out.with_suffix(f".{k}.json")
        one = run_ovs_dpdk(workload.pcap_path, rules_file, 1, round_json)
        round_json.unlink(missing_ok=True)
        if "error" in one:
            return one, {}
        theirs.append(one)
    peer = dict(theirs[0])
    peer["repeat"] = rounds
    peer["runs"] = [run for one in theirs for run in one.get("runs", [])]
    peer["median"] = median_of([one["median"] for one in theirs])
    peer["round_mpps"] = [one.get("median", {}).get("mpps") for one in theirs]
    json_out.write_text(json.dumps(peer, indent=2, default=str) + "\n", encoding="utf-8")
    info = workload_info(workload)
    ours = {STATELESS if rules == STATELESS else mode:
            Measurement(info, mode, rules, mine[j]).to_json()
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
            ours_rounds = rates(mine)
            median, rounds = paired_ratio(ours_rounds, theirs)
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
                   "ratio_of_medians": ratio(mm["mpps"], med.get("mpps"))}  # fmt: skip
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
        span = spread([row["lowest"], row["highest"]] if row["lowest"] is not None else [])
        met = {None: "–", True: "yes", False: "[red]no[/]"}[row["met"]]
        t.add_row(row["target"], fmt(row["value"]), span, met)
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
        t.add_row(row["kind"], row["rules"], ours, fmt(row["ours_mpps"]),
                  fmt(row["ours_cycles_per_packet"], ".0f"), fmt(row["ovs_dpdk_mpps"]),
                  fmt(row["ovs_dpdk_cycles_per_packet"], ".0f"),
                  fmt(row["ratio_ours_over_ovs_dpdk"]),
                  spread(rounds))  # fmt: skip
    console.print(t)
    console.print("ours / OVS-DPDK: the median of the rounds' ratios (one run of each side "
                  "per round, adjacent in time) and their range")  # fmt: skip
    for p in comparison.get("ovs_dpdk_runs", []):
        if "error" in p["report"]:
            console.print(f"[red]OVS-DPDK {p['workload']} {p['rules']}:[/] {p['report']['error']}")
