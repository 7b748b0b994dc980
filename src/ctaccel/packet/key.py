"""The flow key: one flat int64 vector per packet.

What: the column layout shared by every layer. A packet's key holds its parsed header fields
(what OpenFlow rules can match), its pipeline metadata (registers, conntrack fields) and a few
parse facts (offsets, validity) that conntrack needs to find the headers again in the frame.

Design: a key is ``np.zeros(KEY_WIDTH, np.int64)``; a batch of keys is a 2-D array
``keys[n, KEY_WIDTH]``. Every column holds a non-negative value of at most 48 bits, so int64
never overflows and masks need no sign handling: 128-bit values (IPv6 addresses, ct_label) are
four 32-bit columns, most significant first; the 64-bit metadata field is two.
Jitted code indexes columns with these module constants (numba folds them as globals
that are compile-time constants, which is allowed: they are plain ints, not tables).

Invariants:
- IPv4 addresses live in the *last* of the four address columns (``NW_SRC + 3``); the three
  others are zero. IPv6 uses all four. ``DL_TYPE`` says which applies.
- ICMP/ICMPv6: ``TP_SRC`` is the type and ``TP_DST`` the code, as in OVS's flow.
- ARP: ``NW_PROTO`` is the opcode (low 8 bits), ``NW_SRC+3``/``NW_DST+3`` the sender/target
  protocol addresses, ``ARP_SHA``/``ARP_THA`` the hardware addresses, as in OVS.
- IPv6 neighbor solicitation/advertisement (code 0): ``ND_TARGET`` is the target address,
  ``ARP_SHA`` the source and ``ARP_THA`` the target link-layer option, as OVS keeps them in
  the same flow fields.
- ``VLAN_TCI`` carries the CFI/present bit 0x1000 when a tag is present (OVS convention);
  0 means no tag.
- ``CT_STATE`` is 0 for an untracked packet; after ``ct`` it always includes ``CS_TRK``.
- Columns from ``PARSE_FIRST`` on are not matchable: they describe where headers are (but
  ``CONJ_ID``, which only the classifier matches, never the datapath).
"""

from __future__ import annotations

# --- L2 -----------------------------------------------------------------------------------
IN_PORT = 0
DL_SRC = 1  # 48-bit MAC as an integer
DL_DST = 2
DL_TYPE = 3  # ethertype after VLAN tags (0x0800, 0x86dd, 0x0806, ...); 0x05ff for 802.3 frames
VLAN_TCI = 4  # 16 bits; 0x1000 (CFI) set when a tag is present

# --- L3 -----------------------------------------------------------------------------------
NW_SRC = 5  # 4 columns: NW_SRC..NW_SRC+3 (32 bits each, most significant first)
NW_DST = 9  # 4 columns
NW_PROTO = 13  # IP protocol (IPv6: the upper-layer protocol after extension headers)
NW_TOS = 14  # full TOS / traffic-class byte (DSCP << 2 | ECN)
NW_TTL = 15  # TTL / hop limit
NW_FRAG = 16  # FRAG_ANY | FRAG_LATER
IPV6_LABEL = 17  # 20-bit flow label

# --- L4 -----------------------------------------------------------------------------------
TP_SRC = 18  # TCP/UDP/SCTP source port; ICMP type
TP_DST = 19  # TCP/UDP/SCTP destination port; ICMP code
TCP_FLAGS = 20  # 12 bits (FIN 0x001 ... NS 0x100)

# --- pipeline metadata -------------------------------------------------------------------
CT_STATE = 21
CT_ZONE = 22
CT_MARK = 23
CT_LABEL = 24  # 4 columns
CT_NW_SRC = 28  # 4 columns (IPv4 in the last)
CT_NW_DST = 32  # 4 columns
CT_NW_PROTO = 36
CT_TP_SRC = 37
CT_TP_DST = 38
REG0 = 39  # 16 columns REG0..REG0+15, 32 bits each
METADATA = 55  # 2 columns (high 32 bits, low 32 bits)

# --- ARP hardware addresses, IPv6 neighbor discovery -----------------------------------------
ARP_SHA = 57  # ARP sender MAC; the source link-layer option of a neighbor solicitation
ARP_THA = 58  # ARP target MAC; the target link-layer option of a neighbor advertisement
ND_TARGET = 59  # 4 columns: the target address of a neighbor solicitation/advertisement

# --- parse facts (not matchable) ------------------------------------------------------------
PARSE_FIRST = 63
L3_OFS = 63  # byte offset of the IP header in the frame, -1 if none
L4_OFS = 64  # byte offset of the L4 header, -1 if none (or not present: later fragment)
L4_LEN = 65  # bytes of L4 header + payload as the IP header says (IPv4 total len - IHL, ...)
PARSE_FLAGS = 66  # PF_* bits below
IP_ID = 67  # IPv4 identification / IPv6 fragment header identification
FRAG_OFS = 68  # fragment offset in bytes
FRAG_MORE = 69  # 1 if more fragments follow
# conj_id: matched by the classifier only, in its second lookup after a conjunctive match;
# 0 in every packet's key, never in a megaflow (so it sits past PARSE_FIRST)
CONJ_ID = 70
KEY_WIDTH = 72  # (column 71 pads a key row to nine whole cache lines)

# NW_FRAG bits (OVS FLOW_NW_FRAG_*)
FRAG_ANY = 1
FRAG_LATER = 2

# PARSE_FLAGS bits: facts conntrack needs to mark a packet invalid, truncation reasons, and
# fields the fast path cannot key on.
PF_L3_TRUNC = 1 << 0  # IP header shorter than claimed / frame too short for it
PF_L3_BAD_CSUM = 1 << 1  # IPv4 header checksum wrong
PF_L4_TRUNC = 1 << 2  # L4 header does not fit (e.g. TCP data offset past the end)
PF_L4_BAD_CSUM = 1 << 3  # TCP/UDP/ICMP checksum wrong
PF_L3_BAD = 1 << 4  # IHL < 5, total length < IHL (the version nibble is not checked, as OVS)
PF_L2_TRUNC = 1 << 5  # frame shorter than an Ethernet header
# Not a fault: the key has ARP hardware addresses or ND fields, which the fast path's entry key
# leaves out, so the packet takes the full path (any PARSE_FLAGS bit makes it ineligible)
PF_EXTRA_FIELDS = 1 << 6

# ct_state bits (lib/packets.h CS_*)
CS_NEW = 0x01
CS_ESTABLISHED = 0x02
CS_RELATED = 0x04
CS_REPLY_DIR = 0x08
CS_INVALID = 0x10
CS_TRACKED = 0x20
CS_SRC_NAT = 0x40
CS_DST_NAT = 0x80

CT_STATE_NAMES = (
    (CS_NEW, "new"),
    (CS_ESTABLISHED, "est"),
    (CS_RELATED, "rel"),
    (CS_REPLY_DIR, "rpl"),
    (CS_INVALID, "inv"),
    (CS_TRACKED, "trk"),
    (CS_SRC_NAT, "snat"),
    (CS_DST_NAT, "dnat"),
)

ETH_TYPE_IP = 0x0800
ETH_TYPE_IPV6 = 0x86DD
ETH_TYPE_ARP = 0x0806
ETH_TYPE_RARP = 0x8035
ETH_TYPE_VLAN = 0x8100
ETH_TYPE_QINQ = 0x88A8

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ICMPV6 = 58
IPPROTO_SCTP = 132


def format_ct_state(state: int) -> str:
    """ct_state as OVS prints it in packet-ins and traces: ``est|rpl|trk``; "" if untracked."""
    return "|".join(name for bit, name in CT_STATE_NAMES if state & bit)


def new_key():
    """A zeroed key vector."""
    import numpy as np

    return np.zeros(KEY_WIDTH, np.int64)


def get_wide(key, col: int, ncols: int) -> int:
    """Read a multi-column field (ncols 32-bit words, most significant first) as one int."""
    v = 0
    for i in range(ncols):
        v = (v << 32) | int(key[col + i])
    return v


def set_wide(key, col: int, ncols: int, value: int) -> None:
    """Write an int into a multi-column field (ncols 32-bit words, most significant first)."""
    for i in range(ncols - 1, -1, -1):
        key[col + i] = value & 0xFFFFFFFF
        value >>= 32
