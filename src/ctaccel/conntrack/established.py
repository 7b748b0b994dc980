"""Re-checking an established connection for the assume-established fast path.

What: the one conntrack question the fast path asks per ct step of a cached packet: "if
full processing ran ct() on this packet now, would it find connection (slot, generation)
alive, in this direction, and would the tracker's update leave it established without any
protocol state change?" If yes the update is applied (windows, timers) exactly as
``ct_execute`` would have applied it and the resulting ct_state is returned; if no, the row
is left exactly as it was and -1 is returned (RECHECK_*), so full processing sees the connection as if
the fast path had never looked.

Design: it calls the very same tracker update as ``core.ct_execute`` (``trackers.conn_update``),
on the live row, after saving its hot columns (layout.HOT_WIDTH: the only ones an update
writes); "no protocol state change" is checked by comparing the
state columns (TCP: both peers' states and window-scale flags; others: the tracker state) and
anything but CT_UPDATE_VALID restores the saved row. The expiry test is the one lookups use
(dead at ``now >= expiration``).

``ct_recheck_ack`` answers the same question without the copy, for the packet most cached
entries see: a plain ACK (no SYN, FIN or RST) of a TCP connection whose two peers are both
ESTABLISHED. For it the tracker's update can only accept the packet (window bookkeeping and
the established timer) or reject it (no write at all): the same arithmetic, in the same order,
decided before anything is written, so there is nothing to undo. Anything else says
RECHECK_OTHER and ``ct_recheck`` runs: ``ct_recheck_one`` chooses, for an entry's single step.

Invariants: never creates, deletes or re-indexes a connection; on -1 the row is bit-for-bit
what it was.
"""

from __future__ import annotations

from ctaccel.conntrack.layout import (
    C_GENERATION,
    C_L4_STATE,
    C_TCP,
    C_USED,
    HOT_WIDTH,
    P_FLAGS,
    P_MAX_WIN,
    P_SEQHI,
    P_SEQLO,
    P_STATE,
    P_WSCALE,
    ROW_CONN,
    TCP_PEER_WIDTH,
    expiration,
)
from ctaccel.conntrack.tcp import (
    SEQ_MASK,
    TCP_ACK,
    TCP_FIN,
    TCP_RST,
    TCP_SYN,
    TCPS_ESTABLISHED,
    _be16,
    _be32,
    _header_fits,
    _payload_len,
    _seq_diff,
    _set_timer,
    _tcp_flags,
    in_strict_window,
    load_peers,
    track_window,
    window_shifts,
)
from ctaccel.conntrack.timeouts import CT_UPDATE_VALID, TM_TCP_ESTABLISHED
from ctaccel.conntrack.trackers import conn_update
from ctaccel.jit import njit
from ctaccel.packet.key import CS_ESTABLISHED, CS_REPLY_DIR, CS_TRACKED, IPPROTO_TCP

RECHECK_GONE = -2  # freed, re-used for another connection, or expired
RECHECK_STATE = -1  # the tracker would reject the packet or move to another state
RECHECK_OTHER = -3  # ct_recheck_ack: not a plain ACK of an established connection


@njit(forceinline=True)
def ct_recheck(conns, slot, generation, reply, proto, frame, l4_ofs, l4_len, now_ms, timeouts,
               saved):  # fmt: skip
    """Apply the tracker update for a fast-path packet, or say why not.

    ``saved`` is scratch space (int64[>= HOT_WIDTH]). Returns the ct_state full processing
    would give (est|trk, plus rpl for the reply direction), ``RECHECK_GONE`` when the
    connection is not there any more (freed, replaced or expired), or ``RECHECK_STATE`` when
    the tracker would reject the packet or change state; in both cases the row is untouched."""
    if slot < 0 or slot >= conns.shape[0]:
        return RECHECK_GONE
    if conns[slot, C_USED] != ROW_CONN or conns[slot, C_GENERATION] != generation:
        return RECHECK_GONE
    if now_ms >= expiration(conns, slot):
        return RECHECK_GONE
    for c in range(HOT_WIDTH):  # a tracker update only writes hot columns (a loop: a slice
        saved[c] = conns[slot, c]  # copy may allocate a temporary)
    result = conn_update(conns, slot, reply, proto, frame, l4_ofs, l4_len, now_ms, timeouts)
    same = result == CT_UPDATE_VALID
    if same:
        if proto == IPPROTO_TCP:
            for peer in range(2):
                base = C_TCP + peer * TCP_PEER_WIDTH
                if conns[slot, base + P_STATE] != saved[base + P_STATE]:
                    same = False
                if conns[slot, base + P_WSCALE] != saved[base + P_WSCALE]:
                    same = False
        elif conns[slot, C_L4_STATE] != saved[C_L4_STATE]:
            same = False
    if not same:
        for c in range(HOT_WIDTH):
            conns[slot, c] = saved[c]
        return RECHECK_STATE
    state = CS_TRACKED | CS_ESTABLISHED
    if reply:
        state |= CS_REPLY_DIR
    return state


@njit(forceinline=True)
def ct_recheck_ack(conns, slot, reply, frame, l4_ofs, l4_len, now_ms, timeouts, expected):
    """``ct_recheck`` for a plain ACK of a TCP connection with both peers ESTABLISHED, whose
    entry recorded ct_state ``expected``; the caller has checked the slot's liveness and
    generation. Returns the ct_state (== ``expected``) with the update applied, RECHECK_GONE
    (expired), RECHECK_STATE (the tracker would reject it, or another ct_state: row
    untouched) or RECHECK_OTHER (another kind of packet or state: use ``ct_recheck``).

    The steps are tcp.tcp_conn_update's for this case, in its order: with ACK set and SYN, FIN
    and RST clear no flag check fails, neither peer is below SYN_SENT and no state moves, so
    the packet is either in the strict window (bookkeeping, ESTABLISHED timer) or rejected
    (the loose branch needs a peer below SYN_SENT or past FIN_WAIT_2)."""
    if not _header_fits(frame, l4_ofs, l4_len):
        return RECHECK_OTHER
    flags = _tcp_flags(frame, l4_ofs)
    if (flags & (TCP_SYN | TCP_FIN | TCP_RST | TCP_ACK)) != TCP_ACK:
        return RECHECK_OTHER
    src = C_TCP + TCP_PEER_WIDTH if reply else C_TCP
    dst = C_TCP if reply else C_TCP + TCP_PEER_WIDTH
    if (
        conns[slot, src + P_STATE] != TCPS_ESTABLISHED
        or conns[slot, dst + P_STATE] != TCPS_ESTABLISHED
        or conns[slot, src + P_FLAGS] != 0
    ):
        return RECHECK_OTHER  # (an imported side not heard since: the tracker opens it)
    if now_ms >= expiration(conns, slot):
        return RECHECK_GONE
    state = CS_TRACKED | CS_ESTABLISHED
    if reply:
        state |= CS_REPLY_DIR
    if state != expected:
        return RECHECK_STATE
    (src_seqlo, src_seqhi, src_max_win, src_wscale,
     dst_seqlo, dst_seqhi, dst_max_win, dst_wscale) = load_peers(conns, slot, src, dst)  # fmt: skip
    sws, dws = window_shifts(src_wscale, dst_wscale)
    win = _be16(frame, l4_ofs + 14)
    seq = _be32(frame, l4_ofs + 4)
    ack = _be32(frame, l4_ofs + 8)
    end = (seq + _payload_len(frame, l4_ofs, l4_len)) & SEQ_MASK
    if seq == end:
        seq = src_seqlo
        end = src_seqlo
    ackskew = _seq_diff(dst_seqlo, ack)
    if not in_strict_window(src_seqlo, src_seqhi, dst_max_win, sws, dws, seq, end, ackskew):
        return RECHECK_STATE
    src_max_win, src_seqlo, dst_seqhi = track_window(src_max_win, src_seqlo, dst_seqhi, win, end,
                                                     ack, win << sws)  # fmt: skip
    conns[slot, src + P_SEQLO] = src_seqlo & SEQ_MASK
    conns[slot, src + P_MAX_WIN] = src_max_win
    conns[slot, dst + P_SEQHI] = dst_seqhi
    _set_timer(conns, slot, now_ms, timeouts, TM_TCP_ESTABLISHED)
    return state


@njit(forceinline=True)
def ct_recheck_one(conns, slot, generation, reply, proto, frame, l4_ofs, l4_len, now_ms,
                   timeouts, saved, expected):  # fmt: skip
    """The re-check of a cached entry's one ct step (nothing after it can need it undone):
    ``expected`` with the update applied when the packet gets the cached ct_state, else
    RECHECK_GONE or RECHECK_STATE with the row as it was. A plain ACK of an established TCP
    connection takes ``ct_recheck_ack`` (no copy); anything else ``ct_recheck``, undone from
    ``saved`` when it gives another ct_state."""
    if proto == IPPROTO_TCP:
        st = ct_recheck_ack(conns, slot, reply, frame, l4_ofs, l4_len, now_ms, timeouts, expected)
        if st != RECHECK_OTHER:
            return st
    st = ct_recheck(conns, slot, generation, reply, proto, frame, l4_ofs, l4_len, now_ms,
                    timeouts, saved)  # fmt: skip
    if st == expected:
        return st
    if st >= 0:  # valid but a different ct_state than cached: undo it
        for c in range(HOT_WIDTH):
            conns[slot, c] = saved[c]
    return RECHECK_GONE if st == RECHECK_GONE else RECHECK_STATE
