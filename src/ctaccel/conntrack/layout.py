"""Column layout of the connection table (``conns[rows, CONN_WIDTH]``, CONN_DTYPE: uint32).

What: one row per connection, 128 bytes, and for the connections that need more an
*extension row* of the same table. The same rows are read and written by the table code
(table.py), the L4 trackers (tcp.py, other.py, icmp.py), the ct action kernel (core.py), the
dump formatter (dump.py) and the compiled fast path, so the layout lives here alone.

Design: a flat 2-D array of 32-bit words; a column per scalar. A connection's row holds what
every connection has: liveness, timer, mark, label, tracker state (the hot columns, first),
then its original tuple as IPv4 (addresses, ports) and its creation number. Whatever only
some connections have lives in an extension row (``X_*`` columns) that the connection's
``C_EXT`` names: IPv6 addresses (4 words each, most significant first, as the flow key), a
reply tuple that is not the reversed original (NAT), ICMP type and code, ALG state, an
imported connection's kernel flags, a timeout policy, a zone-limit admission. A connection
without one reads those as: reply tuple = reversed original, everything else 0; the accessors
below (:func:`addr_word`, :func:`port`, :func:`ext_get`) say so in one place. The extension
row is taken from the same free stack when the connection is created (table.conn_alloc_reply)
and given back with it. The expiration time (ms) takes two words (low first): read and
written through :func:`expiration` / :func:`set_expiration`; the signed FTP sequence skew is
stored as its 32-bit two's complement (:func:`seq_skew`). Reading a column gives an unsigned
32-bit value: numba types uint32 - uint32 as uint64 (it wraps below zero) and mixes uint64
with int64 into float64, so a kernel widens a word (``np.int64(...)``) before arithmetic
between two words. Outside kernels, :func:`unpack` gives every field of many connections as
int64 numpy columns.

Invariants:
- ``C_USED``: ROW_FREE (0) a free row (everything else in it is meaningless), ROW_CONN (1) a
  connection, ROW_EXT (2) a connection's extension row (its ``X_OWNER`` names the connection).
- ``C_GENERATION`` is bumped (mod 2**32) every time a row is taken or freed, so a
  (slot, generation) pair names one connection for its whole life and never another.
- A connection has an extension row exactly when it is IPv6, ICMP, NATed, an ALG's control
  or data connection, imported with kernel flags, under a timeout policy or admitted by a
  zone limit (decided when it is created; nothing adds one later).
- ICMP: ``C_SPORT``/``C_DPORT`` both hold the echo id; ``X_ICMP_TYPE``/``X_ICMP_CODE`` the
  original direction's type and code (the reply direction uses the reversed type).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ctaccel.jit import njit

CONN_DTYPE = np.uint32
CONN_WORD_BYTES = 4
CONN_LINE_WORDS = 64 // CONN_WORD_BYTES  # words per cache line (the fast path's prefetch step)
_M32 = 0xFFFFFFFF

ROW_FREE = 0
ROW_CONN = 1
ROW_EXT = 2

# Hot columns first: everything a packet of an established connection reads or writes
# (liveness, timers, mark/label, tracker state, TCP peers) lies in the first 25 columns, two
# cache lines (the fast path prefetches them and saves them before a re-check); rows are 32
# columns (128 bytes) and start on a line. ``HOT_WIDTH`` bounds what a tracker update can
# change. The lookup reads line 0 (used, zone, protocol) and the tuple in line 1.
C_USED = 0  # ROW_FREE, ROW_CONN or ROW_EXT
C_GENERATION = 1  # bumped on every alloc/free of this slot
C_ZONE = 2  # conntrack zone (16 bits)
C_PROTO = 3  # IP protocol
C_EXPIRATION = 4  # ms, low word (C_EXPIRATION_HI: high); dead at now >= expiration  (mutable)
C_EXPIRATION_HI = 5
C_TIMEOUT_CLASS = 6  # TM_* index of the timeout last applied (for dumps)       (mutable)
C_MARK = 7  # ct_mark (32 bits)                                                 (mutable)
C_L4_STATE = 8  # UDP/other/ICMP tracker state (FIRST/MULTIPLE/BIDIR, ...)    (mutable)
C_LABEL = 9  # 4 columns: ct_label                                              (mutable)

# TCP peers (pf-derived tracker), peer 0 = original direction sender, peer 1 = reply sender.
C_TCP = 13
TCP_PEER_WIDTH = 6
P_SEQLO = 0
P_SEQHI = 1
P_MAX_WIN = 2
P_WSCALE = 3  # low 4 bits: shift; CT_WSCALE_FLAG / CT_WSCALE_UNKNOWN as in OVS
P_STATE = 4  # CT_DPIF_TCPS_* value
P_FLAGS = 5  # per-peer flags (tcp.py PF_*: an imported side whose window is unknown)
HOT_WIDTH = C_TCP + 2 * TCP_PEER_WIDTH  # 25

# --- cold: immutable after creation ---------------------------------------------------------
C_DL_TYPE = 25  # 0x0800 or 0x86dd
C_SRC4 = 26  # original-direction IPv4 source address (IPv6: the extension row's X_SRC)
C_DST4 = 27  # original-direction IPv4 destination address
C_SPORT = 28  # original source port (ICMP: id)
C_DPORT = 29  # original destination port (ICMP: id)
C_SEQ = 30  # creation sequence number, mod 2**32 (ids; kernel sync finds new connections)
C_EXT = 31  # the extension row + 1; 0: none

CONN_WIDTH = 32

# --- the extension row (C_USED = ROW_EXT, C_GENERATION as any row) -------------------------
X_SRC = 2  # 4 columns: original-direction source address (IPv4 in the last)
X_DST = 6  # 4 columns: original-direction destination address
X_R_SRC = 10  # 4 columns: reply-direction tuple (reversed original unless NATed)
X_R_DST = 14  # 4 columns
X_R_SPORT = 18
X_R_DPORT = 19
X_ICMP_TYPE = 20  # original-direction ICMP type (ICMP only)
X_ICMP_CODE = 21
X_NAT_FLAGS = 22  # NAT issue: which translation applies; 0 = none
X_ALG = 23  # ALG_KIND (the helper: ALG_FTP / ALG_TFTP) | ALG_RELATED | ALG_SKEW_REPLY
X_KFLAGS = 24  # an imported connection's kernel TCP flags, orig | reply << 8 (kernel_map.py)
X_TP_BASE = 25  # where the connection's timeout policy starts in ``timeouts`` (timeouts.py)
X_ADMIT = 26  # which zone-limit entry admitted the conn (lifecycle.py), to give its count back
# Application-layer gateways (ct(alg=ftp|tftp), alg.py and ftp.py), as OVS's conn->alg,
# ->alg_related, ->seq_skew, ->seq_skew_dir and ->parent_key:
X_SEQ_SKEW = 27  # FTP NAT: bytes the rewritten commands added (signed: read with seq_skew)
X_ALG_PARENT = 28  # a data connection: its expectation's row + 1 (holds the parent's tuple)
X_ALG_EXPS = 29  # a control connection: the first of its expectations' rows + 1 (a chain)
X_OWNER = 30  # the connection's row

ALG_FTP = 1
ALG_TFTP = 2
ALG_KIND = 3  # the helper bits of X_ALG
ALG_RELATED = 4  # the connection was expected (a data connection): +rel for life
ALG_SKEW_REPLY = 8  # X_SEQ_SKEW was made by a reply-direction command (OVS seq_skew_dir)


@njit(forceinline=True)
def expiration(conns, slot):
    """The connection's expiration time (ms), from its two words."""
    return np.int64(conns[slot, C_EXPIRATION]) | (np.int64(conns[slot, C_EXPIRATION_HI]) << 32)


@njit(forceinline=True)
def set_expiration(conns, slot, ms):
    conns[slot, C_EXPIRATION] = np.int64(ms) & _M32
    conns[slot, C_EXPIRATION_HI] = np.int64(ms) >> 32


@njit(forceinline=True)
def ext_row(conns, slot):
    """The connection's extension row, or -1 when it has none."""
    return np.int64(conns[slot, C_EXT]) - 1


@njit(forceinline=True)
def ext_get(conns, slot, xcol):
    """Extension column ``xcol`` of the connection (0 when it has no extension row)."""
    e = np.int64(conns[slot, C_EXT]) - 1
    if e < 0:
        return np.int64(0)
    return np.int64(conns[e, xcol])


@njit(forceinline=True)
def ext_set(conns, slot, xcol, value):
    """Write extension column ``xcol`` (the connection has an extension row)."""
    conns[np.int64(conns[slot, C_EXT]) - 1, xcol] = np.int64(value) & _M32


@njit(forceinline=True)
def addr_word(conns, slot, xcol, i):
    """Word ``i`` (0..3) of an address of the connection: ``xcol`` X_SRC / X_DST (original
    tuple) or X_R_SRC / X_R_DST (reply tuple)."""
    e = np.int64(conns[slot, C_EXT]) - 1
    if e >= 0:
        return np.int64(conns[e, xcol + i])
    if i != 3:
        return np.int64(0)
    if xcol == X_SRC or xcol == X_R_DST:
        return np.int64(conns[slot, C_SRC4])
    return np.int64(conns[slot, C_DST4])


@njit(forceinline=True)
def port(conns, slot, reply, dst):
    """The source (``dst`` 0) or destination (1) port of the connection's original
    (``reply`` 0) or reply tuple (ICMP: the id)."""
    if reply == 0:
        return np.int64(conns[slot, C_DPORT if dst else C_SPORT])
    e = np.int64(conns[slot, C_EXT]) - 1
    if e >= 0:
        return np.int64(conns[e, X_R_DPORT if dst else X_R_SPORT])
    return np.int64(conns[slot, C_SPORT if dst else C_DPORT])


@njit(forceinline=True)
def seq_skew(conns, slot):
    """X_SEQ_SKEW as the signed number it is."""
    v = ext_get(conns, slot, X_SEQ_SKEW)
    return v - (np.int64(1) << 32) if v >= (np.int64(1) << 31) else v


def expirations(conns: np.ndarray, rows=slice(None)) -> np.ndarray:
    """The expiration times (ms, int64) of ``conns[rows]`` (numpy, outside kernels)."""
    lo = conns[rows, C_EXPIRATION].astype(np.int64)
    return lo | (conns[rows, C_EXPIRATION_HI].astype(np.int64) << 32)


def live_rows(conns: np.ndarray, now_ms: int) -> np.ndarray:
    """Rows of the connections not expired at ``now_ms`` (ascending)."""
    return np.flatnonzero((conns[:, C_USED] == ROW_CONN) & (expirations(conns) > now_ms))


class Unpacked(NamedTuple):
    """Every field of some connections as int64 numpy columns (:func:`unpack`)."""

    zone: np.ndarray
    proto: np.ndarray
    dl_type: np.ndarray
    src: np.ndarray  # [n, 4]
    dst: np.ndarray
    r_src: np.ndarray
    r_dst: np.ndarray
    sport: np.ndarray
    dport: np.ndarray
    r_sport: np.ndarray
    r_dport: np.ndarray
    icmp_type: np.ndarray
    icmp_code: np.ndarray
    nat_flags: np.ndarray
    alg: np.ndarray
    kflags: np.ndarray
    alg_parent: np.ndarray
    mark: np.ndarray
    label: np.ndarray  # [n, 4]
    l4_state: np.ndarray
    tcp: np.ndarray  # [n, 2 * TCP_PEER_WIDTH]: the TCP peers' columns
    expiration: np.ndarray
    seq: np.ndarray


def unpack(conns: np.ndarray, rows) -> Unpacked:
    """The connections in rows ``rows`` (an index array) of ``conns``, every field resolved
    (extension row or its default), for dumps and kernel export."""
    rows = np.asarray(rows, np.int64)
    r = conns[rows].astype(np.int64)
    e = r[:, C_EXT] - 1
    has = e >= 0
    x = conns[np.where(has, e, 0)].astype(np.int64)
    x[~has] = 0
    n = len(rows)
    v4 = np.zeros((n, 4), np.int64)
    src4, dst4 = v4.copy(), v4.copy()
    src4[:, 3], dst4[:, 3] = r[:, C_SRC4], r[:, C_DST4]

    def addr(xcol, default):
        return np.where(has[:, None], x[:, xcol : xcol + 4], default)

    return Unpacked(
        zone=r[:, C_ZONE], proto=r[:, C_PROTO], dl_type=r[:, C_DL_TYPE],
        src=addr(X_SRC, src4), dst=addr(X_DST, dst4),
        r_src=addr(X_R_SRC, dst4), r_dst=addr(X_R_DST, src4),
        sport=r[:, C_SPORT], dport=r[:, C_DPORT],
        r_sport=np.where(has, x[:, X_R_SPORT], r[:, C_DPORT]),
        r_dport=np.where(has, x[:, X_R_DPORT], r[:, C_SPORT]),
        icmp_type=x[:, X_ICMP_TYPE], icmp_code=x[:, X_ICMP_CODE], nat_flags=x[:, X_NAT_FLAGS],
        alg=x[:, X_ALG], kflags=x[:, X_KFLAGS], alg_parent=x[:, X_ALG_PARENT],
        mark=r[:, C_MARK], label=r[:, C_LABEL : C_LABEL + 4], l4_state=r[:, C_L4_STATE],
        tcp=r[:, C_TCP : C_TCP + 2 * TCP_PEER_WIDTH],
        expiration=r[:, C_EXPIRATION] | (r[:, C_EXPIRATION_HI] << 32), seq=r[:, C_SEQ],
    )  # fmt: skip


def tcp_col(peer: int, field: int) -> int:
    """Column of TCP peer ``peer`` (0 orig, 1 reply) field ``P_*``."""
    return C_TCP + peer * TCP_PEER_WIDTH + field


class CtTables(NamedTuple):
    """The connection tracker's arrays, as the kernels take them (conntrack.Conntrack.tables):
    the rows (this layout), the tuple index, the free-slot stack, the counters (table.py ST_*),
    the zone limits (lifecycle.py ZL_*), the timeout policy (timeouts.py) and the ALG
    expectations with their index (alg.py)."""

    conns: np.ndarray
    index: np.ndarray
    free_slots: np.ndarray
    stats: np.ndarray
    zone_limits: np.ndarray
    timeouts: np.ndarray
    exps: np.ndarray
    exp_index: np.ndarray


# The ct action's parameters (``ct(zone=, commit, force, exec(set_field ct_mark/ct_label))``)
# as ct_execute reads them: one int64 row. The program encoding (ofproto/program.py) stores an
# OP_CT as its op code followed by exactly this row.
CA_ZONE = 0
CA_FLAGS = 1  # CAF_* below
CA_MARK = 2  # ct_mark value and mask (32 bits each)
CA_MARK_MASK = 3
CA_LABEL = 4  # 4 words: ct_label value, then 4 words of mask
CA_LABEL_MASK = 8
CA_WIDTH = 12

CAF_COMMIT = 1
CAF_FORCE = 2  # implies CAF_COMMIT
CAF_SET_MARK = 4
CAF_SET_LABEL = 8
# (16 is the program's CTF_NAT)
CAF_ALG_FTP = 32  # ct(alg=ftp)
CAF_ALG_TFTP = 64  # ct(alg=tftp)
CAF_ALG_SHIFT = 5  # (flags >> CAF_ALG_SHIFT) & ALG_KIND is the helper
