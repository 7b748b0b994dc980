"""`ctaccel run` with real stacks: two network namespaces joined by the live datapath.

The talk's firewall (connections start inside only) between an inside and an outside
namespace, veths with their default offloads (checksums left to offload, GSO super-frames):
real TCP (curl of a 5 MB file from `python3 -m http.server`), ping, an ICMP error, an
inbound connection refused by the rules, the control socket (dump-conntrack in OVS's format,
rule changes and conntrack flushes while connections are open, bad requests), and the
errors a user can cause. Both datapath modes where the path differs.

Needs root and `ip`, `curl`, `ping` (conftest.py: CI installs them; elsewhere not collected).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time

import pytest

from ctaccel.bench.netns import (
    FIREWALL,
    INSIDE_IP,
    OUTSIDE_IP,
    Datapath,
    Topology,
)

MODES = ["assume-established", "recirc"]

ECHO_CLIENT = """
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
for i in range(int(sys.argv[4])):
    msg = f"ping {i}\\n".encode(); s.sendall(msg)
    got = b""
    while len(got) < len(msg):
        got += s.recv(100)
    assert got == msg
    print(i, flush=True)
    time.sleep(float(sys.argv[5]))
"""


@pytest.fixture
def served(topo, tmp_path):
    """An HTTP server in the outside namespace serving a 5 MB random file."""
    blob = os.urandom(5_000_000)
    (tmp_path / "big.bin").write_bytes(blob)
    srv = topo.serve_http("outside", OUTSIDE_IP, 8000, tmp_path)
    yield hashlib.sha256(blob).hexdigest()
    srv.kill()
    srv.wait(timeout=10)


def _curl_sha(topo, tmp_path, side="inside", host=OUTSIDE_IP, port=8000, timeout=20):
    got = tmp_path / f"got-{time.monotonic_ns()}.bin"
    done = topo.run(side, "curl", "-s", "-m", str(timeout), "-o", str(got),
                    f"http://{host}:{port}/big.bin", timeout=timeout + 10)  # fmt: skip
    if done.returncode != 0 or not got.exists():
        return None
    return hashlib.sha256(got.read_bytes()).hexdigest()


@pytest.mark.parametrize("mode, rx", [("assume-established", "ring"), ("recirc", "ring"),
                                      ("assume-established", "block"),
                                      ("assume-established", "mmsg")])  # fmt: skip
def test_a_5mb_download_crosses_byte_identical_and_inbound_is_refused(topo, served, tmp_path,
                                                                      mode, rx):  # fmt: skip
    dp = Datapath(topo, FIREWALL, mode, rx)
    try:
        assert _curl_sha(topo, tmp_path) == served
        conns = dp.ctl("dump-conntrack").stdout
        assert f"tcp,orig=(src={INSIDE_IP},dst={OUTSIDE_IP}," in conns
        assert "dport=8000),reply=(src=10.77.0.2,dst=10.77.0.1,sport=8000," in conns
        assert ",zone=5,protoinfo=(state=" in conns
        # a server inside, a client outside: the firewall lets no connection start outside
        inner = topo.serve_http("inside", INSIDE_IP, 8001)
        try:
            refused = topo.run("outside", "curl", "-s", "-m", "3", "-o", "/dev/null",
                               f"http://{INSIDE_IP}:8001/")  # fmt: skip
            assert refused.returncode != 0
        finally:
            inner.kill()
            inner.wait(timeout=10)
        s = json.loads(dp.ctl("stats").stdout)
        port2 = s["ports"][f"2 ({topo.links['outside']})"]
        assert port2["rx_gso"] > 0 and port2["rx_checksums_completed"] > 0  # offloads on
        assert port2["rx_kernel_drops"] >= 0 and port2["tx_errors"] == 0
        if mode == "assume-established":
            assert s["paths"].get("fast", 0) > 100
        else:
            assert "fast" not in s["paths"]
    finally:
        assert dp.stop() == 0


@pytest.mark.parametrize("mode", MODES)
def test_ping_and_an_icmp_error_come_back(topo, mode):
    dp = Datapath(topo, FIREWALL, mode)
    try:
        ping = topo.run("inside", "ping", "-c", "3", "-i", "0.2", "-W", "2", OUTSIDE_IP)
        assert ping.returncode == 0, ping.stdout
        # UDP to a closed port outside: the port-unreachable error is related, let back in
        probe = ("import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                 f"s.settimeout(3); s.connect(('{OUTSIDE_IP}', 9)); s.send(b'x'); "
                 "import sys\ntry:\n s.recv(10)\nexcept ConnectionRefusedError:\n "
                 "sys.exit(0)\nsys.exit(1)")  # fmt: skip
        assert topo.run("inside", sys.executable, "-c", probe).returncode == 0
        assert "icmp,orig=(src=10.77.0.1,dst=10.77.0.2" in dp.ctl("dump-conntrack").stdout
    finally:
        assert dp.stop() == 0


NO_NEW_CONNECTIONS = FIREWALL.replace(
    "table=0,priority=90,ip,ct_state=+trk+new,in_port=1,actions=ct(commit,zone=5),output:2\n", ""
)


def _echo_client(topo, count, pause, timeout=5.0):
    return topo.popen("inside", sys.executable, "-c", ECHO_CLIENT, OUTSIDE_IP, "7000",
                      str(timeout), str(count), str(pause), stdout=subprocess.PIPE,
                      stderr=subprocess.PIPE, text=True)  # fmt: skip


@pytest.mark.parametrize("mode", MODES)
def test_rule_changes_while_a_connection_is_open(topo, mode):
    """replace-flows with rules that still allow the connection: it goes on; rules that allow
    no new connection: the open one still goes on (it is established), a new one fails."""
    server = topo.serve_echo("outside", OUTSIDE_IP, 7000)
    dp = Datapath(topo, FIREWALL, mode)
    try:
        client = _echo_client(topo, 30, 0.1)
        time.sleep(0.8)
        dp.ctl("replace-flows", dp.write_rules("same.flows", FIREWALL))
        time.sleep(0.8)
        dp.ctl("replace-flows", dp.write_rules("no-new.flows", NO_NEW_CONNECTIONS))
        out, err = client.communicate(timeout=30)
        assert client.returncode == 0, err
        assert out.split() == [str(i) for i in range(30)]
        late = _echo_client(topo, 1, 0, timeout=2)
        late.communicate(timeout=30)
        assert late.returncode != 0  # the SYN is new, and nothing commits it now
        flows = dp.ctl("dump-flows").stdout
        assert "ct(commit" not in flows and "ct_state=+est+trk" in flows
    finally:
        dp.stop()
        server.kill()
        server.wait(timeout=10)


MANY_SERVER = """
import resource, selectors, socket, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (8192, 8192))
sel = selectors.DefaultSelector()
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], int(sys.argv[2]))); srv.listen(4096); srv.setblocking(False)
sel.register(srv, selectors.EVENT_READ)
while True:
    for key, _ in sel.select(timeout=1):
        if key.fileobj is srv:
            c, _ = srv.accept(); c.setblocking(False); sel.register(c, selectors.EVENT_READ)
            continue
        try:
            b = key.fileobj.recv(65536)
        except OSError:
            b = b""
        if b:
            key.fileobj.sendall(b)
        else:
            sel.unregister(key.fileobj); key.fileobj.close()
"""

MANY_CLIENTS = """
import os, resource, socket, sys, time
resource.setrlimit(resource.RLIMIT_NOFILE, (8192, 8192))
host, port, n, flags = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
socks = [socket.create_connection((host, port), timeout=10) for _ in range(n)]
def exchange(tag):
    for i, s in enumerate(socks):
        s.sendall(f"{tag}{i}.".encode())
    ok = 0
    for i, s in enumerate(socks):
        want, got = f"{tag}{i}.".encode(), b""
        try:
            while len(got) < len(want):
                got += s.recv(100) or b"!" * 100
            ok += got == want
        except OSError:
            pass
    return ok
print(exchange("a"), flush=True)
for k, flag in enumerate(flags):
    deadline = time.monotonic() + 60
    while not os.path.exists(flag) and time.monotonic() < deadline:
        time.sleep(0.05)
    print(exchange("bcdef"[k]), flush=True)
"""


@pytest.mark.parametrize("mode", MODES)
def test_no_established_connection_is_lost_across_rule_changes(topo, tmp_path, mode):
    """1,000 open connections exchange data, then again after each replace-flows whose rules
    still allow them (the same rules plus one; rules that commit nothing new): every
    exchange completes on every connection."""
    n = 1000
    server = topo.popen("outside", sys.executable, "-c", MANY_SERVER, OUTSIDE_IP, "7100",
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    dp = Datapath(topo, FIREWALL, mode)
    flags = [str(tmp_path / "go1"), str(tmp_path / "go2")]
    try:
        topo.wait_listening("outside", 7100)
        clients = topo.popen("inside", sys.executable, "-c", MANY_CLIENTS, OUTSIDE_IP, "7100",
                             str(n), *flags, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)  # fmt: skip
        first = clients.stdout.readline().strip()
        assert first == str(n), clients.stderr.read() if not first else first
        assert dp.ctl("dump-conntrack").stdout.count("dport=7100") == n
        plus_one = FIREWALL + "table=0,priority=50,udp,tp_dst=9,actions=drop\n"
        dp.ctl("replace-flows", dp.write_rules("plus.flows", plus_one))
        open(flags[0], "w").close()
        assert clients.stdout.readline().strip() == str(n)
        dp.ctl("replace-flows", dp.write_rules("no-new.flows", NO_NEW_CONNECTIONS))
        open(flags[1], "w").close()
        assert clients.stdout.readline().strip() == str(n)
        clients.kill()
        clients.wait(timeout=10)
    finally:
        dp.stop()
        server.kill()
        server.wait(timeout=10)


def test_flush_conntrack_mid_connection_as_ovs_does(topo):
    """After flush-conntrack the open connection's next segment from inside is a new
    connection to OVS's userspace conntrack (a mid-stream ACK may start one; only SYN+ACK may
    not), so the firewall commits it again and the connection goes on; a segment from
    outside first would have been dropped (nothing commits from port 2)."""
    server = topo.serve_echo("outside", OUTSIDE_IP, 7000)
    dp = Datapath(topo, FIREWALL)
    try:
        client = _echo_client(topo, 40, 0.1, timeout=5)
        time.sleep(0.8)
        assert "tcp,orig=" in dp.ctl("dump-conntrack").stdout
        dp.ctl("flush-conntrack")
        out, err = client.communicate(timeout=30)
        assert client.returncode == 0, err
        assert out.split() == [str(i) for i in range(40)]
        s = json.loads(dp.ctl("stats").stdout)
        assert s["conntrack"]["flushed"] >= 1
        # picked up again mid-stream: window tracking could not see the handshake
        assert "tcp,orig=(src=10.77.0.1,dst=10.77.0.2" in dp.ctl("dump-conntrack").stdout
        fresh = _echo_client(topo, 3, 0)
        fresh.communicate(timeout=30)
        assert fresh.returncode == 0
    finally:
        dp.stop()
        server.kill()
        server.wait(timeout=10)


def test_bad_requests_are_answered_and_the_datapath_goes_on(topo):
    dp = Datapath(topo, FIREWALL)
    try:
        bad = dp.write_rules("bad.flows", "table=0,priority=5,ip,actions=output:2\nnot a rule\n")
        done = dp.ctl("add-flows", bad, check=False)
        assert done.returncode == 2 and "bad.flows:2" in done.stderr
        assert dp.ctl("no-such-command", check=False).returncode == 2
        assert dp.ctl("dump-conntrack", "--zone", "x", check=False).returncode == 2
        import socket

        with socket.socket(socket.AF_UNIX) as s:  # not JSON at all
            s.connect(dp.ctl_path)
            s.sendall(b"\x00garbage\n")
            assert b'"ok": false' in s.recv(4096)
        dp.ctl("add-flows", dp.write_rules("more.flows", "table=0,priority=7,udp,actions=drop\n"))
        flows = dp.ctl("dump-flows").stdout
        assert "priority=7,udp actions=drop" in flows and "ct(commit,zone=5)" in flows
        ping = topo.run("inside", "ping", "-c", "2", "-i", "0.2", "-W", "2", OUTSIDE_IP)
        assert ping.returncode == 0
    finally:
        assert dp.stop() == 0


def test_errors_a_user_can_cause_are_one_line_and_exit_2(topo, tmp_path):
    flows = tmp_path / "fw.flows"
    flows.write_text(FIREWALL)
    run = [sys.executable, "-m", "ctaccel.cli", "run", "--flows", str(flows)]
    cases = [
        (["--port", "1=no-such-if0", "--port", f"2={topo.links['outside']}"], "no such network"),
        (
            ["--port", f"1={topo.links['inside']}", "--port", f"1={topo.links['outside']}"],
            "given twice",
        ),
    ]
    for extra, text in cases:
        done = subprocess.run([*run, *extra, "--ctl", str(tmp_path / "c")], capture_output=True,
                              text=True, timeout=300)  # fmt: skip
        assert done.returncode == 2 and text in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()[-1:]) == 1
    dp = Datapath(topo, FIREWALL)
    try:  # the control socket of a running datapath is taken
        other = Topology()
        try:
            done = subprocess.run([*run, *(a for no, link in other.ports
                                           for a in ("--port", f"{no}={link}")),
                                   "--ctl", dp.ctl_path], capture_output=True, text=True,
                                  timeout=300)  # fmt: skip
        finally:
            other.close()
        assert done.returncode == 2 and "already listens" in done.stderr, done.stderr
    finally:
        dp.stop()
    no_ctl = subprocess.run([sys.executable, "-m", "ctaccel.cli", "ctl", "--ctl",
                             str(tmp_path / "none.sock"), "stats"], capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert no_ctl.returncode == 2 and "no datapath answers" in no_ctl.stderr


def test_a_port_going_down_is_reported_not_fatal(topo):
    dp = Datapath(topo, FIREWALL)
    try:
        subprocess.run(["ip", "link", "set", topo.links["outside"], "down"], check=True)
        deadline = time.monotonic() + 10
        while "is down" not in dp.log() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert f"port 2 ({topo.links['outside']}) is down" in dp.log()
        subprocess.run(["ip", "link", "set", topo.links["outside"], "up"], check=True)
        deadline = time.monotonic() + 10
        while "is up" not in dp.log() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert f"port 2 ({topo.links['outside']}) is up" in dp.log()
        ping = topo.run("inside", "ping", "-c", "3", "-i", "0.3", "-W", "2", OUTSIDE_IP)
        assert ping.returncode == 0 and dp.proc.poll() is None
    finally:
        assert dp.stop() == 0


def test_without_raw_sockets_it_is_one_line_before_any_compile(topo, tmp_path):
    """Not root (here: root without CAP_NET_RAW, which is what matters): one line, exit 2,
    and no compile first (a fresh kernel cache, and the answer comes in seconds)."""
    import shutil

    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux) to drop root")
    work = tempfile.mkdtemp(prefix="ctaccel-nobody-")
    os.chmod(work, 0o777)
    flows = os.path.join(work, "fw.flows")
    with open(flows, "w") as f:
        f.write(FIREWALL)
    os.chmod(flows, 0o644)
    try:
        done = subprocess.run(
            ["setpriv", "--bounding-set=-net_raw,-net_admin", sys.executable,
             "-m", "ctaccel.cli", "run", "--flows", flows, "--ctl", os.path.join(work, "c"),
             *(a for no, link in topo.ports for a in ("--port", f"{no}={link}"))],
            capture_output=True, text=True, timeout=120,
            env={**os.environ, "NUMBA_CACHE_DIR": os.path.join(work, "cache")})  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert done.returncode == 2, done.stderr
    assert "needs root" in done.stderr and len(done.stderr.strip().splitlines()) == 1
