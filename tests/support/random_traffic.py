"""Random traffic: many connections' lives interleaved, with a clock that jumps past timeouts.

What: "actors" (generators of ``[(in_port, frame)]`` events): a TCP connection's life with
random mistakes (support/conversations.py), UDP exchanges, ICMP echo, fragmented datagrams,
ARP/runts/garbage/other protocols; a scheduler (``random_traffic``) that interleaves them on
the port pairs of support/hosts.py and stamps a ``Clock``; hypothesis strategies over the
parameters (``traffic_params``, ``packet_sequences``) and random batch sizes.

Design: everything is driven by one ``random.Random(seed)``, so a sequence is a pure function
of its ``TrafficParams`` (hypothesis draws the parameters; a failure replays from them).
Hosts are few per side, so 5-tuples collide and get reused.

Invariants:
- ``now_ms`` never decreases along a sequence.
- Nothing here looks at what an engine does; expected results come from the reference engine.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from hypothesis import strategies as st

from ctaccel.packet import build as B
from support.conversations import TcpConversation
from support.hosts import PORT_PAIRS, START_MS, Host, Packet, frame_to, host

# Conntrack timeouts for the tests: the defaults, except established TCP and FIN_WAIT, which
# are shortened so that a clock jump can expire an established connection in a short run.
TEST_TIMEOUTS_MS = {"tcp_established": 150_000, "tcp_fin_wait": 90_000}
# Clock jumps: past UDP multiple (30 s), UDP first/single and ICMP (60 s), the shortened
# established (150 s), and one that stays below every timeout.
CLOCK_JUMPS_MS = (10_000, 31_000, 61_000, 91_000, 151_000)


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
            yield [tcp_event(rng, conv, _pick(rng, _TCP_ACTIONS))]
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


def tcp_event(rng: random.Random, conv: TcpConversation, action: str) -> tuple[int, bytes]:
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
        req = B.udp_frame(*frame_to(client, server), sport, dport, b"q" * rng.randint(0, 100))
        yield [(client.port, req)]
        if rng.random() < 0.08:
            yield [(server.port, _icmp_unreachable(server, client, req))]
        elif not one_way and rng.random() < 0.85:
            yield [(server.port, B.udp_frame(*frame_to(server, client), dport, sport, b"r"))]


def _icmp_unreachable(sender: Host, dest: Host, quoted_frame: bytes) -> bytes:
    inner = B.l3_of(quoted_frame)
    if sender.v6:
        return B.icmp_frame(*frame_to(sender, dest), type=1, code=4, payload=inner)
    return B.icmp_frame(*frame_to(sender, dest), type=3, code=3, payload=inner[:28])


def icmp_echo_actor(rng: random.Random, client: Host, server: Host, ident: int):
    """Echo requests, most answered."""
    request_type, reply_type = (128, 129) if client.v6 else (8, 0)
    for seq in range(rng.randint(1, 5)):
        yield [(client.port, B.icmp_frame(*frame_to(client, server), type=request_type,
                                          id=ident, seq=seq, payload=b"ping"))]  # fmt: skip
        if rng.random() < 0.8:
            yield [(server.port, B.icmp_frame(*frame_to(server, client), type=reply_type,
                                              id=ident, seq=seq, payload=b"ping"))]  # fmt: skip


def fragment_actor(rng: random.Random, client: Host, server: Host, sport: int, dport: int):
    """A UDP datagram in fragments: in order, reversed, or with one missing; maybe a reply.
    Fragment sizes straddle OVS's minimum non-last fragment size (1200 IPv4, 1280 IPv6), so
    both reassembly and rejection are exercised."""
    payload = bytes(range(256)) * rng.choice((4, 12))
    size = rng.choice((400, 1300, 1400))
    if client.v6:
        whole = B.udp_frame(*frame_to(client, server), sport, dport, payload)
        pieces = B.fragment_ipv6(whole, size, ident=rng.getrandbits(32))
    else:
        whole = B.udp_frame(*frame_to(client, server), sport, dport, payload,
                            hdr=B.HeaderFields(ident=rng.getrandbits(16)))  # fmt: skip
        pieces = B.fragment_ipv4(whole, size)
    order = _pick(rng, (("in_order", 60), ("reversed", 20), ("missing", 20)))
    if order == "reversed":
        pieces = pieces[::-1]
    elif order == "missing" and len(pieces) > 1:
        del pieces[rng.randrange(len(pieces))]
    for piece in pieces:
        yield [(client.port, piece)]
    if rng.random() < 0.5:
        yield [(server.port, B.udp_frame(*frame_to(server, client), dport, sport, b"ok"))]


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


def with_clock_jump(packets: list[Packet], at: int, jump_ms: int) -> list[Packet]:
    """The same packets, the clock jumping by ``jump_ms`` before packet ``at``."""
    return [(p, f, t + (jump_ms if i >= at else 0)) for i, (p, f, t) in enumerate(packets)]


# --- hypothesis strategies and batch plans ----------------------------------------------------


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


def write_captures(packets: list[Packet], directory) -> list[tuple[int, str]]:
    """``packets`` as one nanosecond pcap per input port (``in-<port>.pcap`` in
    ``directory``; packet k's timestamp is its clock plus k ns, so the merged replay order
    is the list's): (port, path) per file, ports in order."""
    from pathlib import Path

    from ctaccel.io.pcap import PcapWriter

    directory = Path(directory)
    writers = {}
    for k, (port, frame, now_ms) in enumerate(packets):
        if port not in writers:
            writers[port] = PcapWriter(directory / f"in-{port}.pcap", nanosecond=True)
        writers[port].write(frame, now_ms * 1_000_000 + k)
    for w in writers.values():
        w.close()
    return [(port, str(directory / f"in-{port}.pcap")) for port in sorted(writers)]
