"""Bad input never crashes and never loses other work.

Random bytes, valid frames cut at every length and frames with random bytes flipped go
through a stateful firewall; every packet must come back with either outputs or a named drop
reason, and a good connection interleaved with the garbage must still work end to end.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctaccel.conntrack import Conntrack
from ctaccel.datapath.reference import ReferenceEngine
from ctaccel.demo import TCP_FLOWS, UDP_FLOWS
from ctaccel.io.pcap import write_pcap
from ctaccel.ofproto.program import DROP_REASONS
from ctaccel.ofproto.rules import parse_flows
from ctaccel.packet import build as B
from ctaccel.replay import replay

MA, MB = "50:54:00:00:00:01", "50:54:00:00:00:02"
ALL_RULES = TCP_FLOWS + UDP_FLOWS.replace("table=0,", "table=2,")


def _samples():
    return [
        B.tcp_frame(MA, MB, "10.0.0.1", "10.0.0.2", 1000, 80, "S", 1, 0),
        B.tcp_frame(MA, MB, "10.0.0.1", "10.0.0.2", 1000, 80, "PA", 1, 1, b"hello" * 20),
        B.udp_frame(MA, MB, "10.0.0.1", "10.0.0.2", 53, 5353, b"q" * 30),
        B.udp_frame(MA, MB, "2001:db8::1", "2001:db8::2", 53, 5353, b"q" * 30),
        B.tcp_frame(MA, MB, "2001:db8::1", "2001:db8::2", 1000, 80, "S", 1, 0),
        B.icmp_frame(MA, MB, "10.0.0.1", "10.0.0.2", 8, 0, id=7, seq=1, payload=b"p" * 8),
    ]


def _engine():
    return ReferenceEngine(parse_flows(ALL_RULES, "robust.flows"), Conntrack())


def _check(res):
    assert res.outputs or res.drop_reason in DROP_REASONS, res


def test_every_truncation_of_every_sample_is_a_result():
    e = _engine()
    for frame in _samples():
        for cut in range(len(frame) + 1):
            _check(e.process(frame[:cut], 1 + cut % 2, cut))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=0, max_size=200))
def test_random_bytes_are_results(data):
    _check(_engine().process(data, 1, 0))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(range(6)),
    st.lists(st.tuples(st.integers(0, 199), st.integers(0, 255)), min_size=1, max_size=6),
)
def test_flipped_bytes_are_results(which, flips):
    frame = bytearray(_samples()[which])
    for pos, val in flips:
        if pos < len(frame):
            frame[pos] = val
    _check(_engine().process(bytes(frame), 1, 0))


def test_garbage_does_not_disturb_a_good_connection(tmp_path):
    good = [
        (1, B.tcp_frame(MA, MB, "10.0.0.1", "10.0.0.2", 40000, 80, "S", 1000, 0)),
        (2, B.tcp_frame(MB, MA, "10.0.0.2", "10.0.0.1", 80, 40000, "SA", 5000, 1001)),
        (1, B.tcp_frame(MA, MB, "10.0.0.1", "10.0.0.2", 40000, 80, "A", 1001, 5001)),
        (2, B.tcp_frame(MB, MA, "10.0.0.2", "10.0.0.1", 80, 40000, "PA", 5001, 1001, b"ok")),
    ]
    junk = [b"", b"\x00" * 13, b"\xff" * 60, good[0][1][:30], good[1][1][:40]]
    packets = []
    for i, (port, frame) in enumerate(good):
        packets.append((port, junk[i % len(junk)]))
        packets.append((port, frame))
    flows = tmp_path / "flows.txt"
    flows.write_text(TCP_FLOWS)
    inputs = []
    for port in (1, 2):
        idx = [i for i, (p, _f) in enumerate(packets) if p == port]
        path = tmp_path / f"p{port}.pcap"
        write_pcap(str(path), [packets[i][1] for i in idx], [(10 + i) * 1_000_000 for i in idx])
        inputs.append((port, str(path)))
    replay(str(flows), inputs, str(tmp_path / "out"))
    recs = [json.loads(x) for x in (tmp_path / "out" / "packets.jsonl").read_text().splitlines()]
    assert len(recs) == len(packets)
    good_recs = recs[1::2]
    assert [r["out"] for r in good_recs] == [[2], [1], [2], [1]]
    assert [r["ct_state"] for r in good_recs] == [
        "new|trk",
        "est|rpl|trk",
        "est|trk",
        "est|rpl|trk",
    ]
    for r in recs[0::2]:
        assert r["out"] or r["drop_reason"] in DROP_REASONS
