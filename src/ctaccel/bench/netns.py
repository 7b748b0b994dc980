"""Live test beds: two network namespaces joined by a datapath, made and always removed.

What: :class:`Topology` makes two namespaces, ``inside`` (10.77.0.1) and ``outside``
(10.77.0.2), each with an ``eth0`` whose veth peer stays in this namespace as the datapath's
port 1 (inside) or 2 (outside); every name carries a random suffix. :class:`Datapath` runs
``ctaccel run`` on those two ports in a subprocess, waits until it forwards, talks to its
control socket and stops it. The live tests (tests/live) and the side-by-side benchmark
(benchmarks/live_vs_ovs.py) share them.

Design: traffic only ever goes to addresses inside the namespaces made here; every wait is
bounded; ``close()`` deletes the namespaces and veths whatever happened (use as context
managers or pytest fixtures).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

INSIDE_IP, OUTSIDE_IP = "10.77.0.1", "10.77.0.2"

# the talk's firewall, both ways: connections start inside (port 1) only
FIREWALL = """\
table=0,priority=100,ip,ct_state=-trk,actions=ct(table=0,zone=5)
table=0,priority=90,ip,ct_state=+trk+new,in_port=1,actions=ct(commit,zone=5),output:2
table=0,priority=80,ip,ct_state=+trk+est,in_port=1,actions=output:2
table=0,priority=80,ip,ct_state=+trk+est,in_port=2,actions=output:1
table=0,priority=80,ip,ct_state=+trk+rel,in_port=1,actions=output:2
table=0,priority=80,ip,ct_state=+trk+rel,in_port=2,actions=output:1
table=0,priority=10,arp,in_port=1,actions=output:2
table=0,priority=10,arp,in_port=2,actions=output:1
table=0,priority=1,actions=drop
"""


ECHO_SERVER = """
import socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(64); s.settimeout(60)
while True:
    c, _ = s.accept(); c.settimeout(60)
    def serve(c=c):
        while (b := c.recv(65536)):
            c.sendall(b)
    threading.Thread(target=serve, daemon=True).start()
"""


def missing_tools() -> list[str]:
    """The commands the live tests need that this machine lacks (root aside)."""
    return [t for t in ("ip", "curl", "ping") if shutil.which(t) is None]


def sh(*cmd: str, timeout: float = 20, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=check)


class Topology:
    """Two namespaces and two veth pairs; ``ports`` = [(1, inside's peer), (2, outside's)]."""

    def __init__(self):
        tag = uuid.uuid4().hex[:6]
        self.ns = {"inside": f"cti{tag}", "outside": f"cto{tag}"}
        self.links = {"inside": f"cvi{tag}", "outside": f"cvo{tag}"}
        self.ports = [(1, self.links["inside"]), (2, self.links["outside"])]
        self._procs: list[subprocess.Popen] = []
        try:
            for side, ip in (("inside", INSIDE_IP), ("outside", OUTSIDE_IP)):
                ns, link = self.ns[side], self.links[side]
                sh("ip", "netns", "add", ns)
                sh("ip", "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", ns)
                sh("ip", "link", "set", link, "up")
                sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
                sh("ip", "-n", ns, "link", "set", "eth0", "up")
                sh("ip", "-n", ns, "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise

    def run(self, side: str, *cmd: str, timeout: float = 30, check: bool = False):
        return sh("ip", "netns", "exec", self.ns[side], *cmd, timeout=timeout, check=check)

    def popen(self, side: str, *cmd: str, **kw) -> subprocess.Popen:
        """A process in a namespace; close() kills it if it is still running then (a process
        outlives its namespace otherwise)."""
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns[side], *cmd], **kw)
        self._procs.append(proc)
        return proc

    def wait_listening(self, side: str, port: int, timeout: float = 10.0) -> None:
        """Return once a TCP socket listens on ``port`` in ``side`` (AssertionError after
        ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if f":{port} " in self.run(side, "ss", "-ltn").stdout:
                return
            time.sleep(0.1)
        raise AssertionError(f"nothing listens on {side}:{port}")

    def serve_http(self, side: str, ip: str, port: int, directory=None) -> subprocess.Popen:
        """``python3 -m http.server`` in ``side`` on ip:port (serving ``directory``, or the
        current one), listening when this returns; close() stops it if nobody did."""
        args = [sys.executable, "-m", "http.server", str(port), "--bind", ip]
        if directory is not None:
            args += ["--directory", str(directory)]
        srv = self.popen(side, *args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.wait_listening(side, port)
        return srv

    def serve_echo(self, side: str, ip: str, port: int) -> subprocess.Popen:
        """A TCP echo server (a thread per connection) in ``side`` on ip:port, listening when
        this returns; close() stops it if nobody did."""
        srv = self.popen(side, sys.executable, "-c", ECHO_SERVER, ip, str(port),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        self.wait_listening(side, port)
        return srv

    def close(self) -> None:
        for proc in getattr(self, "_procs", ()):
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        for ns in self.ns.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)
        for link in self.links.values():
            subprocess.run(["ip", "link", "del", link], capture_output=True, timeout=20)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Datapath:
    """``ctaccel run`` on a topology's ports with ``rules``, in a subprocess (in ``netns`` when
    given, with ``extra`` arguments)."""

    START_TIMEOUT_S = 300  # a first run compiles the kernels

    def __init__(self, topo: Topology, rules: str, mode: str = "assume-established",
                 rx: str = "ring", bridge: str | None = None, netns: str | None = None,
                 extra: tuple[str, ...] = ()):  # fmt: skip
        self.dir = tempfile.mkdtemp(prefix="ctaccel-live-")
        self.flows = os.path.join(self.dir, "rules.flows")
        with open(self.flows, "w") as f:
            f.write(rules)
        self.ctl_path = os.path.join(self.dir, "ctl.sock")
        self.log_path = os.path.join(self.dir, "run.log")
        self.final_log = ""
        args = [sys.executable, "-m", "ctaccel.cli", "run", "--flows", self.flows, "--mode",
                mode, "--ctl", self.ctl_path, "--rx", rx]  # fmt: skip
        for no, link in topo.ports:
            args += ["--port", f"{no}={link}"]
        if bridge:
            args += ["--bridge", bridge]
        args += list(extra)
        if netns:  # the datapath runs in that namespace (its ports, its kernel conntrack)
            args = ["ip", "netns", "exec", netns, *args]
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.START_TIMEOUT_S
        while "forwarding" not in self.log():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"ctaccel run did not start:\n{self.log()}")
            time.sleep(0.2)

    def log(self) -> str:
        with open(self.log_path) as f:
            return f.read()

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "ctaccel.cli", "ctl", "--ctl", self.ctl_path, *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if check and done.returncode != 0:
            raise AssertionError(f"ctl {' '.join(args)}: {done.stderr}")
        return done

    def write_rules(self, name: str, text: str) -> str:
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def stop(self) -> int:
        if self.proc.poll() is None:
            subprocess.run([sys.executable, "-m", "ctaccel.cli", "ctl", "--ctl", self.ctl_path,
                            "stop"], capture_output=True, timeout=60)  # fmt: skip
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=20)
        self._log.close()
        if os.path.exists(self.log_path):  # what it said up to its end (the directory goes)
            self.final_log = self.log()
        shutil.rmtree(self.dir, ignore_errors=True)
        return self.proc.returncode
