"""Security groups on a live datapath: ``ctaccel sg compile``, ``ctaccel run`` and a rule change
with ``ctl replace-flows``, with real stacks in network namespaces.

Two VMs on one network (VLAN 12 on the bridge), each an access port: "inside" (OpenFlow
port 1, group sg-a: TCP 8000 in, everything out) and "outside" (port 2, group sg-b: TCP 7000
in, everything out). Their traffic takes Neutron's east-west path (egress tables, then the
other port's ingress tables; ARP through NORMAL). An echo connection from a to b's port
7000 runs through a change of sg-b to a version without the 7000 rule: Neutron's flows cut
it on its next packet (the connection is marked, ct_mark=0x1); a connection b then opens to
a's port 8000 is still allowed, answers included. Both compiled modes. (This kernel has no
802.1Q module, so no namespace can send tagged frames: the trunk side is tested by replay.)
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from ctaccel.bench.netns import INSIDE_IP, OUTSIDE_IP, Datapath

MODES = ["assume-established", "recirc"]
VLAN = 12
ECHO_CLIENT = """
import socket, sys, time
s = socket.create_connection((sys.argv[1], 7000), timeout=2)
for i in range(40):
    s.sendall(b"%d\\n" % i)
    if s.recv(64).strip() != b"%d" % i:
        sys.exit(3)
    print(i, flush=True)
    time.sleep(0.1)
"""


def _groups(with_7000: bool) -> dict:
    def ingress(port):
        return {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
                "port_range_min": port, "port_range_max": port}  # fmt: skip

    out = {"direction": "egress", "ethertype": "IPv4"}
    b_rules = [out] + ([ingress(7000)] if with_7000 else [])
    return {"security_groups": [{"id": "sg-a", "security_group_rules": [out, ingress(8000)]},
                                {"id": "sg-b", "security_group_rules": b_rules}]}  # fmt: skip


def _compile(tmp_path, topo, with_7000: bool) -> str:
    ports = []
    for no, side, ip, group in (
        (1, "inside", INSIDE_IP, "sg-a"),
        (2, "outside", OUTSIDE_IP, "sg-b"),
    ):
        mac = json.loads(topo.run(side, "ip", "-j", "link", "show", "eth0", check=True)
                         .stdout)[0]["address"]  # fmt: skip
        ports.append({"id": side, "mac_address": mac, "fixed_ips": [{"ip_address": ip}],
                      "security_groups": [group], "ofport": no, "local_vlan": VLAN})  # fmt: skip
    name = "v1" if with_7000 else "v2"
    (tmp_path / f"{name}-groups.json").write_text(json.dumps(_groups(with_7000)))
    (tmp_path / "ports.json").write_text(json.dumps({"ports": ports}))
    out = tmp_path / f"{name}.flows"
    done = subprocess.run([sys.executable, "-m", "ctaccel.cli", "sg", "compile", "--groups",
                           str(tmp_path / f"{name}-groups.json"), "--ports",
                           str(tmp_path / "ports.json"), "-o", str(out)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return out.read_text()


@pytest.mark.parametrize("mode", MODES)
def test_a_rule_change_cuts_the_connection_it_no_longer_allows(topo, tmp_path, mode):
    v1, v2 = _compile(tmp_path, topo, True), _compile(tmp_path, topo, False)
    server = topo.serve_echo("outside", OUTSIDE_IP, 7000)
    http = topo.serve_http("inside", INSIDE_IP, 8000)
    dp = Datapath(topo, v1, mode, bridge=f"1:tag={VLAN},2:tag={VLAN}")
    try:
        client = topo.popen("inside", sys.executable, "-c", ECHO_CLIENT, OUTSIDE_IP,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        deadline = time.monotonic() + 20
        while "ESTABLISHED" not in dp.ctl("dump-conntrack").stdout and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # a dozen echoes through the first rules
        dp.ctl("replace-flows", dp.write_rules("v2.flows", v2))
        out, _err = client.communicate(timeout=30)
        echoed = out.split()
        assert client.returncode != 0 and 5 <= len(echoed) < 40, (client.returncode, out)
        marked = [x for x in dp.ctl("dump-conntrack").stdout.splitlines() if "dport=7000" in x]
        assert marked and all("mark=1" in x for x in marked), marked
        # what b opens to a is still allowed, answers included
        got = topo.run("outside", "curl", "-s", "-m", "10", "-o", "/dev/null", "-w",
                       "%{http_code}", f"http://{INSIDE_IP}:8000/", timeout=20)  # fmt: skip
        assert got.stdout == "200", (got.stdout, got.stderr)
        fdb = dp.ctl("fdb-show").stdout.splitlines()  # both VMs learned in VLAN 12
        assert fdb[0] == " port  VLAN  MAC                Age"
        assert sorted(line.split()[:2] for line in fdb[1:]) == [["1", "12"], ["2", "12"]]
        assert dp.ctl("fdb-flush").stdout == "table successfully flushed\n"
        assert dp.ctl("fdb-show").stdout.splitlines()[1:] == []
    finally:
        dp.stop()
        server.kill()
        server.wait(timeout=10)
        http.kill()
