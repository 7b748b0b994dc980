"""Frame builders for the oracle scenarios (scapy).

What: short helpers that build the Ethernet frames the scenarios inject: host A (10.1.1.1,
fd00::1) sits behind port 1, host B (10.1.1.2, fd00::2) behind port 2, host C (10.1.1.3,
fd00::3) behind port 3, and a router R (10.1.1.254, fd00::fe) also behind port 2.

Design: each helper returns ``bytes`` with correct lengths and checksums (scapy computes them)
unless the caller passes explicit bad values; a ``Timeline`` collects (in_port, frame, time_ms)
with strictly increasing times and hands out 1-based packet numbers for expectations.

Invariants: frames sent "from X" carry X's MAC as source, so the in_port always matches.
"""

from __future__ import annotations

from scapy.layers.inet import ICMP, IP, TCP, UDP, fragment
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    IPv6,
    IPv6ExtHdrFragment,
    fragment6,
)
from scapy.layers.l2 import Ether
from scapy.packet import Raw

A, B, C, R = "10.1.1.1", "10.1.1.2", "10.1.1.3", "10.1.1.254"
A6, B6, C6, R6 = "fd00::1", "fd00::2", "fd00::3", "fd00::fe"
MAC = {
    "A": "50:54:00:00:00:01",
    "B": "50:54:00:00:00:02",
    "C": "50:54:00:00:00:03",
    "R": "50:54:00:00:00:fe",
}
PORT = {"A": 1, "B": 2, "C": 3, "R": 2}
IP4 = {"A": A, "B": B, "C": C, "R": R}
IP6 = {"A": A6, "B": B6, "C": C6, "R": R6}

__all__ = [
    "ICMP",
    "ICMPv6DestUnreach",
    "ICMPv6EchoReply",
    "ICMPv6EchoRequest",
    "ICMPv6ND_NA",
    "ICMPv6ND_NS",
    "IP",
    "IPv6",
    "IPv6ExtHdrFragment",
    "Raw",
    "TCP",
    "UDP",
    "fragment",
    "fragment6",
]


def eth(src: str, dst: str) -> Ether:
    """Ethernet header from host ``src`` to host ``dst`` (names "A", "B", "C", "R")."""
    return Ether(src=MAC[src], dst=MAC[dst])


def ip4(src: str, dst: str, **kw) -> Ether:
    """Ethernet + IPv4 from host ``src`` to host ``dst``."""
    return eth(src, dst) / IP(src=IP4[src], dst=IP4[dst], **kw)


def ip6(src: str, dst: str, **kw) -> Ether:
    """Ethernet + IPv6 from host ``src`` to host ``dst``."""
    return eth(src, dst) / IPv6(src=IP6[src], dst=IP6[dst], **kw)


def udp(src: str, dst: str, sport: int, dport: int, data: bytes = b"u" * 16, v6=False) -> bytes:
    l3 = ip6(src, dst) if v6 else ip4(src, dst)
    return bytes(l3 / UDP(sport=sport, dport=dport) / Raw(data))


def tcp(
    src: str,
    dst: str,
    sport: int,
    dport: int,
    flags: str,
    seq: int,
    ack: int = 0,
    data: bytes = b"",
    window: int = 65535,
    v6: bool = False,
    options=None,
) -> bytes:
    l3 = ip6(src, dst) if v6 else ip4(src, dst)
    seg = TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack, window=window)
    if options is not None:
        seg.options = options
    pkt = l3 / seg
    if data:
        pkt = pkt / Raw(data)
    return bytes(pkt)


def icmp_echo(src: str, dst: str, ident: int, seq: int, reply: bool = False) -> bytes:
    return bytes(ip4(src, dst) / ICMP(type=0 if reply else 8, id=ident, seq=seq) / Raw(b"p" * 8))


def icmp6_echo(src: str, dst: str, ident: int, seq: int, reply: bool = False) -> bytes:
    cls = ICMPv6EchoReply if reply else ICMPv6EchoRequest
    return bytes(ip6(src, dst) / cls(id=ident, seq=seq, data=b"p" * 8))


def icmp_error(src: str, dst: str, quoted: bytes, type_: int = 3, code: int = 3, keep=28) -> bytes:
    """ICMPv4 error from ``src`` to ``dst`` quoting the first ``keep`` bytes of the IP packet
    inside Ethernet frame ``quoted`` (28 = IP header + 8 bytes of L4, the RFC 792 minimum)."""
    inner = quoted[14 : 14 + keep]
    return bytes(ip4(src, dst) / ICMP(type=type_, code=code) / Raw(inner))


def icmp6_error(src: str, dst: str, quoted: bytes, keep: int = 48) -> bytes:
    """ICMPv6 destination unreachable (port) from ``src`` quoting ``keep`` bytes of ``quoted``'s
    IPv6 packet (48 = IPv6 header + 8 bytes)."""
    inner = quoted[14 : 14 + keep]
    return bytes(ip6(src, dst) / ICMPv6DestUnreach(code=4) / Raw(inner))


def raw_ip4(src: str, dst: str, proto: int, data: bytes = b"g" * 20) -> bytes:
    return bytes(ip4(src, dst, proto=proto) / Raw(data))


class Timeline:
    """Collects (in_port, frame, time_ms); ``send`` returns the 1-based packet number."""

    def __init__(self, start_ms: int = 0, step_ms: int = 10):
        self.packets: list[tuple[int, bytes, int]] = []
        self.t = start_ms - step_ms
        self.step = step_ms

    def send(self, sender: str | int, frame: bytes, at: int | None = None) -> int:
        port = PORT[sender] if isinstance(sender, str) else sender
        t = self.t + self.step if at is None else at
        if self.packets and t <= self.packets[-1][2]:
            raise ValueError(f"time must increase: {t} after {self.packets[-1][2]}")
        self.t = t
        self.packets.append((port, bytes(frame), t))
        return len(self.packets)


# -- frames to or from addresses no host owns (NAT addresses, virtual IPs) ---------------------
def _l3(src: str, dst: str, src_ip: str | None, dst_ip: str | None, v6: bool) -> Ether:
    """Ethernet (MACs of hosts ``src``/``dst``) + IP with the hosts' addresses unless given."""
    table = IP6 if v6 else IP4
    cls = IPv6 if v6 else IP
    return eth(src, dst) / cls(src=src_ip or table[src], dst=dst_ip or table[dst])


def udp_via(
    src: str,
    dst: str,
    sport: int,
    dport: int,
    *,
    src_ip: str | None = None,
    dst_ip: str | None = None,
    data: bytes = b"u" * 16,
    v6: bool = False,
    chksum: int | None = None,
) -> bytes:
    """Like ``udp`` but with the IP addresses overridable (e.g. a reply to a SNAT address);
    ``chksum=0`` sends an IPv4 UDP datagram without checksum."""
    seg = UDP(sport=sport, dport=dport)
    if chksum is not None:
        seg.chksum = chksum
    return bytes(_l3(src, dst, src_ip, dst_ip, v6) / seg / Raw(data))


def tcp_via(
    src: str,
    dst: str,
    sport: int,
    dport: int,
    flags: str,
    seq: int,
    ack: int = 0,
    *,
    src_ip: str | None = None,
    dst_ip: str | None = None,
    data: bytes = b"",
    window: int = 65535,
    v6: bool = False,
) -> bytes:
    """Like ``tcp`` but with the IP addresses overridable."""
    pkt = _l3(src, dst, src_ip, dst_ip, v6) / TCP(
        sport=sport, dport=dport, flags=flags, seq=seq, ack=ack, window=window
    )
    if data:
        pkt = pkt / Raw(data)
    return bytes(pkt)


def icmp_echo_via(
    src: str,
    dst: str,
    ident: int,
    seq: int,
    *,
    reply: bool = False,
    src_ip: str | None = None,
    dst_ip: str | None = None,
) -> bytes:
    """Like ``icmp_echo`` but with the IP addresses overridable."""
    l3 = _l3(src, dst, src_ip, dst_ip, False)
    return bytes(l3 / ICMP(type=0 if reply else 8, id=ident, seq=seq) / Raw(b"p" * 8))


def icmp6_echo_via(
    src: str,
    dst: str,
    ident: int,
    seq: int,
    *,
    reply: bool = False,
    src_ip: str | None = None,
    dst_ip: str | None = None,
) -> bytes:
    """Like ``icmp6_echo`` but with the IP addresses overridable."""
    cls = ICMPv6EchoReply if reply else ICMPv6EchoRequest
    return bytes(_l3(src, dst, src_ip, dst_ip, True) / cls(id=ident, seq=seq, data=b"p" * 8))


def icmp_error_via(
    src: str,
    dst: str,
    quoted: bytes,
    *,
    src_ip: str | None = None,
    dst_ip: str | None = None,
    type_: int = 3,
    code: int = 3,
    keep: int = 28,
) -> bytes:
    """Like ``icmp_error`` but with the outer IP addresses overridable; ``keep=0`` quotes the
    whole IP packet of ``quoted``."""
    inner = quoted[14:] if keep == 0 else quoted[14 : 14 + keep]
    return bytes(_l3(src, dst, src_ip, dst_ip, False) / ICMP(type=type_, code=code) / Raw(inner))


def icmp6_error_via(
    src: str,
    dst: str,
    quoted: bytes,
    *,
    src_ip: str | None = None,
    dst_ip: str | None = None,
    keep: int = 48,
) -> bytes:
    """Like ``icmp6_error`` but with the outer IP addresses overridable; ``keep=0`` quotes the
    whole IPv6 packet of ``quoted``."""
    inner = quoted[14:] if keep == 0 else quoted[14 : 14 + keep]
    return bytes(_l3(src, dst, src_ip, dst_ip, True) / ICMPv6DestUnreach(code=4) / Raw(inner))
