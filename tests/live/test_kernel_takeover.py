"""Connections handed between the Linux kernel's stateful firewall and ctaccel, live.

A router namespace joins a client (10.77.1.1) and a server (10.77.2.1). First the kernel
routes and filters (nftables, ``ct state established,related accept``, new connections only
from the client side and, for TCP, only with a SYN: ``nf_conntrack_tcp_loose=0``). The client
opens 1,000 TCP connections to an echo server, a UDP flow and a ping; data goes both ways.

Takeover: the kernel stops forwarding (and tracking), ``ctaccel run --kernel-import
--zone-map 0=5`` starts on the same two interfaces with the equivalent rules (route by MAC
rewrite and dec_ttl, ct zone 5, new only from the client, TCP new only with SYN). Then the
server speaks first on every connection and on the UDP flow (packets that only an imported
connection lets through), the client echoes on every connection, the ping goes on: nothing
is reset or lost, every connection is ESTABLISHED in ctaccel's dump, and no packet met the
rules for new or invalid traffic.

Handback: 200 more connections are opened through ctaccel (the kernel does not see them),
ctaccel writes its table into the kernel (``ctl export-kernel`` in one mode, ``run
--kernel-export`` on stop in the other), stops, and the kernel forwards again: all 1,200
connections carry data both ways, the kernel's established rule counts them and its new rule
does not.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid

import pytest

from ctaccel.bench.netns import Datapath, sh

N_TCP, N_MORE = 1000, 200
CL, SV = "10.77.1.1", "10.77.2.1"
GW1, GW2 = "10.77.1.254", "10.77.2.254"
MAC = {"cl": "02:77:00:00:01:01", "a1": "02:77:00:00:01:fe", "sv": "02:77:00:00:02:01",
       "a2": "02:77:00:00:02:fe"}  # fmt: skip

NFT = """
table inet fw {
  counter est_c { }
  counter new_c { }
  chain forward {
    type filter hook forward priority 0; policy drop;
    ct state established,related counter name "est_c" accept
    ct state new iifname "a1" tcp flags & (fin|syn|rst|ack) == syn counter name "new_c" accept
    ct state new iifname "a1" meta l4proto { udp, icmp } counter name "new_c" accept
  }
}
"""
NOTRACK = """
table inet ctaccel_raw {
  chain pre {
    type filter hook prerouting priority raw;
    notrack
  }
}
"""


def _route(out_port: int, mac_src: str, mac_dst: str) -> str:
    return f"mod_dl_src:{mac_src},mod_dl_dst:{mac_dst},dec_ttl,output:{out_port}"


TO_SV = _route(2, MAC["a2"], MAC["sv"])
TO_CL = _route(1, MAC["a1"], MAC["cl"])
NEW_FROM_CL = f"ct_state=+trk+new,in_port=1,dl_dst={MAC['a1']},nw_dst=10.77.2.0/24"
RULES = f"""\
table=0,priority=100,ip,actions=ct(table=1,zone=5)
table=0,priority=1,actions=drop
table=1,priority=200,ip,ct_state=+trk+inv,actions=drop
table=1,priority=100,ip,ct_state=+trk+est,in_port=1,dl_dst={MAC["a1"]},nw_dst=10.77.2.0/24,actions={TO_SV}
table=1,priority=100,ip,ct_state=+trk+est,in_port=2,dl_dst={MAC["a2"]},nw_dst=10.77.1.0/24,actions={TO_CL}
table=1,priority=100,ip,ct_state=+trk+rel,in_port=1,dl_dst={MAC["a1"]},nw_dst=10.77.2.0/24,actions={TO_SV}
table=1,priority=100,ip,ct_state=+trk+rel,in_port=2,dl_dst={MAC["a2"]},nw_dst=10.77.1.0/24,actions={TO_CL}
table=1,priority=90,tcp,{NEW_FROM_CL},tcp_flags=+syn-ack,actions=ct(commit,zone=5),{TO_SV}
table=1,priority=90,udp,{NEW_FROM_CL},actions=ct(commit,zone=5),{TO_SV}
table=1,priority=90,icmp,{NEW_FROM_CL},actions=ct(commit,zone=5),{TO_SV}
table=1,priority=80,ip,ct_state=+trk+new,actions=drop
table=1,priority=1,actions=drop
"""

SERVER = r"""
import selectors, signal, socket, sys
sel = selectors.DefaultSelector()
lst = socket.socket(); lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
lst.bind((sys.argv[1], 7000)); lst.listen(4096); lst.setblocking(False)
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); udp.bind((sys.argv[1], 7001))
udp.setblocking(False)
sel.register(lst, selectors.EVENT_READ); sel.register(udp, selectors.EVENT_READ)
conns, peers, push = set(), set(), []
signal.signal(signal.SIGUSR1, lambda *a: push.append(1))
while True:
    for key, _ in sel.select(0.05):
        s = key.fileobj
        if s is lst:
            c, _a = lst.accept(); c.setblocking(True); c.settimeout(10)
            sel.register(c, selectors.EVENT_READ); conns.add(c)
        elif s is udp:
            data, peer = udp.recvfrom(2048); peers.add(peer); udp.sendto(data, peer)
        else:
            try:
                data = s.recv(65536)
            except OSError:
                data = b""
            if data:
                s.sendall(data)
            else:
                sel.unregister(s); conns.discard(s); s.close()
    if push:
        push.clear()
        for c in list(conns):
            c.sendall(b"S" * 8)
        for p in peers:
            udp.sendto(b"H", p)
"""

CLIENT = r"""
import json, selectors, socket, sys, time
conns, resets = [], 0
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); udp.bind((sys.argv[1], 0))
udp.settimeout(10)
def read_all(want, pattern):
    global resets
    sel = selectors.DefaultSelector(); got = {}
    for i, c in enumerate(conns):
        c.setblocking(False); sel.register(c, selectors.EVENT_READ, i); got[i] = b""
    deadline = time.monotonic() + 30
    while any(len(v) < want for v in got.values()) and time.monotonic() < deadline:
        for key, _ in sel.select(0.2):
            try:
                d = key.fileobj.recv(want - len(got[key.data]))
            except ConnectionResetError:
                resets += 1; d = b""; sel.unregister(key.fileobj); continue
            got[key.data] += d
            if len(got[key.data]) >= want:
                sel.unregister(key.fileobj)
    sel.close()
    for c in conns:
        c.setblocking(True)
    return sum(1 for i, v in got.items() if v == pattern(i))
for line in sys.stdin:
    cmd, *arg = line.split()
    if cmd == "open":
        for _ in range(int(arg[0])):
            c = socket.create_connection((sys.argv[2], 7000), timeout=10); conns.append(c)
        out = {"open": len(conns)}
    elif cmd == "round":
        for i, c in enumerate(conns):
            c.sendall(b"%015d" % i + arg[0].encode())
        ok = read_all(16, lambda i: b"%015d" % i + arg[0].encode())
        out = {"ok": ok, "resets": resets}
    elif cmd == "push":
        out = {"ok": read_all(8, lambda i: b"S" * 8), "resets": resets}
    elif cmd == "udp":
        udp.sendto(b"u" * 10, (sys.argv[2], 7001)); out = {"ok": udp.recv(64) == b"u" * 10}
    elif cmd == "udp-push":
        try:
            out = {"ok": udp.recv(64) == b"H"}
        except OSError as e:
            out = {"ok": False, "error": str(e)}
    print(json.dumps(out), flush=True)
"""


TOOLS = ("nft", "conntrack", "sysctl", "ethtool", "ss")


class Router:
    """Three namespaces: client, router (``a1``/``a2``), server; always removed."""

    def __init__(self):
        missing = [t for t in TOOLS if shutil.which(t) is None]
        if missing:  # the live conftest has checked root, ip, ping and curl
            if os.environ.get("CI") == "true":
                pytest.fail(f"the takeover tests need {missing} (CI installs them)")
            pytest.skip(f"the takeover tests need {missing}")
        tag = uuid.uuid4().hex[:6]
        self.ns = {"cl": f"ktc{tag}", "fw": f"ktf{tag}", "sv": f"kts{tag}"}
        self.procs: list[subprocess.Popen] = []
        try:
            for n in self.ns.values():
                sh("ip", "netns", "add", n)
            for side, port, ip, gw in (("cl", "a1", CL, GW1), ("sv", "a2", SV, GW2)):
                sh("ip", "-n", self.ns["fw"], "link", "add", port, "address", MAC[port], "type",
                   "veth", "peer", "name", "eth0", "address", MAC[side], "netns", self.ns[side])  # fmt: skip
                self.run("fw", "ip", "addr", "add", f"{gw}/24", "dev", port, check=True)
                self.run("fw", "ip", "link", "set", port, "up", check=True)
                self.run(side, "ip", "addr", "add", f"{ip}/24", "dev", "eth0", check=True)
                self.run(side, "ip", "link", "set", "eth0", "up", check=True)
                self.run(side, "ip", "link", "set", "lo", "up", check=True)
                self.run(side, "ip", "route", "add", "default", "via", gw, check=True)
                for dev, ns in (("eth0", side), (port, "fw")):
                    self.run(ns, "ethtool", "-K", dev, "tso", "off", "gso", "off", "gro", "off")
            self.run("fw", "sysctl", "-qw", "net.ipv4.ip_forward=1", check=True)
            self.nft(NFT)
            self.run("fw", "sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_loose=0", check=True)
        except BaseException:
            self.close()
            raise

    def run(self, side, *cmd, check=False, stdin=None):
        done = subprocess.run(["ip", "netns", "exec", self.ns[side], *cmd], input=stdin,
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        if check and done.returncode:
            raise AssertionError(f"{' '.join(cmd)}: {done.stderr}")
        return done

    def nft(self, text: str) -> None:
        self.run("fw", "nft", "-f", "-", stdin=text, check=True)

    def counter(self, name: str) -> int:
        out = self.run("fw", "nft", "list", "counter", "inet", "fw", name, check=True).stdout
        return int(re.search(r"packets (\d+)", out).group(1))

    def popen(self, side, *cmd, **kw) -> subprocess.Popen:
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns[side], *cmd], **kw)
        self.procs.append(proc)
        return proc

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
        for n in self.ns.values():
            subprocess.run(["ip", "netns", "del", n], capture_output=True, timeout=20)


class Client:
    def __init__(self, router: Router):
        self.proc = router.popen("cl", sys.executable, "-c", CLIENT, CL, SV, text=True,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip

    def ask(self, line: str) -> dict:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        assert answer, f"the client died on {line!r}"
        return json.loads(answer)


def _wait_listening(router: Router) -> None:
    deadline = time.monotonic() + 10
    while ":7000 " not in router.run("sv", "ss", "-ltn").stdout:
        assert time.monotonic() < deadline, "the echo server did not start"
        time.sleep(0.1)


def _pings(log) -> int:
    """Echo replies the ping in the background has reported so far (its output file)."""
    return log.read_text().count("bytes from")


def _flows_packets(dp: Datapath, fragment: str) -> int:
    for line in dp.ctl("dump-flows").stdout.splitlines():
        if fragment in line:
            return int(re.search(r"n_packets=(\d+)", line).group(1))
    raise AssertionError(f"no rule with {fragment!r}")


@pytest.mark.parametrize("mode", ["assume-established", "recirc"])
def test_takeover_from_the_kernel_and_handback(mode, tmp_path):
    router = Router()
    dp = None
    try:
        # a first run compiles the datapath (minutes on a cold cache): done before the kernel
        # path goes down, as a user would, so the takeover's gap is ctaccel's start-up only
        Datapath(_Ports(), "priority=0,actions=drop\n", mode=mode, netns=router.ns["fw"]).stop()
        router.popen("sv", sys.executable, "-c", SERVER, SV, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL)  # fmt: skip
        _wait_listening(router)
        server = router.procs[-1]
        client = Client(router)
        ping = tmp_path / "ping.log"
        with open(ping, "w") as out:
            router.popen("cl", "ping", "-i", "0.2", "-w", "600", SV, stdout=out)

        # --- the kernel's firewall carries everything ---
        assert client.ask(f"open {N_TCP}") == {"open": N_TCP}
        assert client.ask("round k") == {"ok": N_TCP, "resets": 0}
        assert client.ask("udp")["ok"]
        time.sleep(0.5)
        assert _pings(ping) >= 2

        # --- takeover: the kernel stops forwarding and tracking; ctaccel imports its table ---
        router.run("fw", "sysctl", "-qw", "net.ipv4.ip_forward=0", check=True)
        router.nft(NOTRACK)
        export = ("--kernel-export",) if mode == "recirc" else ()
        dp = Datapath(_Ports(), RULES, mode=mode, netns=router.ns["fw"],
                      extra=("--kernel-import", "--zone-map", "0=5", *export))  # fmt: skip
        assert re.search(rf"imported from the kernel: kernel_entries {N_TCP + 2}, "
                         rf"imported {N_TCP + 2},", dp.log()), dp.log()  # fmt: skip
        pings_before = _pings(ping)
        server.send_signal(signal.SIGUSR1)  # the server speaks first on every connection
        assert client.ask("push") == {"ok": N_TCP, "resets": 0}
        assert client.ask("udp-push")["ok"]
        assert client.ask("round c") == {"ok": N_TCP, "resets": 0}
        assert client.ask("udp")["ok"]
        time.sleep(1.0)
        assert _pings(ping) >= pings_before + 3
        dump = dp.ctl("dump-conntrack").stdout.splitlines()
        tcp = [x for x in dump if x.startswith("tcp,") and "dport=7000" in x]
        assert len(tcp) == N_TCP and all("zone=5" in x and "state=ESTABLISHED" in x for x in tcp)
        assert any(x.startswith("udp,") and "dport=7001" in x for x in dump)
        assert any(x.startswith("icmp,") and "zone=5" in x for x in dump)
        assert _flows_packets(dp, "ct_state=+new+trk,ip actions=drop") == 0
        assert _flows_packets(dp, "ct_state=+inv+trk,ip actions=drop") == 0

        # --- connections opened through ctaccel, then handed back ---
        assert client.ask(f"open {N_MORE}") == {"open": N_TCP + N_MORE}
        assert client.ask("round d") == {"ok": N_TCP + N_MORE, "resets": 0}
        kernel = router.run("fw", "conntrack", "-L").stdout
        assert kernel.count("dport=7000") == N_TCP  # the new ones are ctaccel's alone
        if not export:
            result = json.loads(dp.ctl("export-kernel").stdout)
            assert result["connections"] >= N_TCP + N_MORE and not result["refused"], result
        dp.stop()
        if export:
            assert "exported to the kernel" in dp.final_log, dp.final_log
        dp = None
        kernel = router.run("fw", "conntrack", "-L").stdout
        assert kernel.count("dport=7000") == N_TCP + N_MORE
        router.run("fw", "nft", "delete", "table", "inet", "ctaccel_raw", check=True)
        new_before, est_before = router.counter("new_c"), router.counter("est_c")
        router.run("fw", "sysctl", "-qw", "net.ipv4.ip_forward=1", check=True)
        assert client.ask("round b") == {"ok": N_TCP + N_MORE, "resets": 0}
        assert client.ask("udp")["ok"]
        assert router.counter("new_c") == new_before
        assert router.counter("est_c") >= est_before + 2 * (N_TCP + N_MORE)
    finally:
        if dp is not None:
            dp.stop()
        router.close()


class _Ports:
    """The router's interfaces as Datapath takes a topology's ports."""

    ports = [(1, "a1"), (2, "a2")]


def _wait(what: str, check, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while not (got := check()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.1)
    return got


def test_kernel_sync_keeps_the_kernel_table_converged(tmp_path):
    """``run --kernel-sync``: connections ctaccel creates appear in the kernel's table, one a
    tool inserts there appears in ctaccel's and goes when the tool deletes it; then ctaccel
    stops and the kernel carries every connection on without any export."""
    router = Router()
    dp = None
    try:
        Datapath(_Ports(), "priority=0,actions=drop\n", netns=router.ns["fw"]).stop()
        router.popen("sv", sys.executable, "-c", SERVER, SV, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL)  # fmt: skip
        _wait_listening(router)
        client = Client(router)
        router.run("fw", "sysctl", "-qw", "net.ipv4.ip_forward=0", check=True)
        router.nft(NOTRACK)
        dp = Datapath(_Ports(), RULES, netns=router.ns["fw"],
                      extra=("--kernel-sync", "--zone-map", "0=5"))  # fmt: skip
        n = 300
        assert client.ask(f"open {n}") == {"open": n}
        assert client.ask("round s") == {"ok": n, "resets": 0}

        def kernel_established():
            out = router.run("fw", "conntrack", "-L", "-p", "tcp", "--dport", "7000").stdout
            return out.count("ESTABLISHED") == n

        _wait("ctaccel's connections in the kernel's table", kernel_established)
        router.run("fw", "conntrack", "-I", "-p", "udp", "-s", CL, "-d", SV, "--sport", "5555",
                   "--dport", "7001", "-t", "120", check=True)  # fmt: skip
        _wait("the tool's entry in ctaccel's table",
              lambda: "sport=5555,dport=7001" in dp.ctl("dump-conntrack").stdout)  # fmt: skip
        router.run("fw", "conntrack", "-D", "-p", "udp", "--sport", "5555", check=True)
        _wait("the tool's deletion in ctaccel's table",
              lambda: "sport=5555,dport=7001" not in dp.ctl("dump-conntrack").stdout)  # fmt: skip
        counts = json.loads(dp.ctl("stats").stdout)["kernel_sync"]
        assert counts["created_there"] >= n and counts["deleted_here"] == 1, counts
        dp.stop()
        dp = None
        router.run("fw", "nft", "delete", "table", "inet", "ctaccel_raw", check=True)
        new_before = router.counter("new_c")
        router.run("fw", "sysctl", "-qw", "net.ipv4.ip_forward=1", check=True)
        assert client.ask("round k") == {"ok": n, "resets": 0}
        assert router.counter("new_c") == new_before
    finally:
        if dp is not None:
            dp.stop()
        router.close()
