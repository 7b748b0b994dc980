"""Run the real OVS-DPDK 3.1 on a capture and a rule file: the speed peer of ctaccel.

What: ``python benchmarks/ovs_dpdk.py --pcap CAPTURE --flows RULES [--repeat 3] [--loop]
[--json OUT.json]`` starts a private OVS-DPDK (ovsdb-server + the Debian DPDK build of
ovs-vswitchd) with one PMD core, a netdev bridge whose port 1 reads CAPTURE through the DPDK
pcap PMD and whose port 2 is a null PMD sink, loads RULES (``ovs-ofctl add-flows`` syntax),
runs the capture through and reports what the PMD spent: processing cycles/packet, Mpps
(TSC rate / cycles per packet), EMC/SMC/megaflow hits, recirculations and upcalls, per-rule
packet counts, conntrack entries and datapath flows. Each repeat restarts OVS from an empty
database, so every run starts with empty caches and an empty conntrack table; the JSON holds
every run and the per-field medians. Two helpers make test inputs:
``make-capture {A,B} OUT.pcap`` (established TCP flows, optionally with 1/3 NEW packets) and
``make-rules {stateless,firewall} OUT.txt``.

Design: recipe of reference/ovs-dpdk-bench.md. ovs-vswitchd runs under ``taskset`` on the
main core, the PMD alone on ``--pmd-core``. Start-up race: the sink's rx queue is pinned to
the PMD first (so the PMD is isolated), the pcap port is added unpinned (so nobody polls it),
the rules are loaded and the stats cleared, and only then is the pcap rx queue pinned, which
starts the traffic. Read once (default): the run ends when the PMD has received every packet
of the capture. ``--loop``: the pcap PMD preloads the capture into mbufs (``infinite_rx``) and
replays it; stats are cleared after ``--warmup`` seconds and read ``--seconds`` later.
Memory: hugepages on a private hugetlbfs mount (pages added to the pool only if the free
ones are too few), or ``--memory nohuge`` (``--no-huge --legacy-mem``); ``huge`` falls back
to ``nohuge`` when the kernel cannot give the pages.

Invariants:
- Everything started here is stopped by pid (only pids recorded from our own pidfiles, after
  checking their command line), the hugetlbfs is unmounted, the hugepages we added are given
  back and the DPDK runtime directory of our file prefix is removed -- also on error, Ctrl-C
  or SIGTERM. The system ``ovs-vswitchd`` alternative and /var/run/openvswitch are never
  touched (the alternative is checked before and after).
- Cycles are the PMD's TSC cycles spent on non-idle iterations divided by packets received;
  Mpps = TSC Hz / that. Compare numbers only within one run of this script (noise ±10-25%).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PACKAGES = ("openvswitch-switch-dpdk", "dpdk", "librte-net-pcap23", "librte-net-null23")
DPDK_VSWITCHD = "/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk"
VSWITCH_SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
BRIDGE = "br0"
# OVS's shared mempool holds 262,144 mbufs at MTU 1500; infinite_rx must fit the whole capture
# in it with room left for the rings, so loop only what leaves a margin.
LOOP_MAX_PACKETS = 250_000
HUGEPAGE_KB = 2048
CMD_TIMEOUT = 120


class BenchError(Exception):
    """A configuration or environment problem that stops the benchmark."""


def log(msg: str) -> None:
    print(f"[ovs-dpdk] {msg}", file=sys.stderr, flush=True)


# --- packages -------------------------------------------------------------------------------


def missing_packages() -> list[str]:
    missing = []
    for name in PACKAGES:
        probe = subprocess.run(["dpkg-query", "-W", "-f=${Status}", name],
                               capture_output=True, text=True)  # fmt: skip
        if "install ok installed" not in probe.stdout:
            missing.append(name)
    return missing


def ensure_packages() -> None:
    """Install the Debian packages (DPDK build of OVS, pcap and null PMDs) when missing."""
    missing = missing_packages()
    if not missing:
        return
    log(f"installing {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-q", *missing], check=True, env=env)
    if missing_packages():
        raise BenchError(f"could not install {missing_packages()}")


def vswitchd_alternative() -> str:
    """Where the system ovs-vswitchd alternative points (checked, never changed)."""
    return os.path.realpath("/usr/sbin/ovs-vswitchd")


# --- capture files --------------------------------------------------------------------------


def count_pcap_packets(path: Path) -> int:
    """Number of records in a classic pcap file (walks the record headers only)."""
    with open(path, "rb") as f:
        header = f.read(24)
        if len(header) < 24:
            raise BenchError(f"{path}: not a pcap file")
        magic_le = struct.unpack("<I", header[:4])[0]
        if magic_le in (0xA1B2C3D4, 0xA1B23C4D):
            record = struct.Struct("<IIII")
        elif magic_le in (0xD4C3B2A1, 0x4D3CB2A1):
            record = struct.Struct(">IIII")
        else:
            raise BenchError(f"{path}: not a classic pcap file (pcapng is not read by the PMD)")
        count = 0
        while True:
            raw = f.read(16)
            if len(raw) < 16:
                return count
            incl = record.unpack(raw)[2]
            f.seek(incl, os.SEEK_CUR)
            count += 1


def warm_page_cache(path: Path) -> None:
    """Read the file once so the timed run does not wait on the disk."""
    with open(path, "rb") as f:
        while f.read(1 << 22):
            pass


# --- test inputs: captures and rules --------------------------------------------------------

RULESETS = {
    "stateless": ["table=0,priority=10,tcp,in_port=1,actions=output:2"],
    "firewall": [
        "table=0,priority=100,ct_state=-trk,tcp,actions=ct(table=0,zone=5)",
        "table=0,priority=90,ct_state=+trk+new,ct_zone=5,tcp,in_port=1,"
        "actions=ct(commit,zone=5),output:2",
        "table=0,priority=90,ct_state=+trk+est,ct_zone=5,tcp,actions=output:2",
        "table=0,priority=1,actions=drop",
    ],
}

MAC_CLIENT, MAC_SERVER = "50:54:00:00:00:01", "50:54:00:00:00:02"
DATA_LEN = 6  # 14 + 20 + 20 + 6 = a 60-byte frame, the minimum Ethernet size without FCS


def make_capture(path: Path, workload: str, conns: int, rounds: int) -> int:
    """Write workload A or B of reference/ovs-dpdk-bench.md as a pcap; return its length.

    A: ``conns`` TCP connections, all SYNs, then all SYN/ACKs, then all ACKs (so a SYN and its
    SYN/ACK are ``conns`` packets apart, never in one 32-packet batch), then ``rounds`` rounds
    of one data segment per connection client->server, then one server->client.
    B: A plus ``conns`` unidirectional connections whose SYN is retransmitted every round.
    Frames are built once per flow with ctaccel.packet.build and
    re-stamped (seq/ack + TCP checksum) with numpy, which keeps millions of frames fast."""
    import numpy as np

    from ctaccel.io.pcap import PcapWriter
    from ctaccel.packet import build

    if conns < 32:
        raise BenchError("at least 32 connections: a SYN/ACK must not share its SYN's batch")

    def client_ip(i: int, base: int) -> str:
        return f"10.{base + (i >> 16)}.{(i >> 8) & 0xFF}.{(i & 0xFF)}"

    def frames(make) -> np.ndarray:
        return np.frombuffer(b"".join(make(i) for i in range(conns)), np.uint8).reshape(conns, -1)

    def c2s(i, flags, payload=b""):
        return build.tcp_frame(MAC_CLIENT, MAC_SERVER, client_ip(i, 1), "10.200.0.1",
                               10000 + i % 50000, 80, flags, payload=payload)  # fmt: skip

    def s2c(i, flags, payload=b""):
        return build.tcp_frame(MAC_SERVER, MAC_CLIENT, "10.200.0.1", client_ip(i, 1), 80,
                               10000 + i % 50000, flags, payload=payload)  # fmt: skip

    def uni(i, flags):
        return build.tcp_frame(MAC_CLIENT, MAC_SERVER, client_ip(i, 101), "10.201.0.1",
                               10000 + i % 50000, 443, flags)  # fmt: skip

    idx = np.arange(conns, dtype=np.int64)
    zero = idx * 0
    isn_client = (idx * 2654435761 + 1000) & 0xFFFFFFFF
    isn_server = (idx * 40503 + 7_000_000) & 0xFFFFFFFF

    def padded(make) -> np.ndarray:
        """54-byte handshake frames zero-padded at L2 to 60 (IP length stays 40)."""
        bare = frames(make)
        return np.pad(bare, ((0, 0), (0, 60 - bare.shape[1])))

    syn = padded(lambda i: c2s(i, "S"))
    syn_ack = padded(lambda i: s2c(i, "SA"))
    ack = padded(lambda i: c2s(i, "A"))
    data_c = frames(lambda i: c2s(i, "PA", b"\0" * DATA_LEN))
    data_s = frames(lambda i: s2c(i, "PA", b"\0" * DATA_LEN))
    syn_uni = padded(lambda i: uni(i, "S")) if workload == "B" else None
    isn_uni = isn_client ^ 0x5A5A5A5A
    count = 0
    ts = 1_000_000_000
    with PcapWriter(path) as writer:

        def put(block: np.ndarray) -> None:
            nonlocal count, ts
            for row in block:
                writer.write(row.tobytes(), ts)
                ts += 1000
            count += len(block)

        if syn_uni is not None:
            put(stamp_tcp(syn_uni, isn_uni, zero, 20))
        put(stamp_tcp(syn, isn_client, zero, 20))
        put(stamp_tcp(syn_ack, isn_server, isn_client + 1, 20))
        put(stamp_tcp(ack, isn_client + 1, isn_server + 1, 20))
        for r in range(rounds):
            sent = DATA_LEN * r
            seg = 20 + DATA_LEN
            put(stamp_tcp(data_c, isn_client + 1 + sent, isn_server + 1 + sent, seg))
            put(stamp_tcp(data_s, isn_server + 1 + sent, isn_client + 1 + sent + DATA_LEN, seg))
            if syn_uni is not None:
                put(stamp_tcp(syn_uni, isn_uni, zero, 20))
    return count


def stamp_tcp(template, seq, ack, tcp_len: int):
    """Copies of IPv4/TCP frames (no VLAN, IHL 5) with new seq/ack and TCP checksum.

    The checksum covers the pseudo-header (addresses, protocol, TCP length) and the
    ``tcp_len`` bytes of the segment; bytes after it are L2 padding."""
    import numpy as np

    out = template.copy()
    out[:, 38:42] = (seq & 0xFFFFFFFF).astype(">u4").view(np.uint8).reshape(-1, 4)
    out[:, 42:46] = (ack & 0xFFFFFFFF).astype(">u4").view(np.uint8).reshape(-1, 4)
    out[:, 50:52] = 0
    covered = out[:, 26 : 34 + tcp_len].astype(np.int64)
    if covered.shape[1] % 2:
        covered = np.pad(covered, ((0, 0), (0, 1)))
    total = (covered[:, 0::2] << 8).sum(axis=1) + covered[:, 1::2].sum(axis=1) + 6 + tcp_len
    while (total >> 16).any():
        total = (total & 0xFFFF) + (total >> 16)
    check = (~total) & 0xFFFF
    out[:, 50] = check >> 8
    out[:, 51] = check & 0xFF
    return out


# --- system resources: hugepages ------------------------------------------------------------


def _meminfo(field: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class Hugepages:
    """A private hugetlbfs mount backed by 2 MB pages; gives back what it added."""

    NR = Path("/proc/sys/vm/nr_hugepages")

    def __init__(self, mount: Path, megabytes: int):
        self.mount = mount
        self.pages = -(-megabytes * 1024 // HUGEPAGE_KB)
        self.added = 0
        self.mounted = False

    def setup(self) -> bool:
        """True when the pages are free and mounted; False (nothing left behind) if not."""
        free = _meminfo("HugePages_Free")
        if free < self.pages:
            before = int(self.NR.read_text())
            self.NR.write_text(str(before + self.pages - free))
            self.added = int(self.NR.read_text()) - before
        if _meminfo("HugePages_Free") < self.pages:
            log(f"only {_meminfo('HugePages_Free')} free hugepages, {self.pages} needed")
            self.teardown()
            return False
        self.mount.mkdir(parents=True, exist_ok=True)
        size = self.pages * HUGEPAGE_KB * 1024
        subprocess.run(["mount", "-t", "hugetlbfs", "-o", f"pagesize=2M,size={size}",
                        "nodev", str(self.mount)], check=True)  # fmt: skip
        self.mounted = True
        return True

    def clear_files(self) -> None:
        """Drop the page files a stopped DPDK left on our mount (they pin pages)."""
        if self.mounted:
            for entry in self.mount.iterdir():
                entry.unlink(missing_ok=True)

    def teardown(self) -> None:
        if self.mounted:
            self.clear_files()
            subprocess.run(["umount", str(self.mount)], check=False)
            self.mounted = False
        if self.added:
            now = int(self.NR.read_text())
            self.NR.write_text(str(max(now - self.added, 0)))
            self.added = 0


# --- the private OVS-DPDK instance ----------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _pid_runs(pid: int, program: str) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        return False
    return _pid_alive(pid) and os.path.basename(cmdline) == program


class OvsDpdk:
    """ovsdb-server + ovs-vswitchd-dpdk with every file under ``rundir``; stop() by pid."""

    def __init__(self, rundir: Path, args, dpdk_memory_args: str, file_prefix: str):
        self.rundir = rundir
        self.args = args
        self.memory_args = dpdk_memory_args
        self.file_prefix = file_prefix
        self.pids: dict[str, int] = {}
        self.ctl = rundir / "ovs-vswitchd.ctl"
        self.env = dict(os.environ, OVS_RUNDIR=str(rundir), OVS_DBDIR=str(rundir),
                        OVS_LOGDIR=str(rundir), OVS_SYSCONFDIR=str(rundir),
                        OVS_PKGDATADIR="/usr/share/openvswitch")  # fmt: skip

    # commands ----------------------------------------------------------------------------
    def _run(self, argv: list[str], check: bool = True) -> str:
        done = subprocess.run(argv, capture_output=True, text=True, env=self.env,
                              timeout=CMD_TIMEOUT)  # fmt: skip
        if check and done.returncode != 0:
            raise BenchError(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")
        return done.stdout

    def vsctl(self, *words: str) -> str:
        return self._run(["ovs-vsctl", "--timeout=60", *words])

    def appctl(self, *words: str) -> str:
        return self._run(["ovs-appctl", "-t", str(self.ctl), *words])

    def ofctl(self, *words: str) -> str:
        return self._run(["ovs-ofctl", *words])

    def _remember(self, name: str, program: str) -> None:
        pid = int((self.rundir / f"{name}.pid").read_text())
        if not _pid_runs(pid, program):
            raise BenchError(f"{name} (pid {pid}) did not stay up; see {self.rundir}")
        self.pids[name] = pid

    # life cycle --------------------------------------------------------------------------
    def start(self) -> None:
        self.rundir.mkdir(parents=True, exist_ok=True)
        db = self.rundir / "conf.db"
        self._run(["ovsdb-tool", "create", str(db), VSWITCH_SCHEMA])
        try:
            self._run(["ovsdb-server", str(db), f"--remote=punix:{self.rundir}/db.sock",
                       f"--pidfile={self.rundir}/ovsdb-server.pid",
                       f"--unixctl={self.rundir}/ovsdb-server.ctl",
                       f"--log-file={self.rundir}/ovsdb-server.log",
                       "-vconsole:off", "--detach", "--no-chdir"])  # fmt: skip
        finally:
            if (self.rundir / "ovsdb-server.pid").exists():
                self._remember("ovsdb-server", "ovsdb-server")
        pmd_mask = hex(1 << self.args.pmd_core)
        extra = f"--file-prefix={self.file_prefix} --no-pci {self.memory_args}"
        self._run(["ovs-vsctl", "--no-wait", "init"])
        self._run(["ovs-vsctl", "--no-wait", "set", "Open_vSwitch", ".",
                   "other_config:dpdk-init=true", f"other_config:pmd-cpu-mask={pmd_mask}",
                   f'other_config:dpdk-extra="{extra}"'])  # fmt: skip
        try:
            self._run(["taskset", "-c", str(self.args.main_core), DPDK_VSWITCHD,
                       f"unix:{self.rundir}/db.sock", f"--pidfile={self.rundir}/ovs-vswitchd.pid",
                       f"--unixctl={self.ctl}", f"--log-file={self.rundir}/ovs-vswitchd.log",
                       "-vconsole:off", "--detach", "--no-chdir"])  # fmt: skip
        finally:
            if (self.rundir / "ovs-vswitchd.pid").exists():
                self._remember("ovs-vswitchd", os.path.basename(DPDK_VSWITCHD))

    def stop(self) -> None:
        """Stop our two daemons (vswitchd first, so it can release DPDK cleanly)."""
        for name in ("ovs-vswitchd", "ovsdb-server"):
            pid = self.pids.pop(name, None)
            if pid is None:
                continue
            for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
                if not _pid_alive(pid):
                    break
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    break
                deadline = time.monotonic() + wait
                while _pid_alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
            if _pid_alive(pid):
                log(f"warning: {name} pid {pid} still alive")
        # DPDK's per-prefix runtime directory (only ours: the prefix is unique to this run).
        shutil.rmtree(f"/var/run/dpdk/{self.file_prefix}", ignore_errors=True)

    # the bench topology ------------------------------------------------------------------
    def add_ports(self, pcap: Path, loop: bool) -> None:
        pin = f"other_config:pmd-rxq-affinity=0:{self.args.pmd_core}"
        self.vsctl("add-br", BRIDGE, "--", "set", "bridge", BRIDGE, "datapath_type=netdev",
                   "fail-mode=secure")  # fmt: skip
        self.vsctl("add-port", BRIDGE, "p2", "--", "set", "Interface", "p2", "type=dpdk",
                   "ofport_request=2", 'options:dpdk-devargs="net_null0,no-rx=1"', pin)  # fmt: skip
        rx = f"net_pcap0,rx_pcap={pcap}" + (",infinite_rx=1" if loop else "")
        self.vsctl("add-port", BRIDGE, "p1", "--", "set", "Interface", "p1", "type=dpdk",
                   "ofport_request=1", f'options:dpdk-devargs="{rx}"')  # fmt: skip
        for port, number in (("p1", "1"), ("p2", "2")):
            got = self.vsctl("get", "Interface", port, "ofport").strip()
            if got != number:
                error = self.vsctl("get", "Interface", port, "error").strip()
                raise BenchError(f"port {port}: ofport {got}, error {error}")

    def start_traffic(self) -> None:
        self.vsctl("set", "Interface", "p1",
                   f"other_config:pmd-rxq-affinity=0:{self.args.pmd_core}")  # fmt: skip


# --- reading OVS's counters -----------------------------------------------------------------

_PMD_FIELDS = {
    "packets received": "packets",
    "packet recirculations": "recirculations",
    "avg. datapath passes per packet": "passes_per_packet",
    "phwol hits": "phwol_hits",
    "mfex opt hits": "mfex_opt_hits",
    "simple match hits": "simple_match_hits",
    "emc hits": "emc_hits",
    "smc hits": "smc_hits",
    "megaflow hits": "megaflow_hits",
    "avg. subtable lookups per megaflow hit": "subtable_lookups_per_megaflow_hit",
    "miss with success upcall": "upcalls",
    "miss with failed upcall": "failed_upcalls",
    "avg. packets per output batch": "packets_per_output_batch",
    "idle cycles": "idle_cycles",
    "processing cycles": "processing_cycles",
}


def parse_pmd_stats(text: str, core: int) -> dict:
    """The counters of the PMD thread on ``core`` from ``dpif-netdev/pmd-stats-show``."""
    stats: dict = {}
    inside = False
    for line in text.splitlines():
        if not line.startswith(" "):
            inside = bool(re.match(rf"pmd thread numa_id \d+ core_id {core}:", line))
            continue
        if not inside or ":" not in line:
            continue
        label, value = line.strip().split(":", 1)
        if label in _PMD_FIELDS:
            number = value.split()[0]
            stats[_PMD_FIELDS[label]] = float(number) if "." in number else int(number)
    if "packets" not in stats:
        raise BenchError(f"no PMD on core {core} in pmd-stats-show:\n{text}")
    return stats


def parse_perf_lost_upcalls(text: str) -> int:
    found = re.search(r"Lost upcalls:\s+(\d+)", text)
    return int(found.group(1)) if found else 0


_STAT_FIELDS = re.compile(r"\b(cookie=0x0|duration=[\d.]+s|n_packets=\d+|n_bytes=\d+|"
                          r"idle_age=\d+|hard_age=\d+)(, |,)?")  # fmt: skip


def parse_rule_counts(dump: str) -> list[dict]:
    """[{rule, n_packets, n_bytes}] from ``ovs-ofctl dump-flows`` (statistics removed)."""
    rules = []
    for line in dump.splitlines():
        line = line.strip()
        packets = re.search(r"n_packets=(\d+)", line)
        if not packets:
            continue
        nbytes = re.search(r"n_bytes=(\d+)", line)
        rule = _STAT_FIELDS.sub("", line).strip().rstrip(",")
        rules.append({"rule": rule, "n_packets": int(packets.group(1)),
                      "n_bytes": int(nbytes.group(1)) if nbytes else 0})  # fmt: skip
    return rules


def conntrack_entries(ovs: OvsDpdk) -> int:
    text = ovs.appctl("dpctl/dump-conntrack")
    return sum(1 for line in text.splitlines() if line.strip())


def datapath_flows(ovs: OvsDpdk) -> int:
    text = ovs.appctl("dpctl/dump-flows")
    return sum(1 for line in text.splitlines() if "actions:" in line)


def pmd_scheduling(ovs: OvsDpdk) -> tuple[int, float]:
    """(involuntary context switches, seconds spent waiting for the CPU) of the PMD thread
    so far. On a shared machine other processes take the PMD core now and then; OVS counts
    that time as cycles of the batch in progress, so these say how disturbed a run was."""
    pid = ovs.pids.get("ovs-vswitchd")
    switches, waited_ns = 0, 0
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            if not (task / "comm").read_text().startswith("pmd"):
                continue
            for line in (task / "status").read_text().splitlines():
                if line.startswith("nonvoluntary_ctxt_switches:"):
                    switches += int(line.split()[1])
            waited_ns += int((task / "schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return switches, waited_ns / 1e9


def cycles_now(ovs: OvsDpdk) -> int:
    stats = parse_pmd_stats(ovs.appctl("dpif-netdev/pmd-stats-show"), ovs.args.pmd_core)
    return int(stats.get("idle_cycles", 0)) + int(stats.get("processing_cycles", 0))


def tsc_hz_from_kernel() -> float | None:
    """The kernel's TSC frequency (refined calibration if logged), or None."""
    try:
        text = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    for pattern in (r"Refined TSC clocksource calibration: ([\d.]+) MHz",
                    r"tsc: Detected ([\d.]+) MHz"):  # fmt: skip
        found = re.search(pattern, text)
        if found:
            return float(found.group(1)) * 1e6
    return None


def tsc_hz_measured(ovs: OvsDpdk, seconds: float = 1.0) -> float:
    """TSC Hz from the idle PMD's cycle counters over a wall-clock interval: a busy-polling
    PMD accounts every TSC cycle as idle or processing."""
    c0, t0 = cycles_now(ovs), time.monotonic()
    time.sleep(seconds)
    c1, t1 = cycles_now(ovs), time.monotonic()
    return (c1 - c0) / (t1 - t0)


# --- one run --------------------------------------------------------------------------------


def run_once(ovs: OvsDpdk, args, pcap: Path, rules_file: Path, expected: int,
             want_tsc: bool) -> dict:  # fmt: skip
    t_start = time.monotonic()
    ovs.start()
    ovs.add_ports(pcap, args.loop)
    ovs.ofctl("add-flows", BRIDGE, str(rules_file))
    result: dict = {}
    if want_tsc:
        result["tsc_hz_measured"] = tsc_hz_measured(ovs)
    warm_page_cache(pcap)
    ovs.appctl("dpif-netdev/pmd-stats-clear")
    core = args.pmd_core
    t_traffic = time.monotonic()
    ovs.start_traffic()
    if args.loop:
        time.sleep(args.warmup)
        ovs.appctl("dpif-netdev/pmd-stats-clear")
        switches_before, waited_before = pmd_scheduling(ovs)
        t_measure = time.monotonic()
        time.sleep(args.seconds)
        switches, waited = pmd_scheduling(ovs)
        t_done = time.monotonic()
        stats = parse_pmd_stats(ovs.appctl("dpif-netdev/pmd-stats-show"), core)
    else:
        switches_before, waited_before = pmd_scheduling(ovs)
        t_measure = t_traffic
        # Wait until the PMD has received the whole capture (or stops receiving).
        last, last_change = -1, time.monotonic()
        while True:
            time.sleep(0.05)
            received = parse_pmd_stats(ovs.appctl("dpif-netdev/pmd-stats-show"), core)["packets"]
            now = time.monotonic()
            if received != last:
                last, last_change = received, now
            if received >= expected:
                break
            stalled = now - last_change
            if (received > 0 and stalled > 3.0) or stalled > args.start_timeout:
                log(f"warning: PMD received {received} of {expected} packets, then stopped")
                break
        switches, waited = pmd_scheduling(ovs)
        t_done = time.monotonic()
        time.sleep(0.2)  # let the last batches finish before the final read
        stats = parse_pmd_stats(ovs.appctl("dpif-netdev/pmd-stats-show"), core)
    perf = ovs.appctl("dpif-netdev/pmd-perf-show")
    # Rule counters come from datapath flow stats pushed by the revalidators: wait for a
    # full round (two, so one starts after the traffic ended) before reading them.
    ovs.appctl("revalidator/wait")
    ovs.appctl("revalidator/wait")
    packets = max(int(stats["packets"]), 1)
    passes = packets + int(stats.get("recirculations", 0))
    result.update(stats)
    result.update(
        cycles_per_packet=stats["processing_cycles"] / packets,
        recirculations_per_packet=stats.get("recirculations", 0) / packets,
        emc_hit_rate=stats.get("emc_hits", 0) / passes,
        smc_hit_rate=stats.get("smc_hits", 0) / passes,
        megaflow_hit_rate=stats.get("megaflow_hits", 0) / passes,
        lost_upcalls=parse_perf_lost_upcalls(perf),
        conntrack_entries=conntrack_entries(ovs),
        datapath_flows=datapath_flows(ovs),
        rules=parse_rule_counts(ovs.ofctl("--no-names", "dump-flows", BRIDGE)),
        traffic_seconds=t_done - t_measure,
        pmd_preemptions=switches - switches_before,
        pmd_waited_seconds=waited - waited_before,
        load_average_1min=os.getloadavg()[0],
        setup_seconds=t_traffic - t_start,
    )
    result["complete"] = args.loop or int(stats["packets"]) == expected
    return result


def _median(values):
    return statistics.median(values) if values else None


def summarise(runs: list[dict], tsc_hz: float) -> dict:
    """Per-field medians over the runs, plus Mpps from the median cycles/packet."""
    numeric = [k for k, v in runs[0].items() if not isinstance(v, bool | str | list | dict)]
    median = {k: _median([r[k] for r in runs if r.get(k) is not None]) for k in numeric}
    median["mpps"] = tsc_hz / median["cycles_per_packet"] / 1e6
    median["best_cycles_per_packet"] = min(r["cycles_per_packet"] for r in runs)
    median["best_mpps"] = tsc_hz / median["best_cycles_per_packet"] / 1e6
    undisturbed = median["cycles_per_packet_undisturbed_est"]
    median["mpps_undisturbed_est"] = tsc_hz / undisturbed / 1e6 if undisturbed else None
    rule_names = [r["rule"] for r in runs[0]["rules"]]
    median["rules"] = [
        {"rule": name, "n_packets": _median([rr["n_packets"] for run in runs
                                             for rr in run["rules"] if rr["rule"] == name])}
        for name in rule_names
    ]  # fmt: skip
    return median


# --- main -----------------------------------------------------------------------------------


def _raise_exit(signum, _frame):
    raise SystemExit(128 + signum)


def benchmark(args) -> dict:
    if os.geteuid() != 0:
        raise BenchError("needs root (hugepages, DPDK)")
    ensure_packages()
    alternative = vswitchd_alternative()
    pcap = Path(args.pcap).resolve()
    rules_file = Path(args.flows).resolve()
    if "," in str(pcap) or '"' in str(pcap):
        raise BenchError("the capture path must not contain ',' or '\"' (DPDK devargs)")
    if not rules_file.is_file():
        raise BenchError(f"{rules_file}: no such rule file")
    expected = count_pcap_packets(pcap)
    if args.loop and expected > LOOP_MAX_PACKETS:
        raise BenchError(f"--loop needs a capture under {LOOP_MAX_PACKETS} packets "
                         f"(the mempool holds it in mbufs); this one has {expected}")  # fmt: skip
    workdir = Path(tempfile.mkdtemp(prefix="ovs-dpdk-bench-", dir="/tmp"))
    prefix = f"ctaccel-bench-{os.getpid()}"
    hugepages = Hugepages(workdir / "huge", args.socket_mem)
    ovs = None
    runs = []
    try:
        memory = args.memory
        if memory == "huge" and not hugepages.setup():
            log("falling back to --memory nohuge")
            memory = "nohuge"
        if memory == "huge":
            mem_args = f"--huge-dir {hugepages.mount} --socket-mem {args.socket_mem}"
        else:
            mem_args = f"--no-huge --legacy-mem -m {args.socket_mem}"
        tsc_kernel = tsc_hz_from_kernel()
        for i in range(args.repeat):
            ovs = OvsDpdk(workdir / f"run{i}", args, mem_args, prefix)
            try:
                run = run_once(ovs, args, pcap, rules_file, expected, want_tsc=(i == 0))
            finally:
                ovs.stop()
                hugepages.clear_files()
            runs.append(run)
            log(f"run {i + 1}/{args.repeat}: {run['packets']} packets, "
                f"{run['cycles_per_packet']:.0f} cycles/packet, "
                f"{run['recirculations_per_packet']:.2f} recirc/packet, "
                f"ct {run['conntrack_entries']}, {run['traffic_seconds']:.1f} s, "
                f"PMD preempted {run['pmd_preemptions']}x {run['pmd_waited_seconds']:.2f} s, load {run['load_average_1min']:.1f}")  # fmt: skip
    finally:
        if ovs is not None:
            ovs.stop()
        hugepages.teardown()
        if not args.keep_logs:
            shutil.rmtree(workdir, ignore_errors=True)
        if vswitchd_alternative() != alternative:
            log(f"WARNING: the ovs-vswitchd alternative changed to {vswitchd_alternative()}")
    tsc_hz = tsc_kernel or runs[0]["tsc_hz_measured"]
    for run in runs:
        # Estimate without the time other processes held the PMD core (assumes it was taken
        # while a batch was in progress, which is most of the time during the traffic).
        # On a short run the wait may exceed the busy time (it was idle): no estimate then.
        left = run["processing_cycles"] - run["pmd_waited_seconds"] * tsc_hz
        run["mpps"] = tsc_hz / run["cycles_per_packet"] / 1e6
        run["cycles_per_packet_undisturbed_est"] = (
            left / max(run["packets"], 1) if left > 0.1 * run["processing_cycles"] else None
        )
    version = subprocess.run([DPDK_VSWITCHD, "--version"], capture_output=True, text=True)
    return {
        "tool": "ovs-dpdk",
        "version": version.stdout.strip().replace("\n", "; "),
        "pcap": str(pcap),
        "pcap_packets": expected,
        "rules_file": str(rules_file),
        "rules_text": [ln for ln in rules_file.read_text().splitlines() if ln.strip()],
        "mode": "loop" if args.loop else "once",
        "memory": memory,
        "pmd_core": args.pmd_core,
        "repeat": args.repeat,
        "tsc_hz": tsc_hz,
        "tsc_source": "kernel" if tsc_kernel else "measured",
        "runs": runs,
        "median": summarise(runs, tsc_hz),
    }


def print_summary(report: dict) -> None:
    m = report["median"]
    print(f"OVS-DPDK {report['mode']} run of {report['pcap']} ({report['pcap_packets']} packets)"
          f", median of {report['repeat']}:")  # fmt: skip
    print(f"  processing cycles/packet {m['cycles_per_packet']:.0f}   Mpps {m['mpps']:.2f}"
          f"   (TSC {report['tsc_hz'] / 1e9:.3f} GHz, {report['tsc_source']})")  # fmt: skip
    undisturbed = m["cycles_per_packet_undisturbed_est"]
    estimate = (f"{undisturbed:.0f} ({m['mpps_undisturbed_est']:.2f} Mpps)" if undisturbed
                else "n/a")  # fmt: skip
    print(f"  best run {m['best_cycles_per_packet']:.0f} cycles/packet ({m['best_mpps']:.2f} Mpps);"
          f" without PMD preemption (est.) {estimate}")  # fmt: skip
    print(f"  packets {m['packets']:.0f}  recirculations/packet "
          f"{m['recirculations_per_packet']:.2f}  upcalls {m['upcalls']:.0f}")  # fmt: skip
    print(f"  hit rate per pass: EMC {m['emc_hit_rate']:.1%}  SMC {m['smc_hit_rate']:.1%}"
          f"  megaflow {m['megaflow_hit_rate']:.1%}")  # fmt: skip
    print(f"  conntrack entries {m['conntrack_entries']:.0f}  datapath flows "
          f"{m['datapath_flows']:.0f}  traffic {m['traffic_seconds']:.1f} s per run")  # fmt: skip
    for rule in m["rules"]:
        print(f"  {rule['n_packets']:>10.0f}  {rule['rule']}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "make-capture":
        p = argparse.ArgumentParser(prog="ovs_dpdk.py make-capture")
        p.add_argument("workload", choices=["A", "B"])
        p.add_argument("out")
        p.add_argument("--conns", type=int, default=10_000)
        p.add_argument("--rounds", type=int, default=150)
        a = p.parse_args(argv[1:])
        n = make_capture(Path(a.out), a.workload, a.conns, a.rounds)
        print(f"{a.out}: {n} packets")
        return 0
    if argv and argv[0] == "make-rules":
        p = argparse.ArgumentParser(prog="ovs_dpdk.py make-rules")
        p.add_argument("ruleset", choices=sorted(RULESETS))
        p.add_argument("out")
        a = p.parse_args(argv[1:])
        Path(a.out).write_text("\n".join(RULESETS[a.ruleset]) + "\n")
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--pcap", required=True, help="classic pcap, all frames enter port 1")
    p.add_argument("--flows", required=True, help="rules, ovs-ofctl add-flows syntax")
    p.add_argument("--repeat", type=int, default=3, help="runs, OVS restarted for each")
    p.add_argument("--loop", action="store_true",
                   help="replay the capture from memory (infinite_rx) for --seconds")  # fmt: skip
    p.add_argument("--seconds", type=float, default=5.0, help="loop: measured time")
    p.add_argument("--warmup", type=float, default=1.0, help="loop: time before the stats")
    p.add_argument("--json", help="write the report here")
    p.add_argument("--memory", choices=["huge", "nohuge"], default="huge")
    p.add_argument("--socket-mem", type=int, default=1536, help="DPDK memory, MB")
    p.add_argument("--pmd-core", type=int, default=1)
    p.add_argument("--main-core", type=int, default=0)
    p.add_argument("--start-timeout", type=float, default=30.0,
                   help="once: give up if no packet arrives for this long")  # fmt: skip
    p.add_argument("--keep-logs", action="store_true", help="keep the run dirs in /tmp")
    args = p.parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_exit)
    try:
        report = benchmark(args)
    except BenchError as exc:
        log(f"error: {exc}")
        return 2
    print_summary(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
