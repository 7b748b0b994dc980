"""Header parser: one Ethernet frame's bytes -> its flow key (numba-ready).

What: :func:`parse_frame` fills the header columns of a key (packet/key.py) the way Open
vSwitch's flow extraction (lib/flow.c, miniflow_extract) fills a ``struct flow``, plus the
parse facts conntrack needs (header offsets, L4 length, truncation and checksum flags,
fragment identification). :func:`parse_batch` does the same for many frames in one buffer.

Design: straight-line code over the byte array, one layer after the other, each layer
guarded by the same size checks OVS makes. When OVS stops (it jumps to ``out``), we return:
the fields of the layers it did not reach stay 0, and a ``PF_*`` flag says why. Checksums,
which OVS's flow extraction ignores but its conntrack verifies (lib/conntrack.c), are only
*recorded* (``PF_L3_BAD_CSUM``, ``PF_L4_BAD_CSUM``); they never change the matchable fields.

Semantics worth knowing (all as OVS 3.1 with default settings):
- 802.3 length frames: LLC/SNAP with OUI 0 gives the SNAP ethertype, anything else 0x05ff.
- VLAN: at most ``vlan_limit`` tags are parsed (OVS ``other_config:vlan-limit``, default 1);
  an extra tag's TPID becomes ``DL_TYPE`` and nothing above L2 is parsed. ``VLAN_TCI`` is the
  outer tag's TCI | 0x1000.
- IPv4 is accepted whatever its version nibble (OVS does not check it). Bad IHL / total
  length or a frame shorter than the total length: no L3 field at all (``PF_L3_BAD`` or
  ``PF_L3_TRUNC``). Ethernet padding past the total length is ignored.
- IPv6: addresses are taken before the extension headers are walked; if the walk fails
  (truncated extension header) the other L3 fields stay 0, as in OVS. A fragment header
  with offset 0 and M=0 (atomic fragment) is not a fragment. A later fragment has
  ``NW_PROTO`` 44 (the fragment header's protocol), as in OVS.
- L4 fields are filled only when the L4 header fits in the IP payload (TCP: data offset
  >= 5 and within the payload; UDP, ICMP, ICMPv6, IGMP: 8 bytes; SCTP: 12), and never for
  later fragments. ARP fills ``NW_SRC+3``/``NW_DST+3`` and the hardware addresses only for
  Ethernet/IPv4 ARP, and the opcode only when it fits in 8 bits.
- ICMPv6 neighbor solicitation/advertisement with code 0: the target address and the
  source/target link-layer options (8 bytes long) fill ``ND_TARGET``/``ARP_SHA``/``ARP_THA``;
  an option of length 0 or past the end ends the option walk (what was found stays); an
  address option given twice leaves all three 0, as OVS.

Invariants:
- Never raises and never reads outside ``frame``: every read is preceded by a length check.
- ``L3_OFS`` is the offset just past L2 whenever an Ethernet header was parsed (as OVS's
  l3_ofs), -1 otherwise. ``L4_OFS`` is set only for IP packets whose IP header(s) parsed and
  that are not later fragments; then ``L4_OFS + L4_LEN <= len(frame)``.
- ``L4_LEN`` is the IP payload length after the IP header (and IPv6 extension headers) as
  the IP header claims; it is also set for later fragments (their fragment payload).
- L4 checksums are checked for TCP/UDP/ICMP/ICMPv6 over ``L4_LEN`` bytes (pseudo-header
  length = ``L4_LEN``), never for fragments; a UDP-over-IPv4 checksum of 0 means "none".
"""

from __future__ import annotations

import numpy as np

from ctaccel.jit import njit
from ctaccel.packet.checksum import ones_sum, pseudo_sum_v4, pseudo_sum_v6, sum_is_valid
from ctaccel.packet.key import (
    ARP_SHA,
    ARP_THA,
    DL_DST,
    DL_SRC,
    DL_TYPE,
    FRAG_ANY,
    FRAG_LATER,
    FRAG_MORE,
    FRAG_OFS,
    IN_PORT,
    IP_ID,
    IPV6_LABEL,
    KEY_WIDTH,
    L3_OFS,
    L4_LEN,
    L4_OFS,
    ND_TARGET,
    NW_DST,
    NW_FRAG,
    NW_PROTO,
    NW_SRC,
    NW_TOS,
    NW_TTL,
    PARSE_FLAGS,
    PF_EXTRA_FIELDS,
    PF_L2_TRUNC,
    PF_L3_BAD,
    PF_L3_BAD_CSUM,
    PF_L3_TRUNC,
    PF_L4_BAD_CSUM,
    PF_L4_TRUNC,
    TCP_FLAGS,
    TP_DST,
    TP_SRC,
    VLAN_TCI,
)

# OVS's default other_config:vlan-limit (LEGACY_MAX_VLAN_HEADERS): one tag is parsed.
DEFAULT_VLAN_LIMIT = 1
# The flow structure holds at most two tags (FLOW_MAX_VLAN_HEADERS), whatever the limit.
MAX_VLAN_HEADERS = 2

ETH_HEADER_LEN = 14
ETH_TYPE_MIN = 0x600  # below: an 802.3 length field
DL_TYPE_NONE = 0x5FF  # OVS FLOW_DL_TYPE_NONE
ETH_TYPE_IPV4 = 0x0800
ETH_TYPE_IPV6_ = 0x86DD
ETH_TYPE_ARP_ = 0x0806
ETH_TYPE_RARP = 0x8035
ETH_TYPE_8021Q = 0x8100
ETH_TYPE_8021AD = 0x88A8
ETH_TYPE_MPLS = 0x8847
ETH_TYPE_MPLS_MCAST = 0x8848

IPV4_HEADER_LEN = 20
IPV6_HEADER_LEN = 40
ARP_ETH_HEADER_LEN = 28
MAX_L2_PAD = 0xFFFF  # OVS rejects more than 64 KiB of padding after the IP datagram

PROTO_HOPOPTS = 0
PROTO_ICMP = 1
PROTO_IGMP = 2
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ROUTING = 43
PROTO_FRAGMENT = 44
PROTO_AH = 51
PROTO_ICMPV6 = 58
ND_NEIGHBOR_SOLICIT, ND_NEIGHBOR_ADVERT = 135, 136
ND_OPT_SOURCE_LINKADDR, ND_OPT_TARGET_LINKADDR = 1, 2
PROTO_DSTOPTS = 60
PROTO_SCTP = 132


@njit(forceinline=True)
def _be16(frame, ofs):
    return (np.int64(frame[ofs]) << 8) | np.int64(frame[ofs + 1])


@njit(forceinline=True)
def _be32(frame, ofs):
    return (_be16(frame, ofs) << 16) | _be16(frame, ofs + 2)


@njit(forceinline=True)
def _be48(frame, ofs):
    return (_be32(frame, ofs) << 16) | _be16(frame, ofs + 4)


@njit(forceinline=True)
def _is_vlan_tpid(ethertype):
    return ethertype == ETH_TYPE_8021Q or ethertype == ETH_TYPE_8021AD


@njit(forceinline=True)
def parse_frame(frame, in_port, key):
    """Zero ``key`` and fill it from ``frame`` (uint8 array) received on ``in_port``."""
    parse_frame_vlan_limit(frame, in_port, key, DEFAULT_VLAN_LIMIT)


@njit(forceinline=True)
def parse_frame_vlan_limit(frame, in_port, key, vlan_limit):
    """:func:`parse_frame` with an explicit OVS ``vlan-limit`` (0 means the maximum, 2)."""
    if key.shape[0] == KEY_WIDTH:  # a constant count: a few vector stores, no memset call
        for c in range(KEY_WIDTH):
            key[c] = 0
    else:
        key[:] = 0
    key[IN_PORT] = in_port
    key[L3_OFS] = -1
    key[L4_OFS] = -1
    size = np.int64(frame.shape[0])
    if size < ETH_HEADER_LEN:
        key[PARSE_FLAGS] = PF_L2_TRUNC
        return

    key[DL_DST] = _be48(frame, 0)
    key[DL_SRC] = _be48(frame, 6)

    # VLAN tags: each needs its 4 bytes plus the following 2-byte type to be present.
    limit = vlan_limit
    if limit <= 0 or limit > MAX_VLAN_HEADERS:
        limit = MAX_VLAN_HEADERS
    pos = np.int64(12)
    n_vlans = 0
    while n_vlans < limit and _is_vlan_tpid(_be16(frame, pos)) and size - pos >= 6:
        if n_vlans == 0:
            key[VLAN_TCI] = _be16(frame, pos + 2) | 0x1000
        n_vlans += 1
        pos += 4

    # Ethertype, or an 802.3 length field followed (maybe) by LLC/SNAP.
    dl_type = _be16(frame, pos)
    pos += 2
    if dl_type < ETH_TYPE_MIN:
        dl_type = DL_TYPE_NONE
        if (
            size - pos >= 8
            and frame[pos] == 0xAA
            and frame[pos + 1] == 0xAA
            and frame[pos + 2] == 0x03
            and frame[pos + 3] == 0
            and frame[pos + 4] == 0
            and frame[pos + 5] == 0
        ):
            snap_type = _be16(frame, pos + 6)
            pos += 8
            if snap_type >= ETH_TYPE_MIN:
                dl_type = snap_type
    key[DL_TYPE] = dl_type

    # MPLS label stack: skipped so that L3_OFS points past it (OVS l3_ofs); not parsed further.
    if dl_type == ETH_TYPE_MPLS or dl_type == ETH_TYPE_MPLS_MCAST:
        while size - pos >= 4:
            bottom = frame[pos + 2] & 1
            pos += 4
            if bottom:
                break

    key[L3_OFS] = pos
    if dl_type == ETH_TYPE_IPV4:
        _parse_ipv4(frame, pos, size, key)
    elif dl_type == ETH_TYPE_IPV6_:
        _parse_ipv6(frame, pos, size, key)
    elif dl_type == ETH_TYPE_ARP_ or dl_type == ETH_TYPE_RARP:
        _parse_arp(frame, pos, size, key)


@njit(forceinline=True)
def _parse_arp(frame, pos, size, key):
    if size - pos < ARP_ETH_HEADER_LEN:
        key[PARSE_FLAGS] |= PF_L3_TRUNC
        return
    # Only Ethernet/IPv4 ARP is understood (hardware 1, protocol 0x0800, lengths 6 and 4).
    if (
        _be16(frame, pos) != 1
        or _be16(frame, pos + 2) != ETH_TYPE_IPV4
        or frame[pos + 4] != 6
        or frame[pos + 5] != 4
    ):
        return
    key[NW_SRC + 3] = _be32(frame, pos + 14)
    key[NW_DST + 3] = _be32(frame, pos + 24)
    key[ARP_SHA] = _be48(frame, pos + 8)
    key[ARP_THA] = _be48(frame, pos + 18)
    if key[ARP_SHA] | key[ARP_THA]:
        key[PARSE_FLAGS] |= PF_EXTRA_FIELDS
    opcode = _be16(frame, pos + 6)
    if opcode <= 0xFF:  # OVS matches only 8 bits and leaves larger opcodes out
        key[NW_PROTO] = opcode


@njit(forceinline=True)
def _parse_ipv4(frame, l3, size, key):
    avail = size - l3
    if avail < IPV4_HEADER_LEN:
        key[PARSE_FLAGS] |= PF_L3_TRUNC
        return
    ihl_bytes = np.int64(frame[l3] & 0x0F) * 4
    if ihl_bytes < IPV4_HEADER_LEN:
        key[PARSE_FLAGS] |= PF_L3_BAD
        return
    if avail < ihl_bytes:
        key[PARSE_FLAGS] |= PF_L3_TRUNC
        return
    total_len = _be16(frame, l3 + 2)
    if total_len < ihl_bytes:
        key[PARSE_FLAGS] |= PF_L3_BAD
        return
    if total_len > avail:
        key[PARSE_FLAGS] |= PF_L3_TRUNC
        return
    if avail - total_len > MAX_L2_PAD:
        key[PARSE_FLAGS] |= PF_L3_BAD
        return

    if not sum_is_valid(ones_sum(frame, l3, ihl_bytes)):
        key[PARSE_FLAGS] |= PF_L3_BAD_CSUM
    key[NW_SRC + 3] = _be32(frame, l3 + 12)
    key[NW_DST + 3] = _be32(frame, l3 + 16)
    key[NW_TOS] = frame[l3 + 1]
    key[NW_TTL] = frame[l3 + 8]
    proto = np.int64(frame[l3 + 9])
    key[NW_PROTO] = proto
    key[IP_ID] = _be16(frame, l3 + 4)
    frag_field = _be16(frame, l3 + 6)
    frag_ofs = (frag_field & 0x1FFF) * 8
    more = (frag_field >> 13) & 1
    key[FRAG_OFS] = frag_ofs
    key[FRAG_MORE] = more
    nw_frag = 0
    if frag_ofs != 0 or more != 0:
        nw_frag = FRAG_ANY
        if frag_ofs != 0:
            nw_frag |= FRAG_LATER
    key[NW_FRAG] = nw_frag

    l4 = l3 + ihl_bytes
    l4_len = total_len - ihl_bytes
    key[L4_LEN] = l4_len
    if nw_frag & FRAG_LATER:
        return
    key[L4_OFS] = l4
    _parse_l4(frame, l3, l4, l4_len, proto, nw_frag, False, key)


@njit(forceinline=True)
def _parse_ipv6(frame, l3, size, key):
    avail = size - l3
    if avail < IPV6_HEADER_LEN:
        key[PARSE_FLAGS] |= PF_L3_TRUNC
        return
    payload_len = _be16(frame, l3 + 4)
    if payload_len + IPV6_HEADER_LEN > avail:
        key[PARSE_FLAGS] |= PF_L3_TRUNC
        return
    if avail - (payload_len + IPV6_HEADER_LEN) > MAX_L2_PAD:
        key[PARSE_FLAGS] |= PF_L3_BAD
        return
    for i in range(4):
        key[NW_SRC + i] = _be32(frame, l3 + 8 + 4 * i)
        key[NW_DST + i] = _be32(frame, l3 + 24 + 4 * i)

    # Walk the extension headers inside the payload (padding is never parsed).
    pos = l3 + IPV6_HEADER_LEN
    end = pos + payload_len
    proto = np.int64(frame[l3 + 6])
    nw_frag = 0
    later = False
    while True:
        if not (
            proto == PROTO_HOPOPTS
            or proto == PROTO_ROUTING
            or proto == PROTO_DSTOPTS
            or proto == PROTO_AH
            or proto == PROTO_FRAGMENT
        ):
            break  # an upper-layer protocol (or one OVS does not walk through)
        if end - pos < 8:  # every extension header is at least 8 bytes
            key[PARSE_FLAGS] |= PF_L3_TRUNC
            return
        next_proto = np.int64(frame[pos])
        if proto == PROTO_FRAGMENT:
            offlg = _be16(frame, pos + 2)
            key[IP_ID] = _be32(frame, pos + 4)
            key[FRAG_OFS] = offlg & 0xFFF8
            key[FRAG_MORE] = offlg & 1
            pos += 8
            proto = next_proto
            if offlg != 0:  # an atomic fragment (offset 0, M=0) is not a fragment
                nw_frag = FRAG_ANY
                if offlg & 0xFFF8:
                    nw_frag |= FRAG_LATER
                    proto = PROTO_FRAGMENT  # OVS keeps 44: the upper header is elsewhere
                    later = True
                    break
            continue
        if proto == PROTO_AH:
            ext_len = (np.int64(frame[pos + 1]) + 2) * 4
        else:
            ext_len = (np.int64(frame[pos + 1]) + 1) * 8
        if end - pos < ext_len:
            key[PARSE_FLAGS] |= PF_L3_TRUNC
            return
        pos += ext_len
        proto = next_proto

    key[NW_TOS] = (_be16(frame, l3) >> 4) & 0xFF
    key[NW_TTL] = frame[l3 + 7]
    key[NW_PROTO] = proto
    key[NW_FRAG] = nw_frag
    key[IPV6_LABEL] = _be32(frame, l3) & 0xFFFFF
    key[L4_LEN] = end - pos
    if later:
        return
    key[L4_OFS] = pos
    _parse_l4(frame, l3, pos, end - pos, proto, nw_frag, True, key)


@njit(forceinline=True)
def _parse_l4(frame, l3, l4, l4_len, proto, nw_frag, is_v6, key):
    """Ports / type+code / TCP flags, L4 truncation, and the L4 checksum fact."""
    checksum_kind = 0  # 0: none, 1: pseudo-header checksum, 2: plain (ICMPv4)
    if proto == PROTO_TCP:
        if l4_len < 20:
            key[PARSE_FLAGS] |= PF_L4_TRUNC
            return
        header_len = np.int64(frame[l4 + 12] >> 4) * 4
        if header_len < 20 or header_len > l4_len:
            key[PARSE_FLAGS] |= PF_L4_TRUNC
            return
        key[TP_SRC] = _be16(frame, l4)
        key[TP_DST] = _be16(frame, l4 + 2)
        key[TCP_FLAGS] = _be16(frame, l4 + 12) & 0x0FFF
        checksum_kind = 1
    elif proto == PROTO_UDP:
        if l4_len < 8:
            key[PARSE_FLAGS] |= PF_L4_TRUNC
            return
        key[TP_SRC] = _be16(frame, l4)
        key[TP_DST] = _be16(frame, l4 + 2)
        udp_len = _be16(frame, l4 + 4)
        if nw_frag == 0 and (udp_len < 8 or udp_len > l4_len):
            # OVS's flow still has the ports; its conntrack finds the datagram invalid.
            # (A first fragment holds only part of the datagram the length describes.)
            key[PARSE_FLAGS] |= PF_L4_TRUNC
            return
        if is_v6 or _be16(frame, l4 + 6) != 0:
            checksum_kind = 1
    elif proto == PROTO_SCTP:
        if l4_len < 12:
            key[PARSE_FLAGS] |= PF_L4_TRUNC
            return
        key[TP_SRC] = _be16(frame, l4)
        key[TP_DST] = _be16(frame, l4 + 2)
    elif proto == PROTO_ICMP or proto == PROTO_ICMPV6:
        # OVS's flow takes type and code whatever the IP version; its conntrack treats
        # (and checksums) only ICMP over IPv4 and ICMPv6 over IPv6 as ICMP.
        if l4_len < 8:
            key[PARSE_FLAGS] |= PF_L4_TRUNC
            return
        key[TP_SRC] = frame[l4]
        key[TP_DST] = frame[l4 + 1]
        if proto == PROTO_ICMPV6:
            _parse_nd(frame, l4, l4_len, key)
        if proto == PROTO_ICMPV6 and is_v6:
            checksum_kind = 1
        elif proto == PROTO_ICMP and not is_v6:
            checksum_kind = 2
    elif proto == PROTO_IGMP:
        if l4_len < 8:
            key[PARSE_FLAGS] |= PF_L4_TRUNC
            return
        key[TP_SRC] = frame[l4]
        key[TP_DST] = frame[l4 + 1]
    if checksum_kind == 0 or nw_frag != 0:
        return  # fragments are checked after reassembly
    acc = ones_sum(frame, l4, l4_len)
    if checksum_kind == 1:
        if is_v6:
            acc += pseudo_sum_v6(frame, l3, proto, l4_len)
        else:
            acc += pseudo_sum_v4(frame, l3, proto, l4_len)
    if not sum_is_valid(acc):
        key[PARSE_FLAGS] |= PF_L4_BAD_CSUM


@njit(forceinline=True)
def _parse_nd(frame, l4, l4_len, key):
    """A neighbor solicitation or advertisement (code 0): its target address and the
    link-layer address options (source, target: 8 bytes each), as OVS's flow extraction
    takes them (checked against it): an option of length 0 or past the end ends the walk,
    keeping what was found; the same address option twice makes the message invalid: no ND
    field at all (type and code stay)."""
    kind = frame[l4]
    if frame[l4 + 1] != 0 or (kind != ND_NEIGHBOR_SOLICIT and kind != ND_NEIGHBOR_ADVERT):
        return
    if l4_len < 8 + 16:
        return
    sll = tll = 0
    pos, end = l4 + 24, l4 + l4_len
    while end - pos >= 8:
        opt_len = np.int64(frame[pos + 1]) * 8
        if opt_len == 0 or opt_len > end - pos:
            break
        if frame[pos] == ND_OPT_SOURCE_LINKADDR and opt_len == 8:
            if sll != 0:
                return
            sll = _be48(frame, pos + 2)
        elif frame[pos] == ND_OPT_TARGET_LINKADDR and opt_len == 8:
            if tll != 0:
                return
            tll = _be48(frame, pos + 2)
        pos += opt_len
    any_field = sll | tll
    for w in range(4):
        key[ND_TARGET + w] = _be32(frame, l4 + 8 + 4 * w)
        any_field |= key[ND_TARGET + w]
    key[ARP_SHA] = sll
    key[ARP_THA] = tll
    if any_field:
        key[PARSE_FLAGS] |= PF_EXTRA_FIELDS


@njit
def parse_batch(buf, offsets, lengths, in_ports, keys):
    """Parse ``len(offsets)`` frames stored in ``buf`` into ``keys[i]``.

    A record that lies partly outside ``buf`` (or has a negative offset/length) is clipped to
    the bytes that exist, so a corrupt index cannot make the parser read out of bounds."""
    for i in range(offsets.shape[0]):
        parse_record(buf, offsets, lengths, in_ports, i, keys[i])


@njit(forceinline=True)
def parse_record(buf, offsets, lengths, in_ports, i, key):
    """Parse frame ``i`` of a batch (as parse_batch does) into ``key``."""
    buf_len = buf.shape[0]
    start = offsets[i]
    length = lengths[i]
    if start < 0:
        start = 0
    if start > buf_len:
        start = buf_len
    if length < 0:
        length = 0
    if length > buf_len - start:
        length = buf_len - start
    parse_frame(buf[start : start + length], in_ports[i], key)
