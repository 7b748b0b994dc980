"""OVS's userspace datapath on real ports: scripted frames in through veths, what it sends out.

What: :class:`VethOvs` makes veth pairs ``ctvi<N>-<id>`` / ``ctvo<N>-<id>`` (N = 1..ports),
adds each ``ctvo`` end to a private OVS bridge with ``datapath_type=netdev`` as OpenFlow port N
(an AF_PACKET port of OVS's netdev-linux), and :meth:`VethOvs.run` plays a scenario's frames
into the ``ctvi`` ends one at a time, collecting what comes back out of each ``ctvi`` end.

Why: the dummy-port oracle (ovs_driver.py) hands OVS each frame in a buffer exactly its size,
so OVS's FTP helper refuses every NAT rewrite there ("Unsupported effective MTU": it wants 8
bytes of room for IPv4, 45 for IPv6). Frames received on a real port sit in MTU-sized
buffers, as in production, and are rewritten; this driver is how the tests see OVS do it.

Design: no namespace and no addresses: the veths only carry frames; IPv6 is disabled on them
before they go up (no router solicitations or MLD reports) and checksum offloads are off (OVS
and the kernel hand over complete frames). Each frame is sent through an AF_PACKET socket on
its ``ctvi`` end; the driver then reads every ``ctvi`` end until no frame arrived for a quiet
period (bounded), so each input's outputs are known before the next is sent. Everything made
here is removed by :meth:`close` (use as a context manager).

Invariants: frames only ever travel on the veths made here; every wait is bounded.
"""

from __future__ import annotations

import os
import select
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
QUIET_S = 0.03  # no frame for this long after the last one: the input's outputs are all out
FIRST_S = 1.0  # the longest wait for an input's first output (an upcall on a fresh bridge)


def available() -> str | None:
    """None when this machine can run the driver, else why not."""
    if os.geteuid() != 0:
        return "needs root (veths, AF_PACKET)"
    missing = [t for t in ("ip", "ethtool", "ovs-vswitchd", "ovsdb-server") if not shutil.which(t)]
    return f"missing {', '.join(missing)}" if missing else None


def _sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=30)


class VethOvs:
    """A private OVS (netdev datapath) whose ports 1..n are veths this object made."""

    def __init__(self, n_ports: int = 3):
        from ctaccel.bench.private_ovs import PrivateOvs

        tag = uuid.uuid4().hex[:6]
        self.inner = {n: f"ctvi{n}-{tag}" for n in range(1, n_ports + 1)}
        self.outer = {n: f"ctvo{n}-{tag}" for n in range(1, n_ports + 1)}
        self.socks: dict[int, socket.socket] = {}
        self.dir = tempfile.mkdtemp(prefix="ctaccel-veth-ovs-")
        self.ovs = PrivateOvs(self.dir)
        try:
            self._links()
            self.ovs.start_ovsdb()
            self.ovs.start_vswitchd()
            self.ovs.vsctl("add-br", "br0", "--", "set", "bridge", "br0", "datapath_type=netdev")
            for n, link in self.outer.items():
                self.ovs.vsctl("add-port", "br0", link, "--", "set", "Interface", link,
                               f"ofport_request={n}")  # fmt: skip
            for n, link in self.inner.items():
                s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
                s.bind((link, 0))
                s.setblocking(False)
                self.socks[n] = s
        except BaseException:
            self.close()
            raise

    def _links(self) -> None:
        for n in self.inner:
            a, b = self.inner[n], self.outer[n]
            _sh("ip", "link", "add", a, "type", "veth", "peer", "name", b)
            for link in (a, b):
                Path(f"/proc/sys/net/ipv6/conf/{link}/disable_ipv6").write_text("1\n")
                subprocess.run(["ethtool", "-K", link, "tx", "off", "rx", "off", "tso", "off",
                                "gso", "off", "gro", "off"], capture_output=True, timeout=30)  # fmt: skip
                _sh("ip", "link", "set", link, "up")

    def run(self, flows: str, packets) -> list[list[tuple[int, bytes]]]:
        """Load ``flows`` (replacing any), play (in_port, frame, t_ms) ``packets`` in order;
        the frames each one made OVS send, as (port, frame) in arrival order."""
        path = Path(self.dir) / "flows.txt"
        path.write_text(flows.strip() + "\n")
        self.ovs.ofctl("del-flows", "br0")
        self.ovs.ofctl("add-flows", "br0", str(path))
        self.ovs.appctl("dpctl/flush-conntrack")
        self._drain(QUIET_S)
        return [self._play(port, frame) for port, frame, _t in packets]

    def conntrack(self) -> list[str]:
        """dpctl/dump-conntrack lines of the bridge's datapath, sorted."""
        text = self.ovs.appctl("dpctl/dump-conntrack")
        return sorted(line.strip() for line in text.splitlines() if line.strip())

    def _play(self, port: int, frame: bytes) -> list[tuple[int, bytes]]:
        self.socks[port].send(frame)
        return self._drain(QUIET_S, first=FIRST_S)

    def _drain(self, quiet: float, first: float | None = None) -> list[tuple[int, bytes]]:
        got: list[tuple[int, bytes]] = []
        wait = first if first is not None else quiet
        deadline = time.monotonic() + 10.0
        by_fd = {s.fileno(): n for n, s in self.socks.items()}
        while time.monotonic() < deadline:
            ready, _, _ = select.select(list(self.socks.values()), [], [], wait)
            if not ready:
                break
            for s in ready:
                while True:
                    try:
                        data, addr = s.recvfrom(65535)
                    except BlockingIOError:
                        break
                    if addr[2] != PACKET_OUTGOING:
                        got.append((by_fd[s.fileno()], data))
            wait = quiet
        return got

    def close(self) -> None:
        for s in self.socks.values():
            s.close()
        try:
            self.ovs.stop()
        finally:
            for link in self.inner.values():
                subprocess.run(["ip", "link", "del", link], capture_output=True, timeout=30)
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
