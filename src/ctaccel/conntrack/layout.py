"""Column layout of the connection table (``conns[capacity, CONN_WIDTH]``, int64).

What: one row per connection slot. The same row is read and written by the table code
(table.py), the L4 trackers (tcp.py, other.py, icmp.py), the ct action kernel (core.py), the
dump formatter (dump.py) and, later, the compiled fast path, so the layout lives here alone.

Design: a flat 2-D int64 array; a column per scalar, 4 columns (32 bits each, most
significant first) per 128-bit value, exactly like the flow key (packet/key.py). Every value is
non-negative and below 2**48. Columns are grouped as in OVS's struct conn: immutable after
creation, then mutable.

Invariants:
- ``C_USED == 0`` means the slot is free; everything else in a free row is meaningless.
- ``C_GENERATION`` is bumped every time a slot is (re)used or freed, so a (slot, generation)
  pair names one connection for its whole life and never another.
- Addresses: IPv4 in the last of the four columns, as in the flow key.
- ICMP: ``C_SPORT``/``C_DPORT`` both hold the echo id; ``C_ICMP_TYPE``/``C_ICMP_CODE`` the
  original direction's type and code (the reply direction uses the reversed type).
- The reply tuple (``C_R_*``) is the reversed original unless NAT changed it (NAT issue).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

# Hot columns first: everything a packet of an established connection reads or writes
# (liveness, timers, mark/label, tracker state, TCP peers) lies in the first 24 columns, three
# cache lines (the fast path prefetches them and saves them before a re-check); rows are 64
# columns (512 bytes) and start on a line. ``HOT_WIDTH`` bounds what a tracker update can
# change. The lookup reads line 0 (used, zone, protocol) and the tuple's three lines after.
C_USED = 0  # 1 in use, 0 free
C_GENERATION = 1  # bumped on every alloc/free of this slot
C_ZONE = 2  # conntrack zone (16 bits)
C_PROTO = 3  # IP protocol
C_EXPIRATION = 4  # ms; the connection is dead at now >= expiration            (mutable)
C_TIMEOUT_CLASS = 5  # TM_* index of the timeout last applied (for dumps)       (mutable)
C_MARK = 6  # ct_mark (32 bits)                                                 (mutable)
C_L4_STATE = 7  # UDP/other/ICMP tracker state (FIRST/MULTIPLE/BIDIR, ...)    (mutable)
C_LABEL = 8  # 4 columns: ct_label                                              (mutable)

# TCP peers (pf-derived tracker), peer 0 = original direction sender, peer 1 = reply sender.
C_TCP = 12
TCP_PEER_WIDTH = 6
P_SEQLO = 0
P_SEQHI = 1
P_MAX_WIN = 2
P_WSCALE = 3  # low 4 bits: shift; CT_WSCALE_FLAG / CT_WSCALE_UNKNOWN as in OVS
P_STATE = 4  # CT_DPIF_TCPS_* value
P_FLAGS = 5  # per-peer flags (tcp.py PF_*: an imported side whose window is unknown)
HOT_WIDTH = C_TCP + 2 * TCP_PEER_WIDTH  # 24

# --- cold: immutable after creation ---------------------------------------------------------
C_DL_TYPE = 24  # 0x0800 or 0x86dd
# C_ALG (below) lies here, in the line the lookup reads anyway (C_DL_TYPE): every ct of an
# existing connection asks whether it is a data connection.
C_ALG = 25  # ALG_KIND (the helper: ALG_FTP / ALG_TFTP) | ALG_RELATED | ALG_SKEW_REPLY
C_SRC = 26  # 4 columns: original-direction source address
C_DST = 30  # 4 columns: original-direction destination address
C_SPORT = 34  # original source port (ICMP: id)
C_DPORT = 35  # original destination port (ICMP: id)
C_ICMP_TYPE = 36  # original-direction ICMP type (ICMP only)
C_ICMP_CODE = 37
C_R_SRC = 38  # 4 columns: reply-direction tuple (reversed original unless NATed)
C_R_DST = 42  # 4 columns
C_R_SPORT = 46
C_R_DPORT = 47
C_CREATED_MS = 48  # time of creation (ms), for dumps and stats
C_NAT_FLAGS = 49  # NAT issue: which translation applies; 0 = none
C_PKTS_ORIG = 50
C_BYTES_ORIG = 51
C_PKTS_REPLY = 52
C_BYTES_REPLY = 53
C_SEQ = 54  # global creation sequence number (stable ordering / ids)
C_KFLAGS = 55  # an imported connection's kernel TCP flags, orig | reply << 8 (kernel_map.py)
C_TP_BASE = 56  # where the connection's timeout policy starts in ``timeouts`` (timeouts.py)
C_ADMIT = 57  # which zone-limit entry admitted the conn (core.py), to give its count back
# Application-layer gateways (ct(alg=ftp|tftp), alg.py and ftp.py), as OVS's conn->alg,
# ->alg_related, ->seq_skew, ->seq_skew_dir and ->parent_key (C_ALG itself is column 25):
C_SEQ_SKEW = 58  # FTP NAT: bytes the rewritten commands added (may be negative: not < 2**48)
C_ALG_PARENT = 59  # a data connection: its expectation's row + 1 (holds the parent's tuple)
C_ALG_EXPS = 60  # a control connection: the first of its expectations' rows + 1 (a chain)
C_SPARE0 = 61  # 61..63 unused

CONN_WIDTH = 64

ALG_FTP = 1
ALG_TFTP = 2
ALG_KIND = 3  # the helper bits of C_ALG
ALG_RELATED = 4  # the connection was expected (a data connection): +rel for life
ALG_SKEW_REPLY = 8  # C_SEQ_SKEW was made by a reply-direction command (OVS seq_skew_dir)


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
