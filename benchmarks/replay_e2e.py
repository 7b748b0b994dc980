"""`ctaccel replay` end to end: time per packet of both modes, and memory against capture size.

    python3 benchmarks/replay_e2e.py [--sizes 1000000,5000000] [--repeats 3]
        [--out benchmarks/results/replay-e2e.json]

Generates workload A (10,000 flows) at two capture sizes, then times the whole command (a
fresh process each run, the kernels already compiled) for both modes, with packets.jsonl and
with ``--packets none``, the runs of one size taking turns. Per packet is the slope between the
two sizes of the median times (the fixed start-up cost cancels); peak RSS is each process's
maximum resident set, which must not grow with the capture (replay streams). Beside them, the
engine's own time on the smaller capture, in this process, as ``ctaccel bench`` takes it
(engine.run only). Writes JSON and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODES = ("assume-established", "recirc")
OUTPUTS = ("jsonl", "none")


def _run(cmd: list[str]) -> tuple[float, int]:
    """(seconds, peak RSS in KB) of one process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _pid, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr.read().decode()[-2000:]}")
    proc.stderr.close()
    return seconds, int(usage.ru_maxrss)


def _engine_only(pcap: Path, flows: Path, repeats: int) -> dict:
    """ns/packet of engine.run alone per mode (median of ``repeats`` fresh engines)."""
    from ctaccel.bench import measure
    from ctaccel.datapath.warmup import warm_up
    from ctaccel.ofproto.classifier import FlowTables
    from ctaccel.ofproto.rules import parse_flows

    warm_up()
    loaded = measure.load_capture(pcap)
    tables = FlowTables(parse_flows(flows.read_text(encoding="utf-8"), str(flows)))
    return {m: statistics.median(measure.one_run(tables, loaded, m).ns_per_packet
                                 for _ in range(repeats)) for m in MODES}  # fmt: skip


def main() -> None:
    if sys.argv[1:2] == ["--engine-only"]:
        pcap, flows, repeats = sys.argv[2:5]
        print(json.dumps(_engine_only(Path(pcap), Path(flows), int(repeats))))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1000000,5000000")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/results/replay-e2e.json")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    cli = [sys.executable, "-m", "ctaccel.cli"]
    work = Path(tempfile.mkdtemp(prefix="ctaccel-e2e-"))
    runs: dict = {}
    for size in sizes:
        d = work / f"A-{size}"
        _run([*cli, "gen", "--workload", "a", "--flows", "10000", "--packets", str(size),
              "--out-dir", str(d)])  # fmt: skip
        pcap, flows = next(d.glob("*.pcap")), next(d.glob("*.ct.flows"))
        _run(
            [
                *cli,
                "replay",
                "--flows",
                str(flows),
                "--in",
                f"1={pcap}",
                "--quiet",
                "--packets",
                "none",
                "--out-dir",
                str(work / "out"),
            ]
        )  # compile / load once
        shutil.rmtree(work / "out")
        for _ in range(args.repeats):
            for out in OUTPUTS:
                for mode in MODES:
                    out_dir = work / "out"  # a new directory each run, as a user's would be
                    t, rss = _run([*cli, "replay", "--flows", str(flows), "--in", f"1={pcap}",
                                   "--mode", mode, "--packets", out, "--quiet",
                                   "--out-dir", str(out_dir)])  # fmt: skip
                    shutil.rmtree(out_dir)
                    runs.setdefault(f"{size} {out} {mode}", []).append((t, rss))
        if size == sizes[0]:  # in its own process: a parent's resident set would count in the
            # children's peak (Linux keeps ru_maxrss across exec)
            done = subprocess.run([sys.executable, __file__, "--engine-only", str(pcap),
                                   str(flows), str(args.repeats)], capture_output=True,
                                  text=True, check=True)  # fmt: skip
            engine_ns = json.loads(done.stdout.splitlines()[-1])
        for p in d.iterdir():
            p.unlink()
    small, big = sizes[0], sizes[-1]
    report: dict = {"sizes": sizes, "repeats": args.repeats, "cpus": os.cpu_count(),
                    "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                    "runs": {k: [{"seconds": round(t, 3), "max_rss_kb": r} for t, r in v]
                             for k, v in runs.items()}}  # fmt: skip
    report["engine_only"] = {m: {"ns_per_packet": round(v, 1), "mpps": round(1e3 / v, 2)}
                             for m, v in engine_ns.items()}  # fmt: skip
    print(
        "engine alone: "
        + ", ".join(f"{m} {v:.0f} ns/packet" for m, v in engine_ns.items())
        + f" (recirc/AE {engine_ns['recirc'] / engine_ns['assume-established']:.2f})"
    )
    med = {k: statistics.median(t for t, _ in v) for k, v in runs.items()}
    peak = {k: max(r for _, r in v) for k, v in runs.items()}
    for out in OUTPUTS:
        ns = {m: (med[f"{big} {out} {m}"] - med[f"{small} {out} {m}"]) / (big - small) * 1e9
              for m in MODES}  # fmt: skip
        rss = {m: peak[f"{big} {out} {m}"] / peak[f"{small} {out} {m}"] for m in MODES}
        report[out] = {"ns_per_packet": {m: round(v, 1) for m, v in ns.items()},
                       "recirc_over_ae": round(ns["recirc"] / ns["assume-established"], 2),
                       "mpps": {m: round(1e3 / v, 2) for m, v in ns.items()},
                       "peak_rss_big_over_small": {m: round(v, 3) for m, v in rss.items()}}  # fmt: skip
        print(
            f"--packets {out:5}: ns/packet AE {ns['assume-established']:.0f}, recirc "
            f"{ns['recirc']:.0f} (recirc/AE {report[out]['recirc_over_ae']:.2f}); peak RSS "
            f"{big:,} vs {small:,} packets: AE x{rss['assume-established']:.3f}, recirc "
            f"x{rss['recirc']:.3f}"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
