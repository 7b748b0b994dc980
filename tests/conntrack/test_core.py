"""The ct action through Conntrack.execute, on scapy-built frames parsed by parse_frame.

Expected ct_states are OVS 3.1's (lib/conntrack.c and the measurements in
shared/reference/ovs-oracle-findings.md).
"""

from __future__ import annotations

import numpy as np
import pytest
from scapy.all import (
    ICMP,
    IP,
    TCP,
    UDP,
    Ether,
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6ND_NS,
    IPerror,
    IPv6,
    Raw,
)

from ctaccel.conntrack import Conntrack, action_row, core, lifecycle
from ctaccel.conntrack.nat import no_nat_spec
from ctaccel.conntrack.table import CT_SCRATCH_WIDTH
from ctaccel.conntrack.timeouts import TM_UDP_FIRST, TM_UDP_MULTIPLE
from ctaccel.packet.key import (
    CT_LABEL,
    CT_MARK,
    CT_NW_DST,
    CT_NW_PROTO,
    CT_NW_SRC,
    CT_STATE,
    CT_TP_DST,
    CT_TP_SRC,
    CT_ZONE,
    KEY_WIDTH,
    format_ct_state,
    get_wide,
)
from ctaccel.packet.parse import parse_frame

A, B, R = "10.1.1.1", "10.1.1.2", "10.1.1.254"
A6, B6 = "2001:db8::1", "2001:db8::2"
SEC = 1000


def ip_int(addr: str) -> int:
    return int.from_bytes(bytes(map(int, addr.split("."))), "big")


class Packet:
    """A frame and its key, as the engine would carry them between ct() actions."""

    def __init__(self, scapy_pkt):
        self.frame = np.frombuffer(bytes(scapy_pkt), np.uint8).copy()
        self.key = np.zeros(KEY_WIDTH, np.int64)
        parse_frame(self.frame, 1, self.key)
        self.conn = -1

    def ct(self, ct: Conntrack, zone=0, **kw) -> str:
        now_ms, nat = kw.pop("now_ms", 0), kw.pop("nat", None)
        self.conn = ct.execute(self.frame, self.key, action_row(zone, **kw), now_ms, self.conn,
                               nat)  # fmt: skip
        return format_ct_state(int(self.key[CT_STATE]))


def state(ct, scapy_pkt, zone=0, **kw) -> str:
    return Packet(scapy_pkt).ct(ct, zone, **kw)


def udp(src, dst, sport, dport, payload=b"data", **ipkw):
    return Ether() / IP(src=src, dst=dst, **ipkw) / UDP(sport=sport, dport=dport) / Raw(payload)


def udp6(src, dst, sport, dport):
    return Ether() / IPv6(src=src, dst=dst) / UDP(sport=sport, dport=dport) / Raw(b"data")


@pytest.fixture
def ct():
    return Conntrack()


# --- UDP / other ----------------------------------------------------------------------------


def test_udp_firewall_sequence(ct):
    assert state(ct, udp(B, A, 2, 1)) == "new|trk"  # not committed: leaves nothing
    assert len(ct) == 0
    p = Packet(udp(A, B, 1, 2))
    assert p.ct(ct, commit=True) == "new|trk"
    assert len(ct) == 1
    r = Packet(udp(B, A, 2, 1))
    assert r.ct(ct, now_ms=10) == "est|rpl|trk"
    assert get_wide(r.key, CT_NW_SRC, 4) == ip_int(A)
    assert get_wide(r.key, CT_NW_DST, 4) == ip_int(B)
    assert (r.key[CT_NW_PROTO], r.key[CT_TP_SRC], r.key[CT_TP_DST]) == (17, 1, 2)
    assert state(ct, udp(A, B, 1, 2), now_ms=20) == "est|trk"


def test_udp_unidirectional_never_established(ct):
    for t in range(5):
        assert state(ct, udp(A, B, 1, 2), commit=True, now_ms=t * SEC) == "new|trk"
    assert len(ct) == 1


def test_udp_expiry_exact_edges(ct):
    first = ct.timeouts[TM_UDP_FIRST]
    state(ct, udp(A, B, 1, 2), commit=True, now_ms=0)
    assert ct.dump(first - 1) and not ct.dump(first)
    # T-1: still the same connection (reply is est); T: gone, the reply is new
    assert state(ct, udp(B, A, 2, 1), now_ms=first - 1) == "est|rpl|trk"
    replied = ct.timeouts[TM_UDP_MULTIPLE]
    t0 = first - 1
    assert state(ct, udp(A, B, 1, 2), now_ms=t0 + replied - 1) == "est|trk"
    t1 = t0 + replied - 1
    assert state(ct, udp(B, A, 2, 1), now_ms=t1 + replied) == "new|trk"
    assert len(ct) == 0 and ct.counters["expired_at_lookup"] == 1


def test_second_unreplied_packet_does_not_shorten_life(ct):
    state(ct, udp(A, B, 1, 2), commit=True, now_ms=0)
    state(ct, udp(A, B, 1, 2), now_ms=50 * SEC)
    assert ct.dump(50 * SEC + ct.timeouts[TM_UDP_FIRST] - 1)
    assert ct.sweep(50 * SEC + ct.timeouts[TM_UDP_FIRST]) == 1
    assert len(ct) == 0


def test_other_protocol_tracked_without_ports(ct):
    vrrp = Ether() / IP(src=A, dst=B, proto=112) / Raw(b"v" * 20)
    back = Ether() / IP(src=B, dst=A, proto=112) / Raw(b"w" * 20)
    p = Packet(vrrp)
    assert p.ct(ct, commit=True) == "new|trk"
    assert (p.key[CT_NW_PROTO], p.key[CT_TP_SRC], p.key[CT_TP_DST]) == (112, 0, 0)
    assert state(ct, back) == "est|rpl|trk"
    assert ct.dump(1) == [
        "112,orig=(src=10.1.1.1,dst=10.1.1.2,sport=0,dport=0),"
        "reply=(src=10.1.1.2,dst=10.1.1.1,sport=0,dport=0)"
    ]


def test_ipv6_udp(ct):
    assert state(ct, udp6(A6, B6, 5, 6), commit=True) == "new|trk"
    assert state(ct, udp6(B6, A6, 6, 5)) == "est|rpl|trk"


# --- zones, limits ------------------------------------------------------------------------


def test_zones_are_independent(ct):
    state(ct, udp(A, B, 1, 2), zone=0, commit=True)
    assert state(ct, udp(B, A, 2, 1), zone=1) == "new|trk"
    state(ct, udp(A, B, 1, 2), zone=1, commit=True)
    assert len(ct) == 2
    assert state(ct, udp(B, A, 2, 1), zone=1) == "est|rpl|trk"
    ct.flush(zone=1)
    assert len(ct) == 1 and state(ct, udp(B, A, 2, 1), zone=0) == "est|rpl|trk"


def test_zone_limit_zero_blocks_and_n_allows_n():
    ct = Conntrack(zone_limits={3: 0, 4: 2})
    assert state(ct, udp(A, B, 1, 2), zone=3, commit=True) == "new|trk"
    assert len(ct) == 0 and ct.counters["commit_refused_zone_limit"] == 1
    for port in (1, 2, 3):
        state(ct, udp(A, B, port, 9), zone=4, commit=True)
    assert len(ct) == 2 and ct.zone_count(4) == 2
    assert ct.counters["commit_refused_zone_limit"] == 2
    ct.flush(zone=4)
    assert ct.zone_count(4) == 0
    state(ct, udp(A, B, 3, 9), zone=4, commit=True)
    assert len(ct) == 1
    # unlimited zones
    for port in range(1, 6):
        state(ct, udp(A, B, port, 9), zone=7, commit=True)
    assert len(ct) == 6


def test_default_limit_count_is_shared_as_in_ovs_31():
    ct = Conntrack(default_zone_limit=3, zone_limits={9: 1})
    for zone in (1, 2, 1, 2):
        state(ct, udp(A, B, zone, 10 + len(ct)), zone=zone, commit=True)
    assert len(ct) == 3  # zones 1 and 2 share the default entry's count
    state(ct, udp(A, B, 1, 1), zone=9, commit=True)
    state(ct, udp(A, B, 1, 2), zone=9, commit=True)
    assert len(ct) == 4 and ct.zone_count(9) == 1 and ct.zone_count(None) == 3


def test_max_conns_refuses_and_counts():
    ct = Conntrack(max_conns=2, initial_capacity=1)
    for port in (1, 2, 3):
        assert state(ct, udp(A, B, port, 9), commit=True) == "new|trk"
    assert len(ct) == 2 and ct.counters["commit_refused_max_conns"] == 1
    assert ct.capacity <= 4  # rows: at most two per connection (one may be an extension)


def test_a_flood_at_the_limit_scans_the_table_only_when_something_can_expire():
    """A commit refused at a limit frees expired connections first (the answer depends only on
    packet times), but scans the table only when one may have expired since the last scan:
    not once per packet (or millisecond) of a flood. Expiry stays exact to the millisecond,
    also for a clock that goes back and after a timeout policy shortens the timers."""
    from ctaccel.conntrack.table import ST_SWEEP_AT

    ct = Conntrack(zone_limits={4: 3})
    for port in (1, 2, 3):  # udp_first: 60 s; the shortest timeout of all is 30 s
        state(ct, udp(A, B, port, 9), zone=4, commit=True, now_ms=0)
    for t in range(1, 2001):  # a flood of refused commits
        assert state(ct, udp(R, B, t, 9), zone=4, commit=True, now_ms=t) == "new|trk"
    assert len(ct) == 3 and ct.counters["commit_refused_zone_limit"] == 2000
    assert int(ct.stats[ST_SWEEP_AT]) == 1  # one scan, at the first refusal
    state(ct, udp(R, B, 1, 7), zone=4, commit=True, now_ms=60 * SEC - 1)
    assert len(ct) == 3 and ct.counters["swept"] == 0  # 1 ms early
    state(ct, udp(R, B, 2, 7), zone=4, commit=True, now_ms=60 * SEC)
    assert len(ct) == 1 and ct.counters["swept"] == 3  # at expiry: freed, one committed
    state(ct, udp(R, B, 3, 7), zone=4, commit=True, now_ms=60 * SEC)
    state(ct, udp(R, B, 4, 7), zone=4, commit=True, now_ms=60 * SEC)
    state(ct, udp(R, B, 5, 7), zone=4, commit=True, now_ms=60 * SEC + 1)
    assert len(ct) == 3 and int(ct.stats[ST_SWEEP_AT]) == 60 * SEC
    # a clock that goes back invalidates the bound (a scan, nothing freed)
    state(ct, udp(R, B, 6, 7), zone=4, commit=True, now_ms=10 * SEC)
    assert int(ct.stats[ST_SWEEP_AT]) == 10 * SEC and len(ct) == 3
    # a shorter policy: timers armed after it may expire before the last scan's bound
    ct.flush()
    for port in (7, 8, 9):
        state(ct, udp(R, B, port, 7), zone=4, commit=True, now_ms=100 * SEC)
    state(ct, udp(R, B, 10, 7), zone=4, commit=True, now_ms=100 * SEC)  # scan: none before 130 s
    ct.flush()
    ct.set_timeout_policy(4, {"udp_first": 1})
    for port in (7, 8, 9):
        state(ct, udp(R, B, port, 7), zone=4, commit=True, now_ms=100 * SEC + 1)
    state(ct, udp(R, B, 10, 7), zone=4, commit=True, now_ms=101 * SEC)
    assert len(ct) == 3
    state(ct, udp(R, B, 11, 7), zone=4, commit=True, now_ms=101 * SEC + 1)
    assert len(ct) == 1  # expired at exactly 1 s


def test_table_grows_under_churn():
    ct = Conntrack(initial_capacity=2)
    for port in range(1, 200):
        state(ct, udp(A, B, port, 9), commit=True, now_ms=port)
    assert len(ct) == 199 and ct.capacity >= 199
    for port in range(1, 200, 2):
        assert state(ct, udp(B, A, 9, port), now_ms=300) == "est|rpl|trk"
    assert ct.sweep(10**9) == 199 and len(ct) == 0


def test_a_monotonic_sweep_removes_what_a_full_sweep_removes(monkeypatch):
    """sweep(monotonic=True) skips the table scan while nothing can have expired; on the same
    traffic (a clock that never goes back, short and long timeouts, replies, sweeps at
    uneven times) it removes the same connections at the same sweeps as a full scan, and it
    does skip some scans."""
    rng = np.random.default_rng(7)
    events, now = [], 0
    for _ in range(400):
        now += int(rng.integers(0, 4 * SEC))
        if rng.random() < 0.2:
            events.append(("sweep", now))
        else:
            port = int(rng.integers(1, 40))
            pkt = udp(A, B, port, 9) if rng.random() < 0.6 else udp(B, A, 9, port)
            events.append((pkt, now))
    timeouts = {"udp_first": 9 * SEC, "udp_single": 9 * SEC, "udp_multiple": 5 * SEC}
    plain, skipping = Conntrack(timeouts_ms=timeouts), Conntrack(timeouts_ms=timeouts)
    # the ct kernel compiled before sweep_expired is replaced by a Python counter below
    state(Conntrack(), udp(A, B, 1, 9), commit=True, now_ms=0)
    scanned = []
    scan = lifecycle.sweep_expired
    monkeypatch.setattr(
        lifecycle, "sweep_expired", lambda t, now: scanned.append(now) or scan(t, now)
    )
    sweeps = 0
    for what, t in events:
        if what != "sweep":
            got = [state(c, what, commit=True, now_ms=t) for c in (plain, skipping)]
            assert got[0] == got[1]
            continue
        sweeps += 1
        assert plain.sweep(t) == skipping.sweep(t, monotonic=True)
        assert plain.dump(t) == skipping.dump(t) and len(plain) == len(skipping)
    assert plain.counters["swept"] > 10
    assert skipping.counters["swept"] == plain.counters["swept"]
    assert sweeps < len(scanned) < 2 * sweeps  # every plain sweep scans; some skipping ones not


def test_the_running_sweep_frees_every_expired_connection_a_part_at_a_time():
    """sweep_some scans at most ``max_rows`` rows per call, starts a revolution only when
    something may have expired and at most once per SWEEP_INTERVAL_MS, and frees what a
    full sweep frees: each expired connection within the interval plus one revolution."""
    from ctaccel.conntrack import SWEEP_INTERVAL_MS

    timeouts = {"udp_first": 9 * SEC, "udp_single": 9 * SEC, "udp_multiple": 5 * SEC}
    ct, full = Conntrack(timeouts_ms=timeouts), Conntrack(timeouts_ms=timeouts)
    rng = np.random.default_rng(11)
    now, calls, revolutions = 0, 0, 0
    for _round in range(30):
        for _ in range(40):  # new connections and replies, then the clock moves on
            port = int(rng.integers(1, 400))
            pkt = udp(A, B, port, 9) if rng.random() < 0.7 else udp(B, A, 9, port)
            assert (state(ct, pkt, commit=True, now_ms=now)
                    == state(full, pkt, commit=True, now_ms=now))  # fmt: skip
        now += int(rng.integers(0, 3 * SEC))
        full.sweep(now)
        rows_before = ct.swept_rows
        for _ in range(ct.capacity // 16 + 2):  # enough calls for one revolution
            ct.sweep_some(now, max_rows=16)
            calls += 1
            assert ct.swept_rows - rows_before <= 16 * calls  # never more than asked
        assert ct.dump(now) == full.dump(now)  # the same live connections, always
        if ct._rev_start == now and ct._rev_row is None:  # a revolution ran at `now`
            assert len(ct) == len(full)  # it freed all a full sweep did
            revolutions += 1
        else:  # none started (the last one < SWEEP_INTERVAL_MS ago, or nothing due yet)
            assert len(ct) >= len(full)
    assert full.counters["swept"] > 50 and revolutions > 10
    # nothing can expire before the bound: calls cost nothing
    ct.flush()
    state(ct, udp(A, B, 1, 9), commit=True, now_ms=now)
    # a whole revolution at +1 s: the connection expires at +9 s, one armed since no earlier
    # than +1 s + the shortest timeout (5 s)
    ct.sweep_some(now + SWEEP_INTERVAL_MS, max_rows=1 << 20)
    scanned = ct.swept_rows
    for t in range(now + SWEEP_INTERVAL_MS, now + SWEEP_INTERVAL_MS + 5 * SEC, 500):
        assert ct.sweep_some(t) == 0
    assert ct.swept_rows == scanned
    while ct.sweep_some(now + 9 * SEC, max_rows=4) == 0 and ct._rev_row is not None:
        pass
    assert len(ct) == 0 and ct.swept_rows > scanned


# --- force, mark, label, cached connection -----------------------------------------------


def test_force_commit_flips_direction(ct):
    state(ct, udp(A, B, 1, 2), commit=True)
    p = Packet(udp(B, A, 2, 1))
    assert p.ct(ct, commit=True, force=True) == "new|trk"
    assert ct.counters["force_deleted"] == 1
    assert ct.dump(1) == [
        "udp,orig=(src=10.1.1.2,dst=10.1.1.1,sport=2,dport=1),"
        "reply=(src=10.1.1.1,dst=10.1.1.2,sport=1,dport=2)"
    ]
    assert state(ct, udp(A, B, 1, 2)) == "est|rpl|trk"
    # force in the original direction changes nothing
    assert state(ct, udp(B, A, 2, 1), commit=True, force=True) == "est|trk"


def test_mark_and_label_masks(ct):
    p = Packet(udp(A, B, 1, 2))
    p.ct(ct, commit=True, mark=0xF0, label=(0xAB << 96) | 0x11)
    assert p.key[CT_MARK] == 0xF0
    assert get_wide(p.key, CT_LABEL, 4) == (0xAB << 96) | 0x11
    q = Packet(udp(B, A, 2, 1))
    q.ct(ct, commit=True, mark=0x0F, mark_mask=0x0C, label=0x22, label_mask=0xF0)
    assert q.key[CT_MARK] == 0xFC  # 0xF0 with bits 2-3 replaced by 0x0C & 0x0F
    assert get_wide(q.key, CT_LABEL, 4) == (0xAB << 96) | 0x21
    r = Packet(udp(A, B, 1, 2))
    r.ct(ct)
    assert r.key[CT_MARK] == 0xFC
    assert "mark=252,labels=0xab000000000000000000000021" in ct.dump(1)[0]


def test_uncommitted_new_has_no_mark_and_own_tuple(ct):
    p = Packet(udp(A, B, 1, 2))
    assert p.ct(ct, mark=5) == "new|trk"
    assert p.key[CT_MARK] == 0 and p.conn == -1
    assert (p.key[CT_TP_SRC], p.key[CT_TP_DST]) == (1, 2)


def test_cached_connection_same_zone(ct):
    p = Packet(udp(A, B, 1, 2))
    assert p.ct(ct, zone=5, commit=True) == "new|trk"
    handle = p.conn
    assert handle >= 0
    # a second ct() in the same zone reuses the connection: state unchanged, mark applied
    assert p.ct(ct, zone=5, mark=3) == "new|trk"
    assert p.conn == handle and p.key[CT_MARK] == 3
    assert ct.counters["cached_conn_hits"] == 1
    # the cache did not run the tracker again: still FIRST, the reply finds a live conn
    assert state(ct, udp(B, A, 2, 1), zone=5) == "est|rpl|trk"


def test_entering_another_zone_resets_state(ct):
    state(ct, udp(A, B, 1, 2), zone=1, commit=True)
    state(ct, udp(B, A, 2, 1), zone=1)
    p = Packet(udp(A, B, 1, 2))
    assert p.ct(ct, zone=1) == "est|trk"
    assert p.ct(ct, zone=2) == "new|trk"
    assert p.key[CT_ZONE] == 2


# --- ICMP ---------------------------------------------------------------------------------


def icmp(src, dst, **kw):
    return Ether() / IP(src=src, dst=dst) / ICMP(**kw) / Raw(b"ping-data")


def test_echo_tracking(ct):
    p = Packet(icmp(A, B, type=8, id=7, seq=1))
    assert p.ct(ct, commit=True) == "new|trk"
    assert (p.key[CT_TP_SRC], p.key[CT_TP_DST]) == (8, 0)
    assert state(ct, icmp(A, B, type=8, id=7, seq=2)) == "new|trk"
    assert state(ct, icmp(B, A, type=0, id=8, seq=1)) == "inv|trk"  # other id: no conn
    assert state(ct, icmp(B, A, type=0, id=7, seq=1)) == "est|rpl|trk"
    assert state(ct, icmp(A, B, type=8, id=7, seq=3)) == "est|trk"


@pytest.mark.parametrize(
    "kw",
    [
        dict(type=0, id=1),  # reply without a request
        dict(type=17, id=1),  # address mask request
        dict(type=8, code=1, id=1),  # query with a code
        dict(type=9),  # router advertisement
    ],
)
def test_untrackable_icmp_is_invalid(ct, kw):
    assert state(ct, icmp(A, B, **kw), commit=True) == "inv|trk"
    assert len(ct) == 0


def test_timestamp_and_info_queries_tracked(ct):
    assert state(ct, icmp(A, B, type=13, id=3), commit=True) == "new|trk"
    assert state(ct, icmp(B, A, type=14, id=3)) == "est|rpl|trk"
    assert state(ct, icmp(A, B, type=15, id=4), commit=True) == "new|trk"
    assert state(ct, icmp(B, A, type=16, id=4)) == "est|rpl|trk"


def unreach(src, dst, quoted, quote_len=None):
    inner = bytes(quoted[IP])
    if quote_len is not None:
        inner = inner[: 20 + quote_len]
    return Ether() / IP(src=src, dst=dst) / ICMP(type=3, code=3) / Raw(inner)


def test_icmp_error_related(ct):
    fwd = udp(A, B, 1, 2)
    state(ct, fwd, commit=True)
    p = Packet(unreach(B, A, fwd, quote_len=8))
    assert p.ct(ct) == "rel|rpl|trk"
    assert (p.key[CT_TP_SRC], p.key[CT_TP_DST], p.key[CT_NW_PROTO]) == (1, 2, 17)
    # from a router on the path: still about A's packet
    assert state(ct, unreach(R, A, fwd)) == "rel|rpl|trk"
    # about the reply direction, sent towards B
    assert state(ct, unreach(A, B, udp(B, A, 2, 1))) == "rel|trk"
    # errors never create nor refresh; unrelated / malformed quotes are invalid
    assert state(ct, unreach(B, A, udp(A, B, 1, 3)), commit=True) == "inv|trk"
    assert state(ct, unreach(B, R, fwd)) == "inv|trk"  # quoted source is not the outer dst
    assert state(ct, unreach(B, A, fwd, quote_len=4)) == "inv|trk"
    assert len(ct) == 1
    assert ct.counters["related_unmatched"] == 1


def test_icmp_error_about_echo(ct):
    req = icmp(A, B, type=8, id=7)
    state(ct, req, commit=True)
    assert state(ct, Ether() / IP(src=R, dst=A) / ICMP(type=11) / Raw(bytes(req[IP])[:28])) == (
        "rel|rpl|trk"
    )


def test_icmpv6(ct):
    assert state(ct, Ether() / IPv6(src=A6, dst=B6) / ICMPv6EchoRequest(id=5), commit=True) == (
        "new|trk"
    )
    assert state(ct, Ether() / IPv6(src=B6, dst=A6) / ICMPv6EchoReply(id=5)) == "est|rpl|trk"
    ns = Ether() / IPv6(src=A6, dst=B6) / ICMPv6ND_NS(tgt=B6)
    assert state(ct, ns, commit=True) == "inv|trk"


def test_icmpv6_error_needs_full_tcp_header(ct):
    syn = Ether() / IPv6(src=A6, dst=B6) / TCP(sport=1000, dport=80, flags="S", seq=5)
    assert state(ct, syn, commit=True) == "new|trk"
    quoted = bytes(syn[IPv6])
    full = Ether() / IPv6(src=B6, dst=A6) / ICMPv6DestUnreach() / Raw(quoted[:60])
    short = Ether() / IPv6(src=B6, dst=A6) / ICMPv6DestUnreach() / Raw(quoted[:48])
    assert state(ct, full) == "rel|rpl|trk"
    assert state(ct, short) == "inv|trk"


def test_icmpv4_error_accepts_8_bytes_of_tcp(ct):
    syn = Ether() / IP(src=A, dst=B) / TCP(sport=1000, dport=80, flags="S", seq=5)
    state(ct, syn, commit=True)
    err = Ether() / IP(src=B, dst=A) / ICMP(type=3, code=1) / Raw(bytes(syn[IP])[:28])
    assert state(ct, err) == "rel|rpl|trk"
    # scapy's IPerror form of the same thing
    err2 = Ether() / IP(src=B, dst=A) / ICMP(type=3, code=1) / IPerror(bytes(syn[IP])[:28])
    assert state(ct, err2) == "rel|rpl|trk"


# --- TCP through the tracker interface --------------------------------------------------------


def test_tcp_handshake(ct):
    syn = Ether() / IP(src=A, dst=B) / TCP(sport=40000, dport=80, flags="S", seq=100, window=8000)
    synack = (
        Ether()
        / IP(src=B, dst=A)
        / TCP(sport=80, dport=40000, flags="SA", seq=500, ack=101, window=8000)
    )
    ack = (
        Ether()
        / IP(src=A, dst=B)
        / TCP(sport=40000, dport=80, flags="A", seq=101, ack=501, window=8000)
    )
    assert state(ct, synack, commit=True) == "inv|trk"  # SYN/ACK cannot create
    assert state(ct, syn, commit=True) == "new|trk"
    assert state(ct, syn) == "new|trk"  # repeated SYN stays new
    assert state(ct, synack) == "est|rpl|trk"
    assert state(ct, ack) == "est|trk"
    assert ct.dump(1)[0].endswith("protoinfo=(state=ESTABLISHED)")


# --- invalid keys ---------------------------------------------------------------------------


def frame_bytes(pkt) -> bytearray:
    return bytearray(bytes(pkt))


def test_invalid_keys(ct):
    good = udp(A, B, 1, 2)
    raw = frame_bytes(good)
    raw[14 + 10] ^= 0xFF  # IPv4 header checksum
    assert state(ct, Ether(bytes(raw))) == "inv|trk"
    raw = frame_bytes(good)
    raw[14 + 20 + 6] ^= 0xFF  # UDP checksum
    assert state(ct, Ether(bytes(raw))) == "inv|trk"
    nocsum = Ether() / IP(src=A, dst=B) / UDP(sport=1, dport=2, chksum=0) / Raw(b"x")
    assert state(ct, nocsum) == "new|trk"
    assert state(ct, udp(A, B, 0, 2)) == "inv|trk"
    assert state(ct, udp(A, B, 1, 2, flags="MF")) == "inv|trk"  # first fragment
    assert state(ct, udp(A, B, 1, 2, frag=3)) == "inv|trk"  # later fragment
    bad_doff = Ether() / IP(src=A, dst=B) / TCP(sport=1, dport=2, flags="S", dataofs=4)
    assert state(ct, bad_doff) == "inv|trk"
    assert ct.counters["invalid_key"] == 6


def test_invalid_key_keeps_previous_handle_and_zeroes_fields(ct):
    p = Packet(udp(A, B, 1, 2))
    p.ct(ct, zone=1, commit=True, mark=9)
    handle = p.conn
    raw = frame_bytes(udp(A, B, 1, 2))
    raw[14 + 10] ^= 0xFF
    q = Packet(Ether(bytes(raw)))
    q.conn = handle
    assert q.ct(ct, zone=2) == "inv|trk"
    assert q.conn == handle and q.key[CT_MARK] == 0 and q.key[CT_ZONE] == 2


# --- jitted kernel vs plain Python --------------------------------------------------------


def _run_sequence(execute):
    ct = Conntrack(initial_capacity=4, zone_limits={2: 1})
    pkts = [
        (udp(A, B, 1, 2), 0, True),
        (udp(B, A, 2, 1), 0, False),
        (icmp(A, B, type=8, id=1), 2, True),
        (icmp(A, B, type=8, id=2), 2, True),
        (icmp(B, A, type=0, id=1), 2, False),
        (unreach(B, A, udp(A, B, 1, 2)), 0, False),
        (udp(A, B, 1, 2), 0, False),
        (Ether() / IP(src=A, dst=B, proto=47) / Raw(b"g"), 0, True),
    ]
    keys = []
    for t, (pkt, zone, commit) in enumerate(pkts):
        p = Packet(pkt)
        act = action_row(zone, commit, mark=t if t == 1 else None)
        handle = execute(ct.tables, p.frame, len(p.frame), p.key, act, t * 100, -1,
                         no_nat_spec(), np.zeros(CT_SCRATCH_WIDTH, np.int64))  # fmt: skip
        keys.append((int(handle), p.key.copy()))
    return ct, keys


def test_kernel_matches_plain_python():
    ct_jit, keys_jit = _run_sequence(core.ct_execute)
    ct_py, keys_py = _run_sequence(core.ct_execute.py_func)
    for (h1, k1), (h2, k2) in zip(keys_jit, keys_py, strict=True):
        assert h1 == h2
        np.testing.assert_array_equal(k1, k2)
    for name in ("conns", "index", "free_slots", "stats", "zone_limits"):
        np.testing.assert_array_equal(getattr(ct_jit, name), getattr(ct_py, name))
    assert [format_ct_state(int(k[CT_STATE])) for _h, k in keys_jit] == [
        "new|trk",
        "est|rpl|trk",
        "new|trk",
        "new|trk",
        "est|rpl|trk",
        "rel|rpl|trk",
        "est|trk",
        "new|trk",
    ]
    assert len(ct_jit) == 3  # the second echo was refused by zone 2's limit of 1
