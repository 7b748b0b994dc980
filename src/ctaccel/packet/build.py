"""Frame builders: small composable functions that return ``bytes`` (plain Python, no scapy).

What: Ethernet (with VLAN tags), IPv4, IPv6 (extension and fragment headers), TCP, UDP,
ICMP, ICMPv6 and ARP builders; ``tcp_frame``/``udp_frame``/``icmp_frame`` conveniences that
choose IPv4 or IPv6 from the address strings; ``fragment_ipv4``/``fragment_ipv6`` that split
a complete frame into fragment frames. Used by tests, the demo and the workload generator.

Design: each builder takes its payload as bytes and returns its header + payload. The L4
checksums of TCP, UDP and ICMPv6 cover an IP pseudo-header, so ``tcp()``/``udp()``/
``icmpv6()`` leave the checksum field 0 and the IP builder that wraps them fills it in
(``l4_checksum="auto"``); ``"bad"`` stores a wrong value, ``"keep"`` leaves the bytes
alone (e.g. a UDP checksum of 0 meaning "none"). ICMPv4 has no pseudo-header: ``icmp()``
fills its own checksum. Malformed packets for tests are built with explicit overrides
(``ihl``, ``total_length``, ``payload_length``, ``data_offset``, ``bad_checksum``).

Invariants:
- Without overrides every checksum is correct (tests compare with scapy).
- Fragment offsets are given in bytes and must be multiples of 8; addresses and MACs may
  be strings, bytes or ints.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ctaccel.packet.checksum import checksum_bytes, sum_bytes

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_ARP = 0x0806
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8

PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_FRAGMENT = 44
PROTO_ICMPV6 = 58
PROTO_SCTP = 132

# Extension headers that stay in front of the fragment header when fragmenting (RFC 8200).
_UNFRAGMENTABLE = (0, 43)
_EXTENSION_HEADERS = (0, 43, 60, 51)

TCP_FLAG_BITS = {"F": 0x001, "S": 0x002, "R": 0x004, "P": 0x008, "A": 0x010, "U": 0x020,
                 "E": 0x040, "C": 0x080, "N": 0x100}  # fmt: skip

# Which L4 checksum each protocol has and where it sits in the L4 header.
_CHECKSUM_OFFSET = {PROTO_TCP: 16, PROTO_UDP: 6, PROTO_ICMPV6: 2}


@dataclass(frozen=True)
class HeaderFields:
    """The link and IP header fields a frame builder takes beyond addresses and L4: VLAN
    tag(s) (see :func:`ether`), TTL / hop limit, TOS / traffic class, the IPv4 id, and the
    L4 checksum mode ("auto", "bad", "keep")."""

    vlan: object = None
    ttl: int = 64
    tos: int = 0
    ident: int = 0
    l4_checksum: str = "auto"


@dataclass(frozen=True)
class TcpFields:
    """The TCP header fields :func:`tcp_frame` takes beyond ports, flags, numbers and data."""

    window: int = 65535
    options: bytes = b""
    wscale: int | None = None


DEFAULT_HEADERS = HeaderFields()
DEFAULT_TCP = TcpFields()


# --- addresses ------------------------------------------------------------------------------


def mac_bytes(mac: str | bytes | int) -> bytes:
    """A MAC address as 6 bytes, from ``"aa:bb:cc:dd:ee:ff"``, 6 bytes or an int."""
    if isinstance(mac, bytes | bytearray):
        if len(mac) != 6:
            raise ValueError(f"MAC address must be 6 bytes, got {len(mac)}")
        return bytes(mac)
    if isinstance(mac, int):
        return mac.to_bytes(6, "big")
    parts = mac.replace("-", ":").split(":")
    if len(parts) != 6:
        raise ValueError(f"bad MAC address {mac!r}")
    return bytes(int(p, 16) for p in parts)


def ip_bytes(addr: str | bytes | int, version: int | None = None) -> bytes:
    """An IPv4 (4 bytes) or IPv6 (16 bytes) address from a string, bytes or an int."""
    if isinstance(addr, bytes | bytearray):
        return bytes(addr)
    if isinstance(addr, int):
        return addr.to_bytes(16 if version == 6 else 4, "big")
    return ipaddress.ip_address(addr).packed


def is_ipv6(addr: str | bytes | int) -> bool:
    """True for an IPv6 address string or 16-byte address."""
    if isinstance(addr, bytes | bytearray):
        return len(addr) == 16
    if isinstance(addr, int):
        return addr > 0xFFFFFFFF
    return ipaddress.ip_address(addr).version == 6


def tcp_flag_bits(flags: str | int) -> int:
    """TCP flags from a scapy-style string (``"SA"``, ``"PA"``, ``"FA"``, ``"R"``) or an int."""
    if isinstance(flags, int):
        return flags & 0xFFF
    bits = 0
    for letter in flags:
        if letter not in TCP_FLAG_BITS:
            raise ValueError(f"unknown TCP flag {letter!r} in {flags!r}")
        bits |= TCP_FLAG_BITS[letter]
    return bits


# --- L2 -------------------------------------------------------------------------------------

VlanSpec = int | tuple[int, ...]


def _vlan_tags(vlan: VlanSpec | Sequence[VlanSpec] | None) -> list[tuple[int, int, int]]:
    """Normalise ``vlan`` to [(tpid, vid, pcp)], outer tag first."""
    if vlan is None:
        return []
    specs = [vlan] if isinstance(vlan, int | tuple) else list(vlan)
    tags = []
    for spec in specs:
        if isinstance(spec, int):
            spec = (spec,)
        vid = spec[0]
        pcp = spec[1] if len(spec) > 1 else 0
        tpid = spec[2] if len(spec) > 2 else ETH_P_8021Q
        tags.append((tpid, vid, pcp))
    return tags


def ether(src, dst, type: int, payload: bytes = b"", vlan=None) -> bytes:
    """Ethernet II frame. ``vlan``: a VID, ``(vid, pcp)``, ``(vid, pcp, tpid)``, or a list of
    those for stacked tags (outer first; TPID 0x8100 unless given)."""
    header = mac_bytes(dst) + mac_bytes(src)
    for tpid, vid, pcp in _vlan_tags(vlan):
        header += struct.pack("!HH", tpid, ((pcp & 7) << 13) | (vid & 0xFFF))
    return header + struct.pack("!H", type) + bytes(payload)


def l3_of(frame: bytes) -> bytes:
    """The bytes after the Ethernet header and any VLAN tags (e.g. to quote in ICMP errors)."""
    pos = 12
    while pos + 4 <= len(frame) and int.from_bytes(frame[pos : pos + 2], "big") in (
        ETH_P_8021Q,
        ETH_P_8021AD,
    ):
        pos += 4
    return bytes(frame[pos + 2 :])


# --- L3 -------------------------------------------------------------------------------------


def _fill_l4_checksum(proto: int, payload: bytes, pseudo: int, mode: str, is_v6: bool) -> bytes:
    """Store the pseudo-header checksum of a TCP/UDP/ICMPv6 payload according to ``mode``."""
    if mode not in ("auto", "bad", "keep"):
        raise ValueError(f"l4_checksum must be auto, bad or keep, not {mode!r}")
    where = _CHECKSUM_OFFSET.get(proto)
    if mode == "keep" or where is None or len(payload) < where + 2:
        return payload
    body = bytearray(payload)
    body[where : where + 2] = b"\x00\x00"
    value = checksum_bytes(bytes(body), pseudo + proto + len(body))
    if proto == PROTO_UDP and value == 0:
        value = 0xFFFF  # 0 means "no checksum" for UDP (RFC 768)
    if mode == "bad":
        value ^= 0x5555
    body[where : where + 2] = value.to_bytes(2, "big")
    return bytes(body)


def ipv4(
    src,
    dst,
    proto: int,
    payload: bytes = b"",
    hdr: HeaderFields = DEFAULT_HEADERS,
    flags: int = 0,
    frag_offset: int = 0,
    more_fragments: bool = False,
    bad_checksum: bool = False,
    ihl: int = 5,
    total_length: int | None = None,
    options: bytes = b"",
) -> bytes:
    """IPv4 header + payload; TTL, TOS, id and the L4 checksum mode from ``hdr``.

    ``flags`` are the 3 header flag bits (0x2 DF, 0x1 MF, 0x4 reserved); ``more_fragments``
    sets MF; ``frag_offset`` is in bytes (multiple of 8). ``ihl`` (words) and
    ``total_length`` override the computed values for malformed-packet tests; options are
    zero-padded to the IHL. The L4 checksum is filled for unfragmented TCP/UDP payloads
    unless ``l4_checksum="keep"``."""
    if frag_offset % 8:
        raise ValueError(f"fragment offset {frag_offset} is not a multiple of 8")
    header_len = max(ihl * 4, 20)
    options = bytes(options).ljust(header_len - 20, b"\x00")[: header_len - 20]
    src_b, dst_b = ip_bytes(src), ip_bytes(dst)
    fragmented = more_fragments or frag_offset or (flags & 0x1)
    if not fragmented:
        payload = _fill_l4_checksum(proto, bytes(payload), sum_bytes(src_b + dst_b),
                                    hdr.l4_checksum, False)  # fmt: skip
    length = header_len + len(payload) if total_length is None else total_length
    flag_bits = (flags & 0x7) | (0x1 if more_fragments else 0)
    header = bytearray(
        struct.pack(
            "!BBHHHBBH4s4s",
            0x40 | (ihl & 0xF),
            hdr.tos & 0xFF,
            length & 0xFFFF,
            hdr.ident & 0xFFFF,
            (flag_bits << 13) | ((frag_offset // 8) & 0x1FFF),
            hdr.ttl & 0xFF,
            proto & 0xFF,
            0,
            src_b,
            dst_b,
        )  # fmt: skip
        + options
    )
    checksum = checksum_bytes(bytes(header))
    if bad_checksum:
        checksum ^= 0x5555
    header[10:12] = checksum.to_bytes(2, "big")
    return bytes(header) + bytes(payload)


def ipv6_ext(header_type: int, data: bytes = b"") -> tuple[int, bytes]:
    """An extension header spec for :func:`ipv6`: hop-by-hop (0), routing (43),
    destination options (60) or AH (51), with ``data`` after the next-header/length
    bytes (zero-padded to the header's unit)."""
    return (header_type, bytes(data))


def _ext_header_bytes(header_type: int, data: bytes, next_header: int) -> bytes:
    if header_type == 51:  # AH: length in 4-byte words minus 2
        body = data.ljust(max(10, -(-(len(data) + 2) // 4) * 4 - 2), b"\x00")
        return bytes([next_header, (len(body) + 2) // 4 - 2]) + body
    body = data.ljust(max(6, -(-(len(data) + 2) // 8) * 8 - 2), b"\x00")
    return bytes([next_header, (len(body) + 2) // 8 - 1]) + body


def ipv6(
    src,
    dst,
    next_header: int,
    payload: bytes = b"",
    hop_limit: int = 64,
    tc: int = 0,
    flow_label: int = 0,
    ext_headers: Iterable[tuple[int, bytes]] = (),
    fragment: tuple[int, bool, int] | None = None,
    payload_length: int | None = None,
    l4_checksum: str = "auto",
) -> bytes:
    """IPv6 header + extension headers + payload.

    ``ext_headers`` is a list of :func:`ipv6_ext` specs, in order; ``fragment`` =
    ``(offset_bytes, more, identification)`` adds a fragment header after them (the payload
    is then a fragment and its checksum is left alone). ``payload_length`` overrides the
    header's length field. The upper-layer checksum uses the fixed header's destination."""
    src_b, dst_b = ip_bytes(src, 6), ip_bytes(dst, 6)
    if fragment is None:
        payload = _fill_l4_checksum(next_header, bytes(payload), sum_bytes(src_b + dst_b),
                                    l4_checksum, True)  # fmt: skip
    chain = [(t, d) for t, d in ext_headers]
    if fragment is not None:
        offset, more, ident = fragment
        if offset % 8:
            raise ValueError(f"fragment offset {offset} is not a multiple of 8")
        chain.append((PROTO_FRAGMENT, struct.pack("!HI", offset | (1 if more else 0), ident)))
    ext = b""
    for i, (htype, data) in enumerate(chain):
        nxt = chain[i + 1][0] if i + 1 < len(chain) else next_header
        if htype == PROTO_FRAGMENT:
            ext += bytes([nxt, 0]) + data[:6].ljust(6, b"\x00")
        else:
            ext += _ext_header_bytes(htype, data, nxt)
    first = chain[0][0] if chain else next_header
    body = ext + bytes(payload)
    length = len(body) if payload_length is None else payload_length
    word0 = (6 << 28) | ((tc & 0xFF) << 20) | (flow_label & 0xFFFFF)
    header = struct.pack("!IHBB16s16s", word0, length & 0xFFFF, first, hop_limit & 0xFF,
                         src_b, dst_b)  # fmt: skip
    return header + body


# --- L4 -------------------------------------------------------------------------------------


def tcp(
    sport: int,
    dport: int,
    seq: int = 0,
    ack: int = 0,
    flags: str | int = "S",
    window: int = 65535,
    payload: bytes = b"",
    options: bytes = b"",
    wscale: int | None = None,
    data_offset: int | None = None,
    urgent: int = 0,
) -> bytes:
    """TCP header + payload, checksum 0 (the IP builder fills it). ``wscale`` appends a
    window-scale option (NOP-aligned); options are zero (EOL) padded to 4 bytes;
    ``data_offset`` (32-bit words) overrides the computed header length field."""
    opts = bytes(options)
    if wscale is not None:
        opts += bytes([1, 3, 3, wscale & 0xFF])  # NOP + window scale, 4-byte aligned
    opts = opts.ljust(-(-len(opts) // 4) * 4, b"\x00")
    offset = (20 + len(opts)) // 4 if data_offset is None else data_offset
    bits = tcp_flag_bits(flags)
    header = struct.pack("!HHIIHHHH", sport & 0xFFFF, dport & 0xFFFF, seq & 0xFFFFFFFF,
                         ack & 0xFFFFFFFF, ((offset & 0xF) << 12) | bits, window & 0xFFFF,
                         0, urgent & 0xFFFF)  # fmt: skip
    return header + opts + bytes(payload)


def udp(sport: int, dport: int, payload: bytes = b"", length: int | None = None) -> bytes:
    """UDP header + payload, checksum 0 (the IP builder fills it); ``length`` overrides."""
    value = 8 + len(payload) if length is None else length
    return struct.pack("!HHHH", sport & 0xFFFF, dport & 0xFFFF, value & 0xFFFF, 0) + payload


def icmp(type: int, code: int = 0, id: int = 0, seq: int = 0, payload: bytes = b"",
         bad_checksum: bool = False) -> bytes:  # fmt: skip
    """ICMPv4 message with its checksum. ``id``/``seq`` form the second header word (for
    errors leave them 0: the "unused" field); ``payload`` is the data or quoted datagram."""
    body = bytearray(struct.pack("!BBHHH", type & 0xFF, code & 0xFF, 0, id & 0xFFFF,
                                 seq & 0xFFFF) + bytes(payload))  # fmt: skip
    value = checksum_bytes(bytes(body))
    if bad_checksum:
        value ^= 0x5555
    body[2:4] = value.to_bytes(2, "big")
    return bytes(body)


def icmpv6(type: int, code: int = 0, id: int = 0, seq: int = 0, payload: bytes = b"") -> bytes:
    """ICMPv6 message, checksum 0 (the IPv6 builder fills it with the pseudo-header)."""
    return struct.pack("!BBHHH", type & 0xFF, code & 0xFF, 0, id & 0xFFFF, seq & 0xFFFF) + bytes(
        payload
    )


def arp(op: int, sender_mac, sender_ip, target_mac, target_ip) -> bytes:
    """Ethernet/IPv4 ARP packet (28 bytes): op 1 request, 2 reply."""
    return struct.pack("!HHBBH6s4s6s4s", 1, ETH_P_IP, 6, 4, op & 0xFFFF, mac_bytes(sender_mac),
                       ip_bytes(sender_ip), mac_bytes(target_mac), ip_bytes(target_ip))  # fmt: skip


# --- whole frames ---------------------------------------------------------------------------


def _ip_frame(src_mac, dst_mac, src_ip, dst_ip, proto, l4, hdr):
    if is_ipv6(src_ip):
        packet = ipv6(src_ip, dst_ip, proto, l4, hop_limit=hdr.ttl, tc=hdr.tos,
                      l4_checksum=hdr.l4_checksum)  # fmt: skip
        return ether(src_mac, dst_mac, ETH_P_IPV6, packet, hdr.vlan)
    return ether(src_mac, dst_mac, ETH_P_IP, ipv4(src_ip, dst_ip, proto, l4, hdr), hdr.vlan)


def tcp_frame(src_mac, dst_mac, src_ip, dst_ip, sport: int, dport: int, flags: str | int = "S",
              seq: int = 0, ack: int = 0, payload: bytes = b"", seg: TcpFields = DEFAULT_TCP,
              hdr: HeaderFields = DEFAULT_HEADERS) -> bytes:  # fmt: skip
    """Ethernet + IPv4/IPv6 (chosen from ``src_ip``) + TCP, checksums filled; window and
    options from ``seg``, VLAN and IP fields from ``hdr``."""
    segment = tcp(sport, dport, seq, ack, flags, seg.window, payload, seg.options, seg.wscale)
    return _ip_frame(src_mac, dst_mac, src_ip, dst_ip, PROTO_TCP, segment, hdr)


def udp_frame(src_mac, dst_mac, src_ip, dst_ip, sport: int, dport: int, payload: bytes = b"",
              hdr: HeaderFields = DEFAULT_HEADERS) -> bytes:  # fmt: skip
    """Ethernet + IPv4/IPv6 + UDP, checksums filled."""
    datagram = udp(sport, dport, payload)
    return _ip_frame(src_mac, dst_mac, src_ip, dst_ip, PROTO_UDP, datagram, hdr)


def icmp_frame(src_mac, dst_mac, src_ip, dst_ip, type: int | None = None, code: int = 0,
               id: int = 0, seq: int = 0, payload: bytes = b"",
               hdr: HeaderFields = DEFAULT_HEADERS) -> bytes:  # fmt: skip
    """Ethernet + ICMP over IPv4, or ICMPv6 over IPv6 (chosen from ``src_ip``).
    ``type`` defaults to an echo request (8, or 128 for ICMPv6); the checksum is always
    computed (``hdr.l4_checksum`` is not used)."""
    if hdr.l4_checksum != "auto":
        hdr = HeaderFields(hdr.vlan, hdr.ttl, hdr.tos, hdr.ident)
    if is_ipv6(src_ip):
        message = icmpv6(128 if type is None else type, code, id, seq, payload)
        return _ip_frame(src_mac, dst_mac, src_ip, dst_ip, PROTO_ICMPV6, message, hdr)
    message = icmp(8 if type is None else type, code, id, seq, payload)
    return _ip_frame(src_mac, dst_mac, src_ip, dst_ip, PROTO_ICMP, message, hdr)


def arp_frame(src_mac, dst_mac, op: int, sender_ip, target_ip, target_mac=b"\x00" * 6,
              vlan=None) -> bytes:  # fmt: skip
    """Ethernet + ARP; the sender hardware address is ``src_mac``."""
    return ether(src_mac, dst_mac, ETH_P_ARP,
                 arp(op, src_mac, sender_ip, target_mac, target_ip), vlan)  # fmt: skip


# --- fragmentation --------------------------------------------------------------------------


def _l2_length(frame: bytes) -> int:
    return len(frame) - len(l3_of(frame))


def fragment_ipv4(frame: bytes, mtu_payload: int) -> list[bytes]:
    """Split an IPv4 frame into fragment frames carrying at most ``mtu_payload`` bytes of IP
    payload each (rounded down to a multiple of 8). Ethernet padding is dropped; a datagram
    that already fits is returned as the only element."""
    l2 = _l2_length(frame)
    ip = frame[l2:]
    ihl = (ip[0] & 0xF) * 4
    total = int.from_bytes(ip[2:4], "big")
    header, data = bytes(ip[:ihl]), bytes(ip[ihl:total])
    chunk = (mtu_payload // 8) * 8
    if chunk <= 0:
        raise ValueError(f"mtu_payload {mtu_payload} leaves no room for 8 bytes of data")
    frag_field = int.from_bytes(header[6:8], "big")
    base_offset = (frag_field & 0x1FFF) * 8
    base_more = bool(frag_field & 0x2000)
    if len(data) <= chunk:
        return [bytes(frame[: l2 + total])]
    frames = []
    for start in range(0, len(data), chunk):
        piece = data[start : start + chunk]
        last = start + chunk >= len(data)
        more = base_more or not last
        h = bytearray(header)
        h[2:4] = (ihl + len(piece)).to_bytes(2, "big")
        field = (frag_field & 0xC000) | (0x2000 if more else 0) | ((base_offset + start) // 8)
        h[6:8] = field.to_bytes(2, "big")
        h[10:12] = b"\x00\x00"
        h[10:12] = checksum_bytes(bytes(h)).to_bytes(2, "big")
        frames.append(bytes(frame[:l2]) + bytes(h) + piece)
    return frames


def fragment_ipv6(frame: bytes, size: int, ident: int = 0x12345678) -> list[bytes]:
    """Split an IPv6 frame into fragments carrying at most ``size`` bytes of fragmentable
    data each (rounded down to a multiple of 8). Hop-by-hop and routing headers stay in
    front of the fragment header; everything after them is fragmented."""
    l2 = _l2_length(frame)
    ip = bytes(frame[l2:])
    plen = int.from_bytes(ip[4:6], "big")
    body = ip[40 : 40 + plen]
    chunk = (size // 8) * 8
    if chunk <= 0:
        raise ValueError(f"size {size} leaves no room for 8 bytes of data")
    # Find the end of the unfragmentable part and the byte holding its last next-header.
    next_header, next_at, pos = ip[6], 6, 0
    while next_header in _UNFRAGMENTABLE and pos + 2 <= len(body):
        next_at = 40 + pos
        next_header = body[pos]
        pos += (body[pos + 1] + 1) * 8
    unfrag, fragmentable = bytearray(ip[:40] + body[:pos]), body[pos:]
    unfrag[next_at] = PROTO_FRAGMENT
    frames = []
    for start in range(0, len(fragmentable), chunk):
        piece = fragmentable[start : start + chunk]
        more = start + chunk < len(fragmentable)
        frag_header = struct.pack("!BBHI", next_header, 0, start | int(more), ident)
        packet = bytearray(unfrag) + frag_header + piece
        packet[4:6] = (len(packet) - 40).to_bytes(2, "big")
        frames.append(bytes(frame[:l2]) + bytes(packet))
    return frames
