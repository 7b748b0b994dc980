"""Drive the real Open vSwitch userspace datapath as a per-packet oracle.

What: ``OvsOracle`` starts a private ovsdb-server + ovs-vswitchd (``--enable-dummy=override``,
bridge ``br0`` with ``datapath_type=netdev`` and ``fail-mode=secure``, dummy ports p1..pN with
OpenFlow port numbers 1..N that record what OVS transmits in ``pN-tx.pcap``) in a directory of
its own, and ``OvsOracle.run`` plays a list of frames through it and reports, per frame, where
OVS sent it and which ct_state the rules saw.

Design:
- Time is OVS's *monotonic* clock, stopped with ``time/stop`` and advanced with ``time/warp``
  before each frame, so conntrack sees the scenario's timestamps exactly (the wall clock, which
  only stamps pcap records, keeps running).
- Every rule gets ``controller(userdata=<rule index>)`` prepended to its actions, so each rule
  that matches reports a NXT_PACKET_IN2 carrying the packet's ct fields as the rule saw them.
  ``ovs-ofctl monitor`` (one long-lived child) prints those; a reader thread queues them.
- After each frame a marker frame (ethertype 0x88b5, caught by a priority-65535 rule that only
  sends it to the controller) is injected on the same port in the same command. Packet-ins
  leave in the order the upcalls produced them, so the marker's packet-in arriving means the
  frame (and every recirculation it caused) is finished and its outputs are in the tx pcaps.
- The daemons are started and stopped by ``ctaccel.bench.private_ovs.PrivateOvs`` (shared
  with the OVS-DPDK speed peer); ovs-appctl commands go through one persistent
  ``ovs.unixctl.client`` connection instead of a subprocess per command.
- The frames OVS transmitted for a packet are the new records of the pN-tx.pcap files (marker
  frames dropped), ordered by their stamp like ``out``; ``PacketOutcome.frames`` keeps them.

Invariants: only processes this object started are ever signalled (pids from its own pid files,
checked against /proc/PID/cmdline, by PrivateOvs); nothing outside ``workdir`` is written.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import struct
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ctaccel.bench.private_ovs import SCHEMA, OvsError, PrivateOvs

MARKER_ETHERTYPE = 0x88B5
MARKER_USERDATA = "ff.ff.ff.ff"
MARKER_FRAME = (
    b"\xff" * 6
    + b"\x02\x00\x00\x00\x00\x99"
    + struct.pack("!H", MARKER_ETHERTYPE)
    + b"ctaccel-oracle-marker".ljust(46, b"\0")
)
# sun_path is 108 bytes; "ovs-vswitchd.ctl" etc. must fit below the run directory.
MAX_RUNDIR_LEN = 80
# Scenarios are separated by this much virtual time so nothing (fragment lists, timers) leaks.
SCENARIO_GAP_MS = 3_600_000
UNLIMITED = 0xFFFFFFFF  # zone limits are 32-bit counts


class OracleError(OvsError):
    """OVS did not behave as the driver expects (daemon died, command failed, no marker)."""


def ovs_installed() -> bool:
    """True when the OVS daemons and tools this driver needs are on PATH (or /usr/sbin)."""
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin" + os.pathsep + "/usr/bin"
    tools = ("ovs-vswitchd", "ovsdb-server", "ovsdb-tool", "ovs-vsctl", "ovs-ofctl")
    return all(shutil.which(t, path=path) for t in tools) and os.path.exists(SCHEMA)


def split_flow(line: str) -> tuple[str, str]:
    """Split one ovs-ofctl flow line into (match part, actions text)."""
    m = re.search(r"\bactions?\s*=", line)
    if m is None:
        raise ValueError(f"flow without actions: {line!r}")
    return line[: m.start()], line[m.end() :].strip()


def flow_lines(text: str) -> list[str]:
    """The rule lines of an add-flows text, comments and blank lines dropped."""
    lines = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def rule_userdata(index: int) -> str:
    """Controller userdata naming rule ``index`` (4 bytes, so the marker value never clashes)."""
    return ".".join(f"{b:02x}" for b in index.to_bytes(4, "big"))


def instrument_flows(text: str) -> str:
    """The rules of ``text`` with ``controller(userdata=<index>)`` before every rule's actions
    (but a conjunction rule's: it is never executed), preceded by the marker rule."""
    out = [
        f"table=0,priority=65535,dl_type=0x{MARKER_ETHERTYPE:04x},"
        f"actions=controller(userdata={MARKER_USERDATA})"
    ]
    for index, line in enumerate(flow_lines(text)):
        match, actions = split_flow(line)
        report = f"controller(userdata={rule_userdata(index)})"
        if "conjunction(" in actions:  # never executed, and OVS allows only notes beside it
            out.append(line)
            continue
        if actions in ("", "drop"):
            actions = report
        else:
            actions = f"{report},{actions}"
        out.append(f"{match}actions={actions}")
    return "\n".join(out) + "\n"


def marker_only_flows(text: str) -> str:
    """The rules of ``text`` untouched, preceded by the marker rule (uninstrumented runs)."""
    marker = (
        f"table=0,priority=65535,dl_type=0x{MARKER_ETHERTYPE:04x},"
        f"actions=controller(userdata={MARKER_USERDATA})"
    )
    return "\n".join([marker, *flow_lines(text)]) + "\n"


@dataclass
class PacketOutcome:
    """What OVS did with one injected frame."""

    out: list[int]  # output ports, in emission order (see out_order_certain)
    ct_state: str | None  # ct_state seen by the last matched rule; "" untracked; None no rule
    hits: list[tuple[int, str]]  # (rule index, ct_state) for every rule match, in order
    out_order_certain: bool = True  # False when two ports got records with the same µs stamp
    packet_ins: list[dict] = field(default_factory=list)  # raw packet-in fields, for debugging
    # (port, frame bytes) as transmitted, in the same order as ``out`` (marker frames excluded)
    frames: list[tuple[int, bytes]] = field(default_factory=list)


@dataclass
class OracleRun:
    """The whole result of one scenario on OVS."""

    packets: list[PacketOutcome]
    conntrack: list[str]  # dpctl/dump-conntrack lines (default format, all zones), sorted
    n_packets: list[int] | None  # per-rule n_packets (rule order), when asked for
    seconds: float  # wall time spent injecting the frames


def read_pcap_records(path: Path, offset: int) -> tuple[list[tuple[float, bytes]], int]:
    """Records appended to classic pcap ``path`` after byte ``offset`` (0 = from the start),
    as (timestamp, frame), and the offset after the last complete record."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], offset
    if len(data) < 24:
        return [], offset
    if offset < 24:
        offset = 24
    magic = struct.unpack("<I", data[:4])[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    records = []
    while offset + 16 <= len(data):
        sec, usec, incl, _orig = struct.unpack(endian + "IIII", data[offset : offset + 16])
        if offset + 16 + incl > len(data):
            break
        records.append((sec + usec / 1e6, data[offset + 16 : offset + 16 + incl]))
        offset += 16 + incl
    return records, offset


_PACKET_IN_HEADER = re.compile(r"^NXT_PACKET_IN2\b.*?total_len=\d+ (?P<meta>\S*) \(via (\w+)\)")


class OvsOracle:
    """A private OVS userspace switch with ``n_ports`` dummy ports, used as an oracle."""

    def __init__(self, workdir: str | os.PathLike | None = None, n_ports: int = 4):
        base = Path(workdir) if workdir is not None else None
        if base is None or len(str(base)) > MAX_RUNDIR_LEN:
            # unix socket paths are short; fall back to a short private temp dir
            base = Path(tempfile.mkdtemp(prefix="ctaccel-ovs-"))
        self.rundir = base
        self.n_ports = n_ports
        self.bridge = "br0"
        self.ovs = PrivateOvs(base, cmd_timeout=30)
        self.env = self.ovs.env
        self._monitor: subprocess.Popen | None = None
        self._packet_ins: queue.Queue = queue.Queue()
        self._unixctl = None
        self._limited_zones: set[int] = set()
        self._default_limited = False
        self._tp_zones: set[int] = set()
        self._tp_datapath = False
        self.now_ms = 0  # virtual monotonic time advanced so far (relative to time/stop)
        self._tx_offsets = [0] * (n_ports + 1)

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> OvsOracle:
        """Start the daemons, build the bridge, stop the clock, connect the monitor."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        d = self.rundir
        d.mkdir(parents=True, exist_ok=True)
        for stale in d.glob("p*-tx.pcap"):
            stale.unlink(missing_ok=True)
        self.ovs.start_ovsdb(SCHEMA)
        self.ovs.start_vswitchd(extra=["--enable-dummy=override"])
        cmd = ["add-br", self.bridge, "--", "set", "bridge", self.bridge]
        cmd += ["datapath_type=netdev", "fail-mode=secure"]
        for i in range(1, self.n_ports + 1):
            cmd += ["--", "add-port", self.bridge, f"p{i}", "--", "set", "Interface", f"p{i}"]
            cmd += ["type=dummy", f"ofport_request={i}", f"options:tx_pcap={d}/p{i}-tx.pcap"]
        self.ovs.vsctl(*cmd)
        self._connect_unixctl()
        self.appctl("time/stop")
        self._start_monitor()

    def _connect_unixctl(self) -> None:
        import ovs.unixctl.client

        path = str(self.rundir / "ovs-vswitchd.ctl")
        error, client = ovs.unixctl.client.UnixctlClient.create(path)
        if error:
            raise OracleError(f"cannot connect to {path}: {os.strerror(error)}")
        self._unixctl = client

    def _start_monitor(self) -> None:
        self._monitor = subprocess.Popen(
            ["ovs-ofctl", "monitor", self.bridge, "65534", "-P", "nxt_packet_in2"],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read_monitor, daemon=True).start()
        # The monitor is ready once a marker sent through the switch comes back.
        self._load_flow_text(marker_only_flows(""))
        for _ in range(100):
            self.appctl("netdev-dummy/receive", "p1", MARKER_FRAME.hex())
            try:
                while self._packet_ins.get(timeout=0.1).get("userdata") != MARKER_USERDATA:
                    pass
                break
            except queue.Empty:
                continue
        else:
            raise OracleError("ovs-ofctl monitor never reported the marker")
        self._drain()

    def _read_monitor(self) -> None:
        assert self._monitor is not None and self._monitor.stdout is not None
        current = None
        for line in self._monitor.stdout:
            line = line.rstrip("\n")
            m = _PACKET_IN_HEADER.match(line)
            if m:
                current = {"raw": line}
                for item in m.group("meta").split(","):
                    key, sep, value = item.partition("=")
                    if sep:
                        current[key] = value
            elif current is not None and line.startswith(" userdata="):
                current["userdata"] = line.split("=", 1)[1].strip()
                self._packet_ins.put(current)
                current = None
        self._packet_ins.put({"eof": True})

    def stop(self) -> None:
        """Stop the monitor and the two daemons this object started (and nothing else)."""
        if self._monitor is not None:
            self._monitor.terminate()
            try:
                self._monitor.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._monitor.kill()
            self._monitor = None
        if self._unixctl is not None:
            self._unixctl.close()
            self._unixctl = None
        self.ovs.stop()

    def __enter__(self) -> OvsOracle:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- commands -----------------------------------------------------------------------------
    def appctl(self, command: str, *args: str) -> str:
        if self._unixctl is None:
            raise OracleError("oracle not started")
        error, err_text, result = self._unixctl.transact(command, list(args))
        if error:
            raise OracleError(f"appctl {command}: {os.strerror(error)}")
        if err_text is not None:
            raise OracleError(f"appctl {command} {' '.join(args)[:200]}: {err_text.strip()}")
        return result or ""

    def ofctl(self, *args: str) -> str:
        return self.ovs.ofctl(*args)

    def advance_to(self, target_ms: int) -> None:
        """Warp OVS's stopped monotonic clock forward to ``target_ms`` (never backwards)."""
        if target_ms < self.now_ms:
            raise ValueError(f"time goes backwards: {target_ms} < {self.now_ms}")
        if target_ms > self.now_ms:
            self.appctl("time/warp", str(target_ms - self.now_ms))
            self.now_ms = target_ms

    def _drain(self) -> None:
        while True:
            try:
                self._packet_ins.get_nowait()
            except queue.Empty:
                return

    def _load_flow_text(self, text: str) -> None:
        path = self.rundir / "flows.txt"
        path.write_text(text)
        self.ofctl("del-flows", self.bridge)
        # push_vlan exists from OpenFlow 1.1 on: let ovs-ofctl pick OpenFlow 1.3 for it
        protocols = ["-O", "OpenFlow10,OpenFlow13"] if "push_vlan" in text else []
        self.ofctl(*protocols, "add-flows", self.bridge, str(path))

    def set_port_vlans(self, bridge: str | None) -> None:
        """Each port's VLAN mode from a ctaccel ``--bridge`` spec (None: all trunks of every
        VLAN), and an empty MAC learning table."""
        modes = {i: [] for i in range(1, self.n_ports + 1)}
        for item in (bridge or "").split(","):
            number, _, opt = item.strip().partition(":")
            if opt.startswith("tag="):
                modes[int(number)] = [f"tag={opt[4:]}"]
            elif opt.startswith("trunks="):
                vlans = ",".join(opt[7:].split(";"))
                modes[int(number)] = [f"trunks={vlans}"]
        cmd: list[str] = []
        for i, settings in modes.items():
            cmd += ["--", "clear", "Port", f"p{i}", "tag", "trunks"]
            if settings:
                cmd += ["--", "set", "Port", f"p{i}", *settings]
        self.ovs.vsctl(*cmd[1:])
        self.appctl("fdb/flush", self.bridge)

    def reset(self, flows: str, zone_limits: dict | None = None, instrument: bool = True,
              bridge: str | None = None) -> None:  # fmt: skip
        """Forget everything from the previous scenario and install ``flows``."""
        self.set_port_vlans(bridge)
        self._load_flow_text(instrument_flows(flows) if instrument else marker_only_flows(flows))
        self.appctl("dpctl/flush-conntrack")
        self.appctl("dpctl/del-flows")
        if self._limited_zones:
            zones = [f"zone={z}" for z in sorted(self._limited_zones)]
            self.appctl("dpctl/ct-del-limits", ",".join(zones))
            self._limited_zones.clear()
        if self._default_limited:
            # OVS cannot delete the default limit, and an explicit "default=0" blocks every
            # commit (unlike the initial, absent default): the largest limit is "unlimited".
            self.appctl("dpctl/ct-set-limits", f"default={UNLIMITED}")
            self._default_limited = False
        limits = []
        for zone, limit in (zone_limits or {}).items():
            if zone == "default":
                limits.append(f"default={int(limit)}")
                self._default_limited = True
            else:
                limits.append(f"zone={int(zone)},limit={int(limit)}")
                self._limited_zones.add(int(zone))
        if limits:
            self.appctl("dpctl/ct-set-limits", *limits)
        self._drain()

    def set_timeout_policies(self, policies: dict) -> None:
        """Zone timeout policies ({zone: {name: seconds}}) as ``ovs-vsctl add-zone-tp`` sets
        them on the netdev datapath; those of the previous scenario are deleted first."""
        if not policies and not self._tp_zones:
            return
        if not self._tp_datapath:
            self.ovs.vsctl("--", "--id=@dp", "create", "Datapath", "datapath_version=0", "--",
                           "set", "Open_vSwitch", ".", "datapaths:netdev=@dp")  # fmt: skip
            self._tp_datapath = True
        for zone in sorted(self._tp_zones):
            self.ovs.vsctl("del-zone-tp", "netdev", f"zone={zone}")
        self._tp_zones.clear()
        for zone, values in policies.items():
            self.ovs.vsctl("add-zone-tp", "netdev", f"zone={int(zone)}",
                           *(f"{k}={int(v)}" for k, v in values.items()))  # fmt: skip
            self._tp_zones.add(int(zone))
        self.appctl("revalidator/purge")  # translations carry the policy: none stale

    def conntrack(self) -> list[str]:
        """``dpctl/dump-conntrack`` (default format, all zones), lines sorted."""
        text = self.appctl("dpctl/dump-conntrack")
        return sorted(line.strip() for line in text.splitlines() if line.strip())

    def rule_n_packets(self, n_rules: int) -> list[int]:
        """n_packets of each scenario rule (marker rule excluded), in rule order.

        Rules are recognised by their controller userdata, so this needs instrumented flows.
        Caveat: OVS credits slow-path (controller) flows' statistics lazily, so these counts
        can lag the packets just injected; the per-packet hit lists are the exact record."""
        counts = [0] * n_rules
        for line in self.ofctl("dump-flows", self.bridge).splitlines():
            m = re.search(r"n_packets=(\d+).*controller\(userdata=([0-9a-f.]+)", line)
            if m and m.group(2) != MARKER_USERDATA:
                index = int(m.group(2).replace(".", ""), 16)
                if index < n_rules:
                    counts[index] = int(m.group(1))
        return counts

    # -- packets ------------------------------------------------------------------------------
    def send(self, in_port: int, frame: bytes, timeout: float = 5.0) -> PacketOutcome:
        """Inject ``frame`` on port ``in_port`` now and report what OVS did with it."""
        if len(frame) < 14:
            raise ValueError("netdev-dummy/receive refuses frames shorter than 14 bytes")
        port = f"p{in_port}"
        self.appctl("netdev-dummy/receive", port, frame.hex(), MARKER_FRAME.hex())
        packet_ins = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                pin = self._packet_ins.get(timeout=max(0.001, deadline - time.monotonic()))
            except queue.Empty:
                raise OracleError(f"no marker packet-in after a frame on {port}") from None
            if pin.get("eof"):
                raise OracleError("ovs-ofctl monitor exited")
            if pin.get("userdata") == MARKER_USERDATA:
                break
            packet_ins.append(pin)
        stamped = []
        for p in range(1, self.n_ports + 1):
            records, self._tx_offsets[p] = read_pcap_records(
                self.rundir / f"p{p}-tx.pcap", self._tx_offsets[p]
            )
            for seq, (ts, data) in enumerate(records):
                if data[12:14] != struct.pack("!H", MARKER_ETHERTYPE):
                    stamped.append((ts, p, seq, data))
        # by stamp; ties keep each port's own record order (never compare the bytes)
        stamped.sort(key=lambda r: (r[0], r[1], r[2]))
        certain = all(
            a[0] != b[0] or a[1] == b[1] for a, b in zip(stamped, stamped[1:], strict=False)
        )
        hits = []
        for pin in packet_ins:
            index = int(pin["userdata"].replace(".", ""), 16)
            hits.append((index, pin.get("ct_state", "")))
        ct_state = hits[-1][1] if hits else None
        return PacketOutcome(
            out=[p for _ts, p, _seq, _data in stamped],
            ct_state=ct_state,
            hits=hits,
            out_order_certain=certain,
            packet_ins=packet_ins,
            frames=[(p, data) for _ts, p, _seq, data in stamped],
        )

    def run(
        self,
        flows: str,
        packets: list[tuple[int, bytes, int]],
        zone_limits: dict | None = None,
        instrument: bool = True,
        with_n_packets: bool = False,
        bridge: str | None = None,
        timeout_policies: dict | None = None,
    ) -> OracleRun:
        """Play ``packets`` ((in_port, frame, time_ms), times strictly increasing) through
        ``flows`` from a clean state; return per-packet outcomes and the final conntrack."""
        self.reset(flows, zone_limits, instrument, bridge)
        self.set_timeout_policies(timeout_policies or {})
        epoch = self.now_ms + SCENARIO_GAP_MS
        started = time.perf_counter()
        outcomes = []
        for in_port, frame, t_ms in packets:
            self.advance_to(epoch + int(t_ms))
            outcomes.append(self.send(in_port, bytes(frame)))
            if "normal" in flows.lower():
                # a learned MAC revalidates the datapath flows in the background: purge
                # them, so the next packet sees the new table (as ctaccel drops its caches)
                self.appctl("revalidator/purge")
        seconds = time.perf_counter() - started
        n_packets = None
        if with_n_packets and instrument:
            n_packets = self.rule_n_packets(len(flow_lines(flows)))
        return OracleRun(outcomes, self.conntrack(), n_packets, seconds)
