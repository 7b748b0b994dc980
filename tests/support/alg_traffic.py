"""FTP and TFTP conversations for the equivalence tests: commands right and wrong, announced
and unannounced data connections, mistakes on the control connection.

What: ``ftp_actor`` drives one FTP control connection (to port 21) through a handshake and a
random mix of PORT / 227 (IPv4) or EPRT / 229 (IPv6) announcements, hostile commands (a
third host's address, numbers out of range, an overlong line, a command split over two
segments), plain commands both ways and the tracker's usual mistakes; after an announcement
the data connection opens from the side it should (sometimes from a port nobody announced)
and carries a few segments. ``tftp_actor`` sends a TFTP read request to port 69 and the
server answers from a port of its own. Both are generators of event lists, as the actors of
random_traffic.py are, and ``alg_traffic`` interleaves them with that module's actors.

Design: the data connections are TcpConversations of their own, so every sequence number is
what its sender would send; under NAT the peer's numbers do not follow a rewrite, which is
fine: the engines under test must only agree with the reference engine.
"""

from __future__ import annotations

import ipaddress
import random

from ctaccel.packet import build as B
from support import random_traffic as R
from support.conversations import TcpConversation
from support.hosts import Host, Packet, frame_to, host


def _ip_text(h: Host) -> str:
    return str(ipaddress.ip_address(h.ip))


def _announce(rng: random.Random, client: Host, server: Host, dport: int) -> tuple[bool, bytes]:
    """(from the client?, the command announcing ``dport``) in the host's family."""
    active = rng.random() < 0.5
    if client.v6:
        if active:
            return True, f"EPRT |2|{_ip_text(client)}|{dport}|\r\n".encode()
        return False, f"229 Entering Extended Passive Mode (|||{dport}|)\r\n".encode()
    who = client if active else server
    text = _ip_text(who).replace(".", ",") + f",{dport >> 8},{dport & 255}"
    if active:
        return True, f"PORT {text}\r\n".encode()
    return False, f"227 Entering Passive Mode ({text}).\r\n".encode()


_HOSTILE = (b"PORT 10,9,9,9,1,2\r\n", b"PORT 10,0,1,1,300,2\r\n", b"PORT 10,0,1,1\r\n",
            b"PORT" + b" " * 140 + b"10,0,1,1,1,2\r\n", b"PO", b"EPRT |1|10.0.1.1|80|\r\n",
            b"227 (no numbers)\r\n", b"EPRT |2|fd00:9::9|80|\r\n", b"port 10,0,1,1,004,1\r\n")  # fmt: skip


def _data_connection(rng: random.Random, client: Host, server: Host, active: bool, dport: int,
                     seen_as: Host | None):  # fmt: skip
    """The data connection an announcement asked for (active: the server connects from 20,
    to the address NAT shows it)."""
    if active:
        conv = TcpConversation(server, client, 20, dport, rng.getrandbits(32),
                               rng.getrandbits(32), server_seen_as=seen_as)  # fmt: skip
    else:
        conv = TcpConversation(client, server, rng.randint(41000, 41100), dport,
                               rng.getrandbits(32), rng.getrandbits(32), client_seen_as=seen_as)  # fmt: skip
    yield from ([p] for p in conv.handshake())
    for _ in range(rng.randint(0, 6)):
        yield [conv.data(rng.random() < 0.5, rng.choice((1, 64, 512)))]
    if rng.random() < 0.6:
        yield from ([p] for p in conv.fin_close(rng.random() < 0.5))


def ftp_actor(rng: random.Random, client: Host, server: Host, sport: int,
              seen_as: Host | None = None):  # fmt: skip
    """One FTP session; ``seen_as``: the client as the server sees it (SNAT)."""
    conv = TcpConversation(client, server, sport, 21, rng.getrandbits(32), rng.getrandbits(32),
                           client_seen_as=seen_as)  # fmt: skip
    yield from ([p] for p in conv.handshake())
    for _ in range(rng.randint(1, 10)):
        what = R._pick(rng, (("announce", 40), ("hostile", 15), ("chat", 30), ("mistake", 15)))
        if what == "announce":
            dport = rng.randint(30000, 30050)
            from_client, cmd = _announce(rng, client, server, dport)
            yield [conv.segment(from_client, "PA", cmd)]
            if rng.random() < 0.8:
                wrong = rng.random() < 0.15  # a data connection to a port nobody announced
                yield from _data_connection(rng, client, server, from_client,
                                            dport + 1 if wrong else dport, seen_as)  # fmt: skip
        elif what == "hostile":
            yield [conv.segment(True, "PA", rng.choice(_HOSTILE))]
        elif what == "chat":
            yield [conv.segment(True, "PA", b"NOOP\r\n")]
            yield [conv.segment(False, "PA", b"200 NOOP ok\r\n")]
        else:
            yield [R.tcp_event(rng, conv, R._pick(rng, R._TCP_ACTIONS))]
    if rng.random() < 0.7:
        yield from ([p] for p in conv.fin_close(rng.random() < 0.6))


def tftp_actor(rng: random.Random, client: Host, server: Host, sport: int,
               seen_as: Host | None = None):  # fmt: skip
    req = B.udp_frame(*frame_to(client, server), sport, 69, b"\x00\x01file\x00octet\x00")
    yield [(client.port, req)]
    tid = rng.randint(50000, 50100)
    for block in range(rng.randint(0, 4)):
        data = b"\x00\x03" + block.to_bytes(2, "big") + b"d" * rng.choice((0, 64, 512))
        yield [(server.port, B.udp_frame(*frame_to(server, seen_as or client), tid, sport, data))]
        ack = b"\x00\x04" + block.to_bytes(2, "big")
        yield [(client.port, B.udp_frame(*frame_to(client, server), sport, tid, ack))]


def alg_traffic(seed: int, n_packets: int, v6_share: float = 0.3,
                snat: dict | None = None) -> list[Packet]:  # fmt: skip
    """FTP and TFTP conversations interleaved with random_traffic's actors; ``snat``: {inside
    port: (IPv4, IPv6 address)} the rules translate that port's clients to (their servers
    answer those)."""
    rng = random.Random(seed)
    params = R.TrafficParams(seed=seed, ipv6_share=v6_share)
    clock = R.Clock(rng, 0.0)

    def new_actor():
        kind = R._pick(rng, (("ftp", 45), ("tftp", 15), ("other", 40)))
        if kind == "other":
            return R._new_actor(rng, params)
        inside, outside = rng.choice(((1, 2), (3, 4)))
        v6 = kind == "ftp" and rng.random() < v6_share
        a, b = host(inside, rng.randint(1, 3), v6), host(outside, rng.randint(1, 3), v6)
        sport = rng.randint(40000, 40010)
        seen_as = None
        if snat and inside in snat:
            seen_as = Host(a.port, a.mac, B.ip_bytes(snat[inside][1 if v6 else 0]))
        if kind == "ftp":
            return ftp_actor(rng, a, b, sport, seen_as)
        return tftp_actor(rng, a, b, sport, seen_as)

    live = [new_actor() for _ in range(rng.randint(2, 10))]
    out: list[Packet] = []
    while len(out) < n_packets:
        i = rng.randrange(len(live))
        event = next(live[i], None)
        if event is None:
            live[i] = new_actor()
            continue
        now = clock.tick()
        out.extend((port, frame, now) for port, frame in event)
    return out[:n_packets]
