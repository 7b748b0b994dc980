"""Reading OVS-DPDK's counters: PMD statistics, rule counts, conntrack, scheduling, TSC.

What: parsers for ``dpif-netdev/pmd-stats-show``, ``pmd-perf-show`` and ``ovs-ofctl
dump-flows`` text, and readers that ask a running peer (``bench/ovs_dpdk.py``'s ``OvsDpdk``:
anything with ``appctl``, ``ofctl``, ``pids`` and ``config.pmd_core``) for conntrack entries,
datapath flows, the PMD thread's preemptions and its TSC cycles, plus the TSC frequency.

Design: plain text parsing of OVS 3.1's output; a field OVS does not print is absent from
the dict (the callers use ``.get`` with a default). The PMD thread's scheduling figures come
from /proc (``nonvoluntary_ctxt_switches`` and ``schedstat``) of the vswitchd threads whose
name starts with "pmd".

Invariants: nothing here changes OVS's state except what a read implies; rule texts come back
without their statistics, so runs can be matched rule by rule.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

from ctaccel.bench.private_ovs import OvsError

_PMD_FIELDS = {
    "packets received": "packets",
    "packet recirculations": "recirculations",
    "avg. datapath passes per packet": "passes_per_packet",
    "phwol hits": "phwol_hits",
    "mfex opt hits": "mfex_opt_hits",
    "simple match hits": "simple_match_hits",
    "emc hits": "emc_hits",
    "smc hits": "smc_hits",
    "megaflow hits": "megaflow_hits",
    "avg. subtable lookups per megaflow hit": "subtable_lookups_per_megaflow_hit",
    "miss with success upcall": "upcalls",
    "miss with failed upcall": "failed_upcalls",
    "avg. packets per output batch": "packets_per_output_batch",
    "idle cycles": "idle_cycles",
    "processing cycles": "processing_cycles",
}


def parse_pmd_stats(text: str, core: int) -> dict:
    """The counters of the PMD thread on ``core`` from ``dpif-netdev/pmd-stats-show``."""
    stats: dict = {}
    inside = False
    for line in text.splitlines():
        if not line.startswith(" "):
            inside = bool(re.match(rf"pmd thread numa_id \d+ core_id {core}:", line))
            continue
        if not inside or ":" not in line:
            continue
        label, value = line.strip().split(":", 1)
        if label in _PMD_FIELDS:
            number = value.split()[0]
            stats[_PMD_FIELDS[label]] = float(number) if "." in number else int(number)
    if "packets" not in stats:
        raise OvsError(f"no PMD on core {core} in pmd-stats-show:\n{text}")
    return stats


def parse_perf_lost_upcalls(text: str) -> int:
    found = re.search(r"Lost upcalls:\s+(\d+)", text)
    return int(found.group(1)) if found else 0


_STAT_FIELDS = re.compile(r"\b(cookie=0x0|duration=[\d.]+s|n_packets=\d+|n_bytes=\d+|"
                          r"idle_age=\d+|hard_age=\d+)(, |,)?")  # fmt: skip


def parse_rule_counts(dump: str) -> list[dict]:
    """[{rule, n_packets, n_bytes}] from ``ovs-ofctl dump-flows`` (statistics removed)."""
    rules = []
    for line in dump.splitlines():
        line = line.strip()
        packets = re.search(r"n_packets=(\d+)", line)
        if not packets:
            continue
        nbytes = re.search(r"n_bytes=(\d+)", line)
        rule = _STAT_FIELDS.sub("", line).strip().rstrip(",")
        rules.append({"rule": rule, "n_packets": int(packets.group(1)),
                      "n_bytes": int(nbytes.group(1)) if nbytes else 0})  # fmt: skip
    return rules


def conntrack_entries(ovs) -> int:
    text = ovs.appctl("dpctl/dump-conntrack")
    return sum(1 for line in text.splitlines() if line.strip())


def datapath_flows(ovs) -> int:
    text = ovs.appctl("dpctl/dump-flows")
    return sum(1 for line in text.splitlines() if "actions:" in line)


def pmd_scheduling(ovs) -> tuple[int, float]:
    """(involuntary context switches, seconds spent waiting for the CPU) of the PMD thread
    so far. On a shared machine other processes take the PMD core now and then; OVS counts
    that time as cycles of the batch in progress, so these say how disturbed a run was."""
    pid = ovs.pids.get("ovs-vswitchd")
    switches, waited_ns = 0, 0
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            if not (task / "comm").read_text().startswith("pmd"):
                continue
            for line in (task / "status").read_text().splitlines():
                if line.startswith("nonvoluntary_ctxt_switches:"):
                    switches += int(line.split()[1])
            waited_ns += int((task / "schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return switches, waited_ns / 1e9


def cycles_now(ovs) -> int:
    stats = parse_pmd_stats(ovs.appctl("dpif-netdev/pmd-stats-show"), ovs.config.pmd_core)
    return int(stats.get("idle_cycles", 0)) + int(stats.get("processing_cycles", 0))


def tsc_hz_from_kernel() -> float | None:
    """The kernel's TSC frequency (refined calibration if logged), or None."""
    try:
        text = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    for pattern in (r"Refined TSC clocksource calibration: ([\d.]+) MHz",
                    r"tsc: Detected ([\d.]+) MHz"):  # fmt: skip
        found = re.search(pattern, text)
        if found:
            return float(found.group(1)) * 1e6
    return None


def tsc_hz_measured(ovs, seconds: float = 1.0) -> float:
    """TSC Hz from the idle PMD's cycle counters over a wall-clock interval: a busy-polling
    PMD accounts every TSC cycle as idle or processing."""
    c0, t0 = cycles_now(ovs), time.monotonic()
    time.sleep(seconds)
    c1, t1 = cycles_now(ovs), time.monotonic()
    return (c1 - c0) / (t1 - t0)
