"""``ovs-appctl dpctl/dump-conntrack`` formatting (OVS 3.1 ct-dpif.c, default and ``-m -s``).

What: one line per live connection, as OVS prints it without ``-m``/``-s``::

    tcp,orig=(src=10.0.0.1,dst=10.0.0.2,sport=40000,dport=80),reply=(src=10.0.0.2,...),
        zone=5,mark=1,labels=0x2a,protoinfo=(state=ESTABLISHED)

Design: plain Python over the conn rows. Protocol: a name for icmp, icmpv6, tcp, udp, sctp,
udplite, dccp and igmp, else the number. A tuple is ``src=,dst=`` then, for ICMP/ICMPv6,
``id=,type=,code=`` (the reply tuple shows the reversed type) or ``sport=,dport=`` (0 for
protocols without ports). ``zone=`` only when non-zero; ``mark=`` (decimal) only when non-zero;
``labels=`` as hex without leading zeros only when non-zero; ``protoinfo=(state=...)`` only
for TCP. IPv6 addresses are printed by the C library's ``inet_ntop``, as OVS does. Lines are
sorted (OVS prints in hash order, which nobody can reproduce). Verbose (``-m -s``) adds, in
OVS's order, ``id=`` (the creation number), ``status=`` (the kernel's bits for the connection:
what ``export-kernel`` would give it; OVS userspace leaves it empty), ``timeout=`` (whole
seconds left) and the per-peer TCP protoinfo; no counters or start time (not kept). A
verbose dump is what ``replay --ct-import`` reads back most faithfully (conntrack/ct_text.py).

Invariants: expired connections (``now >= expiration``) are not printed, as in OVS.
"""

from __future__ import annotations

import socket

from ctaccel.conntrack.alg import (
    E_LABEL,
    E_MARK,
    E_NAT_ADDR,
    E_NAT_RPL_DST,
    E_P_DPORT,
    E_P_DST,
    E_P_SPORT,
    E_P_SRC,
    E_STATE,
    EXP_LIVE,
)
from ctaccel.conntrack.layout import (
    ALG_FTP,
    ALG_KIND,
    ALG_RELATED,
    C_TCP,
    P_STATE,
    P_WSCALE,
    TCP_PEER_WIDTH,
    live_rows,
    unpack,
)
from ctaccel.conntrack.table import (
    T_DL_TYPE,
    T_DST,
    T_DWORD,
    T_PROTO,
    T_SRC,
    T_ZONE,
    reverse_icmp_type,
)
from ctaccel.conntrack.tcp import (
    TCP_STATE_NAMES,
    TCPS_ESTABLISHED,
    TCPS_FIN_WAIT_2,
    TCPS_SYN_RECV,
    TCPS_TIME_WAIT,
    WSCALE_FLAG,
    WSCALE_MASK,
    WSCALE_UNKNOWN,
)

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


def _tuple(u, i: int, reply: bool) -> str:
    """One tuple of connection ``i`` of ``u`` (layout.unpack)."""
    is_v6 = int(u.dl_type[i]) == 0x86DD
    proto = int(u.proto[i])
    src, dst = (u.r_src[i], u.r_dst[i]) if reply else (u.src[i], u.dst[i])
    text = f"src={_addr(src, 0, is_v6)},dst={_addr(dst, 0, is_v6)}"
    sport = int(u.r_sport[i] if reply else u.sport[i])
    if proto in (1, 58):
        # OVS prints the ICMP form for protocol 1 or 58 whatever the IP version; the id is
        # only stored for real ICMP keys (others have ports 0, hence id 0).
        icmp_key = (proto == 1 and not is_v6) or (proto == 58 and is_v6)
        icmp_type = int(u.icmp_type[i])
        if icmp_key and reply:
            icmp_type = int(reverse_icmp_type(int(u.dl_type[i]), icmp_type))
        if not icmp_key:
            sport = icmp_type = 0
        return f"{text},id={sport},type={icmp_type},code={int(u.icmp_code[i])}"
    dport = int(u.r_dport[i] if reply else u.dport[i])
    return f"{text},sport={sport},dport={dport}"


STATUS_NAMES = ("EXPECTED", "SEEN_REPLY", "ASSURED", "CONFIRMED", "SRC_NAT", "DST_NAT")
TCP_FLAG_NAMES = ("WINDOW_SCALE", "SACK_PERM", "CLOSE_INIT", "BE_LIBERAL")


def _flag_names(value: int, names) -> str:
    """OVS's format_flags: the set bits' names joined by '|', or 0."""
    out = [name for bit, name in enumerate(names) if value >> bit & 1]
    return "|".join(out) if out else "0"


def _status(u, i: int) -> int:
    """The status bits the kernel would show: CONFIRMED, SEEN_REPLY|ASSURED once the reply
    side was seen, SRC_NAT or DST_NAT (as conntrack/kernel_map.py exports them)."""
    proto = int(u.proto[i])
    if proto == 6:
        seen = int(u.tcp[i, TCP_PEER_WIDTH + P_STATE]) >= 2  # the reply side has spoken
    elif proto in (1, 58):
        seen = int(u.l4_state[i]) == 1  # icmp.py ICMPS_REPLY
    else:
        seen = int(u.l4_state[i]) == 2  # other.py OTHERS_BIDIR
    nat = int(u.nat_flags[i])
    return (0x8 | (0x6 if seen else 0) | (0x10 if nat & 1 else 0)
            | (0x20 if nat & 4 and not nat & 1 else 0))  # fmt: skip


def _tcp_verbose(u, i: int) -> str:
    """OVS's verbose TCP protoinfo: both peers' states, window scales, flags."""
    states, scales, flags = [], [], []
    for peer in range(2):
        base = peer * TCP_PEER_WIDTH
        st = int(u.tcp[i, base + P_STATE])
        states.append(TCP_STATE_NAMES[st] if 0 <= st < len(TCP_STATE_NAMES) else f"[{st}]")
        ws = int(u.tcp[i, base + P_WSCALE])
        scales.append(ws & WSCALE_MASK)
        flags.append((1 if ws & WSCALE_FLAG else 0) | (8 if ws & WSCALE_UNKNOWN else 0))
    text = f"state_orig={states[0]},state_reply={states[1]}"
    if scales[0] or scales[1]:
        text += f",wscale_orig={scales[0]},wscale_reply={scales[1]}"
    return (text + f",flags_orig={_flag_names(flags[0], TCP_FLAG_NAMES)}"
            f",flags_reply={_flag_names(flags[1], TCP_FLAG_NAMES)}")  # fmt: skip


def _parent(exps, row: int, is_v6: bool) -> str:
    """A data connection's ``parent=(...)``: its control connection's original tuple, which
    the expectation's row keeps (alg.py E_P_*)."""
    e = exps[row]
    src = _addr(e, E_P_SRC, is_v6)
    dst = _addr(e, E_P_DST, is_v6)
    return f"src={src},dst={dst},sport={int(e[E_P_SPORT])},dport={int(e[E_P_DPORT])}"


def format_conn(conns, slot: int, now_ms: int | None = None, verbose: bool = False,
                stats: bool = False, exps=None) -> str:  # fmt: skip
    """One dump-conntrack line for the connection in ``conns[slot]``; ``verbose`` as
    ``dpctl/dump-conntrack -m`` (id, status, per-peer TCP states, window scales and flags,
    a data connection's ``parent=``: ``exps`` needed), ``stats`` as ``-s`` (seconds left:
    ``now_ms`` needed); ``helper=ftp|tftp`` for a connection committed with ``alg=``."""
    return _format(unpack(conns, [slot]), 0, now_ms, verbose, stats, exps)


def _format(u, i: int, now_ms, verbose: bool, stats: bool, exps) -> str:
    """format_conn's line for connection ``i`` of ``u`` (layout.unpack)."""
    proto = int(u.proto[i])
    parts = [
        PROTO_NAMES.get(proto, str(proto)),
        f",orig=({_tuple(u, i, False)})",
        f",reply=({_tuple(u, i, True)})",
    ]
    if verbose:
        parts.append(f",id={int(u.seq[i])}")
    zone = int(u.zone[i])
    if zone:
        parts.append(f",zone={zone}")
    if verbose:
        parts.append(f",status={_flag_names(_status(u, i), STATUS_NAMES)}")
    if stats:
        left = max(int(u.expiration[i]) - int(now_ms or 0), 0)
        parts.append(f",timeout={left // 1000}")
    mark = int(u.mark[i])
    if mark:
        parts.append(f",mark={mark}")
    label = 0
    for w in range(4):
        label = (label << 32) | int(u.label[i, w])
    if label:
        parts.append(f",labels=0x{label:x}")
    if proto == 6 and verbose:
        parts.append(f",protoinfo=({_tcp_verbose(u, i)})")
    elif proto == 6:
        states = (int(u.tcp[i, P_STATE]), int(u.tcp[i, TCP_PEER_WIDTH + P_STATE]))
        parts.append(f",protoinfo=(state={_tcp_state_text(*states)})")
    alg = int(u.alg[i])
    if alg & ALG_KIND:
        parts.append(",helper=" + ("ftp" if alg & ALG_KIND == ALG_FTP else "tftp"))
    if verbose and alg & ALG_RELATED and exps is not None:
        parent = _parent(exps, int(u.alg_parent[i]) - 1, int(u.dl_type[i]) == 0x86DD)
        parts.append(f",parent=({parent})")
    return "".join(parts)


def dump_lines(conns, now_ms: int, zone: int | None = None, verbose: bool = False,
               stats: bool = False, exps=None) -> list[str]:  # fmt: skip
    """Sorted dump-conntrack lines of the live connections (optionally of one zone);
    ``verbose``/``stats`` as ``-m``/``-s`` (``exps``: the expectations, for ``parent=``)."""
    u = unpack(conns, live_rows(conns, now_ms))
    return sorted(_format(u, i, now_ms, verbose, stats, exps) for i in range(len(u.zone))
                  if zone is None or int(u.zone[i]) == zone)  # fmt: skip


def expectation_lines(exps, used_rows: int, zone: int | None = None) -> list[str]:
    """The ALG expectations waiting (alg.py rows in the index), sorted, one per line:
    ``PROTO,expect=(src=,dst=,dport=)`` (any source port), the ``master=`` control
    connection's original tuple, ``zone=``, ``mark=``/``labels=`` the data connection will
    take, ``nat=(src|dst=ADDR)`` the translation a data connection committed with ``nat``
    gets (when the control connection is NATed). An expectation waits
    until its control connection ends (OVS gives it no timer of its own). OVS has no command
    that lists them; this is ctaccel's view of its table."""
    out = []
    for row in range(int(used_rows)):
        e = exps[row]
        if int(e[E_STATE]) != EXP_LIVE or (zone is not None and int(e[T_ZONE]) != zone):
            continue
        v6 = int(e[T_DL_TYPE]) == 0x86DD
        proto = int(e[T_PROTO])
        text = (f"{PROTO_NAMES.get(proto, str(proto))},expect=(src={_addr(e, T_SRC, v6)},"
                f"dst={_addr(e, T_DST, v6)},dport={int(e[T_DWORD])}),"
                f"master=({_parent(exps, row, v6)})")  # fmt: skip
        if int(e[T_ZONE]):
            text += f",zone={int(e[T_ZONE])}"
        if int(e[E_MARK]):
            text += f",mark={int(e[E_MARK])}"
        label = 0
        for i in range(4):
            label = (label << 32) | int(e[E_LABEL + i])
        if label:
            text += f",labels=0x{label:x}"
        # the reply's destination (the data connection's source side: SNAT) or source
        rpl_dst = int(e[E_NAT_RPL_DST])
        plain = T_SRC if rpl_dst else T_DST
        if any(int(e[E_NAT_ADDR + i]) != int(e[plain + i]) for i in range(4)):
            text += f",nat=({'src' if rpl_dst else 'dst'}={_addr(e, E_NAT_ADDR, v6)})"
        out.append(text)
    return sorted(out)


def tcp_state_name(conns, slot: int) -> str:
    """The state dpctl/dump-conntrack prints in ``protoinfo=(state=...)``.

    OVS keeps a state per side but prints one: the larger, with FIN_WAIT_2 shown as TIME_WAIT
    and SYN_RECV as ESTABLISHED (to read like the kernel's single state).
    """
    return _tcp_state_text(
        int(conns[slot, C_TCP + P_STATE]), int(conns[slot, C_TCP + TCP_PEER_WIDTH + P_STATE])
    )


def _tcp_state_text(state0: int, state1: int) -> str:
    state = max(state0, state1)
    if state == TCPS_FIN_WAIT_2:
        state = TCPS_TIME_WAIT
    elif state == TCPS_SYN_RECV:
        state = TCPS_ESTABLISHED
    if 0 <= state < len(TCP_STATE_NAMES):
        return TCP_STATE_NAMES[state]
    return f"[{state}]"
