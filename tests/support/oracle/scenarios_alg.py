"""ALG oracle scenarios: FTP (active, passive, IPv4, IPv6, SNAT, DNAT) and TFTP through
``ct(alg=...)``, and commands OVS refuses, played through OVS 3.1 and ctaccel.

What: ``ALG_SCENARIOS``, each an AlgScenario (a NatScenario that knows whether NAT rewrites a
command): a control connection to port 21 (or a TFTP request
to port 69) committed with ``alg=``, the command that announces a data connection, the data
connection (``+new+rel`` on its first packet, committed by a ``+rel`` rule, ``ct_tp_dst=21``
telling that it shows its control connection's tuple), and the control connection going on.
Under NAT the rewritten command changes the packet's length; ``long_`` scenarios then carry
over 100 segments each way on the control connection, so every later sequence and
acknowledgement number is adjusted (compared byte for byte with OVS).

Design: A (10.1.1.1 / fd00::1) is the client on port 1, B (10.1.1.2 / fd00::2) the server on
port 2. ``_Conv`` keeps each side's sequence numbers as that side sees them: a rewrite that
grows the command by ``d`` bytes moves what the far side sees (and acknowledges) by ``d``.
Frames carry an Ethernet trailer-free length; commands end with CRLF as FTP sends them.

Invariants: times strictly increase; names unique; nothing here is in SCENARIOS (the registry
of scenarios.py keeps its 30-packet bound; these go up to a few hundred packets).
"""

from __future__ import annotations

from dataclasses import dataclass

from .frames import Timeline, tcp, udp
from .scenarios_nat import NAT4, NAT6, VIP4, NatScenario


@dataclass
class AlgScenario(NatScenario):
    # NAT rewrites a command: OVS does so on real ports only (test_alg_scenarios.py)
    rewrites: bool = False


ALG_SCENARIOS: list[AlgScenario] = []


def alg_scenario(fn):
    s = fn()
    assert s.name not in {x.name for x in ALG_SCENARIOS}, s.name
    ALG_SCENARIOS.append(s)
    return fn


# The firewall: A's control connections to port 21 are committed with the helper (and NAT when
# the scenario asks); every other TCP packet goes through ct (with nat: un-NAT) to table 1,
# where established packets pass, expected ones are committed (a related packet that shows its
# control connection's tuple, ct_tp_dst=21, goes to its port; one that does not, to port 3),
# A may open other connections, and the rest is dropped.
def firewall(commit_nat: str = "", v6: bool = False, helper: str = "ftp", proto: str = "tcp",
             port: int = 21) -> str:  # fmt: skip
    ip = "ipv6" if v6 else "ip"
    nat = f",nat({commit_nat})" if commit_nat else ""
    bare = ",nat" if commit_nat else ""
    tp = "tcp6" if v6 and proto == "tcp" else "udp6" if v6 else proto
    ctp = f"ct_nw_proto={6 if proto == 'tcp' else 17},ct_tp_dst={port}"
    return f"""
table=0,priority=100,in_port=1,{tp},tp_dst={port},actions=ct(commit{nat},alg={helper}),output:2
table=0,priority=90,{ip},actions=ct(table=1{bare})
table=0,priority=1,actions=drop
table=1,priority=110,in_port=2,{tp},ct_state=+trk+rel,{ctp},actions=ct(commit{bare}),output:1
table=1,priority=110,in_port=1,{tp},ct_state=+trk+rel,{ctp},actions=ct(commit{bare}),output:2
table=1,priority=100,ct_state=+trk+rel,actions=output:3
table=1,priority=90,in_port=1,ct_state=+trk+est,actions=output:2
table=1,priority=90,in_port=2,ct_state=+trk+est,actions=output:1
table=1,priority=80,in_port=1,{ip},ct_state=+trk+new,actions=ct(commit{nat}),output:2
table=1,priority=50,ct_state=+trk+inv,actions=drop
table=1,priority=1,actions=drop
"""


class _Conv:
    """One TCP connection between A and B, each side's numbers as that side sees them."""

    def __init__(self, t: Timeline, cport: int, sport: int, v6: bool = False,
                 a_ip: str | None = None, b_ip: str | None = None,
                 reply_ip: str | None = None) -> None:  # fmt: skip
        self.t, self.cport, self.sport, self.v6 = t, cport, sport, v6
        self.a_ip, self.b_ip, self.reply_ip = a_ip, b_ip, reply_ip
        self.a_seq, self.b_seq = 1000, 500000
        self.a_ack = self.b_ack = 0
        self.a_skew = 0  # bytes A's rewritten commands added: B sees A's numbers moved

    def a(self, flags: str, data: bytes = b"", grows: int = 0) -> int:
        n = self.t.send("A", tcp("A", "B", self.cport, self.sport, flags, self.a_seq,
                                 self.a_ack, data, v6=self.v6, dst_ip=self.b_ip))  # fmt: skip
        self.a_seq += len(data) + (1 if "S" in flags or "F" in flags else 0)
        self.a_skew += grows
        self.b_ack = self.a_seq + self.a_skew
        return n

    def b(self, flags: str, data: bytes = b"", grows: int = 0) -> int:
        n = self.t.send("B", tcp("B", "A", self.sport, self.cport, flags, self.b_seq,
                                 self.b_ack, data, v6=self.v6, dst_ip=self.reply_ip))  # fmt: skip
        self.b_seq += len(data) + (1 if "S" in flags or "F" in flags else 0)
        self.a_ack = self.b_seq + grows
        return n

    def open(self) -> None:
        self.a_seq -= 1
        self.a("S")
        self.b_seq -= 1
        self.b("SA")
        self.a("A")

    def chat(self, rounds: int) -> None:
        for k in range(rounds):
            self.a("PA", b"NOOP %d\r\n" % k)
            self.b("PA", b"200 NOOP ok %d\r\n" % k)


def _scenario(name: str, flows: str, t: Timeline, about: str, **kw) -> AlgScenario:
    return AlgScenario(name, flows, t.packets, about=about, **kw)


def _port_text(addr: str, port: int) -> bytes:
    return (addr.replace(".", ",") + f",{port >> 8},{port & 255}").encode()


@alg_scenario
def ftp_active_v4():
    t = Timeline()
    c = _Conv(t, 40000, 21)
    c.open()
    c.b("PA", b"220 ready\r\n")
    c.a("PA", b"PORT " + _port_text("10.1.1.1", 40001) + b"\r\n")
    c.b("PA", b"200 PORT ok\r\n")
    # the server connects back to the announced port
    t.send("B", tcp("B", "A", 20, 40001, "S", 3000, 0))
    t.send("A", tcp("A", "B", 40001, 20, "SA", 7000, 3001))
    t.send("B", tcp("B", "A", 20, 40001, "A", 3001, 7001))
    t.send("B", tcp("B", "A", 20, 40002, "S", 9000, 0))  # not announced: new, dropped
    c.chat(2)
    return _scenario("ftp_active_v4", firewall(), t, "PORT, the server's data connection")


@alg_scenario
def ftp_passive_v4():
    t = Timeline()
    c = _Conv(t, 40010, 21)
    c.open()
    c.a("PA", b"PASV\r\n")
    c.b("PA", b"227 Entering Passive Mode (" + _port_text("10.1.1.2", 50000) + b").\r\n")
    t.send("A", tcp("A", "B", 40011, 50000, "S", 100, 0))
    t.send("B", tcp("B", "A", 50000, 40011, "SA", 200, 101))
    t.send("A", tcp("A", "B", 40011, 50000, "A", 101, 201))
    c.chat(2)
    return _scenario("ftp_passive_v4", firewall(), t, "227, the client's data connection")


def _snat_active(name: str, rounds: int) -> AlgScenario:
    t = Timeline()
    c = _Conv(t, 40020, 21, reply_ip=NAT4)
    c.open()
    c.b("PA", b"220 ready\r\n")
    grows = len("10,1,1,240") - len("10,1,1,1")
    c.a("PA", b"PORT " + _port_text("10.1.1.1", 40021) + b"\r\n", grows=grows)
    c.b("PA", b"200 PORT ok\r\n")
    t.send("B", tcp("B", "A", 20, 40021, "S", 3000, 0, dst_ip=NAT4))
    t.send("A", tcp("A", "B", 40021, 20, "SA", 4000, 3001))
    t.send("B", tcp("B", "A", 20, 40021, "A", 3001, 4001, dst_ip=NAT4))
    t.send("B", tcp("B", "A", 20, 40021, "PA", 3001, 4001, b"data" * 8, dst_ip=NAT4))
    c.chat(rounds)
    c.a("PA", b"QUIT\r\n")
    c.b("PA", b"221 bye\r\n")
    return _scenario(name, firewall(f"src={NAT4}"), t,
                     "SNAT: PORT rewritten (2 bytes longer), sequence numbers adjusted",
                     rewrites=True)  # fmt: skip


@alg_scenario
def ftp_active_snat_v4():
    return _snat_active("ftp_active_snat_v4", 3)


@alg_scenario
def ftp_active_snat_v4_long():
    return _snat_active("ftp_active_snat_v4_long", 105)


@alg_scenario
def ftp_passive_dnat_v4():
    t = Timeline()
    c = _Conv(t, 40030, 21, b_ip=VIP4)
    c.open()
    c.a("PA", b"PASV\r\n")
    grows = len("10,1,1,100") - len("10,1,1,2")
    c.b("PA", b"227 Entering Passive Mode (" + _port_text("10.1.1.2", 50010) + b")\r\n",
        grows=grows)  # fmt: skip
    t.send("A", tcp("A", "B", 40031, 50010, "S", 100, 0, dst_ip=VIP4))
    t.send("B", tcp("B", "A", 50010, 40031, "SA", 200, 101))
    t.send("A", tcp("A", "B", 40031, 50010, "A", 101, 201, dst_ip=VIP4))
    c.chat(3)
    return _scenario("ftp_passive_dnat_v4", firewall("dst=10.1.1.2"), t,
                     "DNAT to a virtual IP: 227 rewritten to the VIP (2 bytes longer)",
                     rewrites=True)  # fmt: skip


@alg_scenario
def ftp_eprt_snat_v6():
    t = Timeline()
    c = _Conv(t, 40040, 21, v6=True, reply_ip=NAT6)
    c.open()
    grows = len(NAT6) - len("fd00::1")
    c.a("PA", b"EPRT |2|fd00::1|40041|\r\n", grows=grows)
    c.b("PA", b"200 EPRT ok\r\n")
    t.send("B", tcp("B", "A", 20, 40041, "S", 3000, 0, v6=True, dst_ip=NAT6))
    t.send("A", tcp("A", "B", 40041, 20, "SA", 4000, 3001, v6=True))
    c.chat(3)
    return _scenario("ftp_eprt_snat_v6", firewall(f"src={NAT6}", v6=True), t,
                     "IPv6 SNAT: EPRT's address rewritten", rewrites=True)  # fmt: skip


@alg_scenario
def ftp_epsv_v6():
    t = Timeline()
    c = _Conv(t, 40050, 21, v6=True)
    c.open()
    c.a("PA", b"EPSV\r\n")
    c.b("PA", b"229 Entering Extended Passive Mode (|||50020|)\r\n")
    t.send("A", tcp("A", "B", 40051, 50020, "S", 100, 0, v6=True))
    t.send("B", tcp("B", "A", 50020, 40051, "SA", 200, 101, v6=True))
    c.chat(2)
    return _scenario("ftp_epsv_v6", firewall(v6=True), t, "IPv6 EPSV (229)")


@alg_scenario
def ftp_hostile_commands():
    t = Timeline()
    c = _Conv(t, 40060, 21)
    c.open()
    c.a("PA", b"PORT " + _port_text("10.1.1.3", 40061) + b"\r\n")  # a third host: +inv
    c.a("PA", b"PORT 10,1,1,1,300,2\r\n")  # a number over 255
    c.a("PA", b"PORT 10,1,1,1\r\n")  # too few numbers
    c.a("PA", b"PORT" + b" " * 140 + _port_text("10.1.1.1", 40062) + b"\r\n")  # past 128
    c.a("PA", b"PO")  # a command split over two segments is not read
    c.a("PA", b"RT " + _port_text("10.1.1.1", 40063) + b"\r\n")
    c.a("PA", b"port 10,1,1,1,156,100\r\n")  # any case: 40036
    c.a("PA", b"PORT 010,1,1,1,156,101\r\n")  # a leading zero: inet_pton refuses
    c.b("PA", b"227 no numbers here\r\n")
    for dport in (40061, 40062, 40063, 40036):
        t.send("B", tcp("B", "A", 20, dport, "S", 3000 + dport, 0))
    return _scenario("ftp_hostile_commands", firewall(), t,
                     "third-host PORT, bad numbers, overlong and split commands")  # fmt: skip


@alg_scenario
def tftp_read():
    t = Timeline()
    t.send("A", udp("A", "B", 50100, 69, b"\x00\x01file\x00octet\x00"))
    t.send("B", udp("B", "A", 50200, 50100, b"\x00\x03\x00\x01" + b"d" * 64))  # +new+rel
    t.send("A", udp("A", "B", 50100, 50200, b"\x00\x04\x00\x01"))
    t.send("B", udp("B", "A", 50201, 50101, b"\x00\x03\x00\x01"))  # not expected
    return _scenario("tftp_read", firewall(helper="tftp", proto="udp", port=69), t,
                     "a TFTP read: the server's reply from its own port is related")  # fmt: skip
