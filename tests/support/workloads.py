"""The talk's workloads for the tests: adapters over ``ctaccel.bench.workloads``.

What: ``workload_a`` / ``workload_b`` (N established TCP flows exchanging data; B adds N
flows whose SYN repeats every round, so one packet in three is NEW), sized in rounds, as
``[(in_port, frame, now_ms)]`` lists on the test port plan; ``workload_a_with_conversations``
also returns a ``TcpConversation`` per flow, positioned after the last round, so a test can
go on with any flow (probe, spoof, close it); ``conversations`` gives the same flows fresh;
``established_with_attacks`` is workload A with misbehaving packets mixed in.

Design: the packets are the product generator's (``bench.workloads.build``: the one code
path for these flows, the one ``ctaccel gen`` and ``ctaccel bench`` write), converted:
- ports: a client's packets enter on 1, a server's on 2 (the product replays both
  directions on one port, its firewall telling them apart by ct state; the tests' firewall,
  ``WORKLOAD_FLOWS`` = rule set zones_by_port, tells them by port);
- time: ``START_MS`` plus the product's timestamp offset in whole ms (it sends at 1 Mpps);
- ``data_size`` (the payload of a data segment) sets the product's frame size, so handshake
  frames carry Ethernet padding up to that size, as in the product's captures.
The attack schedule stays here, test-only: a misbehaviour changes what the conversation
sends next (a FIN advances its sequence, a RST ends it), which the product's fixed slot
table cannot express, and no benchmark wants it. Its flows are still the product's.

Invariants:
- Same arguments, same packets (the product is deterministic; so is the attack schedule,
  from one ``random.Random(seed)``).
- Every flow's first ``3 * n_flows`` packets are the handshakes; then rounds of ``2 * n_flows``
  (A) or ``3 * n_flows`` (B) packets; each direction sends one data segment per round.
"""

from __future__ import annotations

import random

import numpy as np

from ctaccel.bench import workloads as W
from ctaccel.packet import build as B
from support.conversations import TcpConversation
from support.hosts import START_MS, Host, Packet
from support.random_traffic import tcp_event
from support.rulesets import RULE_SETS

CLIENT_PORT, SERVER_PORT = 1, 2  # a port pair of support/hosts.py (inside 1, outside 2)

# The firewall the workloads run through (the talk's: ct, recirculate, est both ways).
WORKLOAD_FLOWS = RULE_SETS["zones_by_port"]


def _build(kind: str, n_flows: int, rounds: int, seed: int, v6: bool, data_size: int):
    round_len = 3 * n_flows if kind == "B" else 2 * n_flows  # B: as many SYN-only flows
    frame_size = W.header_len(v6) + data_size + W.FCS_LEN
    return W.build(kind, n_flows, packets=3 * n_flows + rounds * round_len,
                   frame_size=frame_size, ipv6=v6, seed=seed)  # fmt: skip


def _packets(traffic: W.Traffic) -> list[Packet]:
    data = traffic.frames.tobytes()
    width = traffic.frames.shape[1]
    ports = np.where(traffic.from_client, CLIENT_PORT, SERVER_PORT).tolist()
    now = (START_MS + (traffic.ts_ns - W.START_NS) // 1_000_000).tolist()
    return [(ports[i], data[i * width : (i + 1) * width], now[i]) for i in range(len(ports))]


def _conversations(traffic: W.Traffic, v6: bool, sent: int) -> list[TcpConversation]:
    """A conversation per established flow, each side having sent ``sent`` payload bytes
    after the handshake."""
    ends = traffic.endpoints
    version = 6 if v6 else 4
    client_mac, server_mac = B.mac_bytes(W.CLIENT_MAC), B.mac_bytes(W.SERVER_MAC)
    convs = []
    for f in range(traffic.established_flows):
        client = Host(CLIENT_PORT, client_mac, B.ip_bytes(ends.client_ip[f], version))
        server = Host(SERVER_PORT, server_mac, B.ip_bytes(ends.server_ip[f], version))
        isn_c, isn_s = int(ends.isn_client[f]), int(ends.isn_server[f])
        conv = TcpConversation(client, server, int(ends.client_port[f]),
                               int(ends.server_port[f]), isn_c, isn_s, window=W.TCP_WINDOW)  # fmt: skip
        if sent >= 0:  # after the handshake (SYN and its SYN/ACK count one each)
            conv.sides[True].nxt = isn_c + 1 + sent
            conv.sides[False].nxt = isn_s + 1 + sent
        convs.append(conv)
    return convs


def workload_a(n_flows: int, rounds: int, seed: int = 0, v6: bool = False,
               data_size: int = 64) -> list[Packet]:  # fmt: skip
    """Workload A: N established TCP flows; all handshakes first, then ``rounds`` rounds in
    which every flow sends one ``data_size``-byte segment each way."""
    return _packets(_build("A", n_flows, rounds, seed, v6, data_size))


def workload_a_with_conversations(n_flows: int, rounds: int, seed: int = 0, v6: bool = False,
                                  data_size: int = 64):  # fmt: skip
    """Workload A and its conversations, positioned after the last round."""
    traffic = _build("A", n_flows, rounds, seed, v6, data_size)
    return _packets(traffic), _conversations(traffic, v6, rounds * traffic.payload_len)


def workload_b(n_flows: int, rounds: int, seed: int = 0, v6: bool = False,
               data_size: int = 64) -> list[Packet]:  # fmt: skip
    """Workload B: workload A plus N unidirectional flows whose SYN repeats every round, so
    one packet in three is NEW."""
    return _packets(_build("B", n_flows, rounds, seed, v6, data_size))


def conversations(n_flows: int, seed: int = 0, v6: bool = False) -> list[TcpConversation]:
    """Workload A's flows as fresh conversations (nothing sent yet)."""
    return _conversations(_build("A", n_flows, 0, seed, v6, 64), v6, sent=-1)


_ATTACKS = ("out_of_window", "ack_unsent", "blind_rst", "blind_data", "bad_checksum",
            "icmp_error", "icmp_error_unrelated", "retransmit", "truncated", "syn_again",
            "rst", "fin", "ack_c")  # fmt: skip


def established_with_attacks(n_flows: int, rounds: int, seed: int = 0, attack_prob: float = 0.05,
                             v6: bool = False) -> list[Packet]:  # fmt: skip
    """Workload A's flows where, now and then, a packet of an established flow is replaced by
    a misbehaving one (spoofed seq, bad checksum, RST, FIN, SYN, ICMP error...) and the flow
    then goes on sending data: what the fast path must not accept blindly."""
    rng = random.Random(seed)
    convs = conversations(n_flows, seed, v6)
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
                    port, frame = tcp_event(rng, conv, attack)
            packets.append((port, frame, now))
    return packets
