"""The L4 tracker of a connection, picked by IP protocol as OVS's ``l4_protos[]``.

What: three entry points the ct action needs from a tracker, each dispatching on the IP
protocol: may this packet start a connection (:func:`valid_new`), set up a new connection's
tracker state (:func:`new_conn`) and judge a packet of an existing one (:func:`conn_update`,
one of timeouts.py's ``CT_UPDATE_*``). TCP is tcp.py, ICMP and ICMPv6 icmp.py (chosen by the
protocol number alone, as OVS), everything else other.py.

Design: inline helpers (``forceinline``); the ct action (core.py) and the fast path's re-check
(established.py) call the very same update, so they cannot disagree.

Invariants: never raises on packet content; writes only the connection's own row.
"""

from __future__ import annotations

from ctaccel.conntrack.icmp import icmp_conn_update, icmp_new_conn, icmp_valid_new
from ctaccel.conntrack.other import other_conn_update, other_new_conn
from ctaccel.conntrack.tcp import tcp_conn_update, tcp_new_conn, tcp_valid_new
from ctaccel.jit import njit

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_ICMPV6 = 58


@njit(forceinline=True)
def valid_new(proto, frame, l4_ofs, l4_len):
    """May this packet create a connection (TCP: not a bare ACK/RST...; ICMP: a request)?"""
    if proto == IPPROTO_TCP:
        return tcp_valid_new(frame, l4_ofs, l4_len)
    if proto == IPPROTO_ICMP or proto == IPPROTO_ICMPV6:
        return icmp_valid_new(proto, frame, l4_ofs, l4_len)
    return True


@njit(forceinline=True)
def new_conn(conns, slot, proto, frame, l4_ofs, l4_len, now_ms, timeouts):
    """Set up the tracker state of the connection just created in row ``slot``."""
    if proto == IPPROTO_TCP:
        tcp_new_conn(conns, slot, frame, l4_ofs, l4_len, now_ms, timeouts)
    elif proto == IPPROTO_ICMP or proto == IPPROTO_ICMPV6:
        icmp_new_conn(conns, slot, now_ms, timeouts)
    else:
        other_new_conn(conns, slot, now_ms, timeouts)


@njit(forceinline=True)
def conn_update(conns, slot, reply, proto, frame, l4_ofs, l4_len, now_ms, timeouts):
    """Judge a packet of connection ``slot`` (``reply``: its direction); a CT_UPDATE_* code."""
    if proto == IPPROTO_TCP:
        return tcp_conn_update(conns, slot, reply, frame, l4_ofs, l4_len, now_ms, timeouts)
    if proto == IPPROTO_ICMP or proto == IPPROTO_ICMPV6:
        return icmp_conn_update(conns, slot, reply, now_ms, timeouts)
    return other_conn_update(conns, slot, reply, now_ms, timeouts)
