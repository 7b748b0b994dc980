"""FTP through ``ctaccel run`` with SNAT and ct(alg=ftp), real stacks on both sides.

A client namespace behind SNAT (10.77.0.1 shown as 10.77.0.100) downloads a file from an FTP
server in the other namespace with Python's ftplib, in active mode (PORT: the command is
rewritten to the NAT address, the server's data connection is +rel and goes back through the
translation) and passive mode (227: the client's data connection is +rel), then keeps the
control connection busy for 150 more commands each way after the rewrite (sequence
adjustment: a wrong number would stall or reset it). Without the helper the active transfer
cannot happen (the server connects to an address NAT hides).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

from ctaccel.bench.netns import OUTSIDE_IP, Datapath

NAT_IP = "10.77.0.100"
SIZE = 1_000_000
SERVER = str(Path(__file__).parents[1] / "support" / "ftp_server.py")

RULES = f"""\
table=0,priority=100,in_port=1,tcp,tp_dst=21,actions=ct(commit,nat(src={NAT_IP}),alg=ftp),output:2
table=0,priority=90,in_port=1,ip,actions=ct(table=1,nat)
table=0,priority=90,in_port=2,ip,actions=ct(table=1,nat)
table=0,priority=10,arp,in_port=1,actions=output:2
table=0,priority=10,arp,in_port=2,actions=output:1
table=0,priority=1,actions=drop
table=1,priority=110,ct_state=+trk+rel,ip,in_port=2,actions=ct(commit,nat),output:1
table=1,priority=110,ct_state=+trk+rel,ip,in_port=1,actions=ct(commit,nat),output:2
table=1,priority=100,ct_state=+trk+est,in_port=1,actions=output:2
table=1,priority=100,ct_state=+trk+est,in_port=2,actions=output:1
table=1,priority=90,ct_state=+trk+new,in_port=1,ip,actions=ct(commit,nat(src={NAT_IP})),output:2
table=1,priority=1,actions=drop
"""

CLIENT = """
import ftplib, hashlib, json, sys
ip, passive, extra = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3])
out = {}
try:
    f = ftplib.FTP(timeout=8)
    f.connect(ip, 21)
    f.login("u", "p")
    f.set_pasv(passive)
    h = hashlib.sha256()
    n = [0]
    def got(b):
        h.update(b); n[0] += len(b)
    f.retrbinary("RETR data", got)
    out.update(bytes=n[0], sha=h.hexdigest())
    for _ in range(extra):
        f.voidcmd("NOOP")
    out["noops"] = extra
    f.quit()
except Exception as exc:
    out["error"] = repr(exc)
print(json.dumps(out))
"""


def _download(topo, passive: bool, extra: int = 0) -> dict:
    done = topo.run("inside", sys.executable, "-c", CLIENT, OUTSIDE_IP, "1" if passive else "0",
                    str(extra), timeout=60)  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def _expected_sha() -> str:
    sys.path.insert(0, str(Path(SERVER).parent))
    from ftp_server import payload

    return hashlib.sha256(payload(SIZE)).hexdigest()


def _serve(topo):
    mac = topo.run("inside", "cat", "/sys/class/net/eth0/address").stdout.strip()
    # the server reaches the NAT address at the client's link (the datapath translates)
    topo.run("outside", "ip", "neigh", "replace", NAT_IP, "lladdr", mac, "dev", "eth0",
             check=True)  # fmt: skip
    topo.popen("outside", sys.executable, SERVER, OUTSIDE_IP, str(SIZE))
    topo.wait_listening("outside", 21)


@pytest.mark.parametrize("mode", ["assume-established", "recirc"])
def test_ftp_through_snat_active_and_passive(topo, mode):
    _serve(topo)
    dp = Datapath(topo, RULES, mode=mode)
    try:
        sha = _expected_sha()
        for passive in (False, True):
            got = _download(topo, passive, extra=150)
            assert got.get("sha") == sha and got.get("bytes") == SIZE, (passive, got)
            assert got.get("noops") == 150
        stats = json.loads(dp.ctl("stats").stdout)
        lines = dp.ctl("dump-conntrack", "-m").stdout.splitlines()
    finally:
        dp.stop()
    ct = stats.get("conntrack", stats)
    assert ct.get("alg_rewrites", 0) >= 1 and ct.get("alg_expectations", 0) >= 2, stats
    assert any("helper=ftp" in line and f"dst={NAT_IP}" in line for line in lines), lines
    assert any("parent=(" in line for line in lines), lines


def test_active_ftp_needs_the_helper(topo):
    _serve(topo)
    dp = Datapath(topo, RULES.replace(",alg=ftp", ""))
    try:
        got = _download(topo, passive=False)
    finally:
        dp.stop()
    assert "sha" not in got and "error" in got, got
