"""A security-group rule change as a user makes it: ``ctaccel sg compile`` before and after,
then ``ctaccel replay --flows-at`` (the live ``ctl replace-flows`` replayed).

Two connections are open when the rules change (tests/data/sg/remote-group): a web client
from another host to a VM's port 80 (allowed before and after) and a member of the web
group to the database VM's port 5432 (allowed by a remote-group rule that the new version
removes). After the change the web connection goes on, both ways; the database connection's
next packet is dropped and its connection marked (``ct_mark=0x1``, Neutron's way of cutting
an established connection), and every later packet of it is dropped too. The same in the
reference engine and both compiled modes, through the command line.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Dot1Q, Ether
from scapy.utils import wrpcap

CASE = Path(__file__).resolve().parent.parent / "data" / "sg" / "remote-group"
WEB, DB, OUTSIDE = ("fa:16:3e:00:0c:05", "10.0.12.5", 5), ("fa:16:3e:00:0c:07", "10.0.12.7", 7), (
    "fa:16:3e:aa:00:01", "198.51.100.7", 1)  # fmt: skip
VLAN = 12
BRIDGE = "1,5:tag=12,6:tag=12,7:tag=12,8:tag=13"
CHANGE_S = 1.0


def _ctaccel(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ctaccel.cli", *args], capture_output=True,
                          text=True, timeout=600, check=False)  # fmt: skip


def _segment(src, dst, sport, dport, flags, seq, ack, data=b""):
    tcp = IP(src=src[1], dst=dst[1]) / TCP(sport=sport, dport=dport, flags=flags, seq=seq,
                                           ack=ack, window=64000) / data  # fmt: skip
    if src[2] == 1:  # from another host: through the patch port, tagged with the local VLAN
        return Ether(src=src[0], dst=dst[0]) / Dot1Q(vlan=VLAN) / tcp
    return Ether(src=src[0], dst=dst[0] if dst[2] != 1 else OUTSIDE[0]) / tcp


def _conversation(client, server, sport, dport, t0, data_times):
    """(port, time, frame, label) of a handshake at t0 and a data exchange at each time."""
    c, s = 1000, 5000
    out = [(client[2], t0, _segment(client, server, sport, dport, "S", c, 0), "syn"),
           (server[2], t0 + 0.01, _segment(server, client, dport, sport, "SA", s, c + 1), "synack"),
           (client[2], t0 + 0.02, _segment(client, server, sport, dport, "A", c + 1, s + 1), "ack")]  # fmt: skip
    c, s = c + 1, s + 1
    for t in data_times:
        out.append((client[2], t, _segment(client, server, sport, dport, "PA", c, s, b"q" * 10),
                    "request"))  # fmt: skip
        out.append((server[2], t + 0.01, _segment(server, client, dport, sport, "PA", s, c + 10,
                                                  b"r" * 10), "response"))  # fmt: skip
        c, s = c + 10, s + 10
    return out


@pytest.fixture(scope="module")
def replays(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sg-change")
    for version, groups in (("v1", "groups.json"), ("v2", "groups-v2.json")):
        done = _ctaccel("sg", "compile", "--groups", str(CASE / groups), "--ports",
                        str(CASE / "ports.json"), "-o", str(tmp / f"{version}.flows"))  # fmt: skip
        assert done.returncode == 0, done.stderr
    times = [0.2, 0.5, 1.2, 1.5]  # two exchanges before the change, two after
    events = (_conversation(OUTSIDE, WEB, 40000, 80, 0.0, times)
              + _conversation(WEB, DB, 41000, 5432, 0.05, [t + 0.03 for t in times]))  # fmt: skip
    events.sort(key=lambda e: e[1])
    for port in {e[0] for e in events}:
        frames = [e[2] for e in events if e[0] == port]
        for frame, e in zip(frames, [e for e in events if e[0] == port], strict=True):
            frame.time = 1_700_000_000 + e[1]
        wrpcap(str(tmp / f"p{port}.pcap"), frames)
    out = {}
    for mode in ("reference", "recirc", "assume-established"):
        args = ["replay", "--flows", str(tmp / "v1.flows"), "--out-dir", str(tmp / mode),
                "--mode", mode, "--bridge", BRIDGE, "--quiet",
                "--flows-at", f"{CHANGE_S}={tmp / 'v2.flows'}"]  # fmt: skip
        for port in sorted({e[0] for e in events}):
            args += ["--in", f"{port}={tmp / f'p{port}.pcap'}"]
        done = _ctaccel(*args)
        assert done.returncode == 0, done.stderr
        lines = [json.loads(x) for x in (tmp / mode / "packets.jsonl").read_text().splitlines()]
        out[mode] = (lines, (tmp / mode / "conntrack.txt").read_text())
    return events, out


def test_the_change_cuts_the_connection_it_no_longer_allows_and_keeps_the_other(replays):
    events, out = replays
    assert len(out["reference"][0]) == len(events)
    for mode, (lines, conntrack) in out.items():
        for e, line in zip(events, lines, strict=True):
            _port, t, frame, label = e
            web = frame[TCP].dport == 80 or frame[TCP].sport == 80
            after = t >= CHANGE_S
            if web or not after:
                assert line["out"], (mode, label, t, line)  # allowed throughout / before
            else:
                assert line["out"] == [], (mode, label, t, line)  # cut by the change
        db = [x for x in conntrack.splitlines() if "dport=5432)" in x]
        web_ct = [x for x in conntrack.splitlines() if "dport=80)" in x]
        assert len(db) == 1 and "mark=1" in db[0], (mode, conntrack)
        assert len(web_ct) == 1 and "mark=" not in web_ct[0], (mode, conntrack)


def test_every_mode_gives_the_same_answers(replays):
    _events, out = replays
    strip = [[{k: v for k, v in x.items() if k != "path"} for x in lines]
             for lines, _ct in out.values()]  # fmt: skip
    assert strip[0] == strip[1] == strip[2]
    assert len({ct for _lines, ct in out.values()}) == 1
