"""``ctaccel gen``: write one of the talk's benchmark workloads (capture + rule files).

What: a click command that calls :func:`ctaccel.bench.workloads.generate` and prints what
it wrote as a table. The lead attaches it to the ``ctaccel`` group (``main.add_command``).

Design: thin, like the other commands: options map one to one onto ``generate``'s
arguments; errors the user can fix are one line on stderr and exit code 2 (click's own
usage errors exit 2 as well).

Invariants: nothing is printed on stdout when generation fails.
"""

from __future__ import annotations

import sys
import time

import click

from ctaccel.bench import workloads as W
from ctaccel.errors import CtaccelError


@click.command("gen")
@click.option("--workload", "kind", type=click.Choice(W.KINDS, case_sensitive=False),
              default="A", show_default=True,
              help="A: established flows only. B: A plus unidirectional flows whose SYN "
                   "is retransmitted every round (1 packet in 3 is NEW).")  # fmt: skip
@click.option("--flows", type=int, default=W.DEFAULT_FLOWS, show_default=True,
              help="Established (bidirectional) TCP connections.")  # fmt: skip
@click.option("--packets", type=int, default=None,
              help="Exact packet count [default: the complete rounds closest to 1,000,000].")  # fmt: skip
@click.option("--frame-size", type=int, default=None,
              help="Bytes on the wire, FCS included (captured frames are 4 shorter) "
                   "[default: 64 for IPv4, 78 for IPv6].")  # fmt: skip
@click.option("--ipv6", is_flag=True, help="IPv6 instead of IPv4.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed for ports, addresses and sequence numbers (same seed, same bytes).")  # fmt: skip
@click.option("--new-fraction", type=float, default=None,
              help="Workload B: share of each round's packets that are NEW SYNs "
                   "[default: 1/3].")  # fmt: skip
@click.option("--nat", type=click.Choice(W.NATS), default=None,
              help="snat: the firewall also source-NATs every connection to one address "
                   "and the servers answer that address.")  # fmt: skip
@click.option("--out-dir", default="./workloads", show_default=True,
              help="Directory for the capture, rule files and manifest.")  # fmt: skip
def gen(kind, flows, packets, frame_size, ipv6, seed, new_fraction, nat, out_dir):
    """Write a benchmark workload: a pcap of TCP traffic entering on port 1, the conntrack
    firewall rules (zone 5) and the stateless ceiling rules it was measured with."""
    from rich.console import Console
    from rich.table import Table

    started = time.perf_counter()
    try:
        w = W.generate(kind=kind, flows=flows, packets=packets, frame_size=frame_size,
                       ipv6=ipv6, seed=seed, new_fraction=new_fraction,
                       out_dir=out_dir, nat=nat)  # fmt: skip
    except CtaccelError as err:
        click.echo(f"ctaccel: error: {err}", err=True)
        sys.exit(2)
    elapsed = time.perf_counter() - started

    t = Table(title=f"workload {w.kind} → {out_dir}", show_header=False)
    t.add_column()
    t.add_column(overflow="fold")  # paths stay whole (and copyable) on narrow terminals
    t.add_row("capture", str(w.pcap_path))
    t.add_row("conntrack rules", str(w.flows_path))
    t.add_row("stateless rules", str(w.stateless_flows_path))
    t.add_row("manifest", str(w.manifest_path))
    t.add_row("packets", f"{w.packets:,}")
    t.add_row("connections", f"{w.flows:,} ({w.established_flows:,} established, "
                             f"{w.unidirectional_flows:,} unidirectional)")  # fmt: skip
    t.add_row("complete rounds", f"{w.rounds:,}")
    t.add_row("expected NEW packets", f"{w.expected_new:,} ({100 * w.new_share:.2f}%)")
    t.add_row("frame size", f"{w.frame_size} B on the wire ({w.frame_size - W.FCS_LEN} captured)")
    t.add_row("generated in", f"{elapsed:.2f} s")
    console = Console()
    console.print(t)
    if w.established_flows < W.RX_BATCH:
        console.print(f"[yellow]note:[/] with fewer than {W.RX_BATCH} flows a SYN and its "
                      f"SYN/ACK can share one OVS rx batch (OVS would see the SYN/ACK as inv)")  # fmt: skip
