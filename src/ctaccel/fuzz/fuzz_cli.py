"""``ctaccel fuzz``: the fuzzing campaign as a command (campaign.py, files.py).

What: mutated frames among live connections through the reference engine and both compiled
modes (they must agree packet for packet), then malformed capture files and fuzzed rule files
(one clear error or the packets' verdicts). Prints a summary table, writes the whole report
as JSON with ``--out``; exit status 1 when anything crashed, diverged or failed, 0 otherwise.

Design: thin, like the other commands; a progress bar (rich, on stderr) per round.
"""

from __future__ import annotations

import json
import random
import sys
import time

import click

from ctaccel.errors import CtaccelError
from ctaccel.progress import shows_compiles


@click.command("fuzz")
@click.option("--frames", type=int, default=100_000, show_default=True,
              help="Packets through each engine, seed traffic and mutated frames together.")  # fmt: skip
@click.option("--seed", type=int, default=0, show_default=True,
              help="Campaign seed (round N of seed S is always the same packets).")  # fmt: skip
@click.option("--share", type=float, default=0.3, show_default=True,
              help="Share of the seed packets that get a mutated copy (before them or instead).")  # fmt: skip
@click.option("--round-size", type=int, default=20_000, show_default=True,
              help="Packets per round (fresh engines each round).")  # fmt: skip
@click.option("--files", "n_files", type=int, default=300, show_default=True,
              help="Malformed capture files, and fuzzed rule files, to try (each).")  # fmt: skip
@click.option("--flows", "flows_path", type=click.Path(dir_okay=False), default=None,
              help="Rules for the frame campaign [default: the built-in firewall: two zones, "
                   "ct_mark, SNAT, the FTP helper].")  # fmt: skip
@click.option("--out", "out_json", default=None, help="Write the whole report (JSON) here.")
@click.option("--save-dir", default=None,
              help="Write each round that crashed or diverged here (rules + one pcap per port).")  # fmt: skip
@shows_compiles
def fuzz(frames, seed, share, round_size, n_files, flows_path, out_json, save_dir):
    """Fuzz the datapath: mutated frames (truncations, bad lengths and offsets, checksums,
    option soup, fragments, IPv6 extension chains, ICMP errors quoting garbage, blind
    injection, FTP commands) through the reference engine and both modes, which must agree;
    then malformed captures and rule files."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from ctaccel.fuzz import campaign, files

    console = Console(stderr=True)
    rules_text = None
    try:
        if flows_path is not None:
            from ctaccel.ofproto.rules import load_flows

            load_flows(flows_path)  # rejected whole, with file:line, before anything runs
            with open(flows_path) as f:
                rules_text = f.read()
        if frames < 0 or n_files < 0 or round_size < 1 or not 0 <= share <= 1:
            raise CtaccelError("--frames, --files >= 0, --round-size >= 1, 0 <= --share <= 1")
    except (CtaccelError, OSError) as err:
        click.echo(f"ctaccel: error: {err}", err=True)
        sys.exit(2)
    started = time.perf_counter()
    from ctaccel.datapath.warmup import warm_up

    warm_up()  # a first run compiles the datapath in two processes, as replay and bench do
    with Progress("fuzzing", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, disable=not console.is_terminal) as bar:  # fmt: skip
        task = bar.add_task("frames", total=frames)
        report = campaign.run_campaign(frames, seed, round_size, share,
                                       rules_text=rules_text, out_dir=save_dir,
                                       progress=lambda done, _t: bar.update(task, completed=done))  # fmt: skip
    result = {"seed": seed, "frames_campaign": report.as_dict()}
    if n_files:
        rng = random.Random(f"ctaccel-fuzz-files:{seed}")
        result["captures"] = files.check_captures(files.capture_cases(rng, n_files))
        result["rule_files"] = files.check_rules(files.rule_cases(rng, n_files))
    result["seconds"] = round(time.perf_counter() - started, 1)
    _print(result)
    if out_json:
        with open(out_json, "w") as f:
            json.dump(result, f, indent=1)
    failed = (
        report.n_crashes
        or report.n_divergences
        or report.unnamed_drops
        or any(result[k]["failures"] for k in ("captures", "rule_files") if k in result)
    )
    sys.exit(1 if failed else 0)


def _print(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    fc = result["frames_campaign"]
    t = Table(title=f"ctaccel fuzz (seed {result['seed']}, {result['seconds']} s)")
    t.add_column("check")
    t.add_column("tried", justify="right")
    t.add_column("result", justify="right")
    t.add_row("frames through reference, recirc, assume-established", f"{fc['frames']:,}",
              f"{fc['crashes']} crashes, {fc['divergences']} divergences")  # fmt: skip
    t.add_row("  of them mutated", f"{fc['mutated_frames']:,}",
              f"{fc['packets_without_outputs_or_named_drop']} without a verdict")  # fmt: skip
    for key, label in (
        ("captures", "malformed capture files"),
        ("rule_files", "fuzzed rule files"),
    ):
        if key in result:
            r = result[key]
            t.add_row(label, f"{r['tried']:,}",
                      f"{r['accepted']} replayed, {r['rejected']} one-line errors, "
                      f"{len(r['failures'])} failures")  # fmt: skip
    Console().print(t)
    for what in fc["first_crashes"][:3] + fc["first_divergences"][:3]:
        Console(stderr=True).print(what)
