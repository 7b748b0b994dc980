"""The ``ctaccel`` command line.

What: ``ctaccel`` (no arguments: the demo), ``replay``, ``trace``, ``dump-flows``,
``dump-conntrack``, ``demo``; ``run`` and ``ctl`` (live_cli.py), ``gen`` and ``bench``.

Design: thin: every command parses its options, calls one library function and prints.
Errors the user can fix (missing file, bad rule) are one line on stderr and exit code 2;
nothing is written half-way because the library validates every input before writing.
"""

from __future__ import annotations

import sys

import click

from ctaccel.errors import CtaccelError
from ctaccel.progress import shows_compiles

IN_HELP = "PORT=PCAP: packets of this capture enter on OpenFlow port PORT (repeatable)."


ZONE_MAP_HELP = (
    "KZ=Z: the kernel's conntrack zone KZ is ctaccel's zone Z (repeatable; zones "
    "not named keep their number)."
)
BRIDGE_HELP = (
    "The bridge's ports for the NORMAL action, as ovs-vsctl sets them: "
    "'1,2,5:tag=12,7:trunks=1-5;9' (tag: access port of that VLAN; trunks: the "
    "VLANs a trunk carries; bare: a trunk of all). Default: the ports the rules "
    "name and every port a packet arrives on, as trunks."
)


def _fail(err: Exception) -> None:
    click.echo(f"ctaccel: error: {err}", err=True)
    sys.exit(2)


TIMEOUT_POLICY_HELP = (
    "ZONE:NAME=SECONDS[,NAME=SECONDS...]: the zone's conntrack timeout policy, as ovs-vsctl "
    "add-zone-tp (names tcp_syn_sent, tcp_syn_recv, tcp_established, tcp_fin_wait, "
    "tcp_time_wait, tcp_close, udp_first, udp_single, udp_multiple, icmp_first, icmp_reply; "
    "the rest OVS's defaults); default:NAME=SECONDS for every zone without its own. Repeatable."
)


def _timeout_policy_option(fn):
    return click.option("--timeout-policy", "timeout_policies", multiple=True,
                        metavar="ZONE:NAME=SECONDS", help=TIMEOUT_POLICY_HELP)(fn)  # fmt: skip


def _policies(specs) -> dict:
    from ctaccel.conntrack.timeouts import parse_timeout_policies

    return parse_timeout_policies(specs)


def _ct_import(path, zone_map) -> tuple | None:
    """``--ct-import FILE`` with its ``--zone-map`` items, checked."""
    from ctaccel.conntrack.kernel_map import parse_zone_map

    zones = parse_zone_map(zone_map)
    if path is None:
        if zones:
            raise CtaccelError("--zone-map: only with --ct-import (it renames the table's zones)")
        return None
    return path, zones


def _zone_limits(specs) -> dict:
    out: dict = {}
    for spec in specs:
        zone, sep, limit = spec.partition("=")
        if not sep or not limit.isdigit() or not (zone == "default" or zone.isdigit()):
            raise CtaccelError(f"--zone-limit {spec!r}: expected ZONE=N or default=N")
        out["default" if zone == "default" else int(zone)] = int(limit)
    return out


@click.group(invoke_without_command=True)
@click.version_option(package_name="ctaccel")
@click.pass_context
def main(ctx):
    """ctaccel: an Open vSwitch-compatible datapath with connection tracking.

    With no command, runs the demo on built-in traffic.
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(demo)


@main.command()
@click.option("--out-dir", default=None, help="Where to write the demo's replay results.")
@shows_compiles
def demo(out_dir):
    """Replay the talk's zone-5 UDP example and a TCP firewall conversation."""
    from ctaccel.demo import run_demo

    try:
        run_demo(out_dir)
    except CtaccelError as e:
        _fail(e)


@main.command()
@click.option("--flows", required=True, help="Rule file in ovs-ofctl add-flows syntax.")
@click.option("--in", "inputs", multiple=True, required=True, help=IN_HELP)
@click.option("--out-dir", required=True, help="Directory for the results.")
@click.option(
    "--zone-limit",
    "zone_limits",
    multiple=True,
    help="ZONE=N or default=N: conntrack zone limits (dpctl/ct-set-limits).",
)
@click.option("--mode", type=click.Choice(["assume-established", "recirc", "reference"]),
              default="assume-established", show_default=True,
              help="Datapath: the talk's fast path, OVS's recirculation model (both compiled), "
              "or the plain-Python reference engine.")  # fmt: skip
@click.option("--packets", type=click.Choice(["jsonl", "parquet", "none"]), default="jsonl",
              show_default=True,
              help="Per-packet results: packets.jsonl (one JSON line per input packet), "
              "packets.parquet (the same as columns, for pandas/polars), or none (only the "
              "captures, dumps and stats).")  # fmt: skip
@click.option("--flows-at", "flows_at", multiple=True, metavar="SECONDS=FILE",
              help="Replace the rules with FILE's when the capture clock is SECONDS past the "
              "first packet (repeatable): a live rule change (ctl replace-flows) replayed.")  # fmt: skip
@click.option("--quiet", is_flag=True, help="No summary.")
@click.option("--bridge", default=None, metavar="PORTS",
              help=BRIDGE_HELP)  # fmt: skip
@click.option("--ct-import", "ct_import", default=None, metavar="FILE",
              help="Start from this saved conntrack table (`conntrack -L` or "
              "`dpctl/dump-conntrack [-m -s]` lines); timeouts count from the first packet.")  # fmt: skip
@click.option("--zone-map", "zone_map", multiple=True, metavar="KZ=Z",
              help=ZONE_MAP_HELP)  # fmt: skip
@_timeout_policy_option
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Engines to shard the connections over, each on a thread of its own (a "
              "core each): same results as one. Rules with NAT or NORMAL, zone limits and "
              "--ct-import keep state across connections: they run one (and say so).")  # fmt: skip
@click.option("--dask", default=None, metavar="ADDRESS",
              help="Replay on a Dask cluster: the scheduler's address (tcp://host:8786), or "
              "local[:N] for a local cluster of N processes. The captures are split by "
              "connection into shards (--workers of them; default one per Dask worker) under "
              "OUT_DIR/.shards, which the workers must see; the outputs are merged into one "
              "replay's. Needs ctaccel[dask].")  # fmt: skip
@shows_compiles
def replay(**options):
    """Replay captures through the rules; write per-port captures and per-packet verdicts."""
    from types import SimpleNamespace

    from rich.console import Console

    from ctaccel.replay import parse_inputs
    from ctaccel.replay import replay as run

    o = SimpleNamespace(**options)  # the options above, by their parameter names
    try:
        common = {"mode": o.mode, "packets": o.packets, "flows_at": o.flows_at,
                  "zone_limits": _zone_limits(o.zone_limits), "bridge": o.bridge,
                  "timeout_policies": _policies(o.timeout_policies),
                  "progress": False if o.quiet else Console(stderr=True)}  # fmt: skip
        inputs = parse_inputs(o.inputs)
        if o.dask:
            summary = _replay_dask(o, inputs, common)
        else:
            summary = run(o.flows, inputs, o.out_dir, ct_import=_ct_import(o.ct_import, o.zone_map),
                          workers=o.workers, **common)  # fmt: skip
    except CtaccelError as e:
        _fail(e)
    if not o.quiet:
        _print_summary(summary)


def _replay_dask(o, inputs, common: dict):
    """``replay --dask``: the replay on a Dask cluster (ctaccel/cluster.py)."""
    from ctaccel.cluster import replay_dask
    from ctaccel.errors import InputError

    if o.ct_import:
        raise InputError("--ct-import with --dask: the imported table is one; replay without "
                         "--dask")  # fmt: skip
    return replay_dask(o.flows, inputs, o.out_dir, o.dask,
                       shards=o.workers if o.workers > 1 else None, **common)  # fmt: skip


def _print_summary(s) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"replay ({s.mode}) → {s.out_dir}", show_header=False)
    t.add_row("packets in", str(s.packets_in))
    if s.workers > 1 or s.workers_note:
        t.add_row("workers", f"{s.workers}" + (f" ({s.workers_note})" if s.workers_note else ""))
    t.add_row("packets out (frames on ports)", str(s.packets_out))
    if s.to_controller:
        t.add_row("to controller", str(s.to_controller))
    for reason, n in sorted(s.drops.items()):
        t.add_row(f"dropped: {reason}", str(n))
    for outcome, n in s.imported.items():
        if n:
            t.add_row(f"--ct-import: {outcome.replace('_', ' ')}", str(n))
    t.add_row("connections at end", str(s.connections))
    for name, n in sorted(s.conntrack_counters.items()):
        if n:
            t.add_row(f"conntrack: {name}", str(n))
    for path, n in sorted(s.paths.items()):
        t.add_row(f"path: {path}", str(n))
    for name, n in s.datapath_stats.items():
        if n:
            t.add_row(f"datapath: {name}", str(n))
    if s.warmup_seconds:
        t.add_row("warm-up (compile or cache load)", f"{s.warmup_seconds:.2f} s")
    rate = s.packets_in / s.seconds / 1e3 if s.seconds else 0.0
    t.add_row("time", f"{s.seconds:.2f} s ({rate:.1f} kpps, including writing the outputs)")
    split = dict(s.time_split)
    if "shards" in split:  # --dask: where the time went
        t.add_row("  of which", ", ".join(f"{k} {v:.2f} s" for k, v in split.items()))
    elif split:
        main_thread = ", ".join(f"{k} {split.pop(k):.2f} s" for k in ("reading", "datapath")
                                if k in split)  # fmt: skip
        t.add_row("  of which", main_thread)
        if "writing" in split:
            t.add_row("  alongside", f"writing {split['writing']:.2f} s on a second thread "
                      f"(the datapath waited {split.get('waiting', 0.0):.2f} s for it)")  # fmt: skip
    Console().print(t)


@main.command()
@click.option("--flows", required=True, help="Rule file in ovs-ofctl add-flows syntax.")
@click.option("--in", "inputs", multiple=True, required=True, help=IN_HELP)
@click.option(
    "--packet",
    "packet_no",
    type=int,
    required=True,
    help="1-based number of the packet to trace, in processing order.",
)
@click.option("--mode", type=click.Choice(["assume-established", "recirc", "reference"]),
              default="assume-established", show_default=True,
              help="Datapath that processes the packets (see replay --help).")  # fmt: skip
@click.option("--zone-limit", "zone_limits", multiple=True, help="ZONE=N or default=N.")
@click.option("--bridge", default=None, metavar="PORTS",
              help=BRIDGE_HELP)  # fmt: skip
@_timeout_policy_option
@shows_compiles
def trace(flows, inputs, packet_no, zone_limits, mode, bridge, timeout_policies):
    """Show, like ofproto/trace, what the pipeline does with packet N, with the real
    conntrack state built by the packets before it."""
    from ctaccel.replay import parse_inputs
    from ctaccel.trace import trace_packet

    try:
        text = trace_packet(
            flows,
            parse_inputs(inputs),
            packet_no,
            zone_limits=_zone_limits(zone_limits),
            mode=mode,
            bridge=bridge,
            timeout_policies=_policies(timeout_policies),
        )
    except CtaccelError as e:
        _fail(e)
    click.echo(text, nl=False)


@main.command("dump-flows")
@click.option("--flows", required=True, help="Rule file in ovs-ofctl add-flows syntax.")
@click.option("--in", "inputs", multiple=True, help=IN_HELP + " Counters come from these.")
@click.option("--mode", type=click.Choice(["assume-established", "recirc", "reference"]),
              default="assume-established", show_default=True,
              help="Datapath that processes the packets (see replay --help).")  # fmt: skip
@click.option("--bridge", default=None, metavar="PORTS",
              help=BRIDGE_HELP)  # fmt: skip
@_timeout_policy_option
@shows_compiles
def dump_flows(flows, inputs, mode, bridge, timeout_policies):
    """Print the rules as `ovs-ofctl dump-flows` does (with counters after --in traffic)."""
    from ctaccel.ofproto.dumpflows import format_dump_flows
    from ctaccel.replay import parse_inputs, run_quietly

    try:
        engine = run_quietly(flows, parse_inputs(inputs), mode=mode, bridge=bridge,
                             timeout_policies=_policies(timeout_policies))  # fmt: skip
    except CtaccelError as e:
        _fail(e)
    click.echo(format_dump_flows(engine.tables.all_rules(), engine.rule_counters()), nl=False)


@main.command("dump-conntrack")
@click.option("--flows", required=True, help="Rule file in ovs-ofctl add-flows syntax.")
@click.option("--in", "inputs", multiple=True, required=True, help=IN_HELP)
@click.option("--zone", type=int, default=None, help="Only this zone.")
@click.option("--mode", type=click.Choice(["assume-established", "recirc", "reference"]),
              default="assume-established", show_default=True,
              help="Datapath that processes the packets (see replay --help).")  # fmt: skip
@click.option("--zone-limit", "zone_limits", multiple=True, help="ZONE=N or default=N.")
@click.option("--bridge", default=None, metavar="PORTS",
              help=BRIDGE_HELP)  # fmt: skip
@click.option(
    "-m",
    "--more",
    "more",
    is_flag=True,
    help="Verbose, as dpctl/dump-conntrack -m: id, status, both TCP peers' states.",
)
@click.option(
    "-s",
    "--statistics",
    "statistics",
    is_flag=True,
    help="As dpctl/dump-conntrack -s: the seconds each connection has left.",
)
@click.option("--expectations", is_flag=True,
              help="List the FTP/TFTP helpers' expectations instead (what each control "
              "connection announced and is still awaited).")  # fmt: skip
@_timeout_policy_option
@shows_compiles
def dump_conntrack(flows, inputs, zone, zone_limits, mode, bridge, more, statistics,
                   expectations, timeout_policies):  # fmt: skip
    """Replay the traffic and print the connection table as `dpctl/dump-conntrack` does."""
    from ctaccel.replay import parse_inputs, run_quietly

    try:
        engine = run_quietly(
            flows,
            parse_inputs(inputs),
            zone_limits=_zone_limits(zone_limits),
            mode=mode,
            bridge=bridge,
            timeout_policies=_policies(timeout_policies),
        )
    except CtaccelError as e:
        _fail(e)
    if expectations:
        lines = engine.conntrack.dump_expectations(zone)
    else:
        lines = engine.conntrack.dump(engine.last_now_ms, zone, more, statistics)
    for line in lines:
        click.echo(line)


def _attach_optional_commands() -> None:
    from ctaccel.bench.bench_cli import bench
    from ctaccel.bench.gen_cli import gen
    from ctaccel.fuzz.fuzz_cli import fuzz
    from ctaccel.live_cli import ctl, run
    from ctaccel.sg.sg_cli import sg

    main.add_command(gen)
    main.add_command(sg)
    main.add_command(bench)
    main.add_command(run)
    main.add_command(ctl)
    main.add_command(fuzz)


_attach_optional_commands()

if __name__ == "__main__":
    main()
