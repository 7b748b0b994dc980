"""``ctaccel run`` (the live datapath) and ``ctaccel ctl`` (its control socket).

What: ``run --flows FILE --port N=IFACE ... [--mode] [--ctl PATH] [--busy-poll]
[--kernel-import] [--kernel-export] [--zone-map KZ=Z]`` opens the interfaces as OpenFlow ports
and forwards until SIGINT/SIGTERM or ``ctl stop`` (taking the kernel's connections over at
start, handing them back on stop); ``ctl
[--ctl PATH] COMMAND [ARGS]`` sends one request to it and prints the reply.

Design: thin, as cli.py: a problem the user can fix (no such interface, not root, the socket
path taken, a bad rule file) is one line on stderr and exit code 2.
"""

from __future__ import annotations

import sys

import click

from ctaccel.errors import CtaccelError
from ctaccel.progress import shows_compiles

PORT_HELP = "N=IFACE: the interface IFACE is OpenFlow port N (repeatable)."


def _fail(err) -> None:
    click.echo(f"ctaccel: error: {err}", err=True)
    sys.exit(2)


def _ports(specs) -> list[tuple[int, str]]:
    out, seen = [], set()
    for spec in specs:
        no, sep, ifname = spec.partition("=")
        if not sep or not no.isdigit() or not ifname or not 1 <= int(no) <= 0xFEFF:
            raise CtaccelError(f"--port {spec!r}: expected N=IFACE with 1 <= N <= 65279")
        if int(no) in seen or ifname in {i for _n, i in out}:
            raise CtaccelError(f"--port {spec!r}: port number or interface given twice")
        seen.add(int(no))
        out.append((int(no), ifname))
    return out


def _bridge(spec: str | None, port_list) -> str:
    """The --bridge list, checked against the --port numbers (each listed port must exist;
    a port not listed is a trunk of every VLAN)."""
    from ctaccel.ofproto.bridge import parse_ports

    given = {p.number: p.format() for p in parse_ports(spec or "")}
    unknown = sorted(set(given) - {no for no, _if in port_list})
    if unknown:
        raise CtaccelError(f"--bridge: port {unknown[0]} is not one of the --port numbers")
    return ",".join(given.get(no, str(no)) for no, _if in sorted(port_list))


@click.command()
@click.option("--flows", required=True, help="Rule file in ovs-ofctl add-flows syntax.")
@click.option("--port", "ports", multiple=True, required=True, help=PORT_HELP)
@click.option("--mode", type=click.Choice(["assume-established", "recirc"]),
              default="assume-established", show_default=True,
              help="The talk's fast path, or OVS's recirculation model.")  # fmt: skip
@click.option("--ctl", "ctl_path", default=None,
              help="Control socket path (default: /run/ctaccel/ctaccel.ctl as root, else "
              "$XDG_RUNTIME_DIR/ctaccel.ctl).")  # fmt: skip
@click.option("--busy-poll", is_flag=True, help="Spin instead of sleeping: lowest latency, "
              "one core busy.")  # fmt: skip
@click.option("--rx", type=click.Choice(["ring", "block", "mmsg"]), default="ring",
              show_default=True,
              help="Receive through a TPACKET_V2 ring (each frame handed over as it arrives), a "
              "TPACKET_V3 ring (blocks handed over when full or after 1 ms: fewer wake-ups, "
              "more latency) or recvmmsg.")  # fmt: skip
@click.option("--bridge", default=None, metavar="PORTS",
              help="VLAN modes of the ports for the NORMAL action, as ovs-vsctl sets them: "
              "'1,2:tag=12' (tag: access port; trunks=1-5;9: a trunk of those VLANs). "
              "Default: every --port a trunk of all VLANs.")  # fmt: skip
@click.option("--kernel-import", is_flag=True,
              help="Take over the kernel's conntrack table of this network namespace at start "
              "(connections it tracks stay established here).")  # fmt: skip
@click.option(
    "--kernel-export",
    is_flag=True,
    help="Hand the connections back: write them into the kernel's table on stop.",
)
@click.option("--kernel-sync", is_flag=True,
              help="Keep the kernel's conntrack table and ctaccel's converged while running: "
              "import at start, then the kernel's events applied here and ctaccel's new and "
              "removed connections mirrored there.")  # fmt: skip
@click.option("--zone-map", "zone_map", multiple=True, metavar="KZ=Z",
              help="The kernel's zone KZ is ctaccel's zone Z, both ways (repeatable; zones not "
              "named keep their number).")  # fmt: skip
@click.option("--timeout-policy", "timeout_policies", multiple=True,
              metavar="ZONE:NAME=SECONDS",
              help="The zone's conntrack timeout policy, as ovs-vsctl add-zone-tp (see "
              "ctaccel replay --help); default:NAME=SECONDS for every zone. Repeatable.")  # fmt: skip
@shows_compiles
def run(flows, ports, mode, ctl_path, busy_poll, rx, bridge, kernel_import, kernel_export,
        kernel_sync, zone_map, timeout_policies):  # fmt: skip
    """Forward between live interfaces through the rules until stopped."""
    from ctaccel.conntrack.kernel_map import parse_zone_map
    from ctaccel.conntrack.timeouts import parse_timeout_policies
    from ctaccel.control import ControlServer
    from ctaccel.datapath.warmup import warm_up
    from ctaccel.io.afpacket import check_ports
    from ctaccel.live import LiveDatapath
    from ctaccel.replay import make_engine

    dp = None
    try:  # every check a user can fail comes before the compile (warm_up)
        zones = parse_zone_map(zone_map)
        port_list = _ports(ports)
        check_ports([ifname for _no, ifname in port_list])
        # NORMAL switches between the datapath's ports (by default trunks of every VLAN)
        engine = make_engine(flows, mode, bridge=_bridge(bridge, port_list),
                             timeout_policies=parse_timeout_policies(timeout_policies))  # fmt: skip
        control = ControlServer(ctl_path)
        try:
            dp = LiveDatapath(engine, port_list, control, busy_poll,
                              log=lambda m: click.echo(f"ctaccel: {m}", err=True), rx=rx)  # fmt: skip
        except BaseException:
            control.close()
            raise
        dp.kernel_zone_map = zones
        warm_up()
        if kernel_sync:
            from ctaccel.kernel_sync import KernelSync

            dp.sync = KernelSync(engine.conntrack, zones, log=dp.log)
            _kernel("synchronising with the kernel, imported", dp.sync.start(dp.clock_ms()))
        elif kernel_import:
            _kernel("imported from the kernel", _import(dp))
        names = ", ".join(f"{n}={i}" for n, i in port_list)
        click.echo(f"ctaccel: forwarding ({mode}) on {names}; control socket {control.path}",
                   err=True)  # fmt: skip
        dp.run()
        if kernel_export:
            _kernel("exported to the kernel", _export(dp))
    except CtaccelError as e:
        _fail(e)
    finally:
        if dp is not None:
            dp.close()
    click.echo("ctaccel: stopped", err=True)


def _import(dp) -> dict:
    from ctaccel.kernel_sync import import_from_kernel

    return import_from_kernel(dp.engine.conntrack, dp.clock_ms(), dp.kernel_zone_map)


def _export(dp) -> dict:
    from ctaccel.kernel_sync import export_to_kernel

    return export_to_kernel(dp.engine.conntrack, dp.clock_ms(), dp.kernel_zone_map)


def _kernel(what: str, result: dict) -> None:
    figures = ", ".join(f"{k} {v}" for k, v in result.items() if v not in (0, {}))
    click.echo(f"ctaccel: {what}: {figures}", err=True)


@click.command(context_settings={"ignore_unknown_options": True})
@click.option("--ctl", "ctl_path", default=None, help="Control socket path (as for run).")
@click.argument("command")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def ctl(ctl_path, command, args):
    """Ask a running datapath: dump-conntrack [-m] [-s] [--expectations] [--zone Z], dump-flows, add-flows FILE,
    replace-flows FILE, del-flows, flush-conntrack [--zone Z], fdb-show, fdb-flush (NORMAL's
    MAC table, as ovs-appctl fdb/show and fdb/flush), import-kernel / export-kernel
    [--zone-map KZ=Z] (take the kernel's conntrack table over, or hand ctaccel's back), stats,
    stop."""
    from ctaccel.control import request

    rule_file = None
    if command in ("add-flows", "replace-flows"):
        if len(args) != 1:
            _fail(f"{command}: expected one rule file")
        rule_file, args = args[0], ()
    try:
        ok, output = request(ctl_path, command, args, rule_file)
    except CtaccelError as e:
        _fail(e)
    if not ok:
        _fail(output)
    click.echo(output, nl=False)
