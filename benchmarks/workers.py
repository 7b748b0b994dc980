"""Scaling with connection-sharded workers: ``ctaccel bench --experiment workers`` as a
script (kept for the command the README quoted; the code is ctaccel/bench/scaling.py).

    python benchmarks/workers.py [--workers 1,2] [--rounds 5] [--e2e 3]
"""

from __future__ import annotations

import argparse

from ctaccel.bench.scaling import run_workers_experiment


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--e2e", type=int, default=3, help="end-to-end replay rounds (0: none)")
    ap.add_argument("--batch", type=int, default=4096)
    args = ap.parse_args()
    run_workers_experiment([int(x) for x in args.workers.split(",")], args.rounds, args.e2e,
                           batch=args.batch)  # fmt: skip


if __name__ == "__main__":
    main()
