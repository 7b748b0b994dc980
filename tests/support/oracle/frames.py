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


def ip4(src: str, dst: str, src_ip: str | None = None, dst_ip: str | None = None, **kw) -> Ether:
    """Ethernet + IPv4 from host ``src`` to host ``dst``; ``src_ip``/``dst_ip`` override the
    hosts' addresses (a reply to a NAT address, a virtual IP)."""
    return eth(src, dst) / IP(src=src_ip or IP4[src], dst=dst_ip or IP4[dst], **kw)


def ip6(src: str, dst: str, src_ip: str | None = None, dst_ip: str | None = None, **kw) -> Ether:
    """Ethernet + IPv6 from host ``src`` to host ``dst`` (addresses overridable as ``ip4``)."""
    return eth(src, dst) / IPv6(src=src_ip or IP6[src], dst=dst_ip or IP6[dst], **kw)


def _l3(src, dst, src_ip, dst_ip, v6) -> Ether:
    return ip6(src, dst, src_ip, dst_ip) if v6 else ip4(src, dst, src_ip, dst_ip)


def udp(
    src: str,
    dst: str,
    sport: int,
    dport: int,
    data: bytes = b"u" * 16,
    v6=False,
    *,
    src_ip: str | None = None,
    dst_ip: str | None = None,
    chksum: int | None = None,
) -> bytes:
    """``chksum=0`` sends an IPv4 UDP datagram without checksum."""
    seg = UDP(sport=sport, dport=dport)
    if chksum is not None:
        seg.chksum = chksum
    return bytes(_l3(src, dst, src_ip, dst_ip, v6) / seg / Raw(data))


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
    *,
    src_ip: str | None = None,
    dst_ip: str | None = None,
) -> bytes:
    seg = TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack, window=window)
    if options is not None:
        seg.options = options
    pkt = _l3(src, dst, src_ip, dst_ip, v6) / seg
    if data:
        pkt = pkt / Raw(data)
    return bytes(pkt)


def icmp_echo(src: str, dst: str, ident: int, seq: int, reply: bool = False, *,
              src_ip: str | None = None, dst_ip: str | None = None) -> bytes:  # fmt: skip
    l3 = ip4(src, dst, src_ip, dst_ip)
    return bytes(l3 / ICMP(type=0 if reply else 8, id=ident, seq=seq) / Raw(b"p" * 8))


def icmp6_echo(src: str, dst: str, ident: int, seq: int, reply: bool = False, *,
               src_ip: str | None = None, dst_ip: str | None = None) -> bytes:  # fmt: skip
    cls = ICMPv6EchoReply if reply else ICMPv6EchoRequest
    return bytes(ip6(src, dst, src_ip, dst_ip) / cls(id=ident, seq=seq, data=b"p" * 8))


def _quote(quoted: bytes, keep: int) -> bytes:
    """The first ``keep`` bytes of the IP packet in Ethernet frame ``quoted`` (0: all)."""
    return quoted[14:] if keep == 0 else quoted[14 : 14 + keep]


def icmp_error(src: str, dst: str, quoted: bytes, type_: int = 3, code: int = 3, keep=28, *,
               src_ip: str | None = None, dst_ip: str | None = None) -> bytes:  # fmt: skip
    """ICMPv4 error from ``src`` to ``dst`` quoting the first ``keep`` bytes of the IP packet
    inside Ethernet frame ``quoted`` (28 = IP header + 8 bytes of L4, the RFC 792 minimum;
    0 = all of it)."""
    l3 = ip4(src, dst, src_ip, dst_ip)
    return bytes(l3 / ICMP(type=type_, code=code) / Raw(_quote(quoted, keep)))


def icmp6_error(src: str, dst: str, quoted: bytes, keep: int = 48, *,
                src_ip: str | None = None, dst_ip: str | None = None) -> bytes:  # fmt: skip
    """ICMPv6 destination unreachable (port) from ``src`` quoting ``keep`` bytes of ``quoted``'s
    IPv6 packet (48 = IPv6 header + 8 bytes; 0 = all of it)."""
    l3 = ip6(src, dst, src_ip, dst_ip)
    return bytes(l3 / ICMPv6DestUnreach(code=4) / Raw(_quote(quoted, keep)))


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
