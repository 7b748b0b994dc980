"""The test network: hosts behind switch ports, and the packet tuple every generator yields.

What: ``Host`` (port, MAC, IP as pre-packed bytes) and ``host(port, n)``, the address plan
the random traffic and the rule sets in support/rules/ assume; ``Packet`` =
``(in_port, frame, now_ms)``; ``START_MS``, the clock's start.

Design: addresses and MACs are pre-packed bytes (the builders are ~2x faster with bytes than
with strings).

Invariants:
- Port pairs: inside 1 <-> outside 2 and inside 3 <-> outside 4; inside hosts on ports 1 and 3
  share IP addresses (so the same 5-tuple can live in two zones), their MACs differ.
"""

from __future__ import annotations

from dataclasses import dataclass

from ctaccel.packet import build as B

Packet = tuple[int, bytes, int]  # (in_port, frame, now_ms)

START_MS = 1_000_000
PORT_PAIRS = ((1, 2), (3, 4))  # (inside, outside)
INSIDE_PORTS = (1, 3)


@dataclass(frozen=True)
class Host:
    port: int
    mac: bytes
    ip: bytes

    @property
    def v6(self) -> bool:
        return len(self.ip) == 16


def host(port: int, n: int, v6: bool = False) -> Host:
    """Host ``n`` behind ``port``; inside ports 1 and 3 share one address plan."""
    side = 1 if port in INSIDE_PORTS else 2
    ip = f"fd00:{side}::{n:x}" if v6 else f"10.0.{side}.{n}"
    return Host(port, B.mac_bytes(f"02:00:00:00:{port:02x}:{n & 0xFF:02x}"), B.ip_bytes(ip))


def frame_to(src: Host, dst: Host):
    """Common arguments of a frame from ``src`` to ``dst``."""
    return src.mac, dst.mac, src.ip, dst.ip
