"""Connections between ctaccel's table and the kernel's: rows <-> io/ctnetlink KernelEntries.

What: :func:`import_entries` adds kernel conntrack entries (a dump, or a saved table parsed by
conntrack/ct_text.py) to a :class:`~ctaccel.conntrack.Conntrack` as live connections;
:func:`export_entries` turns ctaccel's live connections into KernelEntries for a ctnetlink
create. Both take a zone map (kernel zone -> ctaccel zone; zones not named keep their number).

Design: the mapping is numpy over whole columns (lookup tables for the states), the insertion
one jitted loop (:func:`_insert`) over a row table, so 100,000 connections take milliseconds.
What maps, and how (docs/kernel-conntrack-sync.md has the table with OVS's and the kernel's
behaviour beside it):

- tuples, zone, mark, label as they are; the reply tuple as the kernel reports it (translated
  under NAT). SRC_NAT -> ctaccel's SNAT kind, DST_NAT -> DNAT (a connection translated both
  ways is refused: an OVS connection has one translation).
- TCP: the kernel's one state becomes the two peers' states of OVS's tracker (the side whose
  flags say CLOSE_INIT closed first); window scales kept when the flags say WINDOW_SCALE, a
  be-liberal side without them reads as a pickup (scaling unknown); the windows themselves
  are not in the kernel's entry: both sides get PF_WIN_UNKNOWN (tcp.py), liberal until each
  has spoken. The kernel's flags are kept (``X_KFLAGS``) for the way back.
- UDP and other protocols: SEEN_REPLY -> both directions seen, else first; ICMP queries:
  SEEN_REPLY -> reply seen. Protocols OVS's userspace conntrack tracks without ports (SCTP,
  DCCP, UDP-Lite, GRE keys) are refused rather than merged.
- The remaining timeout counts from ``now_ms`` (the kernel's, not OVS's default: the next
  packet re-arms it with ctaccel's policy). Imported connections are not counted against
  zone limits (OVS does not count connections older than a limit either).
- An entry whose original or reply tuple is already a live connection is skipped: ctaccel's
  own state (windows included) is the better one.

Export is the inverse: status CONFIRMED, plus SEEN_REPLY|ASSURED once the reply side was
seen, plus SRC_NAT/DST_NAT; TCP flags BE_LIBERAL on both sides (the kernel cannot be given
windows), WINDOW_SCALE where the peer scales, CLOSE_INIT on the side that closed first; the
timeout rounded up to whole seconds.

Invariants: nothing is half-imported: a row is inserted whole or not at all, and the result
says for every input row what happened (:data:`IMPORTED`, :data:`EXISTS`,
:data:`UNSUPPORTED`, :data:`FULL`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ctaccel.conntrack.icmp import ICMPS_FIRST, ICMPS_REPLY
from ctaccel.conntrack.layout import (
    C_L4_STATE,
    C_LABEL,
    C_MARK,
    C_SEQ,
    C_TCP,
    C_TIMEOUT_CLASS,
    P_FLAGS,
    P_STATE,
    P_WSCALE,
    TCP_PEER_WIDTH,
    X_KFLAGS,
    X_NAT_FLAGS,
    X_TP_BASE,
    ext_set,
    live_rows,
    set_expiration,
    unpack,
)
from ctaccel.conntrack.lifecycle import ZL_TP, delete_conn, lookup_live
from ctaccel.conntrack.nat import NAT_DST, NAT_SRC
from ctaccel.conntrack.other import OTHERS_BIDIR, OTHERS_FIRST
from ctaccel.conntrack.table import (
    ETH_IP,
    ETH_IPV6,
    ST_MAX_CONNS,
    ST_N_CONNS,
    ST_NEXT_SEQ,
    TUP_WIDTH,
    conn_alloc_reply,
    reverse_icmp_type,
)
from ctaccel.conntrack.tcp import (
    PF_WIN_UNKNOWN,
    TCPS_CLOSED,
    TCPS_CLOSING,
    TCPS_ESTABLISHED,
    TCPS_FIN_WAIT_2,
    TCPS_SYN_SENT,
    TCPS_TIME_WAIT,
    WSCALE_FLAG,
    WSCALE_MASK,
    WSCALE_UNKNOWN,
)
from ctaccel.conntrack.timeouts import (
    N_TIMEOUTS,
    TM_ICMP_FIRST,
    TM_ICMP_REPLY,
    TM_OTHER_BIDIR,
    TM_OTHER_FIRST,
    TM_TCP_CLOSE,
    TM_TCP_ESTABLISHED,
    TM_TCP_FIN_WAIT,
    TM_TCP_SYN_RECV,
    TM_TCP_TIME_WAIT,
    TM_UDP_FIRST,
    TM_UDP_MULTIPLE,
)
from ctaccel.errors import InputError
from ctaccel.io.ctnetlink_codec import (
    AF_INET,
    AF_INET6,
    IP_CT_TCP_FLAG_BE_LIBERAL,
    IP_CT_TCP_FLAG_CLOSE_INIT,
    IP_CT_TCP_FLAG_WINDOW_SCALE,
    IPS_ASSURED,
    IPS_CONFIRMED,
    IPS_DST_NAT,
    IPS_SEEN_REPLY,
    IPS_SRC_NAT,
    KernelEntries,
)
from ctaccel.jit import njit

# what happened to each input row
IMPORTED, EXISTS, UNSUPPORTED, FULL = 0, 1, 2, 3
OUTCOME_NAMES = ("imported", "already_tracked", "unsupported", "table_full")

# kernel TCP states (enum tcp_conntrack)
K_NONE, K_SYN_SENT, K_SYN_RECV, K_ESTABLISHED, K_FIN_WAIT = 0, 1, 2, 3, 4
K_CLOSE_WAIT, K_LAST_ACK, K_TIME_WAIT, K_CLOSE, K_SYN_SENT2 = 5, 6, 7, 8, 9
K_STATE_NAMES = ("NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT",
                 "LAST_ACK", "TIME_WAIT", "CLOSE", "SYN_SENT2")  # fmt: skip
PROTO_TCP, PROTO_UDP, PROTO_ICMP, PROTO_ICMPV6 = 6, 17, 1, 58
UNTRACKABLE = (33, 47, 132, 136)  # DCCP, GRE, SCTP, UDP-Lite: ports OVS's model lacks

# kernel state -> (first closer's peer state, the other's) when the closer is known;
# opening states -> (orig, reply)
_CLOSER = {K_FIN_WAIT: (TCPS_CLOSING, TCPS_ESTABLISHED),
           K_CLOSE_WAIT: (TCPS_FIN_WAIT_2, TCPS_ESTABLISHED),
           K_LAST_ACK: (TCPS_FIN_WAIT_2, TCPS_CLOSING),
           K_TIME_WAIT: (TCPS_FIN_WAIT_2, TCPS_FIN_WAIT_2),
           K_CLOSE: (TCPS_TIME_WAIT, TCPS_TIME_WAIT)}  # fmt: skip
_OPENING = {K_NONE: (TCPS_ESTABLISHED, TCPS_ESTABLISHED),
            K_SYN_SENT: (TCPS_SYN_SENT, TCPS_CLOSED),
            K_SYN_SENT2: (TCPS_SYN_SENT, TCPS_SYN_SENT),
            K_SYN_RECV: (TCPS_ESTABLISHED, TCPS_SYN_SENT),
            K_ESTABLISHED: (TCPS_ESTABLISHED, TCPS_ESTABLISHED)}  # fmt: skip

# the row table _insert reads
R_ZONE, R_DL_TYPE, R_PROTO, R_SRC, R_DST, R_SWORD, R_DWORD = 0, 1, 2, 3, 7, 11, 12
R_RSRC, R_RDST, R_RSWORD, R_RDWORD = 13, 17, 21, 22
R_MARK, R_LABEL, R_NAT, R_L4_STATE, R_TM, R_EXPIRE = 23, 24, 28, 29, 30, 31
R_STATE0, R_STATE1, R_WS0, R_WS1, R_KFLAGS, R_UNSUPPORTED = 32, 33, 34, 35, 36, 37
R_WIDTH = 38


def tcp_peer_states(state, flags_orig, flags_reply) -> tuple[np.ndarray, np.ndarray]:
    """The two peers' OVS tracker states (orig, reply) for kernel TCP states (arrays)."""
    state = np.asarray(state, np.int64)
    orig = np.full(state.shape, TCPS_ESTABLISHED, np.int64)
    reply = orig.copy()
    for k, (a, b) in _OPENING.items():
        orig[state == k], reply[state == k] = a, b
    reply_closed_first = ((np.asarray(flags_reply) & IP_CT_TCP_FLAG_CLOSE_INIT) != 0) & (
        (np.asarray(flags_orig) & IP_CT_TCP_FLAG_CLOSE_INIT) == 0)  # fmt: skip
    for k, (closer, other) in _CLOSER.items():
        sel = state == k
        orig[sel] = np.where(reply_closed_first[sel], other, closer)
        reply[sel] = np.where(reply_closed_first[sel], closer, other)
    return orig, reply


def kernel_tcp_state(orig, reply) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The kernel's TCP state for peer states (arrays), and CLOSE_INIT for each side: the
    inverse of :func:`tcp_peer_states`."""
    a, b = np.asarray(orig, np.int64), np.asarray(reply, np.int64)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    out = np.full(a.shape, K_ESTABLISHED, np.int64)
    out[(lo < TCPS_ESTABLISHED) & (b >= TCPS_SYN_SENT)] = K_SYN_RECV
    out[(a == TCPS_SYN_SENT) & (b == TCPS_SYN_SENT)] = K_SYN_SENT2
    out[(lo < TCPS_ESTABLISHED) & (b < TCPS_SYN_SENT)] = K_SYN_SENT
    closing = hi >= TCPS_CLOSING
    out[closing & (hi == TCPS_CLOSING) & (lo < TCPS_CLOSING)] = K_FIN_WAIT
    out[closing & (hi >= TCPS_FIN_WAIT_2) & (lo < TCPS_CLOSING)] = K_CLOSE_WAIT
    out[closing & (lo >= TCPS_CLOSING) & (lo < TCPS_FIN_WAIT_2)] = K_LAST_ACK
    out[lo >= TCPS_FIN_WAIT_2] = K_TIME_WAIT
    out[hi >= TCPS_TIME_WAIT] = K_CLOSE
    # the first closer: the side further on (both equal: the original side)
    init_orig = closing & (a >= b) & (a >= TCPS_CLOSING)
    init_reply = closing & (b > a)
    return out, init_orig, init_reply


def _tcp_timeout_class(a, b):
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    tm = np.full(a.shape, TM_TCP_ESTABLISHED, np.int64)
    tm[hi >= TCPS_CLOSING] = TM_TCP_FIN_WAIT
    tm[lo < TCPS_ESTABLISHED] = TM_TCP_SYN_RECV
    tm[lo >= TCPS_CLOSING] = TM_TCP_TIME_WAIT
    tm[lo >= TCPS_FIN_WAIT_2] = TM_TCP_CLOSE
    return tm


def parse_zone_map(specs) -> dict[int, int]:
    """``--zone-map KZ=Z`` options as {kernel zone: ctaccel zone}; InputError when malformed."""
    out: dict[int, int] = {}
    for spec in specs or ():
        kz, sep, z = str(spec).partition("=")
        if not (sep and kz.strip().isdigit() and z.strip().isdigit()):
            raise InputError(f"--zone-map {spec!r}: expected KERNEL_ZONE=ZONE")
        if int(kz) > 0xFFFF or int(z) > 0xFFFF:
            raise InputError(f"--zone-map {spec!r}: zones are 0-65535")
        if int(kz) in out or int(z) in out.values():
            raise InputError(f"--zone-map {spec!r}: zone mapped twice")
        out[int(kz)] = int(z)
    return out


def _zone_lookup(zone_map: dict[int, int] | None) -> np.ndarray:
    table = np.arange(65536, dtype=np.int64)
    for kz, z in (zone_map or {}).items():
        if not (0 <= int(kz) <= 0xFFFF and 0 <= int(z) <= 0xFFFF):
            raise InputError(f"--zone-map {kz}={z}: zones are 0-65535")
        table[int(kz)] = int(z)
    return table


# the reply direction's ICMP type of every original type, per IP version: table.py's
# reverse_icmp_type (what the connection table indexes by) as a lookup over whole columns
_REPLY_TYPE = {dl: np.array([reverse_icmp_type.py_func(dl, t) for t in range(256)], np.int64)
               for dl in (ETH_IP, ETH_IPV6)}  # fmt: skip


def _icmp_rows(dl_type: np.ndarray, proto: np.ndarray) -> np.ndarray:
    """Rows whose endpoints are ICMP (id, type, code): table.py's is_icmp_key, on columns."""
    return ((dl_type == ETH_IP) & (proto == PROTO_ICMP)) | (
        (dl_type == ETH_IPV6) & (proto == PROTO_ICMPV6))  # fmt: skip


def _words(icmp, ident, itype, code, port):
    return np.where(icmp, (ident << 16) | (itype << 8) | code, port)


def row_table(e: KernelEntries, now_ms: int, zone_map=None, peer_states=None) -> np.ndarray:
    """The ``R_*`` row table of entries (numpy over columns). ``peer_states`` (N, 2): the TCP
    peers' states when the source has them (a verbose dpctl dump; -1 = derive)."""
    e.check()
    n = len(e)
    rows = np.zeros((n, R_WIDTH), np.int64)
    dl_type = np.where(e.family == AF_INET6, ETH_IPV6, ETH_IP)
    rows[:, R_ZONE] = _zone_lookup(zone_map)[e.zone & 0xFFFF]
    rows[:, R_DL_TYPE], rows[:, R_PROTO] = dl_type, e.proto
    rows[:, R_SRC : R_SRC + 4], rows[:, R_DST : R_DST + 4] = e.src, e.dst
    rows[:, R_RSRC : R_RSRC + 4], rows[:, R_RDST : R_RDST + 4] = e.r_src, e.r_dst
    icmp = _icmp_rows(dl_type, e.proto)
    t = e.icmp_type & 0xFF
    r_type = np.where(icmp, np.where(dl_type == ETH_IPV6, _REPLY_TYPE[ETH_IPV6][t],
                                     _REPLY_TYPE[ETH_IP][t]), e.icmp_type)  # fmt: skip
    rows[:, R_SWORD] = _words(icmp, e.sport, e.icmp_type, e.icmp_code, e.sport)
    rows[:, R_DWORD] = _words(icmp, e.dport, r_type, e.icmp_code, e.dport)
    rows[:, R_RSWORD] = _words(icmp, e.r_sport, r_type, e.icmp_code, e.r_sport)
    rows[:, R_RDWORD] = _words(icmp, e.r_dport, e.icmp_type, e.icmp_code, e.r_dport)
    rows[:, R_MARK], rows[:, R_LABEL : R_LABEL + 4] = e.mark & 0xFFFFFFFF, e.label
    snat, dnat = (e.status & IPS_SRC_NAT) != 0, (e.status & IPS_DST_NAT) != 0
    rows[:, R_NAT] = np.where(snat, NAT_SRC, 0) | np.where(dnat, NAT_DST, 0)
    seen_reply = (e.status & IPS_SEEN_REPLY) != 0
    udp_like = ~icmp & (e.proto != PROTO_TCP)
    rows[:, R_L4_STATE] = np.where(icmp, np.where(seen_reply, ICMPS_REPLY, ICMPS_FIRST),
                                   np.where(seen_reply, OTHERS_BIDIR, OTHERS_FIRST))  # fmt: skip
    udp_tm = np.where(e.proto == PROTO_UDP, np.where(seen_reply, TM_UDP_MULTIPLE, TM_UDP_FIRST),
                      np.where(seen_reply, TM_OTHER_BIDIR, TM_OTHER_FIRST))  # fmt: skip
    tm = np.where(icmp, np.where(seen_reply, TM_ICMP_REPLY, TM_ICMP_FIRST), udp_tm)
    s0, s1 = tcp_peer_states(e.tcp_state, e.tcp_flags[:, 0], e.tcp_flags[:, 1])
    if peer_states is not None:
        given = peer_states[:, 0] >= 0
        s0, s1 = np.where(given, peer_states[:, 0], s0), np.where(given, peer_states[:, 1], s1)
    tcp = e.proto == PROTO_TCP
    rows[:, R_TM] = np.where(tcp, _tcp_timeout_class(s0, s1), tm)
    rows[:, R_STATE0], rows[:, R_STATE1] = s0, s1
    for side, col in ((0, R_WS0), (1, R_WS1)):
        flags = e.tcp_flags[:, side]
        scaled = (flags & IP_CT_TCP_FLAG_WINDOW_SCALE) != 0
        liberal = (flags & IP_CT_TCP_FLAG_BE_LIBERAL) != 0
        rows[:, col] = np.where(scaled, WSCALE_FLAG | np.minimum(e.tcp_wscale[:, side], 14),
                                np.where(liberal, WSCALE_UNKNOWN, 0))  # fmt: skip
    rows[:, R_KFLAGS] = (e.tcp_flags[:, 0] & 0xFF) | ((e.tcp_flags[:, 1] & 0xFF) << 8)
    rows[:, R_EXPIRE] = int(now_ms) + np.maximum(e.timeout_s, 0) * 1000
    rows[:, R_UNSUPPORTED] = (np.isin(e.proto, UNTRACKABLE) | (snat & dnat)
                              | ((e.proto == PROTO_ICMP) & (e.family == AF_INET6))
                              | ((e.proto == PROTO_ICMPV6) & (e.family == AF_INET)))  # fmt: skip
    rows[udp_like, R_STATE0] = rows[udp_like, R_STATE1] = 0
    return rows


@njit(_nrt=True)  # allocates its working tuples
def _insert(ct, rows, now_ms, out, slots):
    """Insert every row of the ``R_*`` table; ``out[i]`` says what happened to row ``i``,
    ``slots[i]`` where it went (-1: nowhere)."""
    conns, stats = ct.conns, ct.stats
    tup = np.zeros(TUP_WIDTH, np.int64)
    rtup = np.zeros(TUP_WIDTH, np.int64)
    for i in range(rows.shape[0]):
        slots[i] = -1
        if rows[i, R_UNSUPPORTED]:
            out[i] = UNSUPPORTED
            continue
        for c in range(TUP_WIDTH):
            tup[c] = rows[i, c]
            rtup[c] = rows[i, c]
        for c in range(R_RSRC, R_RDWORD + 1):
            rtup[c - R_RSRC + 3] = rows[i, c]
        if lookup_live(ct, tup, now_ms) >= 0 or lookup_live(ct, rtup, now_ms) >= 0:
            out[i] = EXISTS
            continue
        if stats[ST_N_CONNS] >= stats[ST_MAX_CONNS]:
            out[i] = FULL
            continue
        tp_base = ct.zone_limits[ZL_TP, rows[i, R_ZONE]] * N_TIMEOUTS
        kflags = rows[i, R_KFLAGS] if rows[i, R_PROTO] == PROTO_TCP else 0
        want_ext = rows[i, R_NAT] != 0 or tp_base != 0 or kflags != 0
        slot = conn_alloc_reply(conns, ct.index, ct.free_slots, stats, tup, rtup, now_ms,
                                want_ext)  # fmt: skip
        if slot < 0:
            out[i] = FULL
            continue
        conns[slot, C_MARK] = rows[i, R_MARK]
        for w in range(4):
            conns[slot, C_LABEL + w] = rows[i, R_LABEL + w]
        if rows[i, R_NAT] != 0:
            ext_set(conns, slot, X_NAT_FLAGS, rows[i, R_NAT])
        if tp_base != 0:
            ext_set(conns, slot, X_TP_BASE, tp_base)
        if kflags != 0:
            ext_set(conns, slot, X_KFLAGS, kflags)
        conns[slot, C_L4_STATE] = rows[i, R_L4_STATE]
        conns[slot, C_TIMEOUT_CLASS] = rows[i, R_TM]
        set_expiration(conns, slot, rows[i, R_EXPIRE])
        conns[slot, C_SEQ] = stats[ST_NEXT_SEQ] & 0xFFFFFFFF
        stats[ST_NEXT_SEQ] += 1
        if rows[i, R_PROTO] == PROTO_TCP:
            for peer in range(2):
                base = C_TCP + peer * TCP_PEER_WIDTH
                conns[slot, base + P_STATE] = rows[i, R_STATE0 + peer]
                conns[slot, base + P_WSCALE] = rows[i, R_WS0 + peer]
                conns[slot, base + P_FLAGS] = PF_WIN_UNKNOWN
        out[i] = IMPORTED
        slots[i] = slot


@njit(_nrt=True)  # allocates its working tuples
def _delete_matching(ct, rows, now_ms):
    """Delete the live connection whose original tuple is each row's; how many were."""
    tup = np.zeros(TUP_WIDTH, np.int64)
    n = 0
    for i in range(rows.shape[0]):
        for c in range(TUP_WIDTH):
            tup[c] = rows[i, c]
        handle = lookup_live(ct, tup, now_ms)
        if handle >= 0 and handle & 1 == 0:
            delete_conn(ct, handle >> 1)
            n += 1
    return n


def import_entries(ct, entries: KernelEntries, now_ms: int, zone_map=None, peer_states=None,
                   with_slots: bool = False):  # fmt: skip
    """Add ``entries`` to the Conntrack ``ct`` as live connections at ``now_ms``; returns the
    outcome of every row (IMPORTED, EXISTS, UNSUPPORTED, FULL). A negative ``timeout_s`` (a
    saved table without timeouts) arms the default timeout of the connection's state.
    ``with_slots``: also the row each entry went to (-1: none), as (outcomes, slots)."""
    rows = row_table(entries, now_ms, zone_map, peer_states)
    unknown = entries.timeout_s < 0  # a saved table without timeouts: the state's default
    tp = ct.zone_limits[ZL_TP, rows[unknown, R_ZONE]]
    rows[unknown, R_EXPIRE] = int(now_ms) + ct.timeouts[tp * N_TIMEOUTS + rows[unknown, R_TM]]
    out = np.zeros(len(rows), np.int64)
    slots = np.full(len(rows), -1, np.int64)
    if len(rows):
        ct.reserve(len(rows))
        _insert(ct.tables, rows, int(now_ms), out, slots)
        ct.forget_sweep_bounds()  # imported timers may expire before the sweeps' bounds
    return (out, slots) if with_slots else out


def delete_matching(ct, entries: KernelEntries, now_ms: int, zone_map=None) -> int:
    """Delete the connections whose original tuple (and zone, through ``zone_map``) is one of
    ``entries``' (a kernel DESTROY event); how many were found."""
    if not len(entries):
        return 0
    return int(_delete_matching(ct.tables, row_table(entries, now_ms, zone_map), int(now_ms)))


def outcome_counts(out: np.ndarray) -> dict[str, int]:
    """{outcome name: rows} of an import's result."""
    counts = np.bincount(out, minlength=len(OUTCOME_NAMES))
    return {name: int(counts[i]) for i, name in enumerate(OUTCOME_NAMES)}


def export_entries(conns: np.ndarray, now_ms: int, zone_map=None) -> KernelEntries:
    """The live connections of ``conns`` (not expired at ``now_ms``) as KernelEntries; ctaccel
    zones are mapped back through the inverse of ``zone_map`` (kernel zone -> ctaccel zone)."""
    return export_rows(conns, live_rows(conns, now_ms), now_ms, zone_map)


def for_update(entries: KernelEntries) -> KernelEntries:
    """Entries to update existing kernel entries with: the kernel refuses NAT on an existing
    entry, so the NAT bits go and the (translated) reply tuple is sent as it is."""
    return dataclasses.replace(entries, status=entries.status & ~(IPS_SRC_NAT | IPS_DST_NAT))


def export_rows(conns: np.ndarray, live: np.ndarray, now_ms: int, zone_map=None) -> KernelEntries:
    """The connections in rows ``live`` of ``conns`` as KernelEntries (see export_entries)."""
    u = unpack(conns, live)
    e = KernelEntries.empty(len(live))
    back = np.arange(65536, dtype=np.int64)
    for kz, z in (zone_map or {}).items():
        back[int(z)] = int(kz)
    e.family[:] = np.where(u.dl_type == ETH_IPV6, AF_INET6, AF_INET)
    e.proto[:], e.zone[:] = u.proto, back[u.zone & 0xFFFF]
    e.src[:], e.dst[:] = u.src, u.dst
    e.r_src[:], e.r_dst[:] = u.r_src, u.r_dst
    e.sport[:], e.dport[:] = u.sport, u.dport
    e.r_sport[:], e.r_dport[:] = u.r_sport, u.r_dport
    icmp = _icmp_rows(u.dl_type, u.proto)
    e.icmp_type[:] = np.where(icmp, u.icmp_type, 0)
    e.icmp_code[:] = np.where(icmp, u.icmp_code, 0)
    e.mark[:], e.label[:] = u.mark, u.label
    tcp = u.proto == PROTO_TCP
    s0, s1 = u.tcp[:, P_STATE], u.tcp[:, TCP_PEER_WIDTH + P_STATE]
    state, init0, init1 = kernel_tcp_state(s0, s1)
    seen = np.where(tcp, s1 >= TCPS_SYN_SENT,
                    np.where(icmp, u.l4_state == ICMPS_REPLY,
                             u.l4_state == OTHERS_BIDIR))  # fmt: skip
    nat = u.nat_flags
    e.status[:] = (IPS_CONFIRMED | np.where(seen, IPS_SEEN_REPLY | IPS_ASSURED, 0)
                   | np.where(nat & NAT_SRC, IPS_SRC_NAT, 0)
                   | np.where((nat & NAT_DST) & ~(nat & NAT_SRC), IPS_DST_NAT, 0))  # fmt: skip
    e.timeout_s[:] = np.maximum((u.expiration - now_ms + 999) // 1000, 1)
    e.tcp_state[:] = np.where(tcp, state, 0)
    kflags = u.kflags  # the kernel's own flags of an imported connection: kept
    told = (kflags & (IP_CT_TCP_FLAG_CLOSE_INIT * 0x101)) != 0  # the kernel said who closed
    for side, init in ((0, init0), (1, init1)):
        ws = u.tcp[:, side * TCP_PEER_WIDTH + P_WSCALE]
        kept = (kflags >> (8 * side)) & 0xFF & ~IP_CT_TCP_FLAG_WINDOW_SCALE
        kept &= np.where(
            (state >= K_FIN_WAIT) & (state <= K_CLOSE), 0xFF, ~IP_CT_TCP_FLAG_CLOSE_INIT
        )
        flags = (kept | IP_CT_TCP_FLAG_BE_LIBERAL
                 | np.where(ws & WSCALE_FLAG, IP_CT_TCP_FLAG_WINDOW_SCALE, 0)
                 | np.where(init & ~told, IP_CT_TCP_FLAG_CLOSE_INIT, 0))  # fmt: skip
        e.tcp_flags[:, side] = np.where(tcp, flags, 0)
        e.tcp_wscale[:, side] = np.where(tcp & ((ws & WSCALE_FLAG) != 0), ws & WSCALE_MASK, 0)
    return e
