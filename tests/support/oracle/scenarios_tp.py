"""Oracle scenarios: zone timeout policies (``ovs-vsctl add-zone-tp``) at their edges.

The firewall of scenarios.py in zone 5 with a policy giving each of OVS's eleven attributes
its own few seconds. Each scenario brings connections into the states the attributes time and
probes each one 1 ms before its timeout (still there) and, on a twin connection, exactly at it
(gone); OVS's virtual clock makes the milliseconds exact. Registered into SCENARIOS on import.
"""

from __future__ import annotations

from .frames import Timeline, icmp_echo, tcp, udp
from .scenarios import FIREWALL, Scenario, scenario

ZONE5_FIREWALL = FIREWALL.replace("ct(table=1)", "ct(table=1,zone=5)").replace(
    "ct(commit)", "ct(commit,zone=5)"
)
SECONDS = {"tcp_syn_sent": 3, "tcp_syn_recv": 4, "tcp_established": 5, "tcp_fin_wait": 6,
           "tcp_time_wait": 7, "tcp_close": 8, "udp_first": 3, "udp_single": 4,
           "udp_multiple": 5, "icmp_first": 6, "icmp_reply": 7}  # fmt: skip
POLICY = {5: SECONDS}


def _udp_icmp(t: list, name: str, port: int, t0: int, late: int) -> None:
    up = lambda: udp("A", "B", port, 53)  # noqa: E731
    down = lambda: udp("B", "A", 53, port)  # noqa: E731
    req = lambda seq: icmp_echo("A", "B", port, seq)  # noqa: E731
    rep = lambda seq: icmp_echo("B", "A", port, seq, reply=True)  # noqa: E731
    before, probe = {
        "udp_first": ([("A", up())], ("B", down())),
        "udp_single": ([("A", up()), ("A", up())], ("B", down())),
        "udp_multiple": ([("A", up()), ("B", down())], ("A", up())),
        "icmp_first": ([("A", req(0))], ("B", rep(0))),
        "icmp_reply": ([("A", req(0)), ("B", rep(0))], ("A", req(1))),
    }[name]
    _play(t, before, probe, t0, SECONDS[name], late)


def _tcp(t: list, name: str, port: int, t0: int, late: int) -> None:
    c, s = 1000, 5000
    up = lambda fl, seq=c, ack=s: ("A", tcp("A", "B", port, 80, fl, seq, ack))  # noqa: E731
    down = lambda fl, seq=s, ack=c: ("B", tcp("B", "A", 80, port, fl, seq, ack))  # noqa: E731
    syn, synack = up("S", c - 1, 0), down("SA", s - 1, c)
    opened = [syn, synack, up("A")]
    closing = opened + [up("FA")]
    closed = closing + [down("FA", s, c + 1)]
    before, probe = {
        "tcp_syn_sent": ([syn], synack),
        "tcp_syn_recv": ([syn, synack], up("A")),
        "tcp_established": (opened, down("A")),
        "tcp_fin_wait": (closing, down("A", s, c + 1)),
        "tcp_time_wait": (closed, up("A", c + 1, s + 1)),
        "tcp_close": (closed + [up("A", c + 1, s + 1)], down("A", s + 1, c + 1)),
    }[name]
    _play(t, before, probe, t0, SECONDS[name], late)


def _play(t: list, before, probe, t0: int, seconds: int, late: int) -> None:
    """(time, sender, frame) into ``t``: ``before`` 1 ms apart from ``t0``, then ``probe``
    ``late`` ms after the timeout the last of them armed (connections interleave)."""
    at = t0
    for sender, frame in before:
        t.append((at, sender, frame))
        at += 1
    t.append((at - 1 + seconds * 1000 + late, probe[0], probe[1]))


def _build(name: str, names, make) -> Scenario:
    events: list = []
    for i, attr in enumerate(names):
        for k, late in enumerate((-1, 0)):
            make(events, attr, 20000 + 10 * i + k, 20 * (2 * i + k), late)
    t = Timeline()
    for at, sender, frame in sorted(events, key=lambda e: e[0]):
        t.send(sender, frame, at=at)
    return Scenario(name, ZONE5_FIREWALL, t.packets, timeout_policies=POLICY,
                    about="each attribute of a zone timeout policy, 1 ms before and at its "
                    "value")  # fmt: skip


@scenario
def timeout_policy_udp_icmp():
    names = ("udp_first", "udp_single", "udp_multiple", "icmp_first", "icmp_reply")
    return _build("timeout_policy_udp_icmp", names, _udp_icmp)


@scenario
def timeout_policy_tcp_opening():
    names = ("tcp_syn_sent", "tcp_syn_recv", "tcp_established")
    return _build("timeout_policy_tcp_opening", names, _tcp)


@scenario
def timeout_policy_tcp_closing():
    names = ("tcp_fin_wait", "tcp_time_wait")
    return _build("timeout_policy_tcp_closing", names, _tcp)


@scenario
def timeout_policy_tcp_closed():
    return _build("timeout_policy_tcp_closed", ("tcp_close",), _tcp)
