"""The fast path's plain-ACK re-check against the general one it stands in for.

``ct_recheck_ack`` must give what ``ct_recheck`` (the tracker's own update, saved and undone
when the answer is not the cached ct_state) gives, row bit for bit, whenever it does not
decline with RECHECK_OTHER; and decline only for packets or states outside its case. Rows and
packets are drawn around one sequence space so that both the in-window and the rejected
branches, wrapped sequence numbers, window scaling and expiry all occur. Both the compiled
function and its plain-Python source are checked.
"""

from __future__ import annotations

import numpy as np
from hypothesis import event, given, settings
from hypothesis import strategies as st

from ctaccel.conntrack.established import (
    RECHECK_GONE,
    RECHECK_OTHER,
    RECHECK_STATE,
    ct_recheck,
    ct_recheck_ack,
)
from ctaccel.conntrack.layout import (
    C_GENERATION,
    C_PROTO,
    C_USED,
    CONN_DTYPE,
    CONN_WIDTH,
    HOT_WIDTH,
    P_MAX_WIN,
    P_SEQHI,
    P_SEQLO,
    P_STATE,
    P_WSCALE,
    set_expiration,
    tcp_col,
)
from ctaccel.conntrack.tcp import TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, TCPS_ESTABLISHED
from ctaccel.conntrack.timeouts import default_timeouts_ms
from ctaccel.packet.key import CS_ESTABLISHED, CS_REPLY_DIR, CS_TRACKED

M32 = 0xFFFFFFFF
EST = CS_TRACKED | CS_ESTABLISHED
NOW = 1_000_000
GEN = 7

_plain_acks = [TCP_ACK, TCP_ACK | 0x08, TCP_ACK | 0x20, TCP_ACK | 0xC0]
_flags = st.one_of(
    st.sampled_from(_plain_acks),  # the case itself, most of the time
    st.sampled_from(
        _plain_acks + [TCP_ACK | TCP_FIN, TCP_ACK | TCP_RST, TCP_ACK | TCP_SYN, TCP_SYN, TCP_RST, 0]
    ),  # fmt: skip
    st.integers(0, 0xFFF),
)
_state = st.sampled_from([TCPS_ESTABLISHED] * 24 + [0, 2, 3, 5, 6, 7, 9, 10])
_wscale = st.sampled_from([0, 0x80, 0x80 | 2, 0x80 | 7, 0x80 | 14, 0x40])
_near = st.integers(-200_000, 200_000)


def _frame(seq, ack, flags, win, payload, data_offset):
    hdr = bytearray(20 + payload)
    hdr[0:2] = (1234).to_bytes(2, "big")
    hdr[2:4] = (80).to_bytes(2, "big")
    hdr[4:8] = (seq & M32).to_bytes(4, "big")
    hdr[8:12] = (ack & M32).to_bytes(4, "big")
    hdr[12] = (data_offset << 4) | (flags >> 8)
    hdr[13] = flags & 0xFF
    hdr[14:16] = win.to_bytes(2, "big")
    return np.frombuffer(bytes(hdr), np.uint8).copy()


def _general(conns, reply, frame, l4_len, timeouts, expected):
    """ct_recheck as the fast path uses it: a ct_state other than the cached one is undone."""
    saved = np.zeros(CONN_WIDTH, np.int64)
    got = ct_recheck(conns, 0, GEN, reply, 6, frame, 0, l4_len, NOW, timeouts, saved)
    if got != expected and got >= 0:
        conns[0, :HOT_WIDTH] = saved[:HOT_WIDTH]
    return got if got == expected else (RECHECK_GONE if got == RECHECK_GONE else RECHECK_STATE)


@settings(max_examples=1500, deadline=None)
@given(
    reply=st.booleans(),
    flags=_flags,
    states=st.tuples(_state, _state),
    wscales=st.tuples(_wscale, _wscale),
    base=st.integers(0, M32),
    offsets=st.tuples(_near, _near, _near, _near, _near),
    max_wins=st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF)),
    win=st.integers(0, 0xFFFF),
    payload=st.integers(0, 12),
    data_offset=st.sampled_from([5, 5, 5, 4, 6, 15]),
    ttl=st.integers(-3, 5000),
    other_state=st.sampled_from([None, None, None, None, CS_REPLY_DIR, CS_ESTABLISHED]),
)
def test_plain_ack_recheck_matches_the_general_one(reply, flags, states, wscales, base, offsets,
                                                   max_wins, win, payload, data_offset, ttl,
                                                   other_state):  # fmt: skip
    # the entry's cached ct_state: the right one mostly, else one the packet cannot give
    expected = EST | (CS_REPLY_DIR if reply else 0)
    if other_state is not None:
        expected ^= other_state
    timeouts = default_timeouts_ms()
    conns = np.zeros((1, CONN_WIDTH), CONN_DTYPE)
    conns[0, C_USED] = 1
    conns[0, C_GENERATION] = GEN
    conns[0, C_PROTO] = 6
    set_expiration(conns, 0, NOW + ttl)
    d_seq, d_hi, d_ack, d_dlo, d_dhi = offsets
    sender, receiver = (1, 0) if reply else (0, 1)
    conns[0, tcp_col(sender, P_SEQLO)] = base
    conns[0, tcp_col(sender, P_SEQHI)] = (base + abs(d_hi)) & M32
    conns[0, tcp_col(receiver, P_SEQLO)] = (base + d_dlo) & M32
    conns[0, tcp_col(receiver, P_SEQHI)] = (base + d_dhi) & M32
    for peer in (0, 1):
        conns[0, tcp_col(peer, P_STATE)] = states[peer]
        conns[0, tcp_col(peer, P_WSCALE)] = wscales[peer]
        conns[0, tcp_col(peer, P_MAX_WIN)] = max_wins[peer]
    frame = _frame(base + d_seq, base + d_dlo + d_ack, flags, win, payload, data_offset)
    l4_len = len(frame)

    want_row = conns.copy()
    want = _general(want_row, reply, frame, l4_len, timeouts, expected)
    plain = (flags & (TCP_SYN | TCP_FIN | TCP_RST | TCP_ACK)) == TCP_ACK
    both_est = states == (TCPS_ESTABLISHED, TCPS_ESTABLISHED)
    for fn in (ct_recheck_ack, ct_recheck_ack.py_func):
        row = conns.copy()
        got = fn(row, 0, reply, frame, 0, l4_len, NOW, timeouts, expected)
        event({RECHECK_OTHER: "declined", RECHECK_GONE: "expired", RECHECK_STATE: "rejected"}
              .get(got, "accepted"))  # fmt: skip
        if got == RECHECK_OTHER:
            assert not (plain and both_est)  # declines only outside its case
            assert np.array_equal(row, conns)
            continue
        assert plain and both_est
        assert got == want
        assert np.array_equal(row, want_row)
