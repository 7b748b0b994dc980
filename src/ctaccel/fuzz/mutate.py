"""Frame mutations for fuzzing: each one a named, seeded change of one frame.

What: ``MUTATIONS`` maps a name to a function ``(rng, frame) -> bytes`` that returns a
changed copy of an Ethernet frame: cut short, bytes flipped, IP/L4 lengths and offsets out of
range, IPv4 options and TCP options soup, fragment bits and offsets (overlapping or out of
range), IPv6 extension-header chains, ICMP errors quoting garbage, sequence numbers across
and around the window (blind injection), VLAN tags and odd EtherTypes, zero-length and
64 KB frames. ``mutate(rng, frame)`` picks one (sometimes two) and, most of the time,
recomputes the checksums afterwards so the packet gets past the checks that would otherwise
stop it first and reaches deeper code.

Design: plain Python on bytes, seeded ``random.Random`` only (a campaign is a pure function
of its seed). The mutations read the frame's layout themselves (``layout``) and never assume
it is well formed: a mutation that does not apply leaves the frame to a byte flip.

Invariants: a mutation never raises on any input (the fuzzing campaign checks the engines,
not this module); frames stay below 65,536 bytes.
"""

from __future__ import annotations

import random
import struct

from ctaccel.packet import build as B
from ctaccel.packet.checksum import checksum_bytes, sum_bytes

MAX_FRAME = 65535


def layout(frame: bytes) -> tuple[int, int, int, int]:
    """(l3 offset, EtherType, l4 offset or -1, IP protocol or -1) of a frame, reading VLAN
    tags, the IPv4 IHL and IPv6 extension headers as far as they are there."""
    pos, ethertype = 12, -1
    while pos + 2 <= len(frame):
        ethertype = int.from_bytes(frame[pos : pos + 2], "big")
        if ethertype not in (B.ETH_P_8021Q, B.ETH_P_8021AD):
            break
        pos += 4
    l3 = pos + 2
    if ethertype == B.ETH_P_IP and l3 + 20 <= len(frame):
        ihl = (frame[l3] & 0xF) * 4
        return l3, ethertype, l3 + ihl, frame[l3 + 9]
    if ethertype == B.ETH_P_IPV6 and l3 + 40 <= len(frame):
        nh, off = frame[l3 + 6], l3 + 40
        for _ in range(8):
            if nh not in (0, 43, 60, 44) or off + 8 > len(frame):
                break
            step = 8 if nh == 44 else (frame[off + 1] + 1) * 8
            nh, off = frame[off], off + step
        return l3, ethertype, off, nh
    return l3, ethertype, -1, -1


def _v6_fragment(f, l3: int) -> bool:
    """Whether an IPv6 packet's header chain holds a fragment header."""
    nh, off = f[l3 + 6], l3 + 40
    for _ in range(8):
        if nh == 44:
            return True
        if nh not in (0, 43, 60) or off + 8 > len(f):
            return False
        nh, off = f[off], off + (f[off + 1] + 1) * 8
    return False


def fix_checksums(frame: bytes) -> bytes:
    """The frame with its IPv4 header checksum and its TCP/UDP/ICMP/ICMPv6 checksum
    recomputed over what the headers claim (clipped to the frame); unchanged where the
    headers cannot be read. A fragment's L4 checksum is left alone."""
    f = bytearray(frame)
    l3, et, l4, proto = layout(f)
    if l4 < 0 or l4 > len(f):
        return bytes(f)
    if et == B.ETH_P_IP:
        ihl = (f[l3] & 0xF) * 4
        if ihl >= 20 and l3 + ihl <= len(f):
            f[l3 + 10 : l3 + 12] = b"\x00\x00"
            f[l3 + 10 : l3 + 12] = checksum_bytes(bytes(f[l3 : l3 + ihl])).to_bytes(2, "big")
        end = min(len(f), l3 + int.from_bytes(f[l3 + 2 : l3 + 4], "big"))
        if int.from_bytes(f[l3 + 6 : l3 + 8], "big") & 0x3FFF:
            return bytes(f)
        pseudo = sum_bytes(bytes(f[l3 + 12 : l3 + 20]))
    else:
        if _v6_fragment(f, l3):
            return bytes(f)
        end = min(len(f), l3 + 40 + int.from_bytes(f[l3 + 4 : l3 + 6], "big"))
        pseudo = sum_bytes(bytes(f[l3 + 8 : l3 + 40]))
    where = {6: 16, 17: 6, 58: 2, 1: 2}.get(proto)
    if where is None or end < l4 + where + 2:
        return bytes(f)
    f[l4 + where : l4 + where + 2] = b"\x00\x00"
    body = bytes(f[l4:end])
    if proto == 1:
        value = checksum_bytes(body)
    else:
        value = checksum_bytes(body, pseudo + proto + len(body))
        if proto == 17 and value == 0:
            value = 0xFFFF
    f[l4 + where : l4 + where + 2] = value.to_bytes(2, "big")
    return bytes(f)


def _l4_header(f: bytes, proto: int, need: int) -> int:
    """Where the L4 header of protocol ``proto`` starts when its first ``need`` bytes are in
    the frame, else -1 (the mutation does not apply)."""
    _l3, _et, l4, found = layout(f)
    return l4 if found == proto and 0 <= l4 and l4 + need <= len(f) else -1


def _rand_bytes(rng: random.Random, n: int) -> bytes:
    return bytes(rng.getrandbits(8) for _ in range(n))


def truncate(rng, f):
    return f[: rng.randrange(len(f) + 1)] if f else f


def flip(rng, f):
    f = bytearray(f)
    for _ in range(rng.randint(1, 6)):
        if f:
            f[rng.randrange(len(f))] = rng.getrandbits(8)
    return bytes(f)


def ip_length(rng, f):
    """IPv4 total length / IPv6 payload length anywhere from 0 to far past the frame."""
    l3, et, _l4, _p = layout(f)
    f = bytearray(f)
    at = l3 + 2 if et == B.ETH_P_IP else l3 + 4
    if at + 2 > len(f):
        return flip(rng, f)
    real = len(f) - l3 - (0 if et == B.ETH_P_IP else 40)
    value = rng.choice([0, 1, 19, 20, 39, 40, real - 1, real + 1, real + 300, rng.getrandbits(16)])
    f[at : at + 2] = (value & 0xFFFF).to_bytes(2, "big")
    return bytes(f)


def ihl(rng, f):
    l3, et, _l4, _p = layout(f)
    if et != B.ETH_P_IP or l3 >= len(f):
        return flip(rng, f)
    f = bytearray(f)
    f[l3] = (rng.choice([4, 6]) << 4 if rng.random() < 0.2 else 0x40) | rng.randrange(16)
    return bytes(f)


def ip_options(rng, f):
    """IPv4 options soup: 4-40 bytes of option kinds with lengths right, wrong or zero."""
    l3, et, l4, _p = layout(f)
    if et != B.ETH_P_IP or l4 < 0 or l4 > len(f):
        return flip(rng, f)
    soup = bytearray()
    while len(soup) < rng.choice([4, 8, 20, 40]):
        kind = rng.choice([0, 1, 7, 68, 131, 137, 148, rng.getrandbits(8)])
        soup += bytes([kind]) if kind in (0, 1) else bytes([kind, rng.randrange(0, 12)])
    soup = bytes(soup[:40]).ljust(-(-len(soup[:40]) // 4) * 4, b"\x00")
    out = bytearray(f[:l4] + soup + f[l4:])
    out[l3] = 0x40 | min(15, (l4 - l3 + len(soup)) // 4)
    return _relength(out, len(soup))


def l4_offset(rng, f):
    """TCP data offset 0-15 (header shorter than 20 bytes or past the segment)."""
    l4 = _l4_header(f, 6, 13)
    if l4 < 0:
        return flip(rng, f)
    f = bytearray(f)
    f[l4 + 12] = (rng.randrange(16) << 4) | (f[l4 + 12] & 0xF)
    return bytes(f)


def tcp_options(rng, f):
    """TCP options soup (window scale, SACK, timestamps, MSS with lengths right or wrong,
    NOPs, EOL, unknown kinds), the data offset grown to hold them."""
    l4 = _l4_header(f, 6, 20)
    if l4 < 0:
        return flip(rng, f)
    soup = bytearray()
    for _ in range(rng.randint(1, 8)):
        kind = rng.choice([0, 1, 2, 3, 4, 5, 8, 30, rng.getrandbits(8)])
        if kind in (0, 1):
            soup.append(kind)
        else:
            length = rng.choice(
                [{2: 4, 3: 3, 4: 2, 5: 10, 8: 10}.get(kind, 2), rng.randrange(0, 41)]
            )
            soup += bytes([kind, length]) + _rand_bytes(rng, max(0, min(length, 40) - 2))
    soup = bytes(soup[:40]).ljust(-(-len(soup[:40]) // 4) * 4, b"\x01")
    hdr = (f[l4 + 12] >> 4) * 4
    hdr = hdr if 20 <= hdr and l4 + hdr <= len(f) else 20
    out = bytearray(f[: l4 + 20] + soup + f[l4 + hdr :])
    out[l4 + 12] = (min(15, (20 + len(soup)) // 4) << 4) | (out[l4 + 12] & 0xF)
    return _relength(out, len(out) - len(f))


def _relength(f: bytearray, grew: int) -> bytes:
    """The IP length fields moved by ``grew`` bytes (after an insertion)."""
    l3, et, _l4, _p = layout(f)
    at = l3 + 2 if et == B.ETH_P_IP else l3 + 4
    if at + 2 <= len(f):
        value = int.from_bytes(f[at : at + 2], "big") + grew
        f[at : at + 2] = (value & 0xFFFF).to_bytes(2, "big")
    return bytes(f)


def tcp_flags(rng, f):
    l4 = _l4_header(f, 6, 14)
    if l4 < 0:
        return flip(rng, f)
    f = bytearray(f)
    f[l4 + 13] = rng.choice([rng.getrandbits(8), 0x00, 0x03, 0x06, 0x07, 0x29, 0x3F, 0x14])
    return bytes(f)


def tcp_numbers(rng, f):
    """Blind injection: sequence/ack numbers moved across and around the window (by up to
    2**31 or by a little), or random."""
    l4 = _l4_header(f, 6, 14)
    if l4 < 0:
        return flip(rng, f)
    f = bytearray(f)
    at = l4 + rng.choice([4, 8])
    old = int.from_bytes(f[at : at + 4], "big")
    delta = rng.choice([1, -1, 1000, -1000, 65535, -65535, 1 << 20, 1 << 30, 1 << 31,
                        rng.getrandbits(32)])  # fmt: skip
    f[at : at + 4] = ((old + delta) & 0xFFFFFFFF).to_bytes(4, "big")
    if rng.random() < 0.5:  # often as a reset or a data segment
        f[l4 + 13] = rng.choice([0x04, 0x14, 0x18, 0x10])
    return bytes(f)


def udp_length(rng, f):
    l4 = _l4_header(f, 17, 6)
    if l4 < 0:
        return flip(rng, f)
    f = bytearray(f)
    real = len(f) - l4
    value = rng.choice([0, 1, 7, 8, real - 1, real + 1, rng.getrandbits(16)])
    f[l4 + 4 : l4 + 6] = (value & 0xFFFF).to_bytes(2, "big")
    return bytes(f)


def fragment_bits(rng, f):
    """IPv4 MF / offset / DF set at random (a lone fragment, an offset past 64 KB, ...)."""
    l3, et, _l4, _p = layout(f)
    if et != B.ETH_P_IP or l3 + 8 > len(f):
        return ipv6_fragment(rng, f)
    f = bytearray(f)
    value = (rng.randrange(8) << 13) | rng.choice([0, 1, 2, 185, 8191, rng.randrange(8192)])
    f[l3 + 6 : l3 + 8] = value.to_bytes(2, "big")
    return bytes(f)


def ipv6_fragment(rng, f):
    """A fragment header put in front of an IPv6 packet's L4 (offset, M bit at random)."""
    l3, et, _l4, _p = layout(f)
    if et != B.ETH_P_IPV6 or l3 + 40 > len(f):
        return flip(rng, f)
    nh = f[l3 + 6]
    offset = rng.choice([0, 0, 1, 8191, rng.randrange(8192)])
    frag = struct.pack("!BBHI", nh, 0, (offset << 3) | rng.randrange(2), rng.getrandbits(32))
    out = bytearray(f[: l3 + 40] + frag + f[l3 + 40 :])
    out[l3 + 6] = 44
    return _relength(out, 8)


def ipv6_ext_chain(rng, f):
    """IPv6 extension headers (hop-by-hop, routing, destination, AH, unknown) in front of
    the L4, with lengths right, past the frame, or a chain that never ends in an L4."""
    l3, et, _l4, _p = layout(f)
    if et != B.ETH_P_IPV6 or l3 + 40 > len(f):
        return flip(rng, f)
    nh = f[l3 + 6]
    chain = b""
    for _ in range(rng.randint(1, 4)):
        kind = rng.choice([0, 43, 60, 51, 60, rng.getrandbits(8)])
        units = rng.choice([0, 0, 1, 2, rng.getrandbits(8)])
        body_len = (units + 1) * 8 - 2 if rng.random() < 0.8 else rng.randrange(0, 30)
        chain = bytes([nh, units]) + _rand_bytes(rng, min(body_len, 64)) + chain
        nh = kind
    out = bytearray(f[: l3 + 40] + chain + f[l3 + 40 :])
    out[l3 + 6] = nh
    return _relength(out, len(chain))


def icmp_error(rng, f):
    """An ICMP/ICMPv6 error about this frame, quoting it whole, cut, flipped or as garbage,
    from a router address or from the frame's own destination."""
    l3, et, _l4, _p = layout(f)
    inner = f[l3:]
    choice = rng.randrange(4)
    if choice == 1:
        inner = inner[: rng.randrange(len(inner) + 1)]
    elif choice == 2:
        inner = flip(rng, inner)
    elif choice == 3:
        inner = _rand_bytes(rng, rng.randrange(0, 80))
    mac_src, mac_dst = (
        f[6:12] if len(f) >= 12 else b"\x02" * 6,
        f[0:6] if len(f) >= 6 else b"\x02" * 6,
    )
    if et == B.ETH_P_IPV6 and l3 + 40 <= len(f):
        src = f[l3 + 24 : l3 + 40] if rng.random() < 0.5 else bytes(15) + b"\x99"
        dst = f[l3 + 8 : l3 + 24]
        body = B.icmpv6(rng.choice([1, 2, 3, 4, 128, 129]), rng.randrange(4), payload=inner)
        return B.ether(mac_src, mac_dst, B.ETH_P_IPV6, B.ipv6(src, dst, 58, body))
    if l3 + 20 <= len(f) and et == B.ETH_P_IP:
        src = f[l3 + 16 : l3 + 20] if rng.random() < 0.5 else b"\xc0\x00\x02\x63"
        dst = f[l3 + 12 : l3 + 16]
    else:
        src, dst = b"\xc0\x00\x02\x63", b"\x0a\x00\x00\x01"
    kind = rng.choice([(3, rng.randrange(16)), (11, 0), (12, 0), (5, 1), (4, 0)])
    body = B.icmp(kind[0], kind[1], payload=inner)
    return B.ether(mac_src, mac_dst, B.ETH_P_IP, B.ipv4(src, dst, 1, body))


def vlan(rng, f):
    """One or two 802.1Q/802.1ad tags inserted after the MACs (or a tag left partial)."""
    if len(f) < 14:
        return flip(rng, f)
    tags = b""
    for _ in range(rng.randint(1, 2)):
        tpid = rng.choice([B.ETH_P_8021Q, B.ETH_P_8021AD])
        tags += struct.pack("!HH", tpid, rng.getrandbits(16))
    out = f[:12] + tags + f[12:]
    return out[: 12 + rng.randrange(len(tags))] if rng.random() < 0.1 else out


def ethertype(rng, f):
    if len(f) < 14:
        return flip(rng, f)
    value = rng.choice([0x0806, 0x86DD, 0x0800, 0x8847, 0x88CC, 0x05DC, rng.getrandbits(16)])
    return f[:12] + value.to_bytes(2, "big") + f[14:]


def giant(rng, f):
    """The frame padded (payload and IP length grown) to up to 64 KB."""
    size = rng.choice([1519, 9018, 16384, MAX_FRAME, rng.randrange(len(f), MAX_FRAME + 1)])
    grow = max(0, size - len(f))
    return _relength(
        bytearray(f + _rand_bytes(rng, min(grow, 64)) + bytes(max(0, grow - 64))), grow
    )


def empty(rng, f):  # noqa: ARG001
    return b"" if rng.random() < 0.5 else f[: rng.randrange(14)]


def ftp_command(rng, f):
    """An FTP command or reply in the TCP payload: well formed, hostile (a third host, bad
    numbers, overlong, cut) or garbage, for the helper to read."""
    l4 = _l4_header(f, 6, 20)
    if l4 < 0:
        return flip(rng, f)
    hdr = (f[l4 + 12] >> 4) * 4
    hdr = hdr if 20 <= hdr and l4 + hdr <= len(f) else 20
    n = [rng.choice([10, 0, 255, 256, 999, rng.randrange(1000)]) for _ in range(6)]
    eprt_hosts = ["10.0.3.5", "fd00:3::5", "::1", "x"]
    line = rng.choice([
        "PORT {},{},{},{},{},{}\r\n".format(*n),
        f"PORT 10,0,3,5,{n[4]},{n[5]}\r\n",
        "227 Entering Passive Mode ({},{},{},{},{},{})\r\n".format(*n),
        f"EPRT |{rng.choice([1, 2, 3])}|{rng.choice(eprt_hosts)}|{n[0] * 256 + n[1]}|\r\n",
        f"229 Entering Extended Passive Mode (|||{n[0] * 300}|)\r\n",
        "PORT " + "9" * rng.randrange(1, 400) + "\r\n",
        "PORT 10,0,3,5,1",
        _rand_bytes(rng, rng.randrange(60)).decode("latin-1"),
    ])  # fmt: skip
    payload = line.encode("latin-1")
    return _relength(bytearray(f[: l4 + hdr] + payload), l4 + hdr + len(payload) - len(f))


MUTATIONS = {
    "truncate": truncate,
    "flip": flip,
    "ip_length": ip_length,
    "ihl": ihl,
    "ip_options": ip_options,
    "tcp_data_offset": l4_offset,
    "tcp_options": tcp_options,
    "tcp_flags": tcp_flags,
    "tcp_numbers": tcp_numbers,
    "udp_length": udp_length,
    "fragment_bits": fragment_bits,
    "ipv6_fragment": ipv6_fragment,
    "ipv6_ext_chain": ipv6_ext_chain,
    "icmp_error": icmp_error,
    "vlan": vlan,
    "ethertype": ethertype,
    "giant": giant,
    "empty": empty,
    "ftp_command": ftp_command,
}
# checksums fixed afterwards for these most of the time (so the packet is judged on what was
# changed, not stopped by its checksum); never for the ones whose point is the bytes as cut
_REFIX = frozenset(MUTATIONS) - {"truncate", "empty", "flip"}


def mutate(rng: random.Random, frame: bytes) -> tuple[bytes, str]:
    """One mutated copy of ``frame`` and the mutation's name (two names joined by '+' when
    two were applied)."""
    names = [rng.choice(tuple(MUTATIONS))]
    if rng.random() < 0.15:
        names.append(rng.choice(tuple(MUTATIONS)))
    out = bytes(frame)
    for name in names:
        out = MUTATIONS[name](rng, out)
    if names[-1] in _REFIX and rng.random() < 0.75:
        out = fix_checksums(out)
    return out[:MAX_FRAME], "+".join(names)
