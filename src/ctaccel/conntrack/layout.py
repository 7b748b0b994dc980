"""Column layout of the connection table (``conns[capacity, CONN_WIDTH]``, CONN_DTYPE: uint32).

What: one row per connection slot. The same row is read and written by the table code
(table.py), the L4 trackers (tcp.py, other.py, icmp.py), the ct action kernel (core.py), the
dump formatter (dump.py) and the compiled fast path, so the layout lives here alone.

Design: a flat 2-D array of 32-bit words (256 bytes a row); a column per scalar, 4 columns
(most significant first) per 128-bit value, exactly like the flow key (packet/key.py). The
two values that outgrow 32 bits (the expiration time in ms, the creation sequence number)
take two columns, low word first, read and written through :func:`expiration` /
:func:`set_expiration` (kernels) and :func:`expirations` / :func:`sequence_numbers` (numpy);
the one signed value (``C_SEQ_SKEW``) is stored as its 32-bit two's complement and read
through :func:`seq_skew`. Reading a column gives an unsigned 32-bit value: numba types
uint32 - uint32 as uint64 (it wraps below zero) and mixes uint64 with int64 into float64, so
a kernel widens a word (``np.int64(...)``) before arithmetic between two words. Columns are
grouped as in OVS's struct conn: the hot ones first, then immutable after creation.

Invariants:
- ``C_USED == 0`` means the slot is free; everything else in a free row is meaningless.
- ``C_GENERATION`` is bumped (mod 2**32) every time a slot is (re)used or freed, so a
  (slot, generation) pair names one connection for its whole life and never another.
- Addresses: IPv4 in the last of the four columns, as in the flow key.
- ICMP: ``C_SPORT``/``C_DPORT`` both hold the echo id; ``C_ICMP_TYPE``/``C_ICMP_CODE`` the
  original direction's type and code (the reply direction uses the reversed type).
- The reply tuple (``C_R_*``) is the reversed original unless NAT changed it (NAT issue).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ctaccel.jit import njit

CONN_DTYPE = np.uint32
CONN_WORD_BYTES = 4
CONN_LINE_WORDS = 64 // CONN_WORD_BYTES  # words per cache line (the fast path's prefetch step)
_M32 = 0xFFFFFFFF

# Hot columns first: everything a packet of an established connection reads or writes
# (liveness, timers, mark/label, tracker state, TCP peers) lies in the first 25 columns, two
# cache lines (the fast path prefetches them and saves them before a re-check); rows are 64
# columns (256 bytes) and start on a line. ``HOT_WIDTH`` bounds what a tracker update can
# change. The lookup reads line 0 (used, zone, protocol) and the tuple's lines after.
C_USED = 0  # 1 in use, 0 free
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
# C_ALG (below) lies here, in the line the lookup reads anyway (C_DL_TYPE): every ct of an
# existing connection asks whether it is a data connection.
C_ALG = 26  # ALG_KIND (the helper: ALG_FTP / ALG_TFTP) | ALG_RELATED | ALG_SKEW_REPLY
C_SRC = 27  # 4 columns: original-direction source address
C_DST = 31  # 4 columns: original-direction destination address
C_SPORT = 35  # original source port (ICMP: id)
C_DPORT = 36  # original destination port (ICMP: id)
C_ICMP_TYPE = 37  # original-direction ICMP type (ICMP only)
C_ICMP_CODE = 38
C_R_SRC = 39  # 4 columns: reply-direction tuple (reversed original unless NATed)
C_R_DST = 43  # 4 columns
C_R_SPORT = 47
C_R_DPORT = 48
C_NAT_FLAGS = 49  # NAT issue: which translation applies; 0 = none
C_SEQ = 50  # global creation sequence number (stable ordering / ids), low word
C_SEQ_HI = 51
C_KFLAGS = 52  # an imported connection's kernel TCP flags, orig | reply << 8 (kernel_map.py)
C_TP_BASE = 53  # where the connection's timeout policy starts in ``timeouts`` (timeouts.py)
C_ADMIT = 54  # which zone-limit entry admitted the conn (core.py), to give its count back
# Application-layer gateways (ct(alg=ftp|tftp), alg.py and ftp.py), as OVS's conn->alg,
# ->alg_related, ->seq_skew, ->seq_skew_dir and ->parent_key (C_ALG itself is column 26):
C_SEQ_SKEW = 55  # FTP NAT: bytes the rewritten commands added (signed: read with seq_skew)
C_ALG_PARENT = 56  # a data connection: its expectation's row + 1 (holds the parent's tuple)
C_ALG_EXPS = 57  # a control connection: the first of its expectations' rows + 1 (a chain)
C_SPARE0 = 58  # 58..63 unused

CONN_WIDTH = 64

ALG_FTP = 1
ALG_TFTP = 2
ALG_KIND = 3  # the helper bits of C_ALG
ALG_RELATED = 4  # the connection was expected (a data connection): +rel for life
ALG_SKEW_REPLY = 8  # C_SEQ_SKEW was made by a reply-direction command (OVS seq_skew_dir)


@njit(forceinline=True)
def expiration(conns, slot):
    """The connection's expiration time (ms), from its two words."""
    return np.int64(conns[slot, C_EXPIRATION]) | (np.int64(conns[slot, C_EXPIRATION_HI]) << 32)


@njit(forceinline=True)
def set_expiration(conns, slot, ms):
    conns[slot, C_EXPIRATION] = np.int64(ms) & _M32
    conns[slot, C_EXPIRATION_HI] = np.int64(ms) >> 32


@njit(forceinline=True)
def seq_skew(conns, slot):
    """C_SEQ_SKEW as the signed number it is."""
    v = np.int64(conns[slot, C_SEQ_SKEW])
    return v - (np.int64(1) << 32) if v >= (np.int64(1) << 31) else v


@njit(forceinline=True)
def set_sequence(conns, slot, seq):
    conns[slot, C_SEQ] = np.int64(seq) & _M32
    conns[slot, C_SEQ_HI] = np.int64(seq) >> 32


def expirations(conns: np.ndarray, rows=slice(None)) -> np.ndarray:
    """The expiration times (ms, int64) of ``conns[rows]`` (numpy, outside kernels)."""
    lo = conns[rows, C_EXPIRATION].astype(np.int64)
    return lo | (conns[rows, C_EXPIRATION_HI].astype(np.int64) << 32)


def sequence_numbers(conns: np.ndarray, rows=slice(None)) -> np.ndarray:
    """The creation sequence numbers (int64) of ``conns[rows]``."""
    lo = conns[rows, C_SEQ].astype(np.int64)
    return lo | (conns[rows, C_SEQ_HI].astype(np.int64) << 32)


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
