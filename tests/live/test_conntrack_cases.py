"""Conntrack cases through `ctaccel run`, in the manner of OVS's system-traffic tests.

Our own versions of the kinds of "conntrack - ..." cases OVS's tests/system-traffic.at runs
with namespaces and veths: UDP both ways, unsolicited UDP and ping from outside, a refused
TCP connection (the RST comes back), IP fragments both ways, parallel downloads, zones in
the dump, ct_mark set on commit and matched on replies, source NAT from the inside
namespace, and rules removed and added back while running. One datapath per test, the
talk's firewall unless the case needs other rules.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from ctaccel.bench.netns import (
    FIREWALL,
    INSIDE_IP,
    OUTSIDE_IP,
    Datapath,
)

UDP_ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2]))); s.settimeout(60)
while True:
    data, peer = s.recvfrom(65536)
    s.sendto(data, peer)
"""

UDP_ASK = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(float(sys.argv[4]))
if len(sys.argv) > 5:
    s.bind((sys.argv[5], 0))
ok = 0
for i in range(int(sys.argv[3])):
    s.sendto(b"q%d" % i, (sys.argv[1], int(sys.argv[2])))
    try:
        ok += s.recvfrom(100)[0] == b"q%d" % i
    except OSError:
        pass
print(ok)
"""


def _udp(topo, side, host, n=5, timeout=1.0):
    done = topo.run(side, sys.executable, "-c", UDP_ASK, host, "5300", str(n), str(timeout),
                    timeout=n * timeout + 30)  # fmt: skip
    return int(done.stdout.strip() or 0)


def _server(topo, side, ip, code=UDP_ECHO, port="5300"):
    return topo.popen(side, sys.executable, "-c", code, ip, port, stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL)  # fmt: skip


def _stop(*procs):
    for p in procs:
        p.kill()
        p.wait(timeout=10)


def test_udp_both_ways_and_unsolicited_udp_and_ping_from_outside_are_dropped(topo):
    outer, inner = _server(topo, "outside", OUTSIDE_IP), _server(topo, "inside", INSIDE_IP)
    dp = Datapath(topo, FIREWALL)
    try:
        time.sleep(0.5)
        assert _udp(topo, "inside", OUTSIDE_IP) == 5  # the replies are established
        assert _udp(topo, "outside", INSIDE_IP, n=2, timeout=0.5) == 0  # nothing starts outside
        ping = topo.run("outside", "ping", "-c", "2", "-i", "0.2", "-W", "1", INSIDE_IP)
        assert ping.returncode != 0
        dump = dp.ctl("dump-conntrack").stdout
        assert f"udp,orig=(src={INSIDE_IP},dst={OUTSIDE_IP}," in dump
        assert f"src={OUTSIDE_IP},dst={INSIDE_IP},sport=" not in dump.split("reply=")[0]
    finally:
        dp.stop()
        _stop(outer, inner)


def test_a_refused_connection_gets_its_rst_back(topo):
    dp = Datapath(topo, FIREWALL)
    try:
        t0 = time.monotonic()
        done = topo.run("inside", "curl", "-s", "-m", "5", f"http://{OUTSIDE_IP}:9999/")
        assert done.returncode == 7  # "connection refused": the RST crossed back, no timeout
        assert time.monotonic() - t0 < 4
    finally:
        dp.stop()


@pytest.mark.parametrize("mode", ["assume-established", "recirc"])
def test_ip_fragments_cross_both_ways(topo, mode):
    """A 3000-byte ping and a 4000-byte UDP datagram: fragments out, fragments back (the
    reassembly in front of conntrack, as OVS's ipf)."""
    outer = _server(topo, "outside", OUTSIDE_IP)
    dp = Datapath(topo, FIREWALL, mode)
    try:
        time.sleep(0.5)
        ping = topo.run("inside", "ping", "-c", "3", "-i", "0.2", "-W", "2", "-s", "3000",
                        OUTSIDE_IP)  # fmt: skip
        assert ping.returncode == 0, ping.stdout
        big = ("import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
               f"s.settimeout(3); s.sendto(b'z' * 4000, ('{OUTSIDE_IP}', 5300)); "
               "print(len(s.recvfrom(65536)[0]))")  # fmt: skip
        assert topo.run("inside", sys.executable, "-c", big).stdout.strip() == "4000"
        stats = dp.ctl("stats").stdout
        assert '"slow"' in stats  # the fragments went through the reference engine
    finally:
        dp.stop()
        _stop(outer)


def test_parallel_downloads_are_all_intact(topo, tmp_path):
    import hashlib

    blob = os.urandom(2_000_000)
    (tmp_path / "f.bin").write_bytes(blob)
    srv = topo.serve_http("outside", OUTSIDE_IP, 8000, tmp_path)
    dp = Datapath(topo, FIREWALL)
    try:
        curls = [topo.popen("inside", "curl", "-s", "-m", "30", "-o", str(tmp_path / f"g{i}"),
                            f"http://{OUTSIDE_IP}:8000/f.bin") for i in range(8)]  # fmt: skip
        for c in curls:
            assert c.wait(timeout=60) == 0
        want = hashlib.sha256(blob).hexdigest()
        for i in range(8):
            assert hashlib.sha256((tmp_path / f"g{i}").read_bytes()).hexdigest() == want
        dump = dp.ctl("dump-conntrack").stdout
        assert dump.count("dport=8000),reply=") == 8
        assert dp.ctl("dump-conntrack", "--zone", "5").stdout == dump
        assert dp.ctl("dump-conntrack", "--zone", "6").stdout == ""
    finally:
        dp.stop()
        _stop(srv)


MARKED = """\
table=0,priority=100,ip,ct_state=-trk,actions=ct(table=1,zone=7)
table=1,priority=90,ip,ct_state=+trk+new,in_port=1,actions=ct(commit,zone=7,exec(set_field:0x2a->ct_mark)),output:2
table=1,priority=80,ip,ct_state=+trk+est,ct_mark=0x2a,in_port=2,actions=output:1
table=1,priority=80,ip,ct_state=+trk+est,in_port=1,actions=output:2
table=0,priority=10,arp,in_port=1,actions=output:2
table=0,priority=10,arp,in_port=2,actions=output:1
table=0,priority=1,actions=drop
table=1,priority=1,actions=drop
"""


def test_ct_mark_set_on_commit_lets_the_replies_back(topo):
    outer = _server(topo, "outside", OUTSIDE_IP)
    dp = Datapath(topo, MARKED)
    try:
        time.sleep(0.5)
        assert _udp(topo, "inside", OUTSIDE_IP) == 5
        dump = dp.ctl("dump-conntrack").stdout
        assert ",zone=7,mark=42" in dump
        flows = dp.ctl("dump-flows").stdout
        assert "ct_mark=0x2a" in flows and "n_packets=5" in flows.split("ct_mark=0x2a")[0][-200:]
    finally:
        dp.stop()
        _stop(outer)


SNAT_IP = "10.77.0.254"
SNAT = f"""\
table=0,priority=100,ip,in_port=1,actions=ct(table=1,zone=9,nat)
table=0,priority=100,ip,in_port=2,actions=ct(table=2,zone=9,nat)
table=1,priority=90,ip,ct_state=+trk+new,actions=ct(commit,zone=9,nat(src={SNAT_IP})),output:2
table=1,priority=80,ip,ct_state=+trk+est,actions=output:2
table=2,priority=80,ip,ct_state=+trk+est,actions=output:1
table=0,priority=10,arp,in_port=1,actions=output:2
table=0,priority=10,arp,in_port=2,actions=output:1
table=0,priority=1,actions=drop
table=1,priority=1,actions=drop
table=2,priority=1,actions=drop
"""

WHO_ASKS = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2]))); s.settimeout(60)
while True:
    data, peer = s.recvfrom(100)
    s.sendto(peer[0].encode(), peer)
"""


def test_source_nat_from_the_inside_namespace(topo):
    """The outside sees the NAT address; the replies are translated back."""
    mac = topo.run("inside", "cat", "/sys/class/net/eth0/address").stdout.strip()
    topo.run("outside", "ip", "neigh", "add", SNAT_IP, "lladdr", mac, "dev", "eth0", check=True)
    outer = _server(topo, "outside", OUTSIDE_IP, WHO_ASKS)
    dp = Datapath(topo, SNAT)
    try:
        time.sleep(0.5)
        ask = ("import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
               f"s.settimeout(3); s.sendto(b'?', ('{OUTSIDE_IP}', 5300)); "
               "print(s.recvfrom(100)[0].decode())")  # fmt: skip
        assert topo.run("inside", sys.executable, "-c", ask).stdout.strip() == SNAT_IP
        dump = dp.ctl("dump-conntrack").stdout
        assert f"reply=(src={OUTSIDE_IP},dst={SNAT_IP}," in dump and "zone=9" in dump
    finally:
        dp.stop()
        _stop(outer)


def test_rules_deleted_then_added_back_while_running(topo):
    outer = _server(topo, "outside", OUTSIDE_IP)
    dp = Datapath(topo, FIREWALL)
    try:
        time.sleep(0.5)
        assert _udp(topo, "inside", OUTSIDE_IP, n=2) == 2
        dp.ctl("del-flows")
        assert dp.ctl("dump-flows").stdout.strip() == ""
        assert _udp(topo, "inside", OUTSIDE_IP, n=2, timeout=0.5) == 0  # a table miss drops
        dp.ctl("add-flows", dp.write_rules("fw.flows", FIREWALL))
        assert _udp(topo, "inside", OUTSIDE_IP, n=2) == 2
    finally:
        dp.stop()
        _stop(outer)


def test_a_frame_too_big_for_the_out_port_is_counted_not_sent(topo):
    """The outside port's MTU cut to 1000: a 1400-byte datagram from inside (1442-byte frame,
    no GSO) cannot leave there; it is counted as too big, and smaller ones still pass."""
    subprocess.run(["ip", "link", "set", topo.links["outside"], "mtu", "1000"], check=True)
    outer = _server(topo, "outside", OUTSIDE_IP)
    dp = Datapath(topo, FIREWALL)
    try:
        time.sleep(0.5)
        send = ("import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                f"s.settimeout(1); s.sendto(b'x' * 1400, ('{OUTSIDE_IP}', 5300)); "
                "import sys\ntry:\n s.recvfrom(2000); print('echoed')\nexcept OSError:\n "
                "print('lost')")  # fmt: skip
        assert topo.run("inside", sys.executable, "-c", send).stdout.strip() == "lost"
        import json

        port2 = json.loads(dp.ctl("stats").stdout)["ports"][f"2 ({topo.links['outside']})"]
        assert port2["tx_too_big"] >= 1
        assert _udp(topo, "inside", OUTSIDE_IP, n=2) == 2
    finally:
        dp.stop()
        _stop(outer)
