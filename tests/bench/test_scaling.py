"""``ctaccel bench --experiment workers`` (bench/scaling.py): the scaling report, end to end.

Small workloads, two worker counts: the JSON names the machine's cores and has, per workload
and mode, engine and replay throughput for every count with ratios to the first; the plot is
written; the CLI takes the experiment and refuses a bad --workers list.
"""

from __future__ import annotations

import json

from click.testing import CliRunner

from ctaccel.bench.scaling import run_workers_experiment
from ctaccel.cli import main


def test_workers_experiment_writes_the_report(tmp_path):
    report = run_workers_experiment([1, 2], rounds=2, e2e=1, flows=300, out_dir=tmp_path,
                                    packets=20_000)  # fmt: skip
    data = json.loads((tmp_path / "workers" / "workers.json").read_text())
    assert data["cores"] >= 1 and data["workers"] == [1, 2]
    assert {(r["workload"], r["mode"]) for r in data["results"]} == {
        (k, m) for k in "AB" for m in ("assume-established", "recirc")}  # fmt: skip
    for row in report["results"]:
        assert row["packets"] > 0
        assert set(row["engine_mpps"]) == {1, 2} and min(row["engine_mpps"].values()) > 0
        assert row["engine_ratio"][1] == 1.0 and row["engine_ratio"][2] > 0
        assert row["replay_ratio"][1] == 1.0 and row["replay_mpps"][2] > 0
    assert (tmp_path / "workers" / "workers.png").stat().st_size > 0


def test_cli_workers_experiment_and_bad_counts(tmp_path):
    bad = CliRunner().invoke(main, ["bench", "--experiment", "workers", "--workers", "0,2",
                                    "--out-dir", str(tmp_path)])  # fmt: skip
    assert bad.exit_code == 2 and "--workers" in bad.output
    run = CliRunner().invoke(main, ["bench", "--experiment", "workers", "--workers", "1,2",
                                    "--quick", "--flows", "200", "--out-dir", str(tmp_path)])  # fmt: skip
    assert run.exit_code == 0, run.output
    assert "worker(s)" in run.output
    assert json.loads((tmp_path / "workers" / "workers.json").read_text())["workers"] == [1, 2]
