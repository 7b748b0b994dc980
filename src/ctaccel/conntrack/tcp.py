"""The TCP connection tracker: the pf-derived model of OVS userspace (lib/conntrack-tcp.c).

What: the four operations the ct kernel needs for TCP, over one row of the connection table
(``conns[slot, :]``, columns in layout.py): ``tcp_valid_new`` (may this packet create a
connection), ``tcp_new_conn`` (initialise both peers from it), ``tcp_conn_update`` (track a
packet of an existing connection: window check, state transitions, timer) and
``tcp_state_name`` (the state dpctl/dump-conntrack prints).

Design: each side of the connection is a "peer" of five numbers, as in pf:
  seqlo    highest sequence number this peer has sent (end of its data), mod 2**32
  seqhi    highest sequence number the other side allows it to send (ack + window), mod 2**32
  max_win  the largest window it advertised, *unscaled*, kept as OVS's uint16 (truncating)
  wscale   its window-scale shift in the low 4 bits, WSCALE_FLAG if it sent the option on its
           SYN, WSCALE_UNKNOWN if the connection was picked up mid-stream (then both sides are
           treated as scaling by the maximum, 14: very lenient)
  state    a CT_DPIF_TCPS_* value (CLOSED < SYN_SENT < ESTABLISHED < CLOSING < FIN_WAIT_2 <
           TIME_WAIT)
Peer 0 sent the packet that created the connection, peer 1 is the other side. A packet is
accepted when its last octet lies inside what the receiver allowed, it is not more than one
window behind, its ack is at most MAXACKWINDOW behind or (scaled) ahead of what the receiver
sent, and, for a RST, its sequence number is exactly (+-1) where the sender is. When the
receiver has not spoken yet, or either side is past FIN_WAIT_2, a looser check (+-MAXACKWINDOW
around the sender's own edges) still accepts the packet but does not refresh the timer: a
one-sided stream dies at its first timeout however much it sends.

All arithmetic is int64 on values held in [0, 2**32); sequence comparisons are done on the
32-bit difference read as signed, like OVS's SEQ_* macros. Header fields are read big-endian
byte by byte (casting each byte to int64 first, so plain Python — ``.py_func`` — and numba
agree).

Invariants:
- Every seqlo/seqhi stored is in [0, 2**32); max_win in [0, 2**16); wscale in [0, 2**8).
- Result codes follow this project's timeouts.py names, which swap OVS's two "new" names:
  ``CT_UPDATE_STILL_NEW`` = a repeated SYN (ct_state new; OVS: CT_UPDATE_VALID_NEW),
  ``CT_UPDATE_RESTART`` = port reuse, the old connection is over (OVS: CT_UPDATE_NEW).
- Like OVS, an INVALID result can still have changed the row: the first packet from the
  reply side records its sequence state before the window check runs.
- The timer (``C_EXPIRATION``/``C_TIMEOUT_CLASS``) changes only in tcp_new_conn, on a
  repeated SYN, and in the strict (in-window) branch.
- The sequence check is always on (OVS's ``tcp_seq_chk`` bypass, off by default, is not
  modelled).
- A connection taken over from the kernel or a dump (conntrack/kernel_map.py) has states but
  no windows: each side carries PF_WIN_UNKNOWN until its next packet, which opens its sequence
  space (``adopt_side``); while the other side is unknown its window is guessed at the
  largest. Liberal until both sides spoke, then strict (the kernel does the same for a
  pickup; OVS's kernel datapath marks such entries be-liberal for good).
"""

from __future__ import annotations

import numpy as np

from ctaccel.conntrack.layout import (
    C_TCP,
    P_FLAGS,
    P_MAX_WIN,
    P_SEQHI,
    P_SEQLO,
    P_STATE,
    P_WSCALE,
    TCP_PEER_WIDTH,
)
from ctaccel.conntrack.timeouts import (
    CT_UPDATE_INVALID,
    CT_UPDATE_RESTART,
    CT_UPDATE_STILL_NEW,
    CT_UPDATE_VALID,
    TM_TCP_CLOSE,
    TM_TCP_ESTABLISHED,
    TM_TCP_FIN_WAIT,
    TM_TCP_SYN_RECV,
    TM_TCP_SYN_SENT,
    TM_TCP_TIME_WAIT,
    arm_timer,
)
from ctaccel.jit import njit

# TCP states (lib/ct-dpif.h CT_DPIF_TCPS_*); only some are reached by this tracker.
TCPS_CLOSED = 0
TCPS_LISTEN = 1
TCPS_SYN_SENT = 2
TCPS_SYN_RECV = 3
TCPS_ESTABLISHED = 4
TCPS_CLOSE_WAIT = 5
TCPS_FIN_WAIT_1 = 6
TCPS_CLOSING = 7
TCPS_LAST_ACK = 8
TCPS_FIN_WAIT_2 = 9
TCPS_TIME_WAIT = 10

TCP_STATE_NAMES = (
    "CLOSED",
    "LISTEN",
    "SYN_SENT",
    "SYN_RECV",
    "ESTABLISHED",
    "CLOSE_WAIT",
    "FIN_WAIT_1",
    "CLOSING",
    "LAST_ACK",
    "FIN_WAIT_2",
    "TIME_WAIT",
    "MAX_NUM",
)

# TCP header flag bits (the 12 bits after the data offset).
TCP_FIN = 0x001
TCP_SYN = 0x002
TCP_RST = 0x004
TCP_PSH = 0x008
TCP_ACK = 0x010
TCP_URG = 0x020

# Peer wscale byte.
WSCALE_FLAG = 0x80  # the peer sent a window-scale option on its SYN
WSCALE_UNKNOWN = 0x40  # picked up mid-stream: scaling unknown, be liberal
WSCALE_MASK = 0x0F  # the shift itself
TCP_MAX_WSCALE = 14  # RFC 7323 cap; also the shift assumed for picked-up connections

# Peer flags (``P_FLAGS``).
PF_WIN_UNKNOWN = 1  # imported (kernel, a dump): this side's sequence space is unknown until it
#                     sends again; its first packet then opens it (adopt_side)
PF_SEQHI_GUESS = 2  # this side's upper edge was guessed while the other side was unknown

TCP_HEADER_LEN = 20
TCPOPT_EOL = 0
TCPOPT_NOP = 1
TCPOPT_WINDOW = 3

# pf's tolerance for acks behind (or, scaled, ahead of) the other side: one maximal unscaled
# window plus an arbitrary 1500-byte fudge.
MAXACKWINDOW = 0xFFFF + 1500

SEQ_MASK = 0xFFFFFFFF
_SEQ_SIGN = 0x80000000
_SEQ_MOD = 0x100000000


@njit(forceinline=True)
def _seq_diff(a, b):
    """(a - b) mod 2**32 read as a signed 32-bit number: how far a is after b."""
    d = (a - b) & SEQ_MASK
    if d >= _SEQ_SIGN:
        d -= _SEQ_MOD
    return d


@njit(forceinline=True)
def _be16(frame, ofs):
    return (np.int64(frame[ofs]) << 8) | np.int64(frame[ofs + 1])


@njit(forceinline=True)
def _be32(frame, ofs):
    return (
        (np.int64(frame[ofs]) << 24)
        | (np.int64(frame[ofs + 1]) << 16)
        | (np.int64(frame[ofs + 2]) << 8)
        | np.int64(frame[ofs + 3])
    )


@njit(forceinline=True)
def _tcp_flags(frame, l4_ofs):
    """The 12 flag bits (NS..FIN), as OVS's TCP_FLAGS()."""
    return ((np.int64(frame[l4_ofs + 12]) & 0x0F) << 8) | np.int64(frame[l4_ofs + 13])


@njit(forceinline=True)
def _header_len(frame, l4_ofs):
    return (np.int64(frame[l4_ofs + 12]) >> 4) * 4


@njit(forceinline=True)
def _payload_len(frame, l4_ofs, l4_len):
    """Payload bytes after the TCP header; 0 when the data offset is nonsense (as OVS)."""
    hlen = _header_len(frame, l4_ofs)
    if hlen < TCP_HEADER_LEN or hlen > l4_len:
        return np.int64(0)
    return np.int64(l4_len - hlen)


@njit(forceinline=True)
def _header_fits(frame, l4_ofs, l4_len):
    return l4_ofs >= 0 and l4_len >= TCP_HEADER_LEN and l4_ofs + TCP_HEADER_LEN <= frame.shape[0]


@njit(forceinline=True)
def _invalid_flags(flags):
    """Flag combinations no tracker state accepts (pf's normalisation rules, as OVS)."""
    if flags & TCP_SYN:
        if flags & (TCP_RST | TCP_FIN):
            return True  # SYN+RST, SYN+FIN: nonsense
    elif not (flags & (TCP_ACK | TCP_RST)):
        return True  # neither SYN, ACK nor RST: carries nothing a connection could use
    if not (flags & TCP_ACK) and (flags & (TCP_FIN | TCP_PSH | TCP_URG)):
        return True  # FIN, PSH and URG are meaningful only with ACK
    return False


@njit(forceinline=True)
def load_peers(conns, slot, src, dst):
    """The window numbers of the sending peer (columns from ``src``) and the receiving one
    (``dst``): seqlo, seqhi, max_win and wscale of each, sender first."""
    # (words are uint32: widened before any arithmetic between them)
    return (np.int64(conns[slot, src + P_SEQLO]), np.int64(conns[slot, src + P_SEQHI]),
            np.int64(conns[slot, src + P_MAX_WIN]), np.int64(conns[slot, src + P_WSCALE]),
            np.int64(conns[slot, dst + P_SEQLO]), np.int64(conns[slot, dst + P_SEQHI]),
            np.int64(conns[slot, dst + P_MAX_WIN]), np.int64(conns[slot, dst + P_WSCALE]))  # fmt: skip


@njit(forceinline=True)
def window_shifts(src_wscale, dst_wscale):
    """The window-scale shifts (sender, receiver) of a packet without SYN: both announced
    ones once both SYNs carried the option, the maximum when the connection was picked up
    mid-stream, else none."""
    if (src_wscale & WSCALE_FLAG) and (dst_wscale & WSCALE_FLAG):
        return src_wscale & WSCALE_MASK, dst_wscale & WSCALE_MASK
    if (src_wscale & WSCALE_UNKNOWN) and (dst_wscale & WSCALE_UNKNOWN):
        return np.int64(TCP_MAX_WSCALE), np.int64(TCP_MAX_WSCALE)
    return np.int64(0), np.int64(0)


@njit(forceinline=True)
def in_strict_window(src_seqlo, src_seqhi, dst_max_win, sws, dws, seq, end, ackskew):
    """pf's window test (RST's position apart): the last octet within what the receiver
    allowed, at most a window back, and the ack neither too far behind what was sent nor
    (scaled) ahead of it."""
    return (
        _seq_diff(src_seqhi, end) >= 0
        and _seq_diff(seq, src_seqlo - (dst_max_win << dws)) >= 0
        and ackskew >= -MAXACKWINDOW
        and ackskew <= (MAXACKWINDOW << sws)
    )


@njit(forceinline=True)
def track_window(src_max_win, src_seqlo, dst_seqhi, win, end, ack, scaled_win):
    """An accepted packet's bookkeeping: the sender's largest window and highest octet sent,
    and how far the receiver now lets the sender go; returns the three new values."""
    if src_max_win < win:
        src_max_win = win
    if _seq_diff(end, src_seqlo) > 0:
        src_seqlo = end
    if _seq_diff(ack + scaled_win, dst_seqhi) >= 0:
        dst_seqhi = (ack + (scaled_win if scaled_win > 1 else 1)) & SEQ_MASK
    return src_max_win, src_seqlo, dst_seqhi


@njit
def tcp_get_wscale(frame, l4_ofs, l4_len):
    """The wscale byte a SYN announces: WSCALE_FLAG | min(shift, 14), or 0 without the option.

    Walks the options like OVS: stops at EOL or when fewer than 3 bytes remain; an option
    length below 2 counts as 2 (so the walk always advances); a later window option overrides
    an earlier one. Reads stay inside the header, the L4 length and the frame, so malformed
    options cannot read out of bounds.
    """
    end = l4_ofs + _header_len(frame, l4_ofs)
    if end > l4_ofs + l4_len:
        end = l4_ofs + l4_len
    if end > frame.shape[0]:
        end = frame.shape[0]
    pos = l4_ofs + TCP_HEADER_LEN
    wscale = np.int64(0)
    while end - pos >= 3:
        kind = np.int64(frame[pos])
        if kind == TCPOPT_EOL:
            return wscale
        if kind == TCPOPT_NOP:
            pos += 1
            continue
        if kind == TCPOPT_WINDOW:
            shift = np.int64(frame[pos + 2])
            if shift > TCP_MAX_WSCALE:
                shift = TCP_MAX_WSCALE
            wscale = shift | WSCALE_FLAG
        optlen = np.int64(frame[pos + 1])
        if optlen < 2:
            optlen = 2
        pos += optlen
    return wscale


@njit(forceinline=True)
def _set_timer(conns, slot, now_ms, timeouts, tm):
    arm_timer(conns, slot, now_ms, timeouts, tm)


@njit(forceinline=True)
def tcp_valid_new(frame, l4_ofs, l4_len):
    """May this packet create a connection? Valid flags and not a SYN/ACK.

    A SYN starts a connection; anything else valid (ACK, FIN/ACK, RST, ...) picks up one
    already in progress. A SYN/ACK may not: it would be a half-open connection we never saw
    start (OVS's rule).
    """
    if not _header_fits(frame, l4_ofs, l4_len):
        return False
    flags = _tcp_flags(frame, l4_ofs)
    if _invalid_flags(flags):
        return False
    if (flags & TCP_SYN) and (flags & TCP_ACK):
        return False
    return True


@njit
def tcp_new_conn(conns, slot, frame, l4_ofs, l4_len, now_ms, timeouts):
    """Initialise the TCP peers of ``conns[slot]`` from the packet creating the connection.

    Call only after ``tcp_valid_new`` said yes. Peer 0 (the sender) has sent up to its seq
    (+ payload, SYN, FIN) and may send one more octet until the other side speaks; peer 1 is
    CLOSED with a 1-octet window. A SYN records the sender's window-scale option; a pickup
    marks both sides' scaling unknown (lenient). The timer starts at tcp_syn_sent.
    """
    flags = _tcp_flags(frame, l4_ofs)
    seq = _be32(frame, l4_ofs + 4)
    win = _be16(frame, l4_ofs + 14)
    src = C_TCP
    dst = C_TCP + TCP_PEER_WIDTH

    seqhi = seq + _payload_len(frame, l4_ofs, l4_len) + 1
    if flags & TCP_SYN:
        seqhi += 1
        src_wscale = tcp_get_wscale(frame, l4_ofs, l4_len)
        dst_wscale = np.int64(0)
    else:
        src_wscale = np.int64(WSCALE_UNKNOWN)
        dst_wscale = np.int64(WSCALE_UNKNOWN)
    max_win = win if win > 1 else np.int64(1)
    shift = src_wscale & WSCALE_MASK
    if shift:
        # The SYN's own window is never scaled: store it in scaled-down units.
        max_win = (max_win + (np.int64(1) << shift) - 1) >> shift
    if flags & TCP_FIN:
        seqhi += 1

    conns[slot, src + P_SEQLO] = seq
    conns[slot, src + P_SEQHI] = seqhi & SEQ_MASK
    conns[slot, src + P_MAX_WIN] = max_win
    conns[slot, src + P_WSCALE] = src_wscale
    conns[slot, src + P_STATE] = TCPS_SYN_SENT
    conns[slot, dst + P_SEQLO] = 0
    conns[slot, dst + P_SEQHI] = 1
    conns[slot, dst + P_MAX_WIN] = 1
    conns[slot, dst + P_WSCALE] = dst_wscale
    conns[slot, dst + P_STATE] = TCPS_CLOSED
    for peer in (src, dst):
        conns[slot, peer + P_FLAGS] = 0
    _set_timer(conns, slot, now_ms, timeouts, TM_TCP_SYN_SENT)


@njit(forceinline=True)
def _open_side(conns, slot, src, dst, frame, l4_ofs, l4_len, pkt, sws, dws):
    """The first packet from side ``src`` (normally the SYN/ACK) sets up its sequence space and,
    on a SYN, the window scaling both sides agreed; the writes stay even if the window check
    then rejects the packet (OVS). ``pkt`` is (flags, seq, end, win). Returns the window
    shifts, the packet's window (a SYN's is unscaled) and whether its ack can be judged."""
    flags, seq, end, win = pkt
    (_src_seqlo, src_seqhi, src_max_win, src_wscale,
     _dst_seqlo, _dst_seqhi, dst_max_win, dst_wscale) = load_peers(conns, slot, src, dst)  # fmt: skip
    if (flags & TCP_SYN) and (dst_wscale & WSCALE_FLAG):
        src_wscale = tcp_get_wscale(frame, l4_ofs, l4_len)
        if src_wscale & WSCALE_FLAG:
            sws = src_wscale & WSCALE_MASK
            win = (win + (np.int64(1) << sws) - 1) >> sws  # a SYN's window is unscaled
            dws = dst_wscale & WSCALE_MASK
        else:
            # Scaling needs both sides: undo the other side's, its window was real.
            dst_max_win = (dst_max_win << (dst_wscale & WSCALE_MASK)) & 0xFFFF
            dst_wscale = np.int64(0)
    # Open the window the other side allows (it may already be set if we picked the
    # connection up); doing so means we cannot judge this packet's ack yet.
    check_ackskew = True
    allowed = dst_max_win << dws
    if allowed < 1:
        allowed = np.int64(1)
    if src_seqhi == 1 or _seq_diff(end + allowed, src_seqhi) >= 0:
        src_seqhi = (end + allowed) & SEQ_MASK
        check_ackskew = False
    if win > src_max_win:
        src_max_win = win
    conns[slot, src + P_SEQLO] = seq
    conns[slot, src + P_SEQHI] = src_seqhi
    conns[slot, src + P_MAX_WIN] = src_max_win
    conns[slot, src + P_WSCALE] = src_wscale
    conns[slot, src + P_STATE] = TCPS_SYN_SENT
    conns[slot, dst + P_MAX_WIN] = dst_max_win
    conns[slot, dst + P_WSCALE] = dst_wscale
    return sws, dws, win, check_ackskew


@njit(forceinline=True)
def adopt_side(conns, slot, src, dst, frame, l4_ofs, l4_len):
    """The first packet from an imported side (PF_WIN_UNKNOWN) opens its sequence space, as
    the kernel picks a window up; the state is kept. The row is rewritten so that the usual
    update then judges the packet: when the other side is unknown too, its sent edge is
    taken from this packet's ack and its window guessed at the largest (this side's upper
    edge marked PF_SEQHI_GUESS); when the other side has spoken, this side's bound is the
    one its acks set, and the other side's guessed bound becomes this packet's ack + window.
    Inlined like the rest of the tracker."""
    flags = _tcp_flags(frame, l4_ofs)
    seq = _be32(frame, l4_ofs + 4)
    ack = _be32(frame, l4_ofs + 8) if flags & TCP_ACK else seq
    win = _be16(frame, l4_ofs + 14)
    end = seq + _payload_len(frame, l4_ofs, l4_len)
    sws, dws = window_shifts(
        np.int64(conns[slot, src + P_WSCALE]), np.int64(conns[slot, dst + P_WSCALE])
    )
    scaled = win << sws
    if scaled < 1:
        scaled = np.int64(1)
    if conns[slot, dst + P_FLAGS] & PF_WIN_UNKNOWN:
        conns[slot, dst + P_SEQLO] = ack
        conns[slot, dst + P_MAX_WIN] = 0xFFFF
        conns[slot, dst + P_SEQHI] = (ack + scaled) & SEQ_MASK
        seqhi = end + (np.int64(0xFFFF) << dws)
        conns[slot, src + P_FLAGS] = PF_SEQHI_GUESS
    else:
        seqhi = np.int64(conns[slot, src + P_SEQHI])
        if seqhi == 0:
            seqhi = end + max(np.int64(conns[slot, dst + P_MAX_WIN]) << dws, np.int64(1))
        conns[slot, src + P_FLAGS] = 0
        if conns[slot, dst + P_FLAGS] & PF_SEQHI_GUESS:
            conns[slot, dst + P_SEQHI] = (ack + scaled) & SEQ_MASK
            conns[slot, dst + P_FLAGS] = 0
    conns[slot, src + P_SEQLO] = seq
    conns[slot, src + P_SEQHI] = seqhi & SEQ_MASK
    conns[slot, src + P_MAX_WIN] = win if win > 1 else np.int64(1)


@njit(forceinline=True)
def _strict_states(flags, src_state, dst_state):
    """The peers' states after a packet inside the window: SYN opens, FIN closes its sender,
    an ACK moves the receiver on, a RST ends both."""
    if (flags & TCP_SYN) and src_state < TCPS_SYN_SENT:
        src_state = np.int64(TCPS_SYN_SENT)
    if (flags & TCP_FIN) and src_state < TCPS_CLOSING:
        src_state = np.int64(TCPS_CLOSING)
    if flags & TCP_ACK:
        if dst_state == TCPS_SYN_SENT:
            dst_state = np.int64(TCPS_ESTABLISHED)
        elif dst_state == TCPS_CLOSING:
            dst_state = np.int64(TCPS_FIN_WAIT_2)
    if flags & TCP_RST:
        src_state = np.int64(TCPS_TIME_WAIT)
        dst_state = np.int64(TCPS_TIME_WAIT)
    return src_state, dst_state


@njit(forceinline=True)
def _timeout_class(src_state, dst_state):
    """The timeout (TM_*) the peers' states call for. OVS's names -> ours: TCP_CLOSED ->
    tcp_close, TCP_FIN_WAIT -> tcp_time_wait, TCP_OPENING -> tcp_syn_recv, TCP_CLOSING ->
    tcp_fin_wait (lib/conntrack-tp.c)."""
    if src_state >= TCPS_FIN_WAIT_2 and dst_state >= TCPS_FIN_WAIT_2:
        return TM_TCP_CLOSE
    if src_state >= TCPS_CLOSING and dst_state >= TCPS_CLOSING:
        return TM_TCP_TIME_WAIT
    if src_state < TCPS_ESTABLISHED or dst_state < TCPS_ESTABLISHED:
        return TM_TCP_SYN_RECV
    if src_state >= TCPS_CLOSING or dst_state >= TCPS_CLOSING:
        return TM_TCP_FIN_WAIT
    return TM_TCP_ESTABLISHED


@njit(forceinline=True)
def _loosely_acceptable(src_state, dst_state, src_seqlo, src_seqhi, seq, end):
    """pf's loose acceptance outside the strict window: the receiver has not spoken
    (shotgunned SYNs, a stream picked up mid-way) or the connection is closing, and the
    segment lies within MAXACKWINDOW of the sender's sequence space."""
    return (
        (dst_state < TCPS_SYN_SENT or dst_state >= TCPS_FIN_WAIT_2 or src_state >= TCPS_FIN_WAIT_2)
        and _seq_diff(src_seqhi + MAXACKWINDOW, end) >= 0
        and _seq_diff(seq, src_seqlo - MAXACKWINDOW) >= 0
    )


@njit(forceinline=True)
def tcp_conn_update(conns, slot, reply, frame, l4_ofs, l4_len, now_ms, timeouts):
    """Track one packet of the connection in ``conns[slot]``; return a CT_UPDATE_* code.

    ``reply`` is true when the packet travels in the reply direction (sent by peer 1).
    Returns CT_UPDATE_INVALID (ct_state inv), CT_UPDATE_VALID (est), CT_UPDATE_STILL_NEW (a pure
    SYN while its sender has not got past SYN_SENT: the connection stays new) or
    CT_UPDATE_RESTART (a pure SYN after both sides closed: the caller must end this
    connection and create a new one from the packet).
    """
    if not _header_fits(frame, l4_ofs, l4_len):
        return CT_UPDATE_INVALID
    flags = _tcp_flags(frame, l4_ofs)
    if _invalid_flags(flags):
        return CT_UPDATE_INVALID

    src = C_TCP + TCP_PEER_WIDTH if reply else C_TCP
    dst = C_TCP if reply else C_TCP + TCP_PEER_WIDTH
    src_state = np.int64(conns[slot, src + P_STATE])
    dst_state = np.int64(conns[slot, dst + P_STATE])

    if (flags & (TCP_SYN | TCP_ACK)) == TCP_SYN:
        if src_state >= TCPS_FIN_WAIT_2 and dst_state >= TCPS_FIN_WAIT_2:
            # Both sides are done: the tuple is being reused by a new connection.
            conns[slot, src + P_STATE] = TCPS_CLOSED
            conns[slot, dst + P_STATE] = TCPS_CLOSED
            return CT_UPDATE_RESTART
        if src_state <= TCPS_SYN_SENT:
            # A retransmitted (or simultaneous-open) SYN: still opening, restart the clock.
            conns[slot, src + P_STATE] = TCPS_SYN_SENT
            _set_timer(conns, slot, now_ms, timeouts, TM_TCP_SYN_SENT)
            return CT_UPDATE_STILL_NEW

    if conns[slot, src + P_FLAGS] & PF_WIN_UNKNOWN:  # rare: an imported side speaks
        adopt_side(conns, slot, src, dst, frame, l4_ofs, l4_len)
    (src_seqlo, src_seqhi, src_max_win, src_wscale,
     dst_seqlo, dst_seqhi, dst_max_win, dst_wscale) = load_peers(conns, slot, src, dst)  # fmt: skip

    # Window scaling applies only once both SYNs announced it, and never to a SYN's window.
    sws = np.int64(0)
    dws = np.int64(0)
    if not (flags & TCP_SYN):
        sws, dws = window_shifts(src_wscale, dst_wscale)

    win = _be16(frame, l4_ofs + 14)
    seq = _be32(frame, l4_ofs + 4)
    orig_seq = seq
    ack = _be32(frame, l4_ofs + 8)
    end = (seq + _payload_len(frame, l4_ofs, l4_len)) & SEQ_MASK
    if flags & TCP_SYN:
        end = (end + 1) & SEQ_MASK
    if flags & TCP_FIN:
        end = (end + 1) & SEQ_MASK

    check_ackskew = True
    if src_state < TCPS_SYN_SENT:
        sws, dws, win, check_ackskew = _open_side(conns, slot, src, dst, frame, l4_ofs, l4_len,
                                                  (flags, seq, end, win), sws, dws)  # fmt: skip
        (src_seqlo, src_seqhi, src_max_win, src_wscale,
         dst_seqlo, dst_seqhi, dst_max_win, dst_wscale) = load_peers(conns, slot, src, dst)  # fmt: skip
        src_state = np.int64(TCPS_SYN_SENT)

    if not (flags & TCP_ACK):
        ack = dst_seqlo  # no ack to judge: let it pass the skew check
    elif ack == 0 and (flags & TCP_RST):
        ack = dst_seqlo  # some stacks send RST/ACK with ack 0 when a SYN timed out
    if seq == end:
        # No data: only require that it does not claim to be ahead of the sender.
        seq = src_seqlo
        end = src_seqlo

    ackskew = _seq_diff(dst_seqlo, ack) if check_ackskew else np.int64(0)
    rst_ok = True
    if flags & TCP_RST:
        # A reset must sit exactly where the sender is (+-1), or anyone could kill the conn.
        rst_ok = (
            orig_seq == src_seqlo
            or orig_seq == ((src_seqlo + 1) & SEQ_MASK)
            or ((orig_seq + 1) & SEQ_MASK) == src_seqlo
        )
    in_window = (
        in_strict_window(src_seqlo, src_seqhi, dst_max_win, sws, dws, seq, end, ackskew) and rst_ok
    )
    scaled_win = win << sws

    if in_window:
        src_max_win, src_seqlo, dst_seqhi = track_window(src_max_win, src_seqlo, dst_seqhi, win,
                                                         end, ack, scaled_win)  # fmt: skip

        src_state, dst_state = _strict_states(flags, src_state, dst_state)
        tm = _timeout_class(src_state, dst_state)
        _set_timer(conns, slot, now_ms, timeouts, tm)
    elif _loosely_acceptable(src_state, dst_state, src_seqlo, src_seqhi, seq, end):
        # Loose acceptance: the receiver has not spoken (shotgunned SYNs, a stream picked up
        # mid-way) or the connection is closing (stray FIN/ACKs). Track the sequence space but
        # leave the timer alone, so a flood cannot keep such a connection alive; a proper
        # answer from the other side moves it to the strict branch.
        src_max_win, src_seqlo, dst_seqhi = track_window(src_max_win, src_seqlo, dst_seqhi, win,
                                                         end, ack, scaled_win)  # fmt: skip
        if (flags & TCP_FIN) and src_state < TCPS_CLOSING:
            src_state = np.int64(TCPS_CLOSING)
        if flags & TCP_RST:
            src_state = np.int64(TCPS_TIME_WAIT)
            dst_state = np.int64(TCPS_TIME_WAIT)
    else:
        return CT_UPDATE_INVALID

    conns[slot, src + P_SEQLO] = src_seqlo & SEQ_MASK
    conns[slot, src + P_MAX_WIN] = src_max_win
    conns[slot, src + P_STATE] = src_state
    conns[slot, dst + P_SEQHI] = dst_seqhi
    conns[slot, dst + P_STATE] = dst_state
    return CT_UPDATE_VALID
