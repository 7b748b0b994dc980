"""ICMP/ICMPv6 query tracking and ICMP-error (related) key extraction.

What: two things OVS does for ICMP (conntrack-icmp.c and the ICMP parts of conntrack.c).
1. Query/response pairs are connections keyed by the identifier: echo (v4 8/0, v6 128/129),
   timestamp (13/14) and information (15/16). Only the request types may start one
   (v4 8, 13, 15; v6 128). Address-mask (17/18), router and neighbour discovery and every
   other type are not trackable: the packet is invalid.
2. Errors (v4 destination unreachable 3, source quench 4, redirect 5, time exceeded 11,
   parameter problem 12; v6 1, 2, 3, 4) quote the packet that caused them. Their lookup key
   is the quoted packet's tuple, reversed; they never create or refresh a connection.

Design: :func:`icmp_extract` fills a lookup tuple (table.py ``T_*`` layout) straight from
the frame bytes and returns whether the packet is a query or an error. The quoting rules
follow OVS: the quoted IPv4 header needs no valid checksum but must not be a fragment; its
source must be the outer destination (v4 and v6); an IPv4 error needs 8 bytes of quoted L4
header, an IPv6 error needs a whole TCP header (20 bytes) for TCP and 8 bytes otherwise;
quoted ports must not be 0; a quoted ICMP packet must itself be a query with code 0.

Invariants: frame reads stay inside ``[l4_ofs, l4_ofs + l4_len)``, which the caller has
bounded by the frame length. The tracker state (``C_L4_STATE``) is ICMPS_FIRST until a reply
is seen, then ICMPS_REPLY.
"""

from __future__ import annotations

from ctaccel.conntrack.layout import C_L4_STATE
from ctaccel.conntrack.table import (
    ETH_IP,
    ETH_IPV6,
    T_DST,
    T_DWORD,
    T_PROTO,
    T_SRC,
    T_SWORD,
    reverse_icmp_type,
)
from ctaccel.conntrack.timeouts import (
    CT_UPDATE_STILL_NEW,
    CT_UPDATE_VALID,
    TM_ICMP_FIRST,
    TM_ICMP_REPLY,
    arm_timer,
)
from ctaccel.jit import njit

ICMPS_FIRST = 0
ICMPS_REPLY = 1

# icmp_extract results
ICMP_KEY_INVALID = -1
ICMP_KEY_QUERY = 0
ICMP_KEY_RELATED = 1

ICMP_ERROR_DATA_L4_LEN = 8  # bytes of quoted L4 header an ICMPv4 error must carry


@njit(forceinline=True)
def be16(frame, ofs):
    return (int(frame[ofs]) << 8) | int(frame[ofs + 1])


@njit(forceinline=True)
def be32(frame, ofs):
    return (
        (int(frame[ofs]) << 24)
        | (int(frame[ofs + 1]) << 16)
        | (int(frame[ofs + 2]) << 8)
        | int(frame[ofs + 3])
    )


@njit(forceinline=True)
def is_icmp4_query(icmp_type):
    return icmp_type == 0 or icmp_type == 8 or 13 <= icmp_type <= 16


@njit(forceinline=True)
def is_icmp4_error(icmp_type):
    return 3 <= icmp_type <= 5 or icmp_type == 11 or icmp_type == 12


@njit(forceinline=True)
def is_icmp6_error(icmp_type):
    return 1 <= icmp_type <= 4


@njit(forceinline=True)
def icmp_valid_new(proto, frame, l4_ofs, l4_len):
    """Can this packet start a connection? Request types only (OVS picks by protocol)."""
    if l4_len < 1:
        return False
    icmp_type = int(frame[l4_ofs])
    if proto == 1:
        return icmp_type == 8 or icmp_type == 13 or icmp_type == 15
    return icmp_type == 128


@njit(forceinline=True)
def _arm(conns, slot, now_ms, timeouts):
    tm = TM_ICMP_FIRST if conns[slot, C_L4_STATE] == ICMPS_FIRST else TM_ICMP_REPLY
    arm_timer(conns, slot, now_ms, timeouts, tm)


@njit(forceinline=True)
def icmp_new_conn(conns, slot, now_ms, timeouts):
    conns[slot, C_L4_STATE] = ICMPS_FIRST
    _arm(conns, slot, now_ms, timeouts)


@njit(forceinline=True)
def icmp_conn_update(conns, slot, reply, now_ms, timeouts):
    """Established once a reply was seen; until then requests stay ``new``."""
    result = CT_UPDATE_VALID
    if conns[slot, C_L4_STATE] == ICMPS_FIRST:
        if reply:
            conns[slot, C_L4_STATE] = ICMPS_REPLY
        else:
            result = CT_UPDATE_STILL_NEW
    _arm(conns, slot, now_ms, timeouts)
    return result


@njit(forceinline=True)
def _query_words(dl_type, frame, l4_ofs, tup):
    """Endpoint words of an ICMP query: id, own type / reversed type, code 0."""
    icmp_type = int(frame[l4_ofs])
    ident = be16(frame, l4_ofs + 4)
    tup[T_SWORD] = (ident << 16) | (icmp_type << 8)
    tup[T_DWORD] = (ident << 16) | (reverse_icmp_type(dl_type, icmp_type) << 8)


@njit
def _skip_ipv6_ext(frame, ofs, tail, nxt):
    """Walk IPv6 extension headers as OVS does: (next offset, protocol, is_fragment, ok)."""
    while True:
        if nxt != 0 and nxt != 43 and nxt != 60 and nxt != 51 and nxt != 44:
            return ofs, nxt, False, True
        if tail - ofs < 8:
            return ofs, nxt, False, False
        if nxt == 44:
            offlg = be16(frame, ofs + 2)
            nxt = int(frame[ofs])
            ofs += 8
            if offlg != 0:
                # any fragment, first or not, makes the quoted packet untrackable
                return ofs, nxt, True, True
        elif nxt == 51:
            length = (int(frame[ofs + 1]) + 2) * 4
            nxt = int(frame[ofs])
            if tail - ofs < length:
                return ofs, nxt, False, False
            ofs += length
        else:
            length = (int(frame[ofs + 1]) + 1) * 8
            nxt = int(frame[ofs])
            if tail - ofs < length:
                return ofs, nxt, False, False
            ofs += length


@njit
def _quoted_l4(dl_type, frame, l4, tail, proto, tup):
    """Endpoint words of the quoted packet's L4 header (unreversed); False if unusable."""
    size = tail - l4
    if proto == 6 or proto == 17:
        need = 8
        if proto == 6 and dl_type == ETH_IPV6:
            need = 20  # OVS applies the full TCP header length to quoted IPv6 packets
        if size < need:
            return False
        sport = be16(frame, l4)
        dport = be16(frame, l4 + 2)
        if sport == 0 or dport == 0:
            return False
        tup[T_SWORD] = sport
        tup[T_DWORD] = dport
        return True
    if dl_type == ETH_IP and proto == 1:
        if size < ICMP_ERROR_DATA_L4_LEN:
            return False
        if not is_icmp4_query(int(frame[l4])) or frame[l4 + 1] != 0:
            return False
        _query_words(dl_type, frame, l4, tup)
        return True
    if dl_type == ETH_IPV6 and proto == 58:
        if size < 8:
            return False
        t = int(frame[l4])
        if (t != 128 and t != 129) or frame[l4 + 1] != 0:
            return False
        _query_words(dl_type, frame, l4, tup)
        return True
    tup[T_SWORD] = 0
    tup[T_DWORD] = 0
    return True


@njit
def _quoted_key(dl_type, frame, l3, tail, tup):
    """Fill tup with the reversed tuple of the packet quoted at ``l3``; False if unusable."""
    size = tail - l3
    # quoted source / destination words, most significant first
    s0 = s1 = s2 = s3 = d0 = d1 = d2 = d3 = 0
    if dl_type == ETH_IP:
        if size < 20:
            return False
        ihl = (int(frame[l3]) & 0x0F) * 4
        if ihl < 20 or size < ihl:
            return False
        if be16(frame, l3 + 6) & 0x3FFF:
            return False
        proto = int(frame[l3 + 9])
        s3 = be32(frame, l3 + 12)
        d3 = be32(frame, l3 + 16)
        if s3 != tup[T_DST + 3]:
            return False
        l4 = l3 + ihl
    else:
        if size < 40:
            return False
        l4, proto, is_frag, ok = _skip_ipv6_ext(frame, l3 + 40, tail, int(frame[l3 + 6]))
        if not ok or is_frag:
            return False
        s0 = be32(frame, l3 + 8)
        s1 = be32(frame, l3 + 12)
        s2 = be32(frame, l3 + 16)
        s3 = be32(frame, l3 + 20)
        if s0 != tup[T_DST] or s1 != tup[T_DST + 1] or s2 != tup[T_DST + 2] or s3 != tup[T_DST + 3]:
            return False
        d0 = be32(frame, l3 + 24)
        d1 = be32(frame, l3 + 28)
        d2 = be32(frame, l3 + 32)
        d3 = be32(frame, l3 + 36)
    if not _quoted_l4(dl_type, frame, l4, tail, proto, tup):
        return False
    # reverse: the error travels against the quoted packet
    tup[T_PROTO] = proto
    tup[T_SRC] = d0
    tup[T_SRC + 1] = d1
    tup[T_SRC + 2] = d2
    tup[T_SRC + 3] = d3
    tup[T_DST] = s0
    tup[T_DST + 1] = s1
    tup[T_DST + 2] = s2
    tup[T_DST + 3] = s3
    sw = tup[T_SWORD]
    tup[T_SWORD] = tup[T_DWORD]
    tup[T_DWORD] = sw
    return True


@njit
def icmp_extract(dl_type, frame, l4_ofs, l4_len, tup):
    """Complete ``tup`` (addresses of the outer packet already in it) for an ICMP packet.

    Returns ICMP_KEY_QUERY (tup = the query's own tuple), ICMP_KEY_RELATED (tup = the quoted
    packet's reversed tuple) or ICMP_KEY_INVALID. Checksums are the caller's business.
    """
    if l4_len < 8:
        return ICMP_KEY_INVALID
    icmp_type = int(frame[l4_ofs])
    code = int(frame[l4_ofs + 1])
    tail = l4_ofs + l4_len
    if dl_type == ETH_IP:
        if is_icmp4_query(icmp_type):
            if code != 0:
                return ICMP_KEY_INVALID
            _query_words(dl_type, frame, l4_ofs, tup)
            return ICMP_KEY_QUERY
        if is_icmp4_error(icmp_type):
            if _quoted_key(dl_type, frame, l4_ofs + 8, tail, tup):
                return ICMP_KEY_RELATED
        return ICMP_KEY_INVALID
    if icmp_type == 128 or icmp_type == 129:
        if code != 0:
            return ICMP_KEY_INVALID
        _query_words(dl_type, frame, l4_ofs, tup)
        return ICMP_KEY_QUERY
    if is_icmp6_error(icmp_type):
        if _quoted_key(dl_type, frame, l4_ofs + 8, tail, tup):
            return ICMP_KEY_RELATED
    return ICMP_KEY_INVALID
