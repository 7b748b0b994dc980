"""``ovs-appctl dpctl/dump-conntrack`` formatting (OVS 3.1 ct-dpif.c, default format).

What: one line per live connection, as OVS prints it without ``-m``/``-s``::

    tcp,orig=(src=10.0.0.1,dst=10.0.0.2,sport=40000,dport=80),reply=(src=10.0.0.2,...),
        zone=5,mark=1,labels=0x2a,protoinfo=(state=ESTABLISHED)

Design: plain Python over the conn rows. Protocol: a name for icmp, icmpv6, tcp, udp, sctp,
udplite, dccp and igmp, else the number. A tuple is ``src=,dst=`` then, for ICMP/ICMPv6,
``id=,type=,code=`` (the reply tuple shows the reversed type) or ``sport=,dport=`` (0 for
protocols without ports). ``zone=`` only when non-zero; ``mark=`` (decimal) only when non-zero;
``labels=`` as hex without leading zeros only when non-zero; ``protoinfo=(state=...)`` only
for TCP. IPv6 addresses are printed by the C library's ``inet_ntop``, as OVS does. Lines are
sorted (OVS prints in hash order, which nobody can reproduce).

Invariants: expired connections (``now >= expiration``) are not printed, as in OVS.
"""

from __future__ import annotations

import socket

import numpy as np

from ctaccel.conntrack.layout import (
    C_DL_TYPE,
    C_DPORT,
    C_DST,
    C_EXPIRATION,
    C_ICMP_CODE,
    C_ICMP_TYPE,
    C_LABEL,
    C_MARK,
    C_PROTO,
    C_R_DPORT,
    C_R_DST,
    C_R_SPORT,
    C_R_SRC,
    C_SPORT,
    C_SRC,
    C_USED,
    C_ZONE,
)
from ctaccel.conntrack.table import reverse_icmp_type

PROTO_NAMES = {
    1: "icmp",
    58: "icmpv6",
    6: "tcp",
    17: "udp",
    132: "sctp",
    136: "udplite",
    33: "dccp",
    2: "igmp",
}


def _addr(row, col: int, is_v6: bool) -> str:
    if not is_v6:
        return socket.inet_ntop(socket.AF_INET, int(row[col + 3]).to_bytes(4, "big"))
    raw = b"".join(int(row[col + i]).to_bytes(4, "big") for i in range(4))
    return socket.inet_ntop(socket.AF_INET6, raw)


def _tuple(row, reply: bool) -> str:
    is_v6 = int(row[C_DL_TYPE]) == 0x86DD
    proto = int(row[C_PROTO])
    src, dst = (C_R_SRC, C_R_DST) if reply else (C_SRC, C_DST)
    text = f"src={_addr(row, src, is_v6)},dst={_addr(row, dst, is_v6)}"
    if proto in (1, 58):
        # OVS prints the ICMP form for protocol 1 or 58 whatever the IP version; the id is
        # only stored for real ICMP keys (others have ports 0, hence id 0).
        icmp_key = (proto == 1 and not is_v6) or (proto == 58 and is_v6)
        ident = int(row[C_R_SPORT if reply else C_SPORT])
        icmp_type = int(row[C_ICMP_TYPE])
        if icmp_key and reply:
            icmp_type = int(reverse_icmp_type(int(row[C_DL_TYPE]), icmp_type))
        if not icmp_key:
            ident = icmp_type = 0
        return f"{text},id={ident},type={icmp_type},code={int(row[C_ICMP_CODE])}"
    sport = int(row[C_R_SPORT if reply else C_SPORT])
    dport = int(row[C_R_DPORT if reply else C_DPORT])
    return f"{text},sport={sport},dport={dport}"


def format_conn(conns, slot: int) -> str:
    """One dump-conntrack line for the connection in ``conns[slot]``."""
    row = conns[slot]
    proto = int(row[C_PROTO])
    parts = [
        PROTO_NAMES.get(proto, str(proto)),
        f",orig=({_tuple(row, False)})",
        f",reply=({_tuple(row, True)})",
    ]
    zone = int(row[C_ZONE])
    if zone:
        parts.append(f",zone={zone}")
    mark = int(row[C_MARK])
    if mark:
        parts.append(f",mark={mark}")
    label = 0
    for i in range(4):
        label = (label << 32) | int(row[C_LABEL + i])
    if label:
        parts.append(f",labels=0x{label:x}")
    if proto == 6:
        from ctaccel.conntrack.tcp import tcp_state_name

        parts.append(f",protoinfo=(state={tcp_state_name(conns, slot)})")
    return "".join(parts)


def dump_lines(conns, now_ms: int, zone: int | None = None) -> list[str]:
    """Sorted dump-conntrack lines of the live connections (optionally of one zone)."""
    live = (conns[:, C_USED] != 0) & (conns[:, C_EXPIRATION] > now_ms)
    if zone is not None:
        live &= conns[:, C_ZONE] == zone
    return sorted(format_conn(conns, int(slot)) for slot in np.flatnonzero(live))
