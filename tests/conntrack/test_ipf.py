"""IP fragment reassembly (conntrack/ipf.py) against OVS 3.1's observed behaviour.

Expected outcomes come from the OVS source (lib/ipf.c) and runs of the real OVS 3.1.0 (see the
module docstring); frames are built with scapy, independently of our own builders.
"""

from __future__ import annotations

import numpy as np
import pytest
from scapy.layers.inet import IP, UDP, fragment
from scapy.layers.inet6 import (
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    fragment6,
)
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from ctaccel.conntrack.ipf import BATCH_MAX, Ipf
from ctaccel.packet import key as K

ETH = {"src": "50:54:00:00:00:01", "dst": "50:54:00:00:00:02"}


def key_of(frame: bytes) -> np.ndarray:
    """The two key columns ipf reads, from scapy's view of the frame."""
    k = K.new_key()
    p = Ether(frame)
    k[K.DL_TYPE] = p.type
    k[K.L3_OFS] = 14
    return k


def udp4(ident=100, size=3000, sport=1000, dport=2000):
    payload = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
    return (
        Ether(**ETH)
        / IP(src="10.0.0.1", dst="10.0.0.2", id=ident)
        / UDP(sport=sport, dport=dport)
        / Raw(payload)
    )


def frags4(pkt, size=1480):
    return [bytes(Ether(**ETH) / f) for f in fragment(pkt[IP], fragsize=size)]


def run(ipf, frames, order, zone=5, now=0, recirc_id=0):
    return [ipf.process(frames[i], key_of(frames[i]), zone, now, recirc_id) for i in order]


def test_in_order_reassembles_to_the_original_datagram():
    ipf = Ipf()
    orig = udp4()
    fr = frags4(orig)
    assert len(fr) == 3
    res = run(ipf, fr, [0, 1, 2])
    assert [r.kind for r in res] == ["held", "held", "complete"]
    assert res[2].fragments == fr
    # Byte for byte the datagram before fragmentation (MF cleared, length, checksum).
    assert res[2].reassembled == bytes(orig)
    p = Ether(res[2].reassembled)
    assert p[UDP].dport == 2000 and p[IP].flags == 0 and len(p[Raw].load) == 3000
    assert ipf.counters["ipf_v4_frags_accepted"] == 3
    assert ipf.counters["ipf_v4_frags_completed"] == 3
    assert ipf.nfrag == 0 and len(ipf) == 0


def test_out_of_order_emits_sorted_by_offset():
    ipf = Ipf()
    fr = frags4(udp4(101))
    res = run(ipf, fr, [2, 0, 1])
    assert [r.kind for r in res] == ["held", "held", "complete"]
    assert res[2].fragments == fr  # OVS: sorted by offset, not arrival order


def test_ethernet_padding_is_dropped_from_the_reassembled_packet():
    ipf = Ipf()
    orig = udp4(102, size=1500)
    fr = frags4(orig)
    fr[-1] = fr[-1] + b"\0" * 30  # a short last fragment padded on the wire
    res = run(ipf, fr, range(len(fr)))
    assert res[-1].reassembled == bytes(orig)
    assert res[-1].fragments[-1] == fr[-1]  # the fragment itself is emitted as received


def test_duplicate_is_invalid_and_the_original_completes():
    ipf = Ipf()
    fr = frags4(udp4(104))
    res = run(ipf, fr, [0, 0, 1, 2])
    assert [r.kind for r in res] == ["held", "invalid", "held", "complete"]
    assert res[1].reason == "ipf_v4_frags_overlapped"
    assert res[3].fragments == fr
    assert ipf.counters["ipf_v4_frags_overlapped"] == 1
    # A copy arriving after completion starts a new list (OVS: held, "last frag" list).
    again = run(ipf, fr, [2])[0]
    assert again.kind == "held" and len(ipf) == 1


def test_overlap_rules_follow_ovs_end_point_test():
    ipf = Ipf()
    orig = udp4(106, size=6000)
    fr = frags4(orig)
    ip_bytes = bytes(orig[IP])
    # Starts inside fragment 0: invalid.
    inside = bytes(
        Ether(**ETH)
        / IP(src="10.0.0.1", dst="10.0.0.2", id=106, flags="MF", frag=1000 // 8, proto=17)
        / Raw(ip_bytes[20 + 1000 : 20 + 1000 + 1480])
    )
    # Strictly contains fragment 1 ([1480, 2959]): OVS accepts it, then the list is stuck.
    around = bytes(
        Ether(**ETH)
        / IP(src="10.0.0.1", dst="10.0.0.2", id=106, flags="MF", frag=1472 // 8, proto=17)
        / Raw(ip_bytes[20 + 1472 : 20 + 1472 + 1496])
    )
    assert run(ipf, fr, [1])[0].kind == "held"
    assert ipf.process(around, key_of(around), 5, 0).kind == "held"
    assert ipf.process(inside, key_of(inside), 5, 0).kind == "invalid"
    kinds = [r.kind for r in run(ipf, fr, [0, 2, 3, 4])]
    # Seen on OVS 3.1.0: fragment 0 ends inside, fragment 2 starts inside "around".
    assert kinds == ["invalid", "invalid", "held", "held"]
    assert ipf.counters["ipf_v4_frags_overlapped"] == 3


def test_missing_last_fragment_expires_and_leaves_as_invalid_with_another_packet():
    ipf = Ipf()
    fr = frags4(udp4(300))
    run(ipf, fr, [0, 1], now=1000)
    assert ipf.next_flush_ms == 1000 + 15_000 + 1
    assert ipf.flush(16_000) == []  # exactly at expiration: not yet
    out = ipf.flush(16_001)
    assert [f.frame for f in out] == fr[:2]
    assert all(f.expired and f.zone == 5 for f in out)
    assert ipf.counters["ipf_v4_frags_expired"] == 2
    assert ipf.nfrag == 0 and len(ipf) == 0
    # The last fragment now starts a fresh list instead of completing anything.
    assert run(ipf, fr, [2], now=16_002)[0].kind == "held"


def test_expired_lists_leave_one_per_ct_call_and_stale_ones_are_purged():
    ipf = Ipf()
    a, b, c = frags4(udp4(1)), frags4(udp4(2)), frags4(udp4(3))
    for fr in (a, b, c):
        run(ipf, fr, [0], now=0)
    # A fragment of another datagram triggers the flush: its own list stays held.
    res = run(ipf, frags4(udp4(4)), [0], now=15_001)[0]
    assert res.kind == "held" and [f.frame for f in res.flushed] == [a[0]]
    assert [f.frame for f in ipf.flush(15_002)] == [b[0]]
    assert ipf.expire(25_000) == 1  # c: 10 s after expiration, never sent
    assert ipf.counters["ipf_v4_frags_purged"] == 1
    assert ipf.flush(25_001) == []


def test_a_late_fragment_can_still_complete_an_expired_list_before_it_is_flushed():
    ipf = Ipf()
    fr = frags4(udp4(7))
    run(ipf, fr, [0, 1], now=0)
    res = run(ipf, fr, [2], now=20_000)[0]  # OVS adds first, flushes expired after
    assert res.kind == "complete" and res.fragments == fr and res.flushed == []


def test_too_small_non_last_fragments_are_invalid_last_one_is_held():
    ipf = Ipf()
    fr = frags4(udp4(103, size=1200), size=504)
    res = run(ipf, fr, range(len(fr)))
    assert [r.kind for r in res] == ["invalid", "invalid", "held"]
    assert res[0].reason == "ipf_v4_frags_too_small"
    assert ipf.counters["ipf_v4_frags_too_small"] == 2
    lowered = Ipf(min_frag_size_v4=500)
    res = run(lowered, fr, range(len(fr)))
    assert res[-1].kind == "complete"


def test_ipv6_with_hop_by_hop_before_the_fragment_header():
    ipf = Ipf()
    payload = Raw(bytes(range(256)) * 11 + b"x" * 184)
    with_fh = Ether(**ETH) / IPv6(src="fd00::1", dst="fd00::2") / IPv6ExtHdrHopByHop()
    with_fh = with_fh / IPv6ExtHdrFragment(id=7) / UDP(sport=1000, dport=2000) / payload
    fr = [bytes(Ether(**ETH) / f) for f in fragment6(with_fh[IPv6], 1400)]
    assert len(fr) == 3
    res = run(ipf, fr, [1, 0, 2])
    assert [r.kind for r in res] == ["held", "held", "complete"]
    assert res[2].fragments == fr
    datagram = Ether(**ETH) / IPv6(src="fd00::1", dst="fd00::2") / IPv6ExtHdrHopByHop()
    datagram = datagram / UDP(sport=1000, dport=2000) / payload
    assert res[2].reassembled == bytes(datagram)
    p = Ether(res[2].reassembled)
    assert p[UDP].dport == 2000 and IPv6ExtHdrFragment not in p
    assert ipf.counters["ipf_v6_frags_completed"] == 3


def test_ipv6_extension_header_after_the_fragment_header_never_completes():
    ipf = Ipf()
    pkt = Ether(**ETH) / IPv6(src="fd00::1", dst="fd00::2") / IPv6ExtHdrFragment(id=8)
    pkt = pkt / IPv6ExtHdrDestOpt() / UDP(sport=1, dport=2) / Raw(b"q" * 3000)
    fr = [bytes(Ether(**ETH) / f) for f in fragment6(pkt[IPv6], 1400)]
    assert [r.kind for r in run(ipf, fr, range(len(fr)))] == ["held"] * 3


def test_ipv6_too_small_and_key_without_protocol():
    ipf = Ipf()
    pkt = Ether(**ETH) / IPv6(src="fd00::1", dst="fd00::2") / IPv6ExtHdrFragment(id=9)
    pkt = pkt / UDP(sport=1, dport=2) / Raw(b"q" * 3000)
    fr = [bytes(Ether(**ETH) / f) for f in fragment6(pkt[IPv6], 1000)]
    res = run(ipf, fr, range(len(fr)))
    assert [r.kind for r in res] == ["invalid"] * (len(fr) - 1) + ["held"]
    assert ipf.counters["ipf_v6_frags_too_small"] == len(fr) - 1


def test_more_fragments_than_a_batch_leave_with_the_next_ct_call():
    ipf = Ipf()
    fr = frags4(udp4(202, size=40 * 1184 - 8), size=1184)
    assert len(fr) == 40
    res = run(ipf, fr, range(40))
    assert res[-1].kind == "complete"
    assert res[-1].fragments == fr[:BATCH_MAX]
    assert ipf.next_flush_ms == 0
    res[-1].ct_md = np.array([K.CS_TRACKED | K.CS_NEW])
    rest = ipf.flush(1, batch_len=1)
    assert [f.frame for f in rest] == fr[BATCH_MAX:]
    assert all(not f.expired and f.result is res[-1] for f in rest)
    assert ipf.counters["ipf_v4_frags_completed"] == 40 and ipf.nfrag == 0


def test_second_pass_after_recirculation_reassembles_again():
    ipf = Ipf()
    fr = frags4(udp4(201))
    first = run(ipf, fr, [0, 2, 1])[-1]
    second = run(ipf, first.fragments, range(3), zone=6, recirc_id=1)
    assert [r.kind for r in second] == ["held", "held", "complete"]
    assert second[-1].fragments == fr and second[-1].reassembled == first.reassembled


def test_lists_are_keyed_by_zone_and_recirc_id():
    ipf = Ipf()
    fr = frags4(udp4(5))
    ipf.process(fr[0], key_of(fr[0]), 5, 0)
    ipf.process(fr[1], key_of(fr[1]), 6, 0)
    ipf.process(fr[2], key_of(fr[2]), 5, 0, recirc_id=3)
    assert len(ipf) == 3 and ipf.nfrag == 3


def test_limits_nfrag_max_and_disabled():
    ipf = Ipf(max_frags=2)
    fr = frags4(udp4(6))
    assert [r.kind for r in run(ipf, fr, [0, 1, 2])] == ["held", "held", "invalid"]
    assert ipf.counters["ipf_nfrag_max"] == 1
    off = Ipf(enabled_v4=False)
    res = run(off, fr, [0])[0]
    assert res.kind == "invalid" and res.reason == "ipf_disabled"
    none = Ipf(enabled_v4=False, enabled_v6=False)
    small = frags4(udp4(6, size=1200), size=504)
    assert [r.reason for r in run(none, small, [0])] == ["ipf_disabled"]
    assert none.counters["ipf_v4_frags_too_small"] == 0


def test_bad_header_checksum_and_non_fragments():
    ipf = Ipf()
    fr = frags4(udp4(8))
    bad = bytearray(fr[0])
    bad[14 + 10] ^= 0xFF
    assert ipf.process(bytes(bad), key_of(bytes(bad)), 0, 0).reason == "ipf_l3csum_err"
    whole = bytes(udp4(9, size=100))
    assert ipf.process(whole, key_of(whole), 0, 0).kind == "not_fragment"
    truncated = fr[0][:-10]  # total length says more than the frame holds
    assert ipf.process(truncated, key_of(truncated), 0, 0).reason == "ipf_bad_header"
    assert ipf.nfrag == 0


def test_reassembly_over_65535_bytes_fails_and_closes_the_list():
    ipf = Ipf()
    hdr = {"src": "10.0.0.1", "dst": "10.0.0.2", "id": 11, "proto": 17}
    fr = [
        bytes(Ether(**ETH) / IP(flags="MF", **hdr) / Raw(b"a" * 1480)),
        bytes(Ether(**ETH) / IP(flags="MF", frag=1480 // 8, **hdr) / Raw(b"b" * 62520)),
        bytes(Ether(**ETH) / IP(frag=64000 // 8, **hdr) / Raw(b"c" * 1536)),
    ]
    res = run(ipf, fr, [0, 1, 2])
    assert [r.kind for r in res] == ["held"] * 3  # 20 + 65536 bytes: OVS refuses
    assert ipf.counters["ipf_reassembly_failed"] == 1
    assert run(ipf, fr, [1])[0].reason == "ipf_list_closed"
    assert [f.frame for f in ipf.flush(15_001)] == fr  # sorted, leaves as expired


def test_rewrite_fragments_applies_nat_of_the_reassembled_packet():
    ipf = Ipf()
    fr = frags4(udp4(12))
    res = run(ipf, fr, [0, 1, 2])[-1]
    natted = Ether(res.reassembled)
    natted[IP].dst = "192.168.0.9"
    natted[UDP].dport = 8080
    del natted[IP].chksum
    del natted[UDP].chksum
    out = ipf.rewrite_fragments(res, bytes(natted))
    assert ipf.rewrite_fragments(res, res.reassembled) == fr
    for b in out:
        p = Ether(b)
        assert p[IP].dst == "192.168.0.9"
        q = IP(bytes(p[IP]))
        sent = q.chksum
        del q.chksum
        assert IP(bytes(q)).chksum == sent  # header checksum still valid
    assert Ether(out[0])[UDP].dport == 8080


def test_with_the_project_parser():
    parse = pytest.importorskip("ctaccel.packet.parse")
    ipf = Ipf()
    fr = frags4(udp4(13))
    res = []
    for f in fr:
        k = K.new_key()
        parse.parse_frame(np.frombuffer(f, np.uint8), 1, k)
        assert k[K.NW_FRAG] & K.FRAG_ANY
        res.append(ipf.process(f, k, 0, 0))
    assert res[-1].kind == "complete"
    k = K.new_key()
    parse.parse_frame(np.frombuffer(res[-1].reassembled, np.uint8), 1, k)
    assert k[K.NW_FRAG] == 0 and k[K.TP_DST] == 2000 and k[K.PARSE_FLAGS] == 0
