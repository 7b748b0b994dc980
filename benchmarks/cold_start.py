"""Cold and warm start of the installed ``ctaccel``, as a new user meets them.

    python3 benchmarks/cold_start.py [--out benchmarks/results/cold-start.json] [--repeats 1]

Each cold run gets a new empty HOME (the compiled kernels are cached under
``~/.cache/ctaccel``) and no NUMBA_CACHE_DIR, so it compiles everything, as the first command
after ``pip install`` does. Timed, as whole processes: ``ctaccel`` (the demo) and ``ctaccel
replay`` of a 10-packet capture, each cold; then the same replay again in the now warm HOME
(the warm start: the command's time and the warm-up it reports, i.e. loading the kernels).
Writes a JSON file and prints a table. Run it on a quiet machine: a compile competing with
other work for the two cores takes longer.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _run(cmd: list[str], home: str, cwd: str) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME")}
    env["HOME"] = home
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="benchmarks/results/cold-start.json")
    ap.add_argument("--repeats", type=int, default=1, help="cold runs of each command")
    args = ap.parse_args()
    ctaccel = shutil.which("ctaccel")
    if ctaccel is None:
        sys.exit("ctaccel is not installed (pip install -e .)")
    work = tempfile.mkdtemp(prefix="ctaccel-cold-")
    try:
        data = os.path.join(work, "data")
        _run([ctaccel, "gen", "--flows", "2", "--packets", "10", "--out-dir", data],
             os.path.join(work, "gen-home"), work)  # fmt: skip
        pcap = next(Path(data).glob("*.pcap"))
        flows = next(Path(data).glob("*.ct.flows"))
        replay = [ctaccel, "replay", "--flows", str(flows), "--in", f"1={pcap}", "--quiet"]
        rows: dict[str, list[float]] = {"demo_cold": [], "replay10_cold": []}
        warm_home = None
        for r in range(args.repeats):
            home = os.path.join(work, f"home-demo-{r}")
            rows["demo_cold"].append(_run([ctaccel], home, work))
            warm_home = os.path.join(work, f"home-replay-{r}")
            out = os.path.join(work, f"out-{r}")
            rows["replay10_cold"].append(_run([*replay, "--out-dir", out], warm_home, work))
        out = os.path.join(work, "out-warm")
        warm = _run([*replay, "--out-dir", out], warm_home, work)
        warm_up = json.loads(Path(out, "stats.json").read_text())["warmup_seconds"]
        result = {
            "demo_cold_seconds": rows["demo_cold"],
            "replay10_cold_seconds": rows["replay10_cold"],
            "replay10_warm_seconds": round(warm, 3),
            "warm_up_seconds_when_warm": warm_up,
            "cpus": len(os.sched_getaffinity(0)),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"ctaccel (demo), cold:           {', '.join(f'{s:.1f} s' for s in result['demo_cold_seconds'])}"
    )
    print(
        f"ctaccel replay 10 packets, cold: {', '.join(f'{s:.1f} s' for s in result['replay10_cold_seconds'])}"
    )
    print(f"ctaccel replay 10 packets, warm: {warm:.2f} s (kernels loaded in {warm_up:.2f} s)")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
