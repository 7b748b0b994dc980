"""OVS's view of an IP fragment, and reassembly (plain Python; ipf.py keeps the lists).

What: :func:`ipv4_fragment_info` / :func:`ipv6_fragment_info` read a fragment the way OVS's
ipf does (``ipf_is_valid_v4_frag`` / ``ipf_is_valid_v6_frag``: header checks, the minimum
size of non-last fragments, offsets in OVS's numbering) into a :class:`Frag`;
:func:`overlaps` is OVS's two-end-point overlap test; :func:`reassemble` joins a complete
list into one packet with its headers fixed up (IPv4 length and checksum, IPv6 payload
length and the fragment header removed).

Design: bytes in, bytes out; nothing here holds state.

Invariants: never raises on bad bytes (a malformed fragment gives None and a reason upstream);
a reassembled packet is at most 65535 bytes of IP, else None.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ctaccel.conntrack.ipf import _FragList

IP_MAX_SIZE = 65535
IPPROTO_HOPOPTS = 0
IPPROTO_ROUTING = 43
IPPROTO_FRAGMENT = 44
IPPROTO_AH = 51
IPPROTO_DSTOPTS = 60


@dataclass
class Frag:
    """One held fragment, as OVS sees it."""

    frame: bytes
    l3_ofs: int
    l4_ofs: int  # where OVS's dp_packet_l4 points: the data appended at reassembly
    l3_end: int  # end of the IP packet in the frame (Ethernet padding excluded)
    start: int  # first data byte (uint16, OVS numbering: IPv6 adds 8)
    end: int  # last data byte (uint16)


# --- header parsing (OVS's view of a fragment) ---------------------------------------------------
def ipv4_fragment_info(frame: bytes, l3: int, min_size: int):
    """(fragment, is_first, is_last, list key part) or a reason string.

    Mirrors ipf_is_valid_v4_frag: the IP packet's size excludes Ethernet padding when the
    header is sane (miniflow_extract strips it), else it is everything after the header start.
    """
    if l3 < 0 or l3 > len(frame):
        return "ipf_bad_header"
    avail = len(frame) - l3
    if avail < 20:
        return "ipf_bad_header"
    ihl = (frame[l3] & 0x0F) * 4
    tot_len, ip_id, frag_off = struct.unpack_from("!HHH", frame, l3 + 2)
    sane = ihl >= 20 and avail >= ihl and ihl <= tot_len <= avail
    l3_size = tot_len if sane else avail
    if not frag_off & 0x3FFF:
        return "not_fragment"
    if tot_len != l3_size or ihl < 20 or l3_size < ihl:
        return "ipf_bad_header"
    if _checksum(frame[l3 : l3 + ihl]) != 0:
        return "ipf_l3csum_err"
    more = bool(frag_off & 0x2000)
    offset = (frag_off & 0x1FFF) * 8
    last = offset != 0 and not more
    if not last and l3_size < min_size:
        return "too_small"
    start = offset & 0xFFFF
    end = (start + tot_len - ihl - 1) & 0xFFFF
    frag = Frag(frame, l3, l3 + ihl, l3 + tot_len, start, end)
    first = offset == 0 and more
    addrs = frame[l3 + 12 : l3 + 20]
    return frag, first, last, (addrs, ip_id, frame[l3 + 9])


def ipv6_fragment_info(frame: bytes, l3: int, min_size: int):
    """Same for IPv6 (ipf_is_valid_v6_frag + ipf_v6_key_extract)."""
    if l3 < 0 or l3 > len(frame):
        return "ipf_bad_header"
    avail = len(frame) - l3
    if avail < 40:
        return "ipf_bad_header"  # miniflow_extract left no L4 offset
    plen = struct.unpack_from("!H", frame, l3 + 4)[0]
    if plen + 40 > avail:
        return "ipf_bad_header"
    l3_size = 40 + plen  # padding stripped
    parsed = _parse_ipv6_ext_headers(frame, l3 + 40, l3 + l3_size, frame[l3 + 6])
    if parsed is None:
        return "ipf_bad_header"  # no L4 offset either
    l4, frag_hdr = parsed
    if frag_hdr < 0:
        return "not_fragment"
    offlg = struct.unpack_from("!H", frame, frag_hdr + 2)[0]
    offset, more = offlg & 0xFFF8, bool(offlg & 1)
    if not offlg & 0xFFF9:
        return "not_fragment"
    last = offset != 0 and not more
    if not last and l3_size < min_size:
        return "too_small"
    start = (offset + 8) & 0xFFFF  # OVS counts the fragment header in: harmless shift
    end = (start + (l3 + l3_size - l4) - 1) & 0xFFFF
    frag = Frag(frame, l3, l4, l3 + l3_size, start, end)
    first = offset == 0 and more
    ident = frame[frag_hdr + 4 : frag_hdr + 8]
    # The IPv6 list key has no protocol (OVS sets it 0).
    return frag, first, last, (frame[l3 + 8 : l3 + 40], ident, 0)


def _parse_ipv6_ext_headers(frame: bytes, pos: int, end: int, nxt: int):
    """(L4 offset as OVS sets it, offset of the last fragment header or -1), None if broken.

    Like parse_ipv6_ext_hdrs: walks hop-by-hop/routing/dest-options/AH/fragment headers;
    stops right after a non-first fragment's fragment header.
    """
    frag_hdr = -1
    while nxt in (IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_DSTOPTS, IPPROTO_AH, IPPROTO_FRAGMENT):
        if end - pos < 8:
            return None
        if nxt == IPPROTO_FRAGMENT:
            frag_hdr = pos
            nxt = frame[pos]
            offlg = struct.unpack_from("!H", frame, pos + 2)[0]
            pos += 8
            if offlg & 0xFFF8:  # later fragment: the rest is opaque data
                return pos, frag_hdr
            continue
        length = (frame[pos + 1] + 2) * 4 if nxt == IPPROTO_AH else (frame[pos + 1] + 1) * 8
        if end - pos < length:
            return None
        nxt = frame[pos]
        pos += length
    return pos, frag_hdr


def is_fragment(frame: bytes, l3: int, v6: bool) -> bool:
    """The packet's own fragment bits, without ipf's validity checks."""
    if v6:
        info = ipv6_fragment_info(frame, l3, 0)
    else:
        info = ipv4_fragment_info(frame, l3, 0)
    return not isinstance(info, str) or info not in ("not_fragment", "ipf_bad_header")


def overlaps(frags: list[Frag], start: int, end: int) -> bool:
    """OVS's duplicate test: either end point of the new fragment inside a held one."""
    return any(f.start <= start <= f.end or f.start <= end <= f.end for f in frags)


# --- reassembly ------------------------------------------------------------------------------------
def reassemble(lst: _FragList) -> bytes | None:
    """One whole IP packet from a sorted, contiguous list; None if too big (OVS refuses)."""
    frags = lst.frags
    first = frags[0]
    rest_len = frags[-1].end - frags[1].start + 1
    tail = b"".join(f.frame[f.l4_ofs : f.l4_ofs + f.end - f.start + 1] for f in frags[1:])
    if len(tail) != rest_len:
        return None
    head = first.frame[: first.l3_end]  # Ethernet padding dropped
    l3 = first.l3_ofs
    if not lst.v6:
        tot_len = first.l3_end - l3 + rest_len
        if tot_len > IP_MAX_SIZE:
            return None
        b = bytearray(head + tail)
        struct.pack_into("!H", b, l3 + 2, tot_len)
        b[l3 + 6] &= 0xDF  # clear MF; the offset is already 0 (DF and reserved bits kept)
        set_ipv4_checksum(b, l3)
        return bytes(b)
    payload = first.l3_end - l3 - 40 - 8 + rest_len
    if payload > IP_MAX_SIZE:
        return None
    # OVS keeps the fragment header in place (zeroed) and sets the IPv6 next header to the
    # upper-layer protocol; conntrack only uses its L4 offset. We build the datagram as it
    # was before fragmentation instead: fragment header removed, next-header chain relinked.
    # Conntrack sees the same addresses, protocol and L4 bytes either way.
    frag_hdr, prev_nxt_at = _find_fragment_header(first.frame, l3)
    b = bytearray(head[:frag_hdr] + head[frag_hdr + 8 :] + tail)
    b[prev_nxt_at] = first.frame[frag_hdr]
    struct.pack_into("!H", b, l3 + 4, payload)
    return bytes(b)


def _find_fragment_header(frame: bytes, l3: int) -> tuple[int, int]:
    """(offset of the first fragment header, offset of the next-header byte pointing at it)."""
    nxt_at, pos = l3 + 6, l3 + 40
    while frame[nxt_at] != IPPROTO_FRAGMENT:
        nxt = frame[nxt_at]
        length = (frame[pos + 1] + 2) * 4 if nxt == IPPROTO_AH else (frame[pos + 1] + 1) * 8
        nxt_at, pos = pos, pos + length
    return pos, nxt_at


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def set_ipv4_checksum(b: bytearray, l3: int) -> None:
    ihl = (b[l3] & 0x0F) * 4
    b[l3 + 10 : l3 + 12] = b"\0\0"
    struct.pack_into("!H", b, l3 + 10, _checksum(bytes(b[l3 : l3 + ihl])))
