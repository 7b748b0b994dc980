"""NAT: the translation a connection carries, and rewriting a packet by it.

What: OVS 3.1 userspace NAT (lib/conntrack.c) as numba kernels. A connection committed with
``ct(commit,nat(src|dst=...))`` stores the translation as its *reply tuple* (layout.py
``X_R_*``, in its extension row) and the kind in ``X_NAT_FLAGS`` (``NAT_*`` bits below). Every later packet of the
connection that meets a ``ct(nat)`` is rewritten towards the other side's view: an
original-direction packet gets the reply tuple reversed, a reply packet the original tuple
reversed. ICMP errors about a NATed connection get the outer address translated and the quoted
packet translated back, with the ICMP checksum recomputed, as OVS does.

Design:
- A NAT *spec* (what a ``ct(...,nat(...))`` action asks for) is a small int64 row, ``NS_*``
  columns, filled from the parsed action as dpif-netdev fills its ``nat_action_info``:
  ``NS_ACTION`` is -1 when the ct action has no ``nat`` at all, else the ``NAT_*`` bits (0 for
  a bare ``nat``); addresses are 4 words (IPv4 in the last); ports 0 when not given.
- Choosing the tuple (``lifecycle.nat_choose``) lives next to the table code it probes; this file
  has the pure parts: ranges, hashing, incremental checksums, header rewrites.
- Checksums are updated the way OVS updates them (RFC 1624 incremental, 16 bits at a time,
  in the same order), so emitted frames are identical byte for byte, including where OVS
  updates a field the frame does not have in full.

Invariants:
- Rewrites never read or write outside ``frame``; a field that would lie past its end is
  left alone.
- Only TCP and UDP ports are translated (OVS ``pat_packet``); ICMP echo ids are not.
"""

from __future__ import annotations

import numpy as np

from ctaccel.conntrack.layout import (
    C_PROTO,
    X_DST,
    X_NAT_FLAGS,
    X_R_DST,
    X_R_SRC,
    X_SRC,
    addr_word,
    ext_get,
    port,
)
from ctaccel.jit import njit
from ctaccel.packet.checksum import (  # noqa: F401 (recalc16: tests)
    internet_checksum,
    ones_fold,
    ones_sum,
    pseudo_sum_v6,
    recalc16,
    recalc32,
)
from ctaccel.packet.key import (
    CS_DST_NAT,
    CS_SRC_NAT,
    DL_TYPE,
    ETH_TYPE_IP,
    L3_OFS,
    L4_LEN,
    L4_OFS,
    NW_DST,
    NW_SRC,
    TP_DST,
    TP_SRC,
)

# NAT kinds (OVS enum nat_action_e)
NAT_SRC = 1
NAT_SRC_PORT = 2
NAT_DST = 4
NAT_DST_PORT = 8

# NAT spec row
NS_ACTION = 0  # -1: the ct action has no nat; else NAT_* bits (0: bare "nat")
NS_MIN_ADDR = 1  # 4 words
NS_MAX_ADDR = 5  # 4 words
NS_MIN_PORT = 9
NS_MAX_PORT = 10
NS_WIDTH = 12

NO_NAT = -1

# OVS's source-port bands when a port must change and no range was given
EPHEMERAL_MIN = 1024
EPHEMERAL_MAX = 65535
MAX_PORT_ATTEMPTS = 128  # first round; later rounds halve it (OVS nat_get_unique_l4)

_M16 = 0xFFFF
_M32 = 0xFFFFFFFF


def no_nat_spec() -> np.ndarray:
    spec = np.zeros(NS_WIDTH, np.int64)
    spec[NS_ACTION] = NO_NAT
    return spec


def spec_from_action(nat) -> np.ndarray:
    """The spec row for a parsed ``ofproto.actions.Nat`` (None: no nat), as dpif-netdev
    decodes the datapath action xlate emits for it (ofproto-dpif-xlate put_ct_nat)."""
    spec = np.zeros(NS_WIDTH, np.int64)
    if nat is None:
        spec[NS_ACTION] = NO_NAT
        return spec
    action = 0
    if nat.kind == "src":
        action = NAT_SRC
    elif nat.kind == "dst":
        action = NAT_DST
    if action and nat.family:
        lo = int(nat.min_addr)
        hi = int(nat.max_addr) if nat.max_addr is not None and nat.max_addr > lo else lo
        for i in range(4):
            spec[NS_MIN_ADDR + i] = (lo >> (32 * (3 - i))) & _M32
            spec[NS_MAX_ADDR + i] = (hi >> (32 * (3 - i))) & _M32
        if nat.min_port:
            spec[NS_MIN_PORT] = nat.min_port
            top = nat.max_port if nat.max_port and nat.max_port > nat.min_port else nat.min_port
            spec[NS_MAX_PORT] = top
            action |= NAT_SRC_PORT if action == NAT_SRC else NAT_DST_PORT
    spec[NS_ACTION] = action
    return spec


# --- ones'-complement helpers ------------------------------------------------------------------


@njit(forceinline=True)
def _rd16(frame, ofs):
    return (int(frame[ofs]) << 8) | int(frame[ofs + 1])


@njit(forceinline=True)
def _wr16(frame, ofs, value):
    frame[ofs] = (value >> 8) & 0xFF
    frame[ofs + 1] = value & 0xFF


@njit(forceinline=True)
def _rd32(frame, ofs):
    return (_rd16(frame, ofs) << 16) | _rd16(frame, ofs + 2)


@njit(forceinline=True)
def _wr32(frame, ofs, value):
    _wr16(frame, ofs, (value >> 16) & _M16)
    _wr16(frame, ofs + 2, value & _M16)


# --- header rewrites (OVS packet_set_*) -----------------------------------------------------


@njit(forceinline=True)
def _l4_csum_ofs(proto, frame, l4, l4_size):
    """Offset of the L4 checksum an address change must update (or -1): TCP when the header
    fits, UDP when it fits and its checksum is in use, ICMPv6 when its header fits."""
    if proto == 6 and l4_size >= 20:
        return l4 + 16
    if proto == 17 and l4_size >= 8 and _rd16(frame, l4 + 6) != 0:
        return l4 + 6
    if proto == 58 and l4_size >= 4:
        return l4 + 2
    return -1


@njit(forceinline=True)
def _fix_udp_zero(proto, frame, ofs):
    if proto == 17 and _rd16(frame, ofs) == 0:
        _wr16(frame, ofs, 0xFFFF)  # a computed zero is sent as all ones


@njit(forceinline=True)
def set_ipv4_addr(frame, l3, l4, l4_size, addr_ofs, new):
    """Write an IPv4 address, updating the L4 checksum (by the IP protocol of the header at
    ``l3``) and the header checksum, as packet_set_ipv4_addr."""
    old = _rd32(frame, addr_ofs)
    proto = int(frame[l3 + 9])
    if proto == 6 or proto == 17:
        c = _l4_csum_ofs(proto, frame, l4, l4_size)
        if c >= 0 and c + 2 <= frame.shape[0]:
            _wr16(frame, c, recalc32(_rd16(frame, c), old, new))
            _fix_udp_zero(proto, frame, c)
    _wr16(frame, l3 + 10, recalc32(_rd16(frame, l3 + 10), old, new))
    _wr32(frame, addr_ofs, new)


@njit(forceinline=True)
def set_ipv6_addr(frame, proto, l4, l4_size, addr_ofs, w0, w1, w2, w3):
    """Write an IPv6 address, updating the checksum of ``proto`` found at ``l4`` (OVS uses
    the connection's protocol here, even for an ICMPv6 error about a TCP connection)."""
    c = _l4_csum_ofs(proto, frame, l4, l4_size)
    if c >= 0 and c + 2 <= frame.shape[0]:
        csum = _rd16(frame, c)
        csum = recalc32(csum, _rd32(frame, addr_ofs), w0)
        csum = recalc32(csum, _rd32(frame, addr_ofs + 4), w1)
        csum = recalc32(csum, _rd32(frame, addr_ofs + 8), w2)
        csum = recalc32(csum, _rd32(frame, addr_ofs + 12), w3)
        _wr16(frame, c, csum)
        _fix_udp_zero(proto, frame, c)
    _wr32(frame, addr_ofs, w0)
    _wr32(frame, addr_ofs + 4, w1)
    _wr32(frame, addr_ofs + 8, w2)
    _wr32(frame, addr_ofs + 12, w3)


@njit(forceinline=True)
def set_ports(proto, frame, l4, sport, dport):
    """packet_set_tcp_port / packet_set_udp_port: ports with their checksum; a UDP datagram
    without checksum keeps none. Fields past the end of the frame are left alone."""
    if l4 + 4 > frame.shape[0]:
        return
    c = l4 + 16 if proto == 6 else l4 + 6
    has_csum = c + 2 <= frame.shape[0]
    if proto == 17 and (not has_csum or _rd16(frame, c) == 0):
        _wr16(frame, l4, sport)
        _wr16(frame, l4 + 2, dport)
        return
    for i in range(2):
        new = sport if i == 0 else dport
        old = _rd16(frame, l4 + 2 * i)
        if old != new:
            if has_csum:
                _wr16(frame, c, recalc16(_rd16(frame, c), old, new))
            _wr16(frame, l4 + 2 * i, new)
    if has_csum:
        _fix_udp_zero(proto, frame, c)


@njit(forceinline=True)
def reverse_action(action):
    """OVS nat_action_reverse: what a packet of the other direction gets."""
    if action & NAT_SRC:
        return (action & ~NAT_SRC) | NAT_DST
    if action & NAT_DST:
        return (action & ~NAT_DST) | NAT_SRC
    return action


@njit(forceinline=True)
def _inner_offsets(dl_type, frame, l4, tail):
    """(inner l3, inner l4) of the packet an ICMP error quotes (already validated by key
    extraction)."""
    inner_l3 = l4 + 8
    if dl_type == ETH_TYPE_IP:
        return inner_l3, inner_l3 + (int(frame[inner_l3]) & 0x0F) * 4
    ofs = inner_l3 + 40
    nxt = int(frame[inner_l3 + 6])
    while ofs < tail and (nxt == 0 or nxt == 43 or nxt == 60 or nxt == 51):
        if nxt == 51:
            length = (int(frame[ofs + 1]) + 2) * 4
        else:
            length = (int(frame[ofs + 1]) + 1) * 8
        nxt = int(frame[ofs])
        ofs += length
    return inner_l3, ofs


@njit(forceinline=True)
def nat_target(conns, slot, reply):
    """What a packet of direction ``reply`` of a NATed connection is rewritten to (the
    "header transposition" the fast path caches): (kind, a0, a1, a2, a3, sport, dport) with
    kind NAT_SRC (the source address becomes a0..a3) or NAT_DST (the destination does), 0 if
    the connection does not translate; the TCP/UDP ports become sport, dport."""
    action = ext_get(conns, slot, X_NAT_FLAGS)
    other = 1 - reply  # the tuple the packet is rewritten to: the other direction's
    if reply:
        action = reverse_action(action)
    ksport = port(conns, slot, other, 0)
    kdport = port(conns, slot, other, 1)
    kind = 0
    col = X_R_SRC if other else X_SRC
    if action & NAT_SRC:
        kind = NAT_SRC
        col = X_R_DST if other else X_DST
    elif action & NAT_DST:
        kind = NAT_DST
    return (kind, addr_word(conns, slot, col, 0), addr_word(conns, slot, col, 1),
            addr_word(conns, slot, col, 2), addr_word(conns, slot, col, 3), kdport,
            ksport)  # fmt: skip


@njit(forceinline=True)
def nat_rewrite(target, proto, dl_type, frame, l3, l4, l4_size):
    """Rewrite a packet that is not an ICMP error by ``target``, a ``nat_target`` tuple (kind,
    the address's four words, source and destination port), as nat_packet does."""
    kind, a0, a1, a2, a3, sport, dport = target
    if dl_type == ETH_TYPE_IP:
        set_ipv4_addr(frame, l3, l4, l4_size, l3 + 12 if kind == NAT_SRC else l3 + 16, a3)
    else:
        set_ipv6_addr(frame, proto, l4, l4_size, l3 + 8 if kind == NAT_SRC else l3 + 24, a0, a1,
                      a2, a3)  # fmt: skip
    if proto == 6 or proto == 17:
        set_ports(proto, frame, l4, sport, dport)


@njit
def nat_packet(conns, slot, reply, related, frame, key, state):
    """Rewrite the packet by its connection's translation (OVS nat_packet); returns the new
    ct_state (+snat or +dnat by what this packet got). ``key`` follows the outer header."""
    target = nat_target(conns, slot, reply)
    kind, a0, a1, a2, a3, sport, dport = target
    if kind == 0:
        return state
    state |= CS_SRC_NAT if kind == NAT_SRC else CS_DST_NAT
    proto = np.int64(conns[slot, C_PROTO])
    dl_type = key[DL_TYPE]
    l3 = key[L3_OFS]
    l4 = key[L4_OFS]
    l4_size = min(key[L4_LEN], frame.shape[0] - l4)
    kcol = NW_SRC if kind == NAT_SRC else NW_DST
    key[kcol] = a0
    key[kcol + 1] = a1
    key[kcol + 2] = a2
    key[kcol + 3] = a3
    if not related:
        nat_rewrite(target, proto, dl_type, frame, l3, l4, l4_size)
        if proto == 6 or proto == 17:
            key[TP_SRC] = sport
            key[TP_DST] = dport
        return state
    # An ICMP error: the outer address as for any packet, then the quoted packet translated
    # back (the same address on its other side, the ports swapped), then the ICMP checksum
    # computed afresh.
    src = kind == NAT_SRC
    if dl_type == ETH_TYPE_IP:
        set_ipv4_addr(frame, l3, l4, l4_size, l3 + 12 if src else l3 + 16, a3)
    else:
        set_ipv6_addr(frame, proto, l4, l4_size, l3 + 8 if src else l3 + 24, a0, a1, a2, a3)
    inner_l3, inner_l4 = _inner_offsets(dl_type, frame, l4, l4 + l4_size)
    inner_size = l4 + l4_size - inner_l4
    if proto == 6 or proto == 17:
        set_ports(proto, frame, inner_l4, dport, sport)
    if dl_type == ETH_TYPE_IP:
        set_ipv4_addr(frame, inner_l3, inner_l4, inner_size,
                      inner_l3 + 16 if src else inner_l3 + 12, a3)  # fmt: skip
        _wr16(frame, l4 + 2, 0)
        _wr16(frame, l4 + 2, internet_checksum(frame, l4, l4_size))
    else:
        set_ipv6_addr(frame, proto, inner_l4, inner_size,
                      inner_l3 + 24 if src else inner_l3 + 8, a0, a1, a2, a3)  # fmt: skip
        _wr16(frame, l4 + 2, 0)
        acc = pseudo_sum_v6(frame, l3, 58, l4_size) + ones_sum(frame, l4, l4_size)
        _wr16(frame, l4 + 2, (~ones_fold(acc)) & _M16)
    return state


# --- choosing a translation: ranges and hashing -----------------------------------------------


@njit(forceinline=True)
def range_hash(spec, tup_words):
    """Deterministic 32-bit hash of the range and the connection's tuple (OVS uses a random
    per-process basis here, so its pick inside a range is not reproducible anyway)."""
    h = 0x3C6EF372
    for i in range(NS_WIDTH):
        v = spec[i] & 0xFFFFFFFFFFFF
        h = ((h ^ (v & _M32) ^ (v >> 32)) * 0x01000193) & _M32
        h ^= h >> 15
    for i in range(tup_words.shape[0]):
        v = tup_words[i] & 0xFFFFFFFFFFFF
        h = ((h ^ (v & _M32) ^ (v >> 32)) * 0x01000193) & _M32
        h ^= h >> 13
    return h


@njit(forceinline=True)
def next_random(h, round_):
    """The pseudo-random restart point of a later search round (OVS: random_uint32())."""
    x = (h ^ (round_ * 0x9E3779B9)) & _M32
    x = ((x ^ (x >> 16)) * 0x045D9F3B) & _M32
    return x ^ (x >> 16)


@njit
def v6_range_size(spec):
    """Number of addresses in an IPv6 range, capped at 2**32 - 1 as OVS caps its delta."""
    lo = NS_MIN_ADDR
    hi = NS_MAX_ADDR
    if spec[lo] != spec[hi] or spec[lo + 1] != spec[hi + 1]:
        return 0xFFFFFFFF
    d2 = spec[hi + 2] - spec[lo + 2]
    d3 = spec[hi + 3] - spec[lo + 3]
    if d2 < 0 or d2 > 1:
        return 0xFFFFFFFF
    diff = d2 * (1 << 32) + d3
    if diff < 0 or diff > 0xFFFFFFFE:
        diff = 0xFFFFFFFE
    return diff + 1


@njit
def pick_addr(spec, h, dl_type, out4):
    """The address a new translation uses: min + hash % size of the range."""
    if dl_type == ETH_TYPE_IP:
        size = spec[NS_MAX_ADDR + 3] - spec[NS_MIN_ADDR + 3] + 1
        out4[0] = 0
        out4[1] = 0
        out4[2] = 0
        out4[3] = spec[NS_MIN_ADDR + 3] + h % size
        return
    size = v6_range_size(spec)
    carry = h % size
    for i in range(3, -1, -1):
        v = spec[NS_MIN_ADDR + i] + carry
        out4[i] = v & _M32
        carry = v >> 32
