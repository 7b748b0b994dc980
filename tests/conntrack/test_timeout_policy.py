"""Zone timeout policies (``--timeout-policy``, OVS ``ovs-vsctl add-zone-tp``) at their edges.

Every one of OVS's eleven attributes gets its own value on zone 5 (the talk's firewall's
zone). For each, a connection is brought into the state the attribute times, then a probe
packet arrives 1 ms before the timeout (the connection is still there: ct_state est) and, on a
twin connection, exactly at it (gone: not est). Through ``ctaccel replay`` in the reference
engine and both compiled modes (the fast path honours the policy too: the probes of long-lived
connections come to it after warm traffic). Then: without the policy the "at" probes are
still established (the defaults are far longer); a ``default:`` policy applies to a zone
without its own; a policy is fixed at commit, as OVS keeps ``conn->tp_id``; bad specs are one
clear error.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from ctaccel.bench.netns import FIREWALL
from ctaccel.cli import main
from ctaccel.conntrack import Conntrack
from ctaccel.conntrack.timeouts import (
    POLICY_NAMES,
    TM_OTHER_BIDIR,
    TM_UDP_MULTIPLE,
    parse_timeout_policies,
)
from ctaccel.errors import InputError

A, B = ("02:00:00:00:00:01", "10.1.0.1"), ("02:00:00:00:00:02", "10.1.0.2")
# one value per attribute, all different, all far below OVS's defaults
SECONDS = {name: 3 + i for i, name in enumerate(POLICY_NAMES)}
POLICY = "5:" + ",".join(f"{k}={v}" for k, v in SECONDS.items())
MODES = ("reference", "recirc", "assume-established")


def _f(src, dst, l4):
    return Ether(src=src[0], dst=dst[0]) / IP(src=src[1], dst=dst[1]) / l4


def _tcp(src, dst, sport, dport, flags, seq, ack, data=b""):
    return _f(src, dst, TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack,
                            window=8192) / data)  # fmt: skip


def _scenario(name: str, port: int, t0: float, late_ms: int):
    """(events, probe): packets that leave a connection in the state ``name`` times, the
    last at ``t_armed``; the probe ``late_ms`` after its timeout would end it (-1: before)."""
    c, s = 1000, 5000
    a2b = lambda l4: (1, _f(A, B, l4))  # noqa: E731
    b2a = lambda l4: (2, _f(B, A, l4))  # noqa: E731
    up = lambda fl, d=b"": (1, _tcp(A, B, port, 80, fl, c, s, d))  # noqa: E731
    down = lambda fl, d=b"": (2, _tcp(B, A, 80, port, fl, s, c, d))  # noqa: E731
    steps = {
        "udp_first": ([a2b(UDP(sport=port, dport=53))], b2a(UDP(sport=53, dport=port))),
        "udp_single": (
            [a2b(UDP(sport=port, dport=53)), a2b(UDP(sport=port, dport=53))],
            b2a(UDP(sport=53, dport=port)),
        ),
        "udp_multiple": (
            [a2b(UDP(sport=port, dport=53)), b2a(UDP(sport=53, dport=port))],
            a2b(UDP(sport=port, dport=53)),
        ),
        "icmp_first": ([a2b(ICMP(type=8, id=port))], b2a(ICMP(type=0, id=port))),
        "icmp_reply": (
            [a2b(ICMP(type=8, id=port)), b2a(ICMP(type=0, id=port))],
            a2b(ICMP(type=8, id=port, seq=1)),
        ),
    }
    if name in steps:
        before, probe = steps[name]
    else:
        syn = (1, _tcp(A, B, port, 80, "S", c - 1, 0))
        synack = (2, _tcp(B, A, 80, port, "SA", s - 1, c))
        ack = up("A")
        fin_a, fin_b = up("FA"), down("FA")
        last = (1, _tcp(A, B, port, 80, "A", c + 1, s + 1))
        seq = {"tcp_syn_sent": ([syn], synack), "tcp_syn_recv": ([syn, synack], ack),
               "tcp_established": ([syn, synack, ack], down("PA", b"x")),
               "tcp_fin_wait": ([syn, synack, ack, fin_a], down("A")),
               "tcp_time_wait": ([syn, synack, ack, fin_a, fin_b], last),
               "tcp_close": ([syn, synack, ack, fin_a, fin_b, last],
                             (2, _tcp(B, A, 80, port, "A", s + 1, c + 2)))}  # fmt: skip
        before, probe = seq[name]
    events = [(p, t0 + 0.01 * i, frame) for i, (p, frame) in enumerate(before)]
    armed = events[-1][1]
    events.append((probe[0], armed + SECONDS[name] + late_ms / 1000, probe[1]))
    return events


def _capture(tmp):
    events, probes = [], []
    for i, name in enumerate(POLICY_NAMES):
        for k, late in enumerate((-1, 0)):
            ev = _scenario(name, 20000 + 10 * i + k, 0.1 * i, late)
            events += ev
            probes.append((ev[-1][2], name, late))
    events.sort(key=lambda e: e[1])
    ins = []
    for port in (1, 2):
        frames = []
        for p, t, frame in events:
            if p == port:
                frame.time = 1_700_000_000 + round(t, 3)
                frames.append(frame)
        wrpcap(str(tmp / f"p{port}.pcap"), frames)
        ins += ["--in", f"{port}={tmp / f'p{port}.pcap'}"]
    order = {id(frame): n for n, (_p, _t, frame) in enumerate(events)}
    return ins, [(order[id(frame)], name, late) for frame, name, late in probes]


def _replay(tmp, name, mode, ins, *extra):
    out = tmp / f"{name}-{mode}"
    done = CliRunner().invoke(main, ["replay", "--flows", str(tmp / "fw.flows"), "--out-dir",
                                     str(out), "--mode", mode, "--quiet", *ins, *extra],
                              catch_exceptions=False)  # fmt: skip
    assert done.exit_code == 0, done.output
    return [json.loads(x) for x in (out / "packets.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tp")
    (tmp / "fw.flows").write_text(FIREWALL)
    ins, probes = _capture(tmp)
    return tmp, ins, probes


@pytest.mark.parametrize("mode", MODES)
def test_every_attribute_expires_exactly_at_its_value(capture, mode):
    tmp, ins, probes = capture
    lines = _replay(tmp, "policy", mode, ins, "--timeout-policy", POLICY)
    for n, name, late in probes:
        est = "est" in lines[n]["ct_state"]
        assert est == (late < 0), (name, "1 ms before" if late < 0 else "at", lines[n])


def test_without_the_policy_every_probe_is_still_established(capture):
    tmp, ins, probes = capture
    lines = _replay(tmp, "none", "recirc", ins)
    assert all("est" in lines[n]["ct_state"] for n, _name, _late in probes)


def test_a_default_policy_applies_to_zones_without_their_own(capture):
    tmp, ins, probes = capture
    default = "default:" + POLICY.split(":", 1)[1]
    lines = _replay(tmp, "default", "assume-established", ins, "--timeout-policy", default)
    assert [("est" in lines[n]["ct_state"]) for n, *_ in probes] == [
        late < 0 for *_, late in probes
    ]
    # a zone with its own policy is not touched by default: (zone 7's policy, unused here)
    lines = _replay(tmp, "other", "recirc", ins, "--timeout-policy", "7:udp_first=1")
    assert all("est" in lines[n]["ct_state"] for n, _name, _late in probes)


def test_the_policy_is_the_one_the_zone_had_at_commit():
    ct = Conntrack()
    ct.set_timeout_policy(5, {"udp_multiple": 7})
    first = ct.policy_timeouts(5).copy()
    ct.set_timeout_policy(5, {"udp_multiple": 9})  # the same row, new values (OVS: update)
    assert ct.policy_timeouts(5)[TM_UDP_MULTIPLE] == 9000 != first[TM_UDP_MULTIPLE]
    assert ct.policy_timeouts(5)[TM_OTHER_BIDIR] == 9000  # other protocols: the udp_* values
    assert ct.policy_timeouts(6)[TM_UDP_MULTIPLE] == 30_000  # OVS's default elsewhere


@pytest.mark.parametrize("spec", ["5", "5:", "x:udp_first=1", "70000:udp_first=1",
                                  "5:udp_first", "5:udp_first=-1", "5:nope=3",
                                  "5:udp_first=1,tcp_close=x"])  # fmt: skip
def test_bad_specs_are_refused_with_the_reason(spec):
    with pytest.raises(InputError, match="--timeout-policy"):
        parse_timeout_policies([spec])
