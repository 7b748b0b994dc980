"""Traffic and rule-set generators for the equivalence and fast-path tests (the harness that
runs engines over them is support/equivalence.py).

What: deterministic, seedable packet sequences ``[(in_port, frame, now_ms)]`` built with
``ctaccel.packet.build``: a TCP conversation helper that drives both sides with correct
seq/ack (and knows how to misbehave: retransmits, out-of-window data, ACK of unsent data,
blind RST/data with a wrong seq, bad checksums, FIN/RST close, port reuse), UDP, ICMP echo,
ICMP errors quoting live connections, IPv4/IPv6, fragments, ARP and garbage; a scheduler
that interleaves many such "actors" and lets the clock jump past timeouts; the rule sets the
tests run (the demo's firewalls, the talk's zone-5 example, zones by port and by register, a
two-zone pipeline, mark/label rules, a stateless set); the talk's two workloads (A: N
established flows; B: A plus N unidirectional flows whose SYN repeats, 1 in 3 packets NEW);
and hypothesis strategies over all of it.

Design: everything is driven by one ``random.Random(seed)``, so a sequence is a pure function
of its parameters (hypothesis draws the parameters; a failure replays from them). Packets are
generated in arrival order, so a side's ACK always acknowledges exactly what the peer has
sent so far: any misbehaviour is deliberate, never an accident of interleaving. Addresses and
MACs are pre-packed bytes (the builders are ~2x faster with bytes than with strings).

Invariants:
- ``now_ms`` never decreases along a sequence.
- Port pairs: inside 1 <-> outside 2 and inside 3 <-> outside 4; inside hosts on ports 1 and 3
  share IP addresses (so the same 5-tuple can live in two zones), their MACs differ.
- Nothing here looks at what an engine does; expected results come from the reference engine.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from hypothesis import strategies as st

from ctaccel import demo
from ctaccel.packet import build as B

Packet = tuple[int, bytes, int]  # (in_port, frame, now_ms)

START_MS = 1_000_000
PORT_PAIRS = ((1, 2), (3, 4))  # (inside, outside)
INSIDE_PORTS = (1, 3)

# Conntrack timeouts for the tests: the defaults, except established TCP and FIN_WAIT, which
# are shortened so that a clock jump can expire an established connection in a short run.
TEST_TIMEOUTS_MS = {"tcp_established": 150_000, "tcp_fin_wait": 90_000}
# Clock jumps: past UDP multiple (30 s), UDP first/single and ICMP (60 s), the shortened
# established (150 s), and one that stays below every timeout.
CLOCK_JUMPS_MS = (10_000, 31_000, 61_000, 91_000, 151_000)


# --- hosts ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Host:
    port: int
    mac: bytes
    ip: bytes

    @property
    def v6(self) -> bool:
        return len(self.ip) == 16


def host(port: int, n: int, v6: bool = False) -> Host:
    """Host ``n`` behind ``port``; inside ports 1 and 3 share one address plan."""
    side = 1 if port in INSIDE_PORTS else 2
    ip = f"fd00:{side}::{n:x}" if v6 else f"10.0.{side}.{n}"
    return Host(port, B.mac_bytes(f"02:00:00:00:{port:02x}:{n & 0xFF:02x}"), B.ip_bytes(ip))


def _frame_to(src: Host, dst: Host):
    """Common arguments of a frame from ``src`` to ``dst``."""
    return src.mac, dst.mac, src.ip, dst.ip


# --- TCP conversation -------------------------------------------------------------------------


@dataclass
class _Side:
    host: Host
    l4port: int
    isn: int
    nxt: int = 0  # next sequence number this side sends
    last_data: bytes | None = None  # last data frame it sent (for retransmits)
    last_frame: bytes | None = None  # last frame it sent (for ICMP errors quoting it)


class TcpConversation:
    """Both ends of one TCP connection; each method returns ``(in_port, frame)``.

    Sequence numbers follow what each side has sent; an ACK acknowledges everything the peer
    sent so far (packets are generated in arrival order). Methods named after a misbehaviour
    (``out_of_window``, ``blind_rst``...) do not advance the sender's sequence."""

    def __init__(self, client: Host, server: Host, sport: int, dport: int,
                 isn_client: int = 1000, isn_server: int = 5000, window: int = 65535,
                 wscale: int | None = None):  # fmt: skip
        self.window = window
        self.wscale = wscale
        self.sides = {
            True: _Side(client, sport, isn_client, isn_client),
            False: _Side(server, dport, isn_server, isn_server),
        }

    @property
    def client(self) -> Host:
        return self.sides[True].host

    @property
    def server(self) -> Host:
        return self.sides[False].host

    def segment(self, from_client: bool, flags: str, payload: bytes = b"", seq: int | None = None,
                ack: int | None = None, advance: bool = True, l4_checksum: str = "auto",
                wscale: int | None = None) -> tuple[int, bytes]:  # fmt: skip
        """A segment from one side; by default it carries the side's next seq and ACKs all
        the peer sent, and advances the side's seq by its payload (+1 for SYN and FIN)."""
        me, peer = self.sides[from_client], self.sides[not from_client]
        seq = me.nxt if seq is None else seq
        if ack is None:
            ack = peer.nxt if "A" in flags else 0
        frame = B.tcp_frame(*_frame_to(me.host, peer.host), me.l4port, peer.l4port, flags,
                            seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, payload, self.window,
                            wscale=wscale, l4_checksum=l4_checksum)  # fmt: skip
        if advance:
            me.nxt = seq + len(payload) + ("S" in flags) + ("F" in flags)
        if payload and advance:
            me.last_data = frame
        me.last_frame = frame
        return me.host.port, frame

    # the handshake
    def syn(self, from_client: bool = True) -> tuple[int, bytes]:
        side = self.sides[from_client]
        return self.segment(from_client, "S", seq=side.isn, wscale=self.wscale)

    def syn_ack(self) -> tuple[int, bytes]:
        side = self.sides[False]
        return self.segment(False, "SA", seq=side.isn, wscale=self.wscale)

    def ack(self, from_client: bool = True) -> tuple[int, bytes]:
        return self.segment(from_client, "A")

    def handshake(self) -> list[tuple[int, bytes]]:
        return [self.syn(), self.syn_ack(), self.ack()]

    # normal traffic and close
    def data(self, from_client: bool, size: int = 64, flags: str = "PA") -> tuple[int, bytes]:
        return self.segment(from_client, flags, bytes([0x61 + size % 26]) * size)

    def retransmit(self, from_client: bool) -> tuple[int, bytes]:
        side = self.sides[from_client]
        if side.last_data is None:
            return self.ack(from_client)
        side.last_frame = side.last_data
        return side.host.port, side.last_data

    def fin(self, from_client: bool) -> tuple[int, bytes]:
        return self.segment(from_client, "FA")

    def fin_close(self, client_first: bool = True) -> list[tuple[int, bytes]]:
        return [self.fin(client_first), self.fin(not client_first), self.ack(client_first)]

    def rst(self, from_client: bool) -> tuple[int, bytes]:
        return self.segment(from_client, "RA", advance=False)

    def restart(self, isn_client: int, isn_server: int) -> None:
        """Port reuse: the same 5-tuple starts over with new initial sequence numbers."""
        for from_client, isn in ((True, isn_client), (False, isn_server)):
            side = self.sides[from_client]
            side.isn = side.nxt = isn
            side.last_data = None

    # misbehaviour (none advances the sender)
    def out_of_window(self, from_client: bool, ahead: int = 10_000_000) -> tuple[int, bytes]:
        side = self.sides[from_client]
        return self.segment(from_client, "PA", b"oow" * 8, seq=side.nxt + ahead, advance=False)

    def ack_unsent(self, from_client: bool, ahead: int = 10_000_000) -> tuple[int, bytes]:
        peer = self.sides[not from_client]
        return self.segment(from_client, "A", ack=peer.nxt + ahead, advance=False)

    def blind_rst(self, from_client: bool, off: int = 3_000_000) -> tuple[int, bytes]:
        side = self.sides[from_client]
        return self.segment(from_client, "R", seq=side.nxt + off, advance=False)

    def blind_data(self, from_client: bool, behind: int = 2_000_000) -> tuple[int, bytes]:
        side = self.sides[from_client]
        return self.segment(from_client, "PA", b"spoof" * 4, seq=side.nxt - behind,
                            advance=False)  # fmt: skip

    def bad_checksum(self, from_client: bool) -> tuple[int, bytes]:
        return self.segment(from_client, "PA", b"badsum" * 3, advance=False, l4_checksum="bad")

    def icmp_error(self, about_client: bool = True, mangle: bool = False) -> tuple[int, bytes]:
        """An ICMP error from the peer of one side, quoting that side's last frame (related
        to the connection); ``mangle`` quotes other ports (unrelated: ``inv``)."""
        me, peer = self.sides[about_client], self.sides[not about_client]
        quoted = me.last_frame or self.segment(about_client, "A", advance=False)[1]
        inner = bytearray(B.l3_of(quoted))
        if mangle:
            at = 40 if me.host.v6 else 20
            inner[at : at + 2] = b"\x00\x07"
        if me.host.v6:
            frame = B.icmp_frame(*_frame_to(peer.host, me.host), type=1, code=4,
                                 payload=bytes(inner))  # fmt: skip
        else:
            frame = B.icmp_frame(*_frame_to(peer.host, me.host), type=3, code=3,
                                 payload=bytes(inner[:28]))  # fmt: skip
        return peer.host.port, frame


# --- actors: each yields lists of (in_port, frame) ---------------------------------------------


def _pick(rng: random.Random, weighted) -> str:
    names, weights = zip(*weighted, strict=True)
    return rng.choices(names, weights)[0]


_TCP_ACTIONS = (
    ("data_c", 30), ("data_s", 30), ("ack_c", 5), ("retransmit", 5), ("out_of_window", 3),
    ("ack_unsent", 2), ("blind_rst", 2), ("blind_data", 2), ("icmp_error", 3),
    ("icmp_error_unrelated", 1), ("bad_checksum", 2), ("truncated", 1), ("syn_again", 1),
)  # fmt: skip


def tcp_actor(rng: random.Random, conv: TcpConversation, max_events: int = 60):
    """A TCP connection's life: an opening (handshake, lost SYN/ACK, pickup mid-stream, or an
    unanswered SYN repeated), random traffic with mistakes, a close, and maybe port reuse."""
    for _life in range(3):
        opening = _pick(rng, (("handshake", 70), ("syn_retry", 8), ("pickup", 10),
                              ("syn_only", 7), ("simultaneous", 5)))  # fmt: skip
        if opening == "syn_only":
            for _ in range(rng.randint(1, 4)):
                yield [conv.syn()]
            return
        if opening == "handshake":
            for p in conv.handshake():
                yield [p]
        elif opening == "syn_retry":
            yield [conv.syn()]
            yield [conv.syn()]
            yield [conv.syn_ack()]
            yield [conv.syn_ack()]
            yield [conv.ack()]
        elif opening == "simultaneous":
            yield [conv.syn(True)]
            yield [conv.syn(False)]
            yield [conv.ack(False)]
        else:  # pickup: the tracker sees the connection mid-stream
            yield [conv.data(rng.random() < 0.7, rng.randint(1, 100), flags="A")]
        for _ in range(rng.randint(0, max_events)):
            yield [_tcp_event(rng, conv, _pick(rng, _TCP_ACTIONS))]
        close = _pick(rng, (("fin", 45), ("rst", 20), ("half_fin", 10), ("none", 25)))
        if close == "fin":
            for p in conv.fin_close(rng.random() < 0.6):
                yield [p]
            if rng.random() < 0.2:
                yield [conv.data(True, 10)]  # data after a complete close
        elif close == "rst":
            yield [conv.rst(rng.random() < 0.5)]
        elif close == "half_fin":
            yield [conv.fin(True)]
            yield [conv.data(False, rng.randint(1, 300))]
        if close == "none" or rng.random() < 0.5:
            return
        conv.restart(rng.getrandbits(32), rng.getrandbits(32))  # port reuse


def _tcp_event(rng: random.Random, conv: TcpConversation, action: str) -> tuple[int, bytes]:
    c = rng.random() < 0.5
    if action in ("data_c", "data_s"):
        return conv.data(action == "data_c", rng.choice((0, 1, 64, 200, 1400)))
    if action == "ack_c":
        return conv.ack(c)
    if action == "retransmit":
        return conv.retransmit(c)
    if action == "out_of_window":
        return conv.out_of_window(c, rng.choice((70_000, 10_000_000, 2_000_000_000)))
    if action == "ack_unsent":
        return conv.ack_unsent(c, rng.choice((70_000, 10_000_000)))
    if action == "blind_rst":
        return conv.blind_rst(c, rng.choice((3_000_000, -3_000_000, 1 << 31)))
    if action == "blind_data":
        return conv.blind_data(c)
    if action == "icmp_error":
        return conv.icmp_error(c)
    if action == "icmp_error_unrelated":
        return conv.icmp_error(c, mangle=True)
    if action == "bad_checksum":
        return conv.bad_checksum(c)
    if action == "truncated":
        port, frame = conv.data(c, 20)
        return port, frame[: rng.randint(14, len(frame) - 1)]
    return conv.syn(c)  # syn_again: a SYN on a live connection


def udp_actor(rng: random.Random, client: Host, server: Host, sport: int, dport: int):
    """Request/reply exchanges, or one-way; sometimes an ICMP port unreachable."""
    one_way = rng.random() < 0.3
    for _ in range(rng.randint(1, 8)):
        req = B.udp_frame(*_frame_to(client, server), sport, dport, b"q" * rng.randint(0, 100))
        yield [(client.port, req)]
        if rng.random() < 0.08:
            yield [(server.port, _icmp_unreachable(server, client, req))]
        elif not one_way and rng.random() < 0.85:
            yield [(server.port, B.udp_frame(*_frame_to(server, client), dport, sport, b"r"))]


def _icmp_unreachable(sender: Host, dest: Host, quoted_frame: bytes) -> bytes:
    inner = B.l3_of(quoted_frame)
    if sender.v6:
        return B.icmp_frame(*_frame_to(sender, dest), type=1, code=4, payload=inner)
    return B.icmp_frame(*_frame_to(sender, dest), type=3, code=3, payload=inner[:28])


def icmp_echo_actor(rng: random.Random, client: Host, server: Host, ident: int):
    """Echo requests, most answered."""
    request_type, reply_type = (128, 129) if client.v6 else (8, 0)
    for seq in range(rng.randint(1, 5)):
        yield [(client.port, B.icmp_frame(*_frame_to(client, server), type=request_type,
                                          id=ident, seq=seq, payload=b"ping"))]  # fmt: skip
        if rng.random() < 0.8:
            yield [(server.port, B.icmp_frame(*_frame_to(server, client), type=reply_type,
                                              id=ident, seq=seq, payload=b"ping"))]  # fmt: skip


def fragment_actor(rng: random.Random, client: Host, server: Host, sport: int, dport: int):
    """A UDP datagram in fragments: in order, reversed, or with one missing; maybe a reply.
    Fragment sizes straddle OVS's minimum non-last fragment size (1200 IPv4, 1280 IPv6), so
    both reassembly and rejection are exercised."""
    payload = bytes(range(256)) * rng.choice((4, 12))
    size = rng.choice((400, 1300, 1400))
    if client.v6:
        whole = B.udp_frame(*_frame_to(client, server), sport, dport, payload)
        pieces = B.fragment_ipv6(whole, size, ident=rng.getrandbits(32))
    else:
        whole = B.udp_frame(*_frame_to(client, server), sport, dport, payload,
                            ident=rng.getrandbits(16))  # fmt: skip
        pieces = B.fragment_ipv4(whole, size)
    order = _pick(rng, (("in_order", 60), ("reversed", 20), ("missing", 20)))
    if order == "reversed":
        pieces = pieces[::-1]
    elif order == "missing" and len(pieces) > 1:
        del pieces[rng.randrange(len(pieces))]
    for piece in pieces:
        yield [(client.port, piece)]
    if rng.random() < 0.5:
        yield [(server.port, B.udp_frame(*_frame_to(server, client), dport, sport, b"ok"))]


def oddity_actor(rng: random.Random, a: Host, b: Host):
    """One packet outside the IP mainstream: ARP, a runt, random bytes, an IPv4 option."""
    kind = _pick(rng, (("arp", 40), ("runt", 15), ("garbage", 25), ("other_proto", 20)))
    if kind == "arp":
        yield [(a.port, B.arp_frame(a.mac, b"\xff" * 6, 1, a.ip[-4:], b.ip[-4:]))]
    elif kind == "runt":
        yield [(a.port, rng.randbytes(rng.randint(0, 13)))]
    elif kind == "garbage":
        yield [(a.port, a.mac + b.mac + rng.randbytes(rng.randint(2, 80)))]
    elif a.v6:
        yield [(a.port, B.ether(a.mac, b.mac, B.ETH_P_IPV6,
                                B.ipv6(a.ip, b.ip, 132, b"\x00" * 16)))]  # fmt: skip
    else:
        yield [(a.port, B.ether(a.mac, b.mac, B.ETH_P_IP, B.ipv4(a.ip, b.ip, 47, b"gre" * 4)))]


# --- the scheduler ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrafficParams:
    """Everything a random sequence depends on."""

    seed: int
    n_packets: int = 1000
    n_live: int = 8  # actors running at once
    ipv6_share: float = 0.25
    jump_prob: float = 0.002  # per event: the clock jumps (see CLOCK_JUMPS_MS)
    cross_share: float = 0.05  # conversations between port pairs (1 <-> 4, 3 <-> 2)
    outside_client_share: float = 0.1  # connections opened from the outside port
    n_hosts: int = 4  # per side: small, so 5-tuples collide and get reused
    kinds: tuple = (("tcp", 60), ("udp", 18), ("icmp", 8), ("frag", 4), ("odd", 4))


def _new_actor(rng: random.Random, p: TrafficParams):
    inside, outside = rng.choice(PORT_PAIRS)
    if rng.random() < p.cross_share:
        outside = 6 - outside  # 2 <-> 4
    v6 = rng.random() < p.ipv6_share
    a = host(inside, rng.randint(1, p.n_hosts), v6)
    b = host(outside, rng.randint(1, p.n_hosts), v6)
    if rng.random() < p.outside_client_share:
        a, b = b, a
    sport, dport = rng.randint(40000, 40000 + 4 * p.n_hosts), rng.choice((80, 443, 53, 22))
    kind = _pick(rng, p.kinds)
    if kind == "tcp":
        wscale = rng.choice((None, None, 0, 7))
        conv = TcpConversation(a, b, sport, dport, rng.getrandbits(32), rng.getrandbits(32),
                               window=rng.choice((65535, 65535, 8192)), wscale=wscale)  # fmt: skip
        return tcp_actor(rng, conv)
    if kind == "udp":
        return udp_actor(rng, a, b, sport, dport)
    if kind == "icmp":
        return icmp_echo_actor(rng, a, b, rng.randint(0, 8))
    if kind == "frag":
        return fragment_actor(rng, a, b, sport, dport)
    return oddity_actor(rng, a, b)


def random_traffic(params: TrafficParams) -> list[Packet]:
    """A random interleaving of many connections' lives, ``params.n_packets`` long."""
    rng = random.Random(params.seed)
    clock = Clock(rng, params.jump_prob)
    live = [_new_actor(rng, params) for _ in range(params.n_live)]
    out: list[Packet] = []
    while len(out) < params.n_packets:
        i = rng.randrange(len(live))
        event = next(live[i], None)
        if event is None:
            live[i] = _new_actor(rng, params)
            continue
        now = clock.tick()
        out.extend((port, frame, now) for port, frame in event)
    return out[: params.n_packets]


@dataclass
class Clock:
    """Milliseconds that advance a little per event and sometimes jump past timeouts."""

    rng: random.Random
    jump_prob: float = 0.0
    now: int = START_MS
    jumps: list = field(default_factory=list)

    def tick(self) -> int:
        if self.jump_prob and self.rng.random() < self.jump_prob:
            step = self.rng.choice(CLOCK_JUMPS_MS)
            self.jumps.append(self.now + step)
            self.now += step
        else:
            self.now += self.rng.randint(0, 3)
        return self.now


# --- the talk's workloads ------------------------------------------------------------------------


def established_conversations(n_flows: int, seed: int = 0, v6: bool = False,
                              first_sport: int = 10_000) -> list[TcpConversation]:  # fmt: skip
    """N connections from inside port 1 to outside port 2, distinct 5-tuples."""
    rng = random.Random(seed)
    convs = []
    for i in range(n_flows):
        client = host(1, 1 + i % 200, v6)
        server = host(2, 1 + (i // 200) % 200, v6)
        sport = (first_sport + i) & 0xFFFF
        convs.append(TcpConversation(client, server, sport, 80, rng.getrandbits(32),
                                     rng.getrandbits(32)))  # fmt: skip
    return convs


def workload_a(n_flows: int, rounds: int, seed: int = 0, v6: bool = False,
               data_size: int = 64) -> list[Packet]:  # fmt: skip
    """Workload A: N established TCP flows; all handshakes first, then ``rounds`` rounds in
    which every flow sends one data segment each way, flows and directions interleaved."""
    packets, _convs = workload_a_with_conversations(n_flows, rounds, seed, v6, data_size)
    return packets


def workload_a_with_conversations(n_flows, rounds, seed=0, v6=False, data_size=64):
    rng = random.Random(seed + 1)
    convs = established_conversations(n_flows, seed, v6)
    packets, now = _handshakes(convs)
    for _ in range(rounds):
        packets.extend((p, f, now) for p, f in _data_round(rng, convs, data_size))
        now += 1
    return packets, convs


def _handshakes(convs) -> tuple[list[Packet], int]:
    """Every conversation's handshake, one conversation per millisecond from START_MS; the
    packets and the next free time."""
    now = START_MS
    packets: list[Packet] = []
    for conv in convs:
        for port, frame in conv.handshake():
            packets.append((port, frame, now))
        now += 1
    return packets, now


def _data_round(rng: random.Random, convs, data_size: int):
    order = [(i, d) for i in range(len(convs)) for d in (True, False)]
    rng.shuffle(order)
    return [convs[i].data(d, data_size) for i, d in order]


def workload_b(n_flows: int, rounds: int, seed: int = 0, v6: bool = False,
               data_size: int = 64) -> list[Packet]:  # fmt: skip
    """Workload B: workload A plus N unidirectional flows whose SYN repeats every round, so
    about one packet in three is NEW."""
    rng = random.Random(seed + 2)
    convs = established_conversations(n_flows, seed, v6)
    syn_only = established_conversations(n_flows, seed + 3, v6, first_sport=50_000)
    packets, now = _handshakes(convs)
    for _ in range(rounds):
        events = _data_round(rng, convs, data_size) + [c.syn() for c in syn_only]
        rng.shuffle(events)  # one SYN per flow per round: their relative order is free
        packets.extend((p, f, now) for p, f in events)
        now += 1
    return packets


_ATTACKS = ("out_of_window", "ack_unsent", "blind_rst", "blind_data", "bad_checksum",
            "icmp_error", "icmp_error_unrelated", "retransmit", "truncated", "syn_again",
            "rst", "fin", "ack_c")  # fmt: skip


def established_with_attacks(n_flows: int, rounds: int, seed: int = 0, attack_prob: float = 0.05,
                             v6: bool = False) -> list[Packet]:  # fmt: skip
    """Workload A where, now and then, a packet of an established flow is replaced by a
    misbehaving one (spoofed seq, bad checksum, RST, FIN, SYN, ICMP error...) and the flow
    then goes on sending data: what the fast path must not accept blindly."""
    rng = random.Random(seed)
    convs = established_conversations(n_flows, seed, v6)
    now = START_MS
    packets: list[Packet] = []
    for conv in convs:
        for port, frame in conv.handshake():
            packets.append((port, frame, now))
    for _ in range(rounds):
        now += 1
        order = [(i, d) for i in range(len(convs)) for d in (True, False)]
        rng.shuffle(order)
        for i, d in order:
            conv = convs[i]
            if rng.random() >= attack_prob:
                port, frame = conv.data(d, rng.choice((1, 64, 500)))
            else:
                attack = rng.choice(_ATTACKS)
                if attack == "rst":
                    port, frame = conv.rst(d)
                elif attack == "fin":
                    port, frame = conv.fin(d)
                else:
                    port, frame = _tcp_event(rng, conv, attack)
            packets.append((port, frame, now))
    return packets


def with_clock_jump(packets: list[Packet], at: int, jump_ms: int) -> list[Packet]:
    """The same packets, the clock jumping by ``jump_ms`` before packet ``at``."""
    return [(p, f, t + (jump_ms if i >= at else 0)) for i, (p, f, t) in enumerate(packets)]


# --- rule sets ----------------------------------------------------------------------------------


def _per_port_zone_firewall() -> str:
    """Stateful firewall over IPv4 and IPv6: zone by port pair (1/2: zone 1, 3/4: zone 2),
    connections only from the inside ports, related ICMP both ways."""
    lines = []
    for proto in ("ip", "ipv6"):
        for port, zone in ((1, 1), (2, 1), (3, 2), (4, 2)):
            lines.append(f"table=0,priority=100,{proto},in_port={port},"
                         f"actions=ct(table=1,zone={zone})")  # fmt: skip
    lines.append("table=0,priority=50,arp,actions=output:1,output:2,output:3,output:4")
    lines.append("table=0,priority=0,actions=drop")
    lines.append("table=1,priority=200,ct_state=+trk+inv,actions=drop")
    for inside, outside in PORT_PAIRS:
        zone = 1 if inside == 1 else 2
        lines += [
            f"table=1,priority=100,ct_state=+trk+new,in_port={inside},ip,"
            f"actions=ct(commit,zone={zone}),output:{outside}",
            f"table=1,priority=100,ct_state=+trk+new,in_port={inside},ipv6,"
            f"actions=ct(commit,zone={zone}),output:{outside}",
            f"table=1,priority=100,ct_state=+trk+est,in_port={inside},actions=output:{outside}",
            f"table=1,priority=100,ct_state=+trk+est,in_port={outside},actions=output:{inside}",
            f"table=1,priority=90,ct_state=+trk+rel,in_port={inside},actions=output:{outside}",
            f"table=1,priority=90,ct_state=+trk+rel,in_port={outside},actions=output:{inside}",
        ]
    lines.append("table=1,priority=0,actions=drop")
    return "\n".join(lines) + "\n"


FIREWALL_ZONES_BY_PORT = _per_port_zone_firewall()

# Zones chosen through a register set in table 0; the output port comes from another register.
FIREWALL_ZONES_BY_REGISTER = """\
table=0,priority=100,in_port=1,ip,actions=load:11->NXM_NX_REG6[0..15],load:2->NXM_NX_REG7[],resubmit(,1)
table=0,priority=100,in_port=2,ip,actions=load:11->NXM_NX_REG6[0..15],load:1->NXM_NX_REG7[],resubmit(,1)
table=0,priority=100,in_port=3,ip,actions=load:12->NXM_NX_REG6[0..15],load:4->NXM_NX_REG7[],resubmit(,1)
table=0,priority=100,in_port=4,ip,actions=load:12->NXM_NX_REG6[0..15],load:3->NXM_NX_REG7[],resubmit(,1)
table=0,priority=100,in_port=1,ipv6,actions=load:11->NXM_NX_REG6[0..15],load:2->NXM_NX_REG7[],resubmit(,1)
table=0,priority=100,in_port=2,ipv6,actions=load:11->NXM_NX_REG6[0..15],load:1->NXM_NX_REG7[],resubmit(,1)
table=0,priority=0,actions=drop
table=1,priority=100,ct_state=-trk,ip,actions=ct(table=2,zone=NXM_NX_REG6[0..15])
table=1,priority=100,ct_state=-trk,ipv6,actions=ct(table=2,zone=NXM_NX_REG6[0..15])
table=2,priority=200,ct_state=+trk+inv,actions=drop
table=2,priority=100,ct_state=+trk+new,in_port=1,ip,actions=ct(commit,zone=NXM_NX_REG6[0..15]),resubmit(,3)
table=2,priority=100,ct_state=+trk+new,in_port=1,ipv6,actions=ct(commit,zone=NXM_NX_REG6[0..15]),resubmit(,3)
table=2,priority=100,ct_state=+trk+new,in_port=3,tcp,actions=ct(commit,zone=NXM_NX_REG6[0..15]),resubmit(,3)
table=2,priority=100,ct_state=+trk+est,actions=resubmit(,3)
table=2,priority=100,ct_state=+trk+rel,actions=resubmit(,3)
table=2,priority=0,actions=drop
table=3,priority=10,reg7=1,actions=output:1
table=3,priority=10,reg7=2,actions=output:2
table=3,priority=10,reg7=3,actions=output:3
table=3,priority=10,reg7=4,actions=output:4
"""

# Two security groups in a row: the sender's (zone 10) then the receiver's (zone 20), the
# direction kept in reg0 across recirculations, a stateless rule in front.
TWO_ZONE_PIPELINE = """\
table=0,priority=200,udp,udp_dst=9,actions=drop
table=0,priority=100,ip,in_port=1,actions=load:1->NXM_NX_REG0[],resubmit(,5)
table=0,priority=100,ip,in_port=2,actions=load:2->NXM_NX_REG0[],resubmit(,5)
table=0,priority=100,ipv6,in_port=1,actions=load:1->NXM_NX_REG0[],resubmit(,5)
table=0,priority=100,ipv6,in_port=2,actions=load:2->NXM_NX_REG0[],resubmit(,5)
table=0,priority=0,actions=drop
table=5,priority=100,ct_state=-trk,ip,actions=ct(table=10,zone=10)
table=5,priority=100,ct_state=-trk,ipv6,actions=ct(table=10,zone=10)
table=10,priority=200,ct_state=+trk+inv,actions=drop
table=10,priority=100,ct_state=+trk+new,reg0=1,ip,actions=ct(commit,zone=10),ct(table=20,zone=20)
table=10,priority=100,ct_state=+trk+new,reg0=1,ipv6,actions=ct(commit,zone=10),ct(table=20,zone=20)
table=10,priority=100,ct_state=+trk+est,ip,actions=ct(table=20,zone=20)
table=10,priority=100,ct_state=+trk+est,ipv6,actions=ct(table=20,zone=20)
table=10,priority=100,ct_state=+trk+rel,ip,actions=ct(table=20,zone=20)
table=10,priority=0,actions=drop
table=20,priority=200,ct_state=+trk+inv,actions=drop
table=20,priority=100,ct_state=+trk+new,reg0=1,tcp,ip,actions=ct(commit,zone=20),resubmit(,30)
table=20,priority=100,ct_state=+trk+new,reg0=1,udp,actions=ct(commit,zone=20),resubmit(,30)
table=20,priority=100,ct_state=+trk+new,reg0=1,ipv6,actions=ct(commit,zone=20),resubmit(,30)
table=20,priority=100,ct_state=+trk+new,reg0=1,icmp,actions=resubmit(,30)
table=20,priority=100,ct_state=+trk+est,actions=resubmit(,30)
table=20,priority=100,ct_state=+trk+rel,actions=resubmit(,30)
table=20,priority=0,actions=drop
table=30,priority=10,reg0=1,actions=output:2
table=30,priority=10,reg0=2,actions=output:1
"""

# ct_mark and ct_label set at commit and matched on later packets; replies re-mark.
MARK_LABEL = """\
table=0,priority=100,ip,actions=ct(table=1,zone=3)
table=0,priority=100,ipv6,actions=ct(table=1,zone=3)
table=0,priority=0,actions=drop
table=1,priority=200,ct_state=+trk+inv,actions=drop
table=1,priority=100,ct_state=+trk+new,in_port=1,tcp,actions=ct(commit,zone=3,exec(set_field:0x1->ct_mark)),output:2
table=1,priority=100,ct_state=+trk+new,in_port=1,udp,actions=ct(commit,zone=3,exec(set_field:0x5/0xf->ct_mark,set_field:0xab00->ct_label)),output:2
table=1,priority=100,ct_state=+trk+new,in_port=3,ip,actions=ct(commit,zone=3,exec(set_field:0x1->ct_label)),output:4
table=1,priority=100,ct_state=+trk+new,in_port=1,ip,actions=ct(commit,zone=3),output:2
table=1,priority=100,ct_state=+trk+new,in_port=1,ipv6,actions=ct(commit,zone=3),output:2
table=1,priority=110,ct_state=+trk+est+rpl,ct_mark=0x1,tcp,actions=ct(commit,zone=3,exec(set_field:0x2->ct_mark)),output:1
table=1,priority=100,ct_state=+trk+est,ct_mark=0x2,in_port=1,actions=output:2
table=1,priority=100,ct_state=+trk+est,ct_mark=0x2,in_port=2,actions=output:1
table=1,priority=100,ct_state=+trk+est,ct_mark=0x1,in_port=1,actions=output:2
table=1,priority=100,ct_state=+trk+est,ct_mark=0x5/0xf,actions=output:1,output:2
table=1,priority=100,ct_state=+trk+est,ct_label=0x1,in_port=3,actions=output:4
table=1,priority=100,ct_state=+trk+est,ct_label=0x1,in_port=4,actions=output:3
table=1,priority=90,ct_state=+trk+est,actions=output:5
table=1,priority=90,ct_state=+trk+rel,actions=output:6
table=1,priority=0,actions=drop
"""

# No conntrack at all: matches on headers, goto_table, several outputs.
STATELESS = """\
table=0,priority=300,tcp,tp_dst=22,actions=drop
table=0,priority=200,in_port=1,ip,nw_dst=10.0.2.0/24,actions=goto_table:1
table=0,priority=200,in_port=3,ip,actions=goto_table:1
table=0,priority=150,in_port=2,ip,actions=output:1
table=0,priority=150,in_port=4,ip,actions=output:3
table=0,priority=100,ipv6,actions=in_port,output:7
table=0,priority=50,arp,actions=output:1,output:2,output:3,output:4
table=0,priority=0,actions=drop
table=1,priority=100,udp,actions=output:2,output:4
table=1,priority=90,tcp,tcp_flags=+syn,actions=output:9
table=1,priority=80,ip,actions=output:2
"""

# NAT that keeps addresses (nat(src) / nat(dst) without a range: only a colliding source port
# changes), so the generated replies still reach their connection and every packet of it is
# translated (+snat/+dnat, checksums rewritten in place), in one zone; ICMP errors included.
NAT_KEEP = """\
table=0,priority=100,ip,actions=ct(table=1,zone=7,nat)
table=0,priority=100,ipv6,actions=ct(table=1,zone=7,nat)
table=0,priority=0,actions=drop
table=1,priority=200,ct_state=+trk+inv,actions=drop
table=1,priority=100,ct_state=+trk+new,in_port=1,ip,actions=ct(commit,zone=7,nat(src)),output:2
table=1,priority=100,ct_state=+trk+new,in_port=1,ipv6,actions=ct(commit,zone=7,nat(src)),output:2
table=1,priority=100,ct_state=+trk+new,in_port=3,ip,actions=ct(commit,zone=7,nat(dst)),output:4
table=1,priority=100,ct_state=+trk+new,in_port=3,ipv6,actions=ct(commit,zone=7,exec(set_field:0x3->ct_mark)),output:4
table=1,priority=90,ct_state=+trk+est+snat,actions=output:2
table=1,priority=90,ct_state=+trk+est+dnat,in_port=2,actions=output:1
table=1,priority=90,ct_state=+trk+est+dnat,actions=output:4
table=1,priority=80,ct_state=+trk+est,actions=output:5
table=1,priority=80,ct_state=+trk+rel+dnat,actions=output:1
table=1,priority=70,ct_state=+trk+rel,actions=output:6
table=1,priority=0,actions=drop
"""

# Real translation: inside port 1 SNATed to a 4-port range (exhaustion under load), port 3 to
# a DNAT backend with a port; replies come back to the original addresses only when they
# happen to match, so most replies start connections of their own (also NATed: zone 4 runs
# ct(nat) before anything is known).
NAT_RANGES = """\
table=0,priority=100,ip,actions=ct(table=1,zone=4,nat)
table=0,priority=50,ipv6,actions=ct(table=1,zone=4)
table=0,priority=0,actions=drop
table=1,priority=200,ct_state=+trk+inv,actions=drop
table=1,priority=100,ct_state=+trk+new,in_port=1,ip,actions=ct(commit,zone=4,nat(src=10.0.2.250:5000-5003)),output:2
table=1,priority=100,ct_state=+trk+new,in_port=3,tcp,actions=ct(commit,zone=4,nat(dst=10.0.2.7:8080)),output:4
table=1,priority=100,ct_state=+trk+new,in_port=2,udp,actions=ct(commit,zone=4,nat(dst=10.0.1.1-10.0.1.3)),output:1
table=1,priority=100,ct_state=+trk+new,ipv6,actions=ct(commit,zone=4),output:2
table=1,priority=90,ct_state=+trk+est,in_port=1,actions=output:2
table=1,priority=90,ct_state=+trk+est,in_port=2,actions=output:1
table=1,priority=90,ct_state=+trk+est,actions=output:3
table=1,priority=80,ct_state=+trk+rel,actions=output:6
table=1,priority=0,actions=drop
"""

# DNAT in one zone, then SNAT in another after a recirculation, then a second ct(nat) in the
# SNAT zone (a no-op: the packet is already translated there).
NAT_TWO_ZONES = """\
table=0,priority=100,ip,actions=ct(table=1,zone=1,nat)
table=0,priority=100,ipv6,actions=ct(table=1,zone=1,nat)
table=0,priority=0,actions=drop
table=1,priority=200,ct_state=+trk+inv,actions=drop
table=1,priority=100,ct_state=+trk+new,in_port=1,ip,actions=ct(commit,zone=1,nat(dst)),ct(table=2,zone=2,nat)
table=1,priority=100,ct_state=+trk+new,in_port=1,ipv6,actions=ct(commit,zone=1,nat(dst)),ct(table=2,zone=2,nat)
table=1,priority=90,ct_state=+trk+est,ip,actions=ct(table=2,zone=2,nat)
table=1,priority=90,ct_state=+trk+est,ipv6,actions=ct(table=2,zone=2,nat)
table=1,priority=90,ct_state=+trk+rel,ip,actions=ct(table=2,zone=2,nat)
table=1,priority=90,ct_state=+trk+rel,ipv6,actions=ct(table=2,zone=2)
table=1,priority=0,actions=drop
table=2,priority=200,ct_state=+trk+inv,actions=drop
table=2,priority=100,ct_state=+trk+new,in_port=1,ip,actions=ct(commit,zone=2,nat(src)),ct(zone=2,nat),output:2
table=2,priority=100,ct_state=+trk+new,in_port=1,ipv6,actions=ct(commit,zone=2,nat(src)),output:2
table=2,priority=90,ct_state=+trk+est,in_port=1,ip,actions=ct(zone=2,nat),output:2
table=2,priority=90,ct_state=+trk+est,in_port=1,ipv6,actions=output:2
table=2,priority=90,ct_state=+trk+est,in_port=2,actions=output:1
table=2,priority=80,ct_state=+trk+rel,actions=output:3
table=2,priority=0,actions=drop
"""

# The rule sets the equivalence tests run, by name.
RULE_SETS = {
    "demo_tcp_firewall": demo.TCP_FLOWS,
    "talk_zone5_udp": demo.UDP_FLOWS,
    "zones_by_port": FIREWALL_ZONES_BY_PORT,
    "zones_by_register": FIREWALL_ZONES_BY_REGISTER,
    "two_zone_pipeline": TWO_ZONE_PIPELINE,
    "mark_label": MARK_LABEL,
    "stateless": STATELESS,
    "nat_keep": NAT_KEEP,
    "nat_ranges": NAT_RANGES,
    "nat_two_zones": NAT_TWO_ZONES,
}

# The firewall the workloads run through (the talk's: ct, recirculate, est both ways).
WORKLOAD_FLOWS = FIREWALL_ZONES_BY_PORT

# Pairs for rule replacement mid-stream: (before, after).
REPLACEMENTS = (
    ("zones_by_port", "mark_label"),
    ("stateless", "zones_by_port"),
    ("zones_by_port", "zones_by_port_v2"),
    ("two_zone_pipeline", "demo_tcp_firewall"),
    ("nat_keep", "nat_two_zones"),
)
RULE_SETS["zones_by_port_v2"] = FIREWALL_ZONES_BY_PORT.replace(
    "ct_state=+trk+est,in_port=2,actions=output:1",
    "ct_state=+trk+est,in_port=2,actions=output:1,output:8",
)


# --- hypothesis strategies ---------------------------------------------------------------------


def traffic_params(min_packets: int = 200, max_packets: int = 2000) -> st.SearchStrategy:
    """Parameters of a random sequence (shrink towards fewer packets and actors)."""
    return st.builds(
        TrafficParams,
        seed=st.integers(0, 2**32 - 1),
        n_packets=st.integers(min_packets, max_packets),
        n_live=st.integers(1, 24),
        ipv6_share=st.sampled_from((0.0, 0.25, 0.5)),
        jump_prob=st.sampled_from((0.0, 0.002, 0.01)),
        cross_share=st.sampled_from((0.0, 0.05, 0.2)),
        outside_client_share=st.sampled_from((0.0, 0.1, 0.3)),
        n_hosts=st.integers(1, 6),
    )


def packet_sequences(min_packets: int = 200, max_packets: int = 2000) -> st.SearchStrategy:
    return traffic_params(min_packets, max_packets).map(random_traffic)


def batch_sizes(n_packets: int, seed: int, low: int = 1, high: int = 300) -> list[int]:
    """Random batch sizes covering ``n_packets`` (the last one may be shorter)."""
    rng = random.Random(seed)
    sizes, left = [], n_packets
    while left > 0:
        size = min(left, rng.randint(low, high))
        sizes.append(size)
        left -= size
    return sizes
