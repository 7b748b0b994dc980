"""Batched ctnetlink rates: create, dump and delete 100,000 IPv4 TCP entries in the kernel, and
the takeover (the kernel's table into ctaccel's) and the handback (ctaccel's into the kernel's).

Runs as root in a network namespace made here and always deleted (the host's conntrack table
is never touched). Each repeat creates N ESTABLISHED IPv4 TCP entries (status
CONFIRMED|SEEN_REPLY|ASSURED, BE_LIBERAL, a mark), dumps them back (checked: N rows, tuples
equal) and deletes them; the medians go to benchmarks/results/ctnetlink-rates.json and a
table is printed. Where pyroute2 can be imported (by this interpreter, or by /usr/bin/python3,
Debian's), 1,000 entries go through its per-entry ``NFCTSocket.entry('add'|'del')`` and
``dump()`` in the same kind of namespace for comparison; otherwise the JSON says why not.

    sudo python benchmarks/ctnetlink_rates.py [--entries 100000] [--repeats 5] [--commands]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from ctaccel.conntrack import Conntrack
from ctaccel.io.ctnetlink import (
    IP_CT_TCP_FLAG_BE_LIBERAL,
    IP_CT_TCP_FLAG_SACK_PERM,
    IP_CT_TCP_FLAG_WINDOW_SCALE,
    IPS_ASSURED,
    IPS_CONFIRMED,
    IPS_SEEN_REPLY,
    TCP_CONNTRACK_ESTABLISHED,
    CtNetlink,
    KernelEntries,
)
from ctaccel.io.ctnetlink_codec import encode_create_messages
from ctaccel.kernel_sync import export_to_kernel, import_from_kernel

OUT = Path(__file__).resolve().parent / "results" / "ctnetlink-rates.json"

PYROUTE2 = r"""
import json, sys, time
from importlib.metadata import version
from pyroute2 import NFCTSocket
from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple
n = int(sys.argv[1])
def tup(i, reply):
    src, dst = "10.1.%d.%d" % (i // 250, 1 + i % 250), "10.99.0.1"
    sport, dport = 10000 + i, 80
    if reply:
        src, dst, sport, dport = dst, src, dport, sport
    return NFCTAttrTuple(saddr=src, daddr=dst, proto=6, sport=sport, dport=dport)
ct = NFCTSocket()
t0 = time.perf_counter()
for i in range(n):
    ct.entry("add", timeout=3600, status=0xE, tuple_orig=tup(i, 0), tuple_reply=tup(i, 1))
t1 = time.perf_counter()
rows = list(ct.dump())
t2 = time.perf_counter()
for i in range(n):
    ct.entry("del", tuple_orig=tup(i, 0))
t3 = time.perf_counter()
print(json.dumps({"create_s": t1 - t0, "dump_s": t2 - t1, "delete_s": t3 - t2,
                  "dumped": len(rows), "version": version("pyroute2")}))
"""


def tcp_entries(n: int) -> KernelEntries:
    """``n`` ESTABLISHED IPv4 TCP connections: 50,000 source ports per source address."""
    e = KernelEntries.empty(n)
    i = np.arange(n)
    flags = IP_CT_TCP_FLAG_BE_LIBERAL | IP_CT_TCP_FLAG_SACK_PERM | IP_CT_TCP_FLAG_WINDOW_SCALE
    e.family[:], e.proto[:], e.timeout_s[:], e.mark[:] = 2, 6, 3600, 42
    e.status[:] = IPS_CONFIRMED | IPS_SEEN_REPLY | IPS_ASSURED
    e.src[:, 3], e.dst[:, 3] = 0x0A000001 + i // 50000, 0x0A630001
    e.sport[:], e.dport[:] = 10000 + i % 50000, 80
    e.r_src[:], e.r_dst[:], e.r_sport[:], e.r_dport[:] = e.dst, e.src, e.dport, e.sport
    e.tcp_state[:], e.tcp_wscale[:], e.tcp_flags[:] = TCP_CONNTRACK_ESTABLISHED, 7, flags
    return e


def one_repeat(ct: CtNetlink, e: KernelEntries) -> dict[str, float]:
    t0 = time.perf_counter()
    encode_create_messages(e)
    t1 = time.perf_counter()
    refused = ct.create(e)
    t2 = time.perf_counter()
    back = ct.dump()
    t3 = time.perf_counter()
    gone = ct.delete(e)
    t4 = time.perf_counter()
    order = np.lexsort((back.sport, back.src[:, 3]))
    same = all(np.array_equal(getattr(back, c)[order], getattr(e, c))
               for c in ("src", "dst", "sport", "dport", "r_src", "r_dst", "mark", "tcp_state",
                         "tcp_wscale", "tcp_flags"))  # fmt: skip
    if len(refused) or len(gone) or len(back) != len(e) or not same or len(ct.dump()):
        raise SystemExit(f"kernel disagreed: {len(refused)} refused creates, {len(gone)} "
                         f"refused deletes, {len(back)} dumped of {len(e)}, equal={same}")  # fmt: skip
    return {"encode_s": t1 - t0, "create_s": t2 - t1, "dump_s": t3 - t2, "delete_s": t4 - t3}


def takeover_repeat(nl: CtNetlink, netns: str, e: KernelEntries) -> dict[str, float]:
    """The user-level steps: the kernel's table into a fresh ctaccel Conntrack (dump + import,
    kernel_sync.import_from_kernel) and ctaccel's table back into an empty kernel table
    (export + create, kernel_sync.export_to_kernel), each checked whole."""
    nl.create(e)
    ct = Conntrack()
    t0 = time.perf_counter()
    got = import_from_kernel(ct, 0, netns=netns)
    t1 = time.perf_counter()
    nl.flush()
    t2 = time.perf_counter()
    put = export_to_kernel(ct, 0, netns=netns)
    t3 = time.perf_counter()
    back = len(nl.dump())
    nl.flush()
    if got["imported"] != len(e) or put["created"] != len(e) or back != len(e):
        raise SystemExit(f"takeover disagreed: imported {got}, exported {put}, kernel {back}")
    return {"import_s": t1 - t0, "export_s": t3 - t2}


def through_the_commands(netns: str, nl: CtNetlink, e: KernelEntries) -> dict:
    """The same steps as a user takes them: ``ctaccel run --kernel-import`` on a veth pair in
    the namespace (its log line gives the dump and import times), then, the kernel's table
    flushed, ``ctaccel ctl export-kernel`` (its JSON gives the export time) and the whole
    command's wall time."""
    subprocess.run(["ip", "-n", netns, "link", "add", "bv0", "type", "veth", "peer", "name", "bv1"],
                   check=True)  # fmt: skip
    for link in ("bv0", "bv1"):
        subprocess.run(["ip", "-n", netns, "link", "set", link, "up"], check=True)
    nl.create(e)
    with tempfile.TemporaryDirectory() as tmp:
        flows, ctl, log = Path(tmp, "f.flows"), str(Path(tmp, "ctl")), Path(tmp, "run.log")
        flows.write_text("priority=0,actions=drop\n")
        cli = [sys.executable, "-m", "ctaccel.cli"]
        with open(log, "w") as out:
            run = subprocess.Popen(["ip", "netns", "exec", netns, *cli, "run", "--flows", str(flows),
                                    "--port", "1=bv0", "--port", "2=bv1", "--ctl", ctl,
                                    "--kernel-import"], stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
        try:
            deadline = time.monotonic() + 300
            while "forwarding" not in log.read_text() and time.monotonic() < deadline:
                time.sleep(0.1)
            line = next(x for x in log.read_text().splitlines() if "imported from" in x)
            nl.flush()
            t0 = time.perf_counter()
            done = subprocess.run([*cli, "ctl", "--ctl", ctl, "export-kernel"], check=True,
                                  capture_output=True, text=True)  # fmt: skip
            wall = time.perf_counter() - t0
            subprocess.run([*cli, "ctl", "--ctl", ctl, "stop"], capture_output=True, timeout=60)
            run.wait(timeout=60)
        finally:
            if run.poll() is None:
                run.kill()
    exported = json.loads(done.stdout)
    nl.flush()
    figures = dict(re.findall(r"(\w+) ([0-9.]+)", line.split(":", 2)[2]))
    return {"run_kernel_import_log": line.strip(),
            "import_s": float(figures["dump_seconds"]) + float(figures["import_seconds"]),
            "imported": int(figures["imported"]), "ctl_export_kernel": exported,
            "export_s": exported["seconds"], "ctl_export_wall_s": wall}  # fmt: skip


def pyroute2_rates(netns: str, n: int) -> dict:
    """pyroute2's per-entry calls, in the namespace, by whichever Python can import it."""
    for python in dict.fromkeys([sys.executable, "/usr/bin/python3"]):
        has = subprocess.run([python, "-c", "import pyroute2"], capture_output=True)
        if has.returncode == 0:
            run = subprocess.run(["ip", "netns", "exec", netns, python, "-c", PYROUTE2, str(n)],
                                 capture_output=True, text=True, timeout=600)  # fmt: skip
            if run.returncode:
                return {"skipped": f"pyroute2 under {python} failed: {run.stderr.strip()[-300:]}"}
            got = json.loads(run.stdout)
            rates = {k.replace("_s", "_per_s"): n / got[k] for k in ("create_s", "delete_s")}
            rates["dump_per_s"] = got["dumped"] / got["dump_s"]
            return {"entries": n, "python": python, **got, **rates}
    return {"skipped": f"pyroute2 is importable neither by {sys.executable} nor /usr/bin/python3"}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--pyroute2-entries", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument(
        "--commands",
        action="store_true",
        help="also through `ctaccel run --kernel-import` and `ctl export-kernel`",
    )
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("needs root: it makes a network namespace of its own")
    netns = f"ctrate-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        e = tcp_entries(args.entries)
        with CtNetlink(netns) as ct:
            ct.flush()
            runs = [one_repeat(ct, e) for _ in range(args.repeats)]
            takeover_repeat(ct, netns, e.take(slice(0, 10)))  # compiles (or loads) the import
            for run in runs:
                run.update(takeover_repeat(ct, netns, e))
            commands = through_the_commands(netns, ct, e) if args.commands else None
        baseline = pyroute2_rates(netns, args.pyroute2_entries)
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=False)
    median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    report = {
        "what": f"{args.entries} IPv4 TCP ESTABLISHED entries: create (encode included), dump "
                "(receive and parse), delete (encode included); import = the kernel's table "
                "into ctaccel's (dump + conntrack import), export = ctaccel's table into the "
                "kernel's (conversion + create); medians of the repeats",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"kernel": platform.release(), "cpus": os.cpu_count(),
                    "python": platform.python_version(), "numpy": np.__version__},
        "entries": args.entries, "repeats": args.repeats,
        "median_s": median,
        "median_per_s": {k.replace("_s", "_per_s"): args.entries / v for k, v in median.items()},
        "runs": runs, "pyroute2": baseline, "through_the_commands": commands,
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'':10} {'median s':>10} {'entries/s':>12}   ({args.entries} entries, "
          f"{args.repeats} repeats)")  # fmt: skip
    for k, v in median.items():
        print(f"{k[:-2]:10} {v:10.4f} {args.entries / v:12,.0f}")
    if "skipped" in baseline:
        print(f"pyroute2: not measured ({baseline['skipped']})")
    else:
        print(f"pyroute2 {baseline['version']} per entry ({baseline['entries']} entries): "
              f"create {baseline['create_per_s']:,.0f}/s, dump {baseline['dump_per_s']:,.0f}/s, "
              f"delete {baseline['delete_per_s']:,.0f}/s")  # fmt: skip
    if commands:
        print(f"ctaccel run --kernel-import: {commands['imported']} imported in "
              f"{commands['import_s']:.3f} s (dump + import); ctl export-kernel: "
              f"{commands['ctl_export_kernel']['created']} created in {commands['export_s']:.3f} s "
              f"({commands['ctl_export_wall_s']:.2f} s for the whole command)")  # fmt: skip
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
