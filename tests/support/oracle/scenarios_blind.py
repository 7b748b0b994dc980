"""Oracle scenarios: blind injection at the edges of an established connection's window.

Each connection: the handshake (A's window 65535, B's 8192, no scaling), 100 bytes from A
acknowledged by B, then a forged segment just outside one edge of what the tracker accepts
(refused: +inv, the connection unchanged) and the same just inside it (accepted), then one
ordinary segment. With these numbers, after B's ack: A may send up to 1101 + 8192 (right
edge), no more than B's largest window behind 1101 (left edge), acknowledging within
MAXACKWINDOW (65535 + 1500) of B's 5001; a RST must sit within one of where its sender is;
a segment without data is not judged by its sequence number. Registered into SCENARIOS on
import, so they run against OVS in every mode (test_scenarios.py).
"""

from __future__ import annotations

from .frames import Timeline, tcp
from .scenarios import EST, EST_RPL, FIREWALL, INV, Scenario, scenario

M32 = 0xFFFFFFFF
MAXACKWINDOW = 65535 + 1500


def _open(t: Timeline, sport: int) -> None:
    """Handshake and 100 bytes from A, acknowledged: A at 1101, B at 5001."""
    t.send("A", tcp("A", "B", sport, 80, "S", 1000))
    t.send("B", tcp("B", "A", 80, sport, "SA", 5000, 1001, window=8192))
    t.send("A", tcp("A", "B", sport, 80, "A", 1001, 5001))
    t.send("A", tcp("A", "B", sport, 80, "PA", 1001, 5001, b"d" * 100))
    t.send("B", tcp("B", "A", 80, sport, "A", 5001, 1101, window=8192))


def _a(sport, flags, seq, ack, data=b""):
    return "A", tcp("A", "B", sport, 80, flags, seq & M32, ack & M32, data)


def _b(sport, flags, seq, ack, data=b""):
    return "B", tcp("B", "A", 80, sport, flags, seq & M32, ack & M32, data, window=8192)


def _pairs(name: str, about: str, pairs) -> Scenario:
    """One connection per (refused, accepted) pair of forged segments, each followed by an
    ordinary segment from A."""
    t = Timeline()
    expect = {}
    for k, (bad, good) in enumerate(pairs):
        sport = 41000 + k
        _open(t, sport)
        b = t.send(*bad(sport))
        g = t.send(*good(sport))
        expect[b] = (INV, [])
        sender = good(sport)[0]
        expect[g] = (EST if sender == "A" else EST_RPL, [2] if sender == "A" else [1])
        t.send(*_a(sport, "PA", 1101, 5001, b"n" * 5))
    return Scenario(name, FIREWALL, t.packets, expect=expect, about=about)


@scenario
def tcp_blind_seq_edges():
    ten = b"x" * 10
    right = 1101 + 8192  # A's right edge; B's is 5001 + 65535
    return _pairs("tcp_blind_seq_edges", "data one octet past / at each window edge", [
        (lambda s: _a(s, "PA", right - 9, 5001, ten), lambda s: _a(s, "PA", right - 10, 5001, ten)),
        (lambda s: _a(s, "PA", 1101 - 8192 - 1, 5001, ten),
         lambda s: _a(s, "PA", 1101 - 8192, 5001, ten)),
        (lambda s: _b(s, "PA", 5001 + 65535 - 9, 1101, ten),
         lambda s: _b(s, "PA", 5001 + 65535 - 10, 1101, ten)),
    ])  # fmt: skip


@scenario
def tcp_blind_ack_edges():
    ahead, behind = 5001 + MAXACKWINDOW, 5001 - MAXACKWINDOW
    return _pairs("tcp_blind_ack_edges", "acks one past / at MAXACKWINDOW either way", [
        (lambda s: _a(s, "PA", 1101, ahead + 1, b"a"), lambda s: _a(s, "PA", 1101, ahead, b"a")),
        (lambda s: _a(s, "PA", 1101, behind - 1, b"b"), lambda s: _a(s, "PA", 1101, behind, b"b")),
        # a bare ACK: its sequence number, however far, is not judged; its ack is
        (lambda s: _a(s, "A", 1101 + (1 << 31), ahead + 1),
         lambda s: _a(s, "A", 1101 + (1 << 31), 5001)),
    ])  # fmt: skip


@scenario
def tcp_blind_rst_edges():
    return _pairs("tcp_blind_rst_edges", "resets two off / one off where the sender is", [
        (lambda s: _b(s, "R", 5001 + 2, 0), lambda s: _b(s, "R", 5001 - 1, 0)),
        (lambda s: _a(s, "R", 1101 - 2, 0), lambda s: _a(s, "R", 1101 + 1, 0)),
        (lambda s: _b(s, "R", 5001 + (1 << 30), 0), lambda s: _b(s, "RA", 5001, 1101)),
    ])  # fmt: skip
