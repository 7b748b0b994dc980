"""``ctaccel bench``: the talk's two experiments, measured and plotted, in one command.

What: a click command over :func:`ctaccel.bench.runner.run_bench` and
:func:`ctaccel.bench.cpu.run_cpu_experiment`. With no arguments it runs experiment A
(10,000 established TCP flows) and B (A + 10,000 unidirectional flows: one packet in three
is NEW) in both modes plus the stateless ceiling, 5 repeats each, prints the table, then
runs a short host-CPU experiment (``--experiment cpu`` runs it in full, alone); ``--flows``
and ``--new-fraction`` add sweeps, ``--quick`` is a seconds-long smoke run,
``--with-ovs-dpdk`` also runs the real OVS-DPDK on the same captures and rules.
The lead attaches it to the ``ctaccel`` group (``main.add_command(bench)``).

Design: thin: options map onto ``run_bench``'s arguments; bad option values are click usage
errors (exit 2); errors the user can fix (unwritable directory...) are one line, exit 2.

Invariants: results go only under ``--out-dir``.
"""

from __future__ import annotations

import sys

import click

from ctaccel.errors import CtaccelError
from ctaccel.progress import shows_compiles


def _cpu(console, rates, flows, repeats, params, out_dir, quick) -> None:
    """The host-CPU experiment (bench/cpu.py); a user's error is one line, exit 2."""
    from ctaccel.bench.cpu import TALK_FLOWS, run_cpu_experiment

    try:
        run_cpu_experiment(rates=rates, flows=flows or TALK_FLOWS, repeats=repeats,
                           params=params, out_dir=out_dir, quick=quick,
                           console=console)  # fmt: skip
    except (CtaccelError, OSError) as err:
        click.echo(f"ctaccel: error: {err}", err=True)
        sys.exit(2)


def _flow_counts(values, hint: str = "--flows", what: str = "flow count") -> list[int]:
    """``--flows 1000 --flows 10k,100k`` -> [1000, 10000, 100000] (k/M suffixes allowed)."""
    counts = []
    for value in values:
        for part in str(value).split(","):
            part = part.strip().lower().replace("_", "")
            if not part:
                continue
            scale = {"k": 1_000, "m": 1_000_000}.get(part[-1], 1)
            digits = part[:-1] if scale > 1 else part
            try:
                n = int(float(digits) * scale)
            except ValueError:
                raise click.BadParameter(f"{value!r} is not a {what}", param_hint=hint) from None
            if n < 1:
                raise click.BadParameter(f"{value!r}: must be >= 1", param_hint=hint)
            counts.append(n)
    return counts


@click.command("bench")
@click.option("--flows", "flows", multiple=True,
              help="Established TCP flows (repeatable or a comma list, e.g. 1k,10k,100k,1M) "
                   "[default: 10,000].")  # fmt: skip
@click.option("--new-fraction", "new_fractions", type=float, multiple=True,
              help="Also run workload B with this share of NEW packets (repeatable), "
                   "at the first --flows.")  # fmt: skip
@click.option("--repeats", type=click.IntRange(min=1), default=5, show_default=True,
              help="Runs per measurement (fresh engine each); medians are reported.")  # fmt: skip
@click.option(
    "--packets",
    type=click.IntRange(min=1),
    default=None,
    help="Packets per capture [default: the complete rounds closest to 1,000,000].",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=1024, show_default=True,
              help="Packets per engine.run call.")  # fmt: skip
@click.option(
    "--quick",
    is_flag=True,
    help="Smoke run: 1,000 flows, 50,000 packets, 2 repeats, no cold start-up.",
)
@click.option("--no-startup", is_flag=True, help="Skip the start-up measurements.")
@click.option("--cold-start", is_flag=True,
              help="Measure the cold start-up now, in a fresh process with an empty kernel "
                   "cache (minutes). By default it is this run's own warm-up when the cache "
                   "was empty, else the figure recorded when this build was first measured.")  # fmt: skip
@click.option("--out-dir", default="benchmarks/results", show_default=True,
              help="Where the JSON, PNGs and generated workloads go.")  # fmt: skip
@click.option("--with-ovs-dpdk", is_flag=True,
              help="Also run OVS-DPDK (ctaccel.bench.ovs_dpdk, needs root) on the same "
                   "captures and rules; writes comparison.json.")  # fmt: skip
@click.option("--ovs-dpdk-repeats", type=click.IntRange(min=1), default=3, show_default=True,
              help="OVS-DPDK runs per capture (it restarts for each).")  # fmt: skip
@click.option("--timeout-policy", "timeout_policies", multiple=True,
              metavar="ZONE:NAME=SECONDS",
              help="A zone's conntrack timeout policy for every engine, as ovs-vsctl "
              "add-zone-tp (see ctaccel replay --help). Repeatable.")  # fmt: skip
@click.option("--experiment", type=click.Choice(["all", "rate", "cpu", "workers"]),
              default="all", show_default=True,
              help="rate: the packet-rate experiments; cpu: the host-CPU experiment in full "
                   "(paced replay at fixed offered rates, software and offloaded); workers: "
                   "scaling with connection-sharded workers (--workers); all: the rate "
                   "experiments and a short CPU experiment (and workers, with --workers).")  # fmt: skip
@click.option("--workers", "worker_counts", default=None, metavar="N[,N...]",
              help="Worker counts to compare (engine and end-to-end replay, workloads A and "
                   "B, both modes) [default for --experiment workers: 1, 2, 4... up to the "
                   "cores].")  # fmt: skip
@click.option("--offered-rate", "offered_rates", multiple=True, metavar="PPS",
              help="CPU experiment: an offered rate in packets/s (k/M suffixes; repeatable) "
                   "[default: 100k,250k,500k,1M,2M,4M; short run: 250k,1M,4M].")  # fmt: skip
@click.option("--offload-capacity", type=click.IntRange(min=0), default=131_072,
              show_default=True,
              help="CPU experiment: the modelled NIC's flow-table entries (one per "
                   "connection direction).")  # fmt: skip
@click.option("--offload-insert-rate", type=click.FloatRange(min=1.0), default=100_000.0,
              show_default=True, help="CPU experiment: entries/s the modelled NIC accepts "
                                      "(and removes).")  # fmt: skip
@click.option("--stats-interval", type=click.FloatRange(min=0.01), default=0.5,
              show_default=True,
              help="CPU experiment: seconds between statistics syncs from the NIC.")  # fmt: skip
@shows_compiles
def bench(**options):
    """Measure both datapath modes on the talk's workloads; write JSON and PNG plots."""
    from types import SimpleNamespace

    from rich.console import Console

    from ctaccel.bench.offload import OffloadParams

    o = SimpleNamespace(**options)  # the options above, by their parameter names
    flows_list = _flow_counts(o.flows) or None
    rates = _flow_counts(o.offered_rates, "--offered-rate", "packet rate") or None
    for f in o.new_fractions:
        if not 0.0 <= f < 1.0:
            raise click.BadParameter(f"{f} is not in [0, 1)", param_hint="--new-fraction")
    console = Console()
    params = OffloadParams(o.offload_capacity, o.offload_insert_rate, o.offload_insert_rate,
                           o.stats_interval)  # fmt: skip
    counts = _worker_counts(o.worker_counts)
    if o.experiment == "cpu":
        _cpu(console, rates, (flows_list or [None])[0], o.repeats, params, o.out_dir, o.quick)
        return
    if o.experiment != "workers":
        report = _rate_experiments(o, flows_list, console)
        if o.experiment == "all":
            _cpu(console, rates, None, 2, params, o.out_dir, True)
        _ovs_dpdk(o, report, console)
    if o.experiment == "workers" or (o.worker_counts and o.experiment == "all"):
        from ctaccel.bench.scaling import run_workers_experiment

        run_workers_experiment(counts, min(o.repeats, 2) if o.quick else o.repeats,
                               0 if o.quick else 3,
                               (flows_list or [1_000 if o.quick else 10_000])[0], o.out_dir,
                               console, packets=50_000 if o.quick else o.packets)  # fmt: skip


def _worker_counts(spec) -> list[int]:
    """``--workers 1,2,4`` as a list; default 1 and the powers of two up to the cores."""
    import os

    if spec is None:
        cores = os.cpu_count() or 1
        return [1] + [n for n in (2, 4, 8, 16, 32, 64) if n <= cores]
    try:
        counts = [int(x) for x in str(spec).split(",") if x.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise click.BadParameter(f"{spec!r}: expected N[,N...] with every N >= 1",
                                 param_hint="--workers")  # fmt: skip
    return counts


def _rate_experiments(o, flows_list, console) -> dict:
    """The packet-rate experiments (bench/runner.py); a user's error is one line, exit 2."""
    from ctaccel.bench import runner
    from ctaccel.conntrack.timeouts import parse_timeout_policies

    try:
        policies = parse_timeout_policies(o.timeout_policies)
        return runner.run_bench(flows_list=flows_list, new_fractions=list(o.new_fractions),
                                repeats=o.repeats, packets=o.packets, out_dir=o.out_dir,
                                quick=o.quick, progress=True, batch_size=o.batch_size,
                                startup_times=not o.no_startup,
                                cold_start="measure" if o.cold_start else "auto",
                                console=console, policies=policies)  # fmt: skip
    except (CtaccelError, OSError) as err:
        click.echo(f"ctaccel: error: {err}", err=True)
        sys.exit(2)


def _ovs_dpdk(o, report: dict, console) -> None:
    """OVS-DPDK beside the rate experiments (``--with-ovs-dpdk``), or how to get it."""
    from ctaccel.bench import compare

    if o.with_ovs_dpdk:
        comparison = compare.compare_with_ovs_dpdk(report, o.out_dir, o.ovs_dpdk_repeats,
                                                   console)  # fmt: skip
        if "error" not in comparison:
            from ctaccel.bench import plots

            plots.plot_run_bars(report, f"{o.out_dir}/modes.png", comparison)
    else:
        why = compare.ovs_dpdk_unavailable()
        hint = why or "run `ctaccel bench --with-ovs-dpdk` or `python benchmarks/run_all.py`"
        console.print(f"[dim]OVS-DPDK side by side: {hint}[/]")
