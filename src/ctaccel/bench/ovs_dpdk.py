"""The real OVS-DPDK 3.1 on a capture and a rule file: the speed peer of ctaccel.

What: :func:`benchmark` runs :class:`PeerConfig`'s capture through a private OVS-DPDK
(ovsdb-server + the Debian DPDK build of ovs-vswitchd, :class:`OvsDpdk`) with one PMD core,
a netdev bridge whose port 1 reads the capture through the DPDK pcap PMD and whose port 2 is
a null PMD sink, with the rules loaded (``ovs-ofctl add-flows`` syntax), and reports what the
PMD spent: processing cycles/packet, Mpps (TSC rate / cycles per packet), EMC/SMC/megaflow
hits, recirculations and upcalls, per-rule packet counts, conntrack entries and datapath
flows (``bench/ovs_stats.py`` reads them). Each repeat restarts OVS from an empty database, so
every run starts with empty caches and an empty conntrack table; the report holds every run
and the per-field medians. ``ctaccel bench --with-ovs-dpdk`` calls it in-process;
``benchmarks/ovs_dpdk.py`` is its command line. Captures come from the project's workload
generator (``bench/workloads.py``).

Design: recipe of reference/ovs-dpdk-bench.md. The daemons are a ``bench/private_ovs.py``
PrivateOvs; ovs-vswitchd runs under ``taskset`` on the main core, the PMD alone on
``pmd_core``. Start-up race: the sink's rx queue is pinned to the PMD first (so the PMD is
isolated), the pcap port is added unpinned (so nobody polls it), the rules are loaded and the
stats cleared, and only then is the pcap rx queue pinned, which starts the traffic. Read once
(default): the run ends when the PMD has received every packet of the capture. ``loop``: the
pcap PMD preloads the capture into mbufs (``infinite_rx``) and replays it; stats are cleared
after ``warmup`` seconds and read ``seconds`` later. Memory: hugepages on a private hugetlbfs
mount (pages added to the pool only if the free ones are too few), or ``memory="nohuge"``
(``--no-huge --legacy-mem``); ``huge`` falls back to ``nohuge`` when the kernel cannot give
the pages.

Invariants:
- Everything started here is stopped by pid (PrivateOvs: only pids from our own pidfiles,
  after checking their command line), the hugetlbfs is unmounted, the hugepages we added are
  given back and the DPDK runtime directory of our file prefix is removed -- also on error,
  Ctrl-C or SIGTERM (:func:`terminate_as_exit`). The system ``ovs-vswitchd`` alternative and
  /var/run/openvswitch are never touched (the alternative is checked before and after).
- Cycles are the PMD's TSC cycles spent on non-idle iterations divided by packets received;
  Mpps = TSC Hz / that. Compare numbers only within one run (noise +-10-25%).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ctaccel.bench import ovs_stats as S
from ctaccel.bench.private_ovs import SCHEMA, OvsError, PrivateOvs

PACKAGES = ("openvswitch-switch-dpdk", "dpdk", "librte-net-pcap23", "librte-net-null23")
DPDK_VSWITCHD = "/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk"
BRIDGE = "br0"
# OVS's shared mempool holds 262,144 mbufs at MTU 1500; infinite_rx must fit the whole capture
# in it with room left for the rings, so loop only what leaves a margin.
LOOP_MAX_PACKETS = 250_000
HUGEPAGE_KB = 2048
CMD_TIMEOUT = 120


class BenchError(OvsError):
    """A configuration or environment problem that stops the benchmark."""


@dataclass
class PeerConfig:
    """One OVS-DPDK benchmark: the capture, the rules and how to run them."""

    pcap: str | os.PathLike  # classic pcap; every frame enters port 1
    flows: str | os.PathLike  # rules, ovs-ofctl add-flows syntax
    repeat: int = 3  # runs, OVS restarted for each
    loop: bool = False  # replay the capture from memory (infinite_rx) for ``seconds``
    seconds: float = 5.0  # loop: measured time
    warmup: float = 1.0  # loop: time before the stats are cleared
    memory: str = "huge"  # or "nohuge"
    socket_mem: int = 1536  # DPDK memory, MB
    pmd_core: int = 1
    main_core: int = 0
    start_timeout: float = 30.0  # once: give up if no packet arrives for this long
    keep_logs: bool = False  # keep the run directories in /tmp


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


class OvsDpdk:
    """A PrivateOvs running ovs-vswitchd-dpdk in ``rundir``, with the bench topology."""

    def __init__(self, rundir: Path, config: PeerConfig, dpdk_memory_args: str,
                 file_prefix: str):  # fmt: skip
        self.rundir = rundir
        self.config = config
        self.memory_args = dpdk_memory_args
        self.file_prefix = file_prefix
        self.ovs = PrivateOvs(rundir, cmd_timeout=CMD_TIMEOUT)

    @property
    def pids(self) -> dict[str, int]:
        return self.ovs.pids

    def vsctl(self, *words: str) -> str:
        return self.ovs.vsctl(*words)

    def appctl(self, *words: str) -> str:
        return self.ovs.appctl(*words)

    def ofctl(self, *words: str) -> str:
        return self.ovs.ofctl(*words)

    # life cycle --------------------------------------------------------------------------
    def start(self) -> None:
        self.ovs.start_ovsdb(SCHEMA)
        pmd_mask = hex(1 << self.config.pmd_core)
        extra = f"--file-prefix={self.file_prefix} --no-pci {self.memory_args}"
        self.ovs.vsctl("set", "Open_vSwitch", ".", "other_config:dpdk-init=true",
                       f"other_config:pmd-cpu-mask={pmd_mask}",
                       f'other_config:dpdk-extra="{extra}"', no_wait=True)  # fmt: skip
        self.ovs.start_vswitchd(DPDK_VSWITCHD,
                                prefix=["taskset", "-c", str(self.config.main_core)])  # fmt: skip

    def stop(self) -> None:
        """Stop our two daemons (vswitchd first, so it can release DPDK cleanly)."""
        for name in self.ovs.stop():
            log(f"warning: {name} pid {self.ovs.pids[name]} still alive")
        # DPDK's per-prefix runtime directory (only ours: the prefix is unique to this run).
        shutil.rmtree(f"/var/run/dpdk/{self.file_prefix}", ignore_errors=True)

    # the bench topology ------------------------------------------------------------------
    # the bench topology ------------------------------------------------------------------
    def add_ports(self, pcap: Path, loop: bool) -> None:
        pin = f"other_config:pmd-rxq-affinity=0:{self.config.pmd_core}"
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
                   f"other_config:pmd-rxq-affinity=0:{self.config.pmd_core}")  # fmt: skip


# --- one run --------------------------------------------------------------------------------


def run_once(ovs: OvsDpdk, config: PeerConfig, pcap: Path, rules_file: Path, expected: int,
             want_tsc: bool) -> dict:  # fmt: skip
    t_start = time.monotonic()
    ovs.start()
    ovs.add_ports(pcap, config.loop)
    ovs.ofctl("add-flows", BRIDGE, str(rules_file))
    result: dict = {}
    if want_tsc:
        result["tsc_hz_measured"] = S.tsc_hz_measured(ovs)
    warm_page_cache(pcap)
    ovs.appctl("dpif-netdev/pmd-stats-clear")
    core = config.pmd_core
    t_traffic = time.monotonic()
    ovs.start_traffic()
    if config.loop:
        time.sleep(config.warmup)
        ovs.appctl("dpif-netdev/pmd-stats-clear")
        switches_before, waited_before = S.pmd_scheduling(ovs)
        t_measure = time.monotonic()
        time.sleep(config.seconds)
        switches, waited = S.pmd_scheduling(ovs)
        t_done = time.monotonic()
        stats = S.parse_pmd_stats(ovs.appctl("dpif-netdev/pmd-stats-show"), core)
    else:
        switches_before, waited_before = S.pmd_scheduling(ovs)
        t_measure = t_traffic
        # Wait until the PMD has received the whole capture (or stops receiving).
        last, last_change = -1, time.monotonic()
        while True:
            time.sleep(0.05)
            received = S.parse_pmd_stats(ovs.appctl("dpif-netdev/pmd-stats-show"), core)["packets"]
            now = time.monotonic()
            if received != last:
                last, last_change = received, now
            if received >= expected:
                break
            stalled = now - last_change
            if (received > 0 and stalled > 3.0) or stalled > config.start_timeout:
                log(f"warning: PMD received {received} of {expected} packets, then stopped")
                break
        switches, waited = S.pmd_scheduling(ovs)
        t_done = time.monotonic()
        time.sleep(0.2)  # let the last batches finish before the final read
        stats = S.parse_pmd_stats(ovs.appctl("dpif-netdev/pmd-stats-show"), core)
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
        lost_upcalls=S.parse_perf_lost_upcalls(perf),
        conntrack_entries=S.conntrack_entries(ovs),
        datapath_flows=S.datapath_flows(ovs),
        rules=S.parse_rule_counts(ovs.ofctl("--no-names", "dump-flows", BRIDGE)),
        traffic_seconds=t_done - t_measure,
        pmd_preemptions=switches - switches_before,
        pmd_waited_seconds=waited - waited_before,
        load_average_1min=os.getloadavg()[0],
        setup_seconds=t_traffic - t_start,
    )
    result["complete"] = config.loop or int(stats["packets"]) == expected
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


def benchmark(config: PeerConfig) -> dict:
    """Run the capture ``config.repeat`` times through a fresh OVS-DPDK; the report (module
    docstring). Needs root. BenchError (an OvsError) on a configuration problem."""
    if os.geteuid() != 0:
        raise BenchError("needs root (hugepages, DPDK)")
    ensure_packages()
    alternative = vswitchd_alternative()
    pcap = Path(config.pcap).resolve()
    rules_file = Path(config.flows).resolve()
    if "," in str(pcap) or '"' in str(pcap):
        raise BenchError("the capture path must not contain ',' or '\"' (DPDK devargs)")
    if not rules_file.is_file():
        raise BenchError(f"{rules_file}: no such rule file")
    expected = count_pcap_packets(pcap)
    if config.loop and expected > LOOP_MAX_PACKETS:
        raise BenchError(f"--loop needs a capture under {LOOP_MAX_PACKETS} packets "
                         f"(the mempool holds it in mbufs); this one has {expected}")  # fmt: skip
    workdir = Path(tempfile.mkdtemp(prefix="ovs-dpdk-bench-", dir="/tmp"))
    prefix = f"ctaccel-bench-{os.getpid()}"
    hugepages = Hugepages(workdir / "huge", config.socket_mem)
    ovs = None
    runs = []
    try:
        memory = config.memory
        if memory == "huge" and not hugepages.setup():
            log("falling back to --memory nohuge")
            memory = "nohuge"
        if memory == "huge":
            mem_args = f"--huge-dir {hugepages.mount} --socket-mem {config.socket_mem}"
        else:
            mem_args = f"--no-huge --legacy-mem -m {config.socket_mem}"
        tsc_kernel = S.tsc_hz_from_kernel()
        for i in range(config.repeat):
            ovs = OvsDpdk(workdir / f"run{i}", config, mem_args, prefix)
            try:
                run = run_once(ovs, config, pcap, rules_file, expected, want_tsc=(i == 0))
            finally:
                ovs.stop()
                hugepages.clear_files()
            runs.append(run)
            log(f"run {i + 1}/{config.repeat}: {run['packets']} packets, "
                f"{run['cycles_per_packet']:.0f} cycles/packet, "
                f"{run['recirculations_per_packet']:.2f} recirc/packet, "
                f"ct {run['conntrack_entries']}, {run['traffic_seconds']:.1f} s, "
                f"PMD preempted {run['pmd_preemptions']}x {run['pmd_waited_seconds']:.2f} s, load {run['load_average_1min']:.1f}")  # fmt: skip
    finally:
        if ovs is not None:
            ovs.stop()
        hugepages.teardown()
        if not config.keep_logs:
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
        "mode": "loop" if config.loop else "once",
        "memory": memory,
        "pmd_core": config.pmd_core,
        "repeat": config.repeat,
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


def _raise_exit(signum, _frame):
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def terminate_as_exit():
    """SIGTERM and SIGHUP raise SystemExit while inside (main thread only), so the cleanup of
    :func:`benchmark` runs when the process is told to stop; the old handlers come back."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {sig: signal.signal(sig, _raise_exit) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
