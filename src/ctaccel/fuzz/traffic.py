"""Seed traffic for fuzzing: live connections for the mutated frames to land among.

What: ``seed_traffic(rng, n)`` returns about ``n`` packets ``(in_port, frame, now_ms)`` of
conversations through ``RULES`` (below): TCP connections (handshake with or without window
scaling, data both ways with correct sequence numbers, FIN or RST or left open), UDP
exchanges, ICMP echo, IPv4 and IPv6, UDP datagrams cut into fragments, and FTP control
connections through SNAT with the FTP helper (PORT/EPRT commands, 227/229 replies). The
mutations (mutate.py) then find real state to disagree about: a flipped segment inside an
established connection's window, an ICMP error quoting a live tuple, a command the helper
reads.

Design: every conversation is a Python generator of ``(port, frame)``; the traffic
interleaves them at random, with small clock steps and, rarely, a jump past the UDP
timeouts. Pure function of ``rng``.
"""

from __future__ import annotations

import random

from ctaccel.packet import build as B

# ports 1 (inside) and 2 (outside): a zone-1 firewall that marks what it commits; ports 3
# (inside) and 4 (outside): SNAT to 10.9.9.9 in zone 7, FTP helper on port 21.
RULES = """\
table=0,priority=100,in_port=1,ip,actions=ct(table=1,zone=1)
table=0,priority=100,in_port=1,ipv6,actions=ct(table=1,zone=1)
table=0,priority=100,in_port=2,ip,actions=ct(table=1,zone=1)
table=0,priority=100,in_port=2,ipv6,actions=ct(table=1,zone=1)
table=0,priority=110,in_port=3,tcp,tp_dst=21,actions=ct(commit,zone=7,nat(src=10.9.9.9),alg=ftp),output:4
table=0,priority=100,in_port=3,ip,actions=ct(table=2,zone=7,nat)
table=0,priority=100,in_port=4,ip,actions=ct(table=2,zone=7,nat)
table=0,priority=50,arp,actions=normal
table=0,priority=1,actions=drop
table=1,priority=200,ct_state=+trk+inv,actions=drop
table=1,priority=100,in_port=1,ct_state=+trk+new,ip,actions=ct(commit,zone=1,exec(set_field:0x1->ct_mark)),output:2
table=1,priority=100,in_port=1,ct_state=+trk+new,ipv6,actions=ct(commit,zone=1,exec(set_field:0x1->ct_mark)),output:2
table=1,priority=100,in_port=1,ct_state=+trk+est,actions=output:2
table=1,priority=100,in_port=2,ct_state=+trk+est,ct_mark=0x1,actions=output:1
table=1,priority=90,in_port=2,ct_state=+trk+rel,actions=output:1
table=1,priority=0,actions=drop
table=2,priority=110,ct_state=+trk+rel,in_port=4,ip,actions=ct(commit,zone=7,nat),output:3
table=2,priority=100,in_port=3,ct_state=+trk+new,ip,actions=ct(commit,zone=7,nat(src=10.9.9.9)),output:4
table=2,priority=100,in_port=3,ct_state=+trk+est,actions=output:4
table=2,priority=100,in_port=4,ct_state=+trk+est,actions=output:3
table=2,priority=0,actions=drop
"""

NAT_ADDR = "10.9.9.9"
_MAC = {1: "02:00:00:00:00:01", 2: "02:00:00:00:00:02", 3: "02:00:00:00:00:03",
        4: "02:00:00:00:00:04"}  # fmt: skip
START_MS = 1_000_000


class _Endpoints:
    """Who talks to whom, and which client ports are free (a NAT'd client keeps its port, so
    ports are never reused within a round)."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.next_port = 20000 + rng.randrange(1000)

    def port(self) -> int:
        self.next_port += 1
        return self.next_port

    def pair(self, nat: bool, v6: bool):
        r = self.rng
        if nat:
            return (3, 4, f"10.0.3.{r.randint(1, 30)}", f"10.0.4.{r.randint(1, 30)}", NAT_ADDR)
        if v6:
            a, b = f"fd00:1::{r.randint(1, 30):x}", f"fd00:2::{r.randint(1, 30):x}"
        else:
            a, b = f"10.0.1.{r.randint(1, 30)}", f"10.0.2.{r.randint(1, 30)}"
        return (1, 2, a, b, a)


def _tcp(cport, sport_, caddr, saddr, seen, cp, sp, rng, ftp=False):
    """One TCP connection; ``seen`` is the client's address as the server sees it (NAT)."""
    cseq, sseq = rng.getrandbits(32), rng.getrandbits(32)
    ws = rng.choice([None, None, 0, 7, 14])
    opts = B.TcpFields(wscale=ws)

    def c(flags, payload=b"", seg=B.DEFAULT_TCP):
        return cport, B.tcp_frame(_MAC[cport], _MAC[sport_], caddr, saddr, cp, sp, flags,
                                  cseq, sseq, payload, seg)  # fmt: skip

    def s(flags, payload=b"", seg=B.DEFAULT_TCP):
        return sport_, B.tcp_frame(_MAC[sport_], _MAC[cport], saddr, seen, sp, cp, flags,
                                   sseq, cseq, payload, seg)  # fmt: skip

    yield cport, B.tcp_frame(_MAC[cport], _MAC[sport_], caddr, saddr, cp, sp, "S", cseq, 0,
                             b"", opts)  # fmt: skip
    cseq = (cseq + 1) & 0xFFFFFFFF
    yield s("SA", seg=opts)
    sseq = (sseq + 1) & 0xFFFFFFFF
    yield c("A")
    for _ in range(rng.randint(0, 12)):
        if rng.random() < 0.5:
            data = _ftp_line(rng, seen) if ftp else b"x" * rng.randint(1, 400)
            yield c("PA", data)
            cseq = (cseq + len(data)) & 0xFFFFFFFF
        else:
            data = _ftp_reply(rng, saddr) if ftp else b"y" * rng.randint(1, 1400)
            yield s("PA", data)
            sseq = (sseq + len(data)) & 0xFFFFFFFF
    end = rng.random()
    if end < 0.5:
        yield c("FA")
        cseq = (cseq + 1) & 0xFFFFFFFF
        yield s("FA")
        sseq = (sseq + 1) & 0xFFFFFFFF
        yield c("A")
    elif end < 0.65:
        yield (c("R") if rng.random() < 0.5 else s("RA"))


def _ftp_line(rng, addr) -> bytes:
    p = rng.randrange(1024, 65536)
    if ":" in addr:
        return f"EPRT |2|{addr}|{p}|\r\n".encode()
    return rng.choice([f"PORT {addr.replace('.', ',')},{p >> 8},{p & 255}\r\n",
                       f"EPRT |1|{addr}|{p}|\r\n", "PASV\r\n", "EPSV\r\n", "NOOP\r\n",
                       "RETR file.bin\r\n"]).encode()  # fmt: skip


def _ftp_reply(rng, addr) -> bytes:
    p = rng.randrange(1024, 65536)
    return rng.choice([f"227 Entering Passive Mode ({addr.replace('.', ',')},{p >> 8},{p & 255})\r\n",
                       f"229 Entering Extended Passive Mode (|||{p}|)\r\n", "200 OK\r\n",
                       "150 Opening data connection\r\n"]).encode()  # fmt: skip


def _udp(cport, sport_, caddr, saddr, seen, cp, sp, rng):
    for _ in range(rng.randint(1, 6)):
        if rng.random() < 0.6:
            yield cport, B.udp_frame(_MAC[cport], _MAC[sport_], caddr, saddr, cp, sp,
                                     b"q" * rng.randint(0, 300))  # fmt: skip
        else:
            yield sport_, B.udp_frame(_MAC[sport_], _MAC[cport], saddr, seen, sp, cp,
                                      b"r" * rng.randint(0, 300))  # fmt: skip


def _echo(cport, sport_, caddr, saddr, seen, ident, rng):
    for seq in range(rng.randint(1, 4)):
        yield cport, B.icmp_frame(_MAC[cport], _MAC[sport_], caddr, saddr, None, 0, ident, seq,
                                  b"p" * 16)  # fmt: skip
        if rng.random() < 0.8:
            yield sport_, B.icmp_frame(_MAC[sport_], _MAC[cport], saddr, seen,
                                       129 if ":" in caddr else 0, 0,
                                       ident, seq, b"p" * 16)  # fmt: skip


def _fragments(cport, sport_, caddr, saddr, cp, sp, rng):
    frame = B.udp_frame(_MAC[cport], _MAC[sport_], caddr, saddr, cp, sp,
                        b"f" * rng.randint(200, 3000))  # fmt: skip
    if ":" in caddr:
        parts = B.fragment_ipv6(frame, rng.choice([256, 512, 1232]), rng.getrandbits(32))
    else:
        parts = B.fragment_ipv4(frame, rng.choice([256, 512, 1480]))
    if rng.random() < 0.3:
        rng.shuffle(parts)
    for p in parts:
        yield cport, p


def _conversation(rng: random.Random, ends: _Endpoints):
    kind = rng.choices(("tcp", "udp", "icmp", "frag", "ftp"), (50, 20, 10, 8, 12))[0]
    v6 = kind != "ftp" and rng.random() < 0.3
    nat = kind == "ftp" or (not v6 and rng.random() < 0.3)
    cport, sport_, caddr, saddr, seen = ends.pair(nat, v6)
    cp = ends.port()
    if kind == "tcp":
        return _tcp(cport, sport_, caddr, saddr, seen, cp, rng.choice([80, 443, 8080]), rng)
    if kind == "ftp":
        return _tcp(cport, sport_, caddr, saddr, seen, cp, 21, rng, ftp=True)
    if kind == "udp":
        return _udp(cport, sport_, caddr, saddr, seen, cp, rng.choice([53, 123, 5000]), rng)
    if kind == "icmp":
        return _echo(cport, sport_, caddr, saddr, seen, cp & 0xFFFF, rng)
    return _fragments(cport, sport_, caddr, saddr, cp, rng.choice([53, 9000]), rng)


def seed_traffic(rng: random.Random, n: int, live: int = 40) -> list[tuple[int, bytes, int]]:
    """About ``n`` packets of ``live`` conversations at a time, interleaved at random."""
    ends = _Endpoints(rng)
    active = [_conversation(rng, ends) for _ in range(live)]
    now = START_MS + rng.randrange(1000)
    out: list[tuple[int, bytes, int]] = []
    while len(out) < n:
        i = rng.randrange(len(active))
        try:
            port, frame = next(active[i])
        except StopIteration:
            active[i] = _conversation(rng, ends)
            continue
        now += rng.choice((0, 0, 1, 1, 2, 5, 30)) if rng.random() > 0.0005 else 200_000
        out.append((port, frame, now))
    return out
