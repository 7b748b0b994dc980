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

# Hot columns first: everything a packet of an established connection reads or writes
# (liveness, zone, timers, mark/label, tracker state, TCP peers) lies in the first 32 columns,
# four cache lines; rows are 64 columns (512 bytes), so a row never straddles more lines than
# it must. ``HOT_WIDTH`` bounds what a tracker update can change.
C_USED = 0  # 1 in use, 0 free
C_GENERATION = 1  # bumped on every alloc/free of this slot
C_ZONE = 2  # conntrack zone (16 bits)
C_DL_TYPE = 3  # 0x0800 or 0x86dd
C_PROTO = 4  # IP protocol
C_EXPIRATION = 5  # ms; the connection is dead at now >= expiration            (mutable)
C_TIMEOUT_CLASS = 6  # TM_* index of the timeout last applied (for dumps)       (mutable)
C_MARK = 7  # ct_mark (32 bits)                                                 (mutable)
C_LABEL = 8  # 4 columns: ct_label                                              (mutable)
C_L4_STATE = 12  # UDP/other/ICMP tracker state (FIRST/MULTIPLE/BIDIR, ...)   (mutable)
C_ADMIT = 13  # which zone-limit entry admitted the conn (core.py), to give its count back
C_SPARE0 = 14
C_SPARE1 = 15

# TCP peers (pf-derived tracker), peer 0 = original direction sender, peer 1 = reply sender.
C_TCP = 16
TCP_PEER_WIDTH = 8
P_SEQLO = 0
P_SEQHI = 1
P_MAX_WIN = 2
P_WSCALE = 3  # low 4 bits: shift; CT_WSCALE_FLAG / CT_WSCALE_UNKNOWN as in OVS
P_STATE = 4  # CT_DPIF_TCPS_* value
P_FLAGS = 5  # per-peer flags (e.g. be-liberal)
P_SPARE0 = 6
P_SPARE1 = 7
HOT_WIDTH = C_TCP + 2 * TCP_PEER_WIDTH  # 32

# --- cold: immutable after creation ---------------------------------------------------------
C_SRC = 32  # 4 columns: original-direction source address
C_DST = 36  # 4 columns: original-direction destination address
C_SPORT = 40  # original source port (ICMP: id)
C_DPORT = 41  # original destination port (ICMP: id)
C_ICMP_TYPE = 42  # original-direction ICMP type (ICMP only)
C_ICMP_CODE = 43
C_R_SRC = 44  # 4 columns: reply-direction tuple (reversed original unless NATed)
C_R_DST = 48  # 4 columns
C_R_SPORT = 52
C_R_DPORT = 53
C_CREATED_MS = 54  # time of creation (ms), for dumps and stats
C_NAT_FLAGS = 55  # NAT issue: which translation applies; 0 = none
C_PKTS_ORIG = 56
C_BYTES_ORIG = 57
C_PKTS_REPLY = 58
C_BYTES_REPLY = 59
C_SEQ = 60  # global creation sequence number (stable ordering / ids)
C_SPARE2 = 61
C_SPARE3 = 62
C_SPARE4 = 63

CONN_WIDTH = 64


def tcp_col(peer: int, field: int) -> int:
    """Column of TCP peer ``peer`` (0 orig, 1 reply) field ``P_*``."""
    return C_TCP + peer * TCP_PEER_WIDTH + field
