"""Ctnetlink messages as numpy records: kernel conntrack entries to and from netlink bytes.

What: :class:`KernelEntries` holds conntrack entries as equal-length int64 columns, one row per
connection. :func:`encode_create` and :func:`encode_delete` turn rows into many
IPCTNL_MSG_CT_NEW / _DELETE messages at once; :func:`dump_request` asks for the whole table;
:func:`datagram_messages` finds the messages in a received datagram; :func:`parse_entries` turns
a dump's messages back into rows; :func:`parse_errors` reads the kernel's NLMSG_ERRORs. No
sockets here: io/ctnetlink.py owns the socket (sans-I/O, as h11 does it).

Design: a message layout is a tree of attributes (:class:`_Leaf`, :class:`_Nest`) built once
into a zeroed template and a structured ``np.dtype`` whose fields sit at the leaves' payload
offsets (``'>u4'`` for network-order words). Rows are grouped by layout (IPv4 or IPv6; TCP,
other port protocols, ICMP, ICMPv6 or the rest; with or without zone, labels, NAT source,
NAT destination), each group's records are the template tiled and filled column by column.
Parsing groups a dump's messages whose length and every attribute header equal a
representative's, reads each field of the group at its fixed offset with one numpy gather; the
messages left after :data:`MAX_GROUPS` groups are walked one at a time and bucketed by their
exact header bytes (entries made by real traffic lay out differently from ctnetlink-made
ones: no synproxy, a helper, NAT sequence adjustment ...).

Invariants:
- Byte orders (docs/kernel-conntrack-facts.md): nlmsghdr and nlattr headers in host order
  (little-endian here); addresses, ports, ICMP ids, zone, status, timeout, mark, use and id
  big-endian; labels are the kernel's bitmap memory, label bit 0 = byte 0 bit 0, so the 16
  bytes are the 128-bit label little-endian (on a little-endian 64-bit host).
- Columns: addresses are 4 32-bit words most significant first, IPv4 in word 3 (words 0-2
  zero), as in ctaccel's flow key and connection table; ICMP/ICMPv6 rows carry the echo id in
  both ports; ``label`` word 0 holds bits 127..96.
- Message ``seq0 + row`` is row ``row`` of the input, whatever the grouping, so an error maps
  back to its row; groups are emitted in layout order, rows in input order within a group.
- Create needs CONFIRMED in ``status`` (the kernel answers EBUSY without it); the status is
  sent as given, and the kernel ignores the bits it keeps for itself (NAT, offload). With
  SRC_NAT / DST_NAT set, the reply sent is the plain inverse of the original tuple, and the
  translated address and port, taken from the given reply tuple (SNAT: its destination, DNAT:
  its source), go in CTA_NAT_SRC / CTA_NAT_DST ranges of one value: the kernel then translates
  the reply tuple itself and sets the NAT bits. Without them the reply tuple is sent as given.
  An ICMP reply tuple's type is the inverse of ``icmp_type`` (echo 8 -> reply 0, ICMPv6 128 ->
  129: the kernel's invmap); a type it cannot invert is sent as is and refused (EINVAL).
- What comes back from a dump: tuples, zone, mark, TCP state and flags exactly; window scales
  only when both directions' flags have IP_CT_TCP_FLAG_WINDOW_SCALE (else 0: the kernel
  ignores them); ``timeout_s`` as whole seconds left (3600 reads 3599 or 3600); labels only
  when something in the namespace uses labels (else zeros); status with the kernel's own bits
  added (SRC_NAT|SRC_NAT_DONE|DST_NAT_DONE after a SNAT create). A create whose reply tuple is
  already some entry's tuple is refused with EEXIST, like a duplicate original tuple.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, fields
from functools import cache
from typing import NamedTuple

import numpy as np

from ctaccel.errors import InputError

AF_UNSPEC, AF_INET, AF_INET6 = 0, 2, 10
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NLM_F_EXCL, NLM_F_CREATE = 0x200, 0x400
NLA_F_NESTED = 0x8000
CT_NEW, CT_GET, CT_DELETE = 0x100, 0x101, 0x102  # NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_*

# enum ctattr_type and its nested enums (linux/netfilter/nfnetlink_conntrack.h)
CTA_TUPLE_ORIG, CTA_TUPLE_REPLY, CTA_STATUS, CTA_PROTOINFO = 1, 2, 3, 4
CTA_NAT_SRC, CTA_TIMEOUT, CTA_MARK, CTA_USE, CTA_ID, CTA_NAT_DST = 6, 7, 8, 11, 12, 13
CTA_ZONE, CTA_LABELS = 18, 22
CTA_TUPLE_IP, CTA_TUPLE_PROTO = 1, 2
CTA_IP_V4_SRC, CTA_IP_V4_DST, CTA_IP_V6_SRC, CTA_IP_V6_DST = 1, 2, 3, 4
CTA_PROTO_NUM, CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT = 1, 2, 3
CTA_PROTO_ICMP_ID, CTA_PROTO_ICMPV6_ID = 4, 7  # each followed by its _TYPE and _CODE
CTA_PROTOINFO_TCP = 1
TCP_STATE, TCP_WSCALE_ORIG, TCP_WSCALE_REPLY, TCP_FLAGS_ORIG, TCP_FLAGS_REPLY = 1, 2, 3, 4, 5
CTA_NAT_V4_MINIP, CTA_NAT_V4_MAXIP, CTA_NAT_PROTO = 1, 2, 3
CTA_NAT_V6_MINIP, CTA_NAT_V6_MAXIP = 4, 5
CTA_PROTONAT_PORT_MIN, CTA_PROTONAT_PORT_MAX = 1, 2

# status bits (linux/netfilter/nf_conntrack_common.h), TCP flags (nf_conntrack_tcp.h)
IPS_EXPECTED, IPS_SEEN_REPLY, IPS_ASSURED, IPS_CONFIRMED = 0x1, 0x2, 0x4, 0x8
IPS_SRC_NAT, IPS_DST_NAT, IPS_SRC_NAT_DONE, IPS_DST_NAT_DONE = 0x10, 0x20, 0x80, 0x100
IP_CT_TCP_FLAG_WINDOW_SCALE, IP_CT_TCP_FLAG_SACK_PERM = 0x01, 0x02
IP_CT_TCP_FLAG_CLOSE_INIT, IP_CT_TCP_FLAG_BE_LIBERAL = 0x04, 0x08
TCP_CONNTRACK_ESTABLISHED = 3
PROTO_ICMP, PROTO_TCP, PROTO_UDP, PROTO_ICMPV6 = 1, 6, 17, 58

MAX_GROUPS = 32  # layouts parsed as groups before the rest is walked one message at a time
_WIDE = {"src": 4, "dst": 4, "r_src": 4, "r_dst": 4, "label": 4, "tcp_wscale": 2, "tcp_flags": 2}
# protocols whose tuple has CTA_PROTO_SRC/DST_PORT: UDP, DCCP, GRE (keys), SCTP, UDP-Lite
_PORT_PROTOS = (17, 33, 47, 132, 136)
# the ICMP types the kernel can invert (its invmap), both ways; ICMPv6's live above 127
_ICMP_PAIRS = ((8, 0), (13, 14), (15, 16), (17, 18), (128, 129), (139, 140))
_ICMP_INVERSE = np.arange(256, dtype=np.int64)
for _a, _b in _ICMP_PAIRS:
    _ICMP_INVERSE[_a], _ICMP_INVERSE[_b] = _b, _a


@dataclass(frozen=True)
class KernelEntries:
    """Conntrack entries, one row per connection; every column int64 and of one length."""

    family: np.ndarray  # AF_INET 2 / AF_INET6 10
    proto: np.ndarray  # IP protocol number
    zone: np.ndarray  # conntrack zone (0: none)
    src: np.ndarray  # (N,4) original source, words most significant first
    dst: np.ndarray  # (N,4) original destination
    sport: np.ndarray  # original source port (ICMP: echo id)
    dport: np.ndarray  # original destination port (ICMP: echo id)
    icmp_type: np.ndarray  # original direction's ICMP/ICMPv6 type (0 for others)
    icmp_code: np.ndarray
    r_src: np.ndarray  # (N,4) reply tuple as the kernel reports it (translated when NATed)
    r_dst: np.ndarray  # (N,4)
    r_sport: np.ndarray
    r_dport: np.ndarray
    status: np.ndarray  # IPS_* bits
    timeout_s: np.ndarray  # seconds left
    mark: np.ndarray
    label: np.ndarray  # (N,4) 128-bit label, word 0 = bits 127..96
    tcp_state: np.ndarray  # TCP_CONNTRACK_* (0 for non-TCP)
    tcp_wscale: np.ndarray  # (N,2) window scale, original / reply
    tcp_flags: np.ndarray  # (N,2) IP_CT_TCP_FLAG_*, original / reply
    use: np.ndarray  # reference count (dump only)
    id: np.ndarray  # the kernel's entry id (dump only)

    @classmethod
    def empty(cls, n: int = 0) -> KernelEntries:
        """``n`` rows of zeros (fill the columns in place: the arrays are writable)."""
        return cls(**{f.name: np.zeros((n, _WIDE[f.name]) if f.name in _WIDE else n, np.int64)
                      for f in fields(cls)})  # fmt: skip

    @classmethod
    def concat(cls, parts: list[KernelEntries]) -> KernelEntries:
        """The rows of every part, in order."""
        if not parts:
            return cls.empty(0)
        return cls(**{f.name: np.concatenate([getattr(p, f.name) for p in parts])
                      for f in fields(cls)})  # fmt: skip

    def take(self, rows) -> KernelEntries:
        """The rows selected by an index array, a boolean mask or a slice."""
        return KernelEntries(**{f.name: getattr(self, f.name)[rows] for f in fields(self)})

    def __len__(self) -> int:
        return len(self.family)

    def check(self) -> None:
        """Raise InputError unless every column is int64 of the same length and right width."""
        n = len(self.family)
        for f in fields(self):
            a = getattr(self, f.name)
            shape = (n, _WIDE[f.name]) if f.name in _WIDE else (n,)
            if not isinstance(a, np.ndarray) or a.dtype != np.int64 or a.shape != shape:
                got = (getattr(a, "dtype", type(a).__name__), getattr(a, "shape", None))
                raise InputError(f"KernelEntries.{f.name}: need int64 of shape {shape}, got {got}")
        bad = ~np.isin(self.family, (AF_INET, AF_INET6))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise InputError(f"KernelEntries row {row}: family {self.family[row]}, not 2 or 10")


class _Leaf(NamedTuple):
    attr: int
    key: str  # the value array's name (see _create_values)
    words: tuple[int, ...] | None  # columns of a wide value, None for a 1-D one
    fmt: str


class _Nest(NamedTuple):
    attr: int
    children: tuple


class _Layout(NamedTuple):
    template: np.ndarray  # uint8, one whole message with zeroed values
    dtype: np.dtype  # 'seq' and one field f<i> per leaf
    leaves: tuple[_Leaf, ...]


def _emit(nodes, out: bytearray, leaves: list) -> None:
    for node in nodes:
        start = len(out)
        out += bytes(4)
        if isinstance(node, _Nest):
            _emit(node.children, out, leaves)
            attr = node.attr | NLA_F_NESTED
        else:
            leaves.append((len(out), node))
            out += bytes(_leaf_dtype(node).itemsize)
            attr = node.attr
        struct.pack_into("<HH", out, start, len(out) - start, attr)
        out += bytes(-len(out) % 4)


def _leaf_dtype(leaf: _Leaf) -> np.dtype:
    if leaf.words is None or len(leaf.words) == 1:
        return np.dtype(leaf.fmt)
    return np.dtype((leaf.fmt, (len(leaf.words),)))


def _compile(msg_type: int, flags: int, family: int, body: tuple) -> _Layout:
    out = bytearray(struct.pack("<IHHIIBBH", 0, msg_type, flags, 0, 0, family, 0, 0))
    placed: list = []
    _emit(body, out, placed)
    struct.pack_into("<I", out, 0, len(out))
    names = ["seq"] + [f"f{i}" for i in range(len(placed))]
    formats = [np.dtype("<u4")] + [_leaf_dtype(leaf) for _, leaf in placed]
    offsets = [8] + [at for at, _ in placed]
    dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets,
                      "itemsize": len(out)})  # fmt: skip
    template = np.frombuffer(bytes(out), np.uint8)
    return _Layout(template, dtype, tuple(leaf for _, leaf in placed))


# layout classes of the L4 part of a tuple
L4_TCP, L4_PORTS, L4_ICMP, L4_ICMPV6, L4_OTHER = 0, 1, 2, 3, 4


def _tuple(side: str, v6: bool, l4: int) -> tuple:
    words, fmt, a = ((0, 1, 2, 3), ">u4", CTA_IP_V6_SRC) if v6 else ((3,), ">u4", CTA_IP_V4_SRC)
    ip = (_Leaf(a, side + "src", words, fmt), _Leaf(a + 1, side + "dst", words, fmt))
    proto: tuple = (_Leaf(CTA_PROTO_NUM, "proto", None, "u1"),)
    if l4 in (L4_TCP, L4_PORTS):
        proto += (_Leaf(CTA_PROTO_SRC_PORT, side + "sport", None, ">u2"),
                  _Leaf(CTA_PROTO_DST_PORT, side + "dport", None, ">u2"))  # fmt: skip
    elif l4 in (L4_ICMP, L4_ICMPV6):
        i = CTA_PROTO_ICMP_ID if l4 == L4_ICMP else CTA_PROTO_ICMPV6_ID
        proto += (_Leaf(i, side + "sport", None, ">u2"),
                  _Leaf(i + 1, side + "icmp_type", None, "u1"),
                  _Leaf(i + 2, "icmp_code", None, "u1"))  # fmt: skip
    return (_Nest(CTA_TUPLE_IP, ip), _Nest(CTA_TUPLE_PROTO, proto))


def _nat(attr: int, side: str, v6: bool, l4: int) -> _Nest:
    words, lo = ((0, 1, 2, 3), CTA_NAT_V6_MINIP) if v6 else ((3,), CTA_NAT_V4_MINIP)
    nat: tuple = (_Leaf(lo, side + "ip", words, ">u4"), _Leaf(lo + 1, side + "ip", words, ">u4"))
    if l4 != L4_OTHER:
        nat += (_Nest(CTA_NAT_PROTO, (_Leaf(CTA_PROTONAT_PORT_MIN, side + "port", None, ">u2"),
                                      _Leaf(CTA_PROTONAT_PORT_MAX, side + "port", None, ">u2"))),)  # fmt: skip
    return _Nest(attr, nat)


@cache
def _create_layout(key: tuple) -> _Layout:
    v6, l4, zone, labels, nat_src, nat_dst, exclusive = key
    body: tuple = (_Nest(CTA_TUPLE_ORIG, _tuple("", v6, l4)),
                   _Nest(CTA_TUPLE_REPLY, _tuple("r_", v6, l4)))  # fmt: skip
    if zone:
        body += (_Leaf(CTA_ZONE, "zone", None, ">u2"),)
    body += (_Leaf(CTA_STATUS, "status", None, ">u4"),
             _Leaf(CTA_TIMEOUT, "timeout_s", None, ">u4"),
             _Leaf(CTA_MARK, "mark", None, ">u4"))  # fmt: skip
    if labels:
        body += (_Leaf(CTA_LABELS, "label", (3, 2, 1, 0), "<u4"),)
    if l4 == L4_TCP:
        tcp = (_Leaf(TCP_STATE, "tcp_state", None, "u1"),
               _Leaf(TCP_WSCALE_ORIG, "tcp_wscale", (0,), "u1"),
               _Leaf(TCP_WSCALE_REPLY, "tcp_wscale", (1,), "u1"),
               _Leaf(TCP_FLAGS_ORIG, "tcp_flags_wire", (0,), ">u2"),
               _Leaf(TCP_FLAGS_REPLY, "tcp_flags_wire", (1,), ">u2"))  # fmt: skip
        body += (_Nest(CTA_PROTOINFO, (_Nest(CTA_PROTOINFO_TCP, tcp),)),)
    if nat_src:
        body += (_nat(CTA_NAT_SRC, "nat_src_", v6, l4),)
    if nat_dst:
        body += (_nat(CTA_NAT_DST, "nat_dst_", v6, l4),)
    flags = NLM_F_REQUEST | NLM_F_CREATE | (NLM_F_EXCL if exclusive else 0)
    return _compile(CT_NEW, flags, AF_INET6 if v6 else AF_INET, body)


@cache
def _delete_layout(key: tuple) -> _Layout:
    v6, l4, zone = key
    body: tuple = (_Nest(CTA_TUPLE_ORIG, _tuple("", v6, l4)),)
    if zone:
        body += (_Leaf(CTA_ZONE, "zone", None, ">u2"),)
    return _compile(CT_DELETE, NLM_F_REQUEST, AF_INET6 if v6 else AF_INET, body)


def _l4_class(proto: np.ndarray) -> np.ndarray:
    l4 = np.full(len(proto), L4_OTHER, np.int64)
    l4[np.isin(proto, _PORT_PROTOS)] = L4_PORTS
    l4[proto == PROTO_TCP] = L4_TCP
    l4[proto == PROTO_ICMP] = L4_ICMP
    l4[proto == PROTO_ICMPV6] = L4_ICMPV6
    return l4


def _create_values(e: KernelEntries) -> dict[str, np.ndarray]:
    """Every array a create leaf names: the columns, and what NAT and the wire derive."""
    v = {f.name: getattr(e, f.name) for f in fields(e)}
    v["r_icmp_type"] = _ICMP_INVERSE[e.icmp_type & 0xFF]
    v["tcp_flags_wire"] = (e.tcp_flags << 8) | 0xFF  # struct nf_ct_tcp_flags {flags, mask}
    nat = (e.status & (IPS_SRC_NAT | IPS_DST_NAT)) != 0
    if nat.any():  # the plain inverse as reply; the translation in the NAT ranges
        v["r_src"] = np.where(nat[:, None], e.dst, e.r_src)
        v["r_dst"] = np.where(nat[:, None], e.src, e.r_dst)
        v["r_sport"] = np.where(nat, e.dport, e.r_sport)
        v["r_dport"] = np.where(nat, e.sport, e.r_dport)
        v["nat_src_ip"], v["nat_src_port"] = e.r_dst, e.r_dport
        v["nat_dst_ip"], v["nat_dst_port"] = e.r_src, e.r_sport
    return v


def _fill(layout: _Layout, values: dict[str, np.ndarray], rows: np.ndarray, seq0: int):
    rec = np.empty(len(rows), layout.dtype)
    rec.view(np.uint8).reshape(len(rows), -1)[:] = layout.template
    rec["seq"] = seq0 + rows
    every = len(rows) == len(values["family"])  # one layout only: no gathers needed
    for i, leaf in enumerate(layout.leaves):
        col = values[leaf.key] if every else values[leaf.key][rows]
        if leaf.words is not None:
            col = col[:, leaf.words[0]] if len(leaf.words) == 1 else col[:, list(leaf.words)]
        rec[f"f{i}"] = col
    return rec.view(np.uint8)


def _encode(entries: KernelEntries, keys: np.ndarray, layout_of, values, seq0: int):
    """(message bytes as uint8, end offset of every message): one group per distinct key."""
    parts, ends, at = [], [], 0
    for code in np.unique(keys):
        rows = np.flatnonzero(keys == code)
        layout = layout_of(int(code))
        parts.append(_fill(layout, values, rows, seq0))
        ends.append(at + layout.dtype.itemsize * np.arange(1, len(rows) + 1, dtype=np.int64))
        at += layout.dtype.itemsize * len(rows)
    if not parts:
        return np.zeros(0, np.uint8), np.zeros(0, np.int64)
    buf = parts[0] if len(parts) == 1 else np.concatenate(parts)
    return buf, np.concatenate(ends)


def _bits(code: int, n: int) -> tuple:
    return tuple((code >> (3 + i)) & 1 for i in range(n))


def encode_create_messages(entries: KernelEntries, seq0: int = 1, exclusive: bool = True):
    """The create messages as (uint8 array, message end offsets); see :func:`encode_create`."""
    entries.check()
    e = entries
    nat_src = (e.status & IPS_SRC_NAT) != 0
    nat_dst = (e.status & IPS_DST_NAT) != 0
    labels = (e.label != 0).any(axis=1)
    keys = ((e.family == AF_INET6) * 8 + _l4_class(e.proto) + (e.zone != 0) * 16 + labels * 32
            + nat_src * 64 + nat_dst * 128)  # fmt: skip

    def layout_of(code: int) -> _Layout:
        return _create_layout((code >> 3 & 1, code & 7, *_bits(code >> 1, 4), exclusive))

    return _encode(e, keys, layout_of, _create_values(e), seq0)


def encode_create(entries: KernelEntries, seq0: int = 1, exclusive: bool = True) -> bytes:
    """IPCTNL_MSG_CT_NEW messages for every row, message ``seq0 + row`` for row ``row``.

    ``exclusive`` (NLM_F_EXCL): an existing entry is an EEXIST error; without it, the message
    updates the existing entry. ``status`` must include IPS_CONFIRMED (see the module's
    invariants for NAT); TCP rows carry state, window scales and flags (add
    IP_CT_TCP_FLAG_BE_LIBERAL to the flags to have the kernel check windows liberally)."""
    return encode_create_messages(entries, seq0, exclusive)[0].tobytes()


def encode_delete_messages(entries: KernelEntries, seq0: int = 1):
    """The delete messages as (uint8 array, message end offsets); see :func:`encode_delete`."""
    entries.check()
    e = entries
    keys = (e.family == AF_INET6) * 8 + _l4_class(e.proto) + (e.zone != 0) * 16

    def layout_of(code: int) -> _Layout:
        return _delete_layout((code >> 3 & 1, code & 7, code >> 4 & 1))

    values = {f.name: getattr(e, f.name) for f in fields(e)}
    values["r_icmp_type"] = values["icmp_type"]
    return _encode(e, keys, layout_of, values, seq0)


def encode_delete(entries: KernelEntries, seq0: int = 1) -> bytes:
    """IPCTNL_MSG_CT_DELETE messages (original tuple and zone) for every row, seq ``seq0 + row``."""
    return encode_delete_messages(entries, seq0)[0].tobytes()


def dump_request(family: int = AF_UNSPEC, seq: int = 1, zone: int | None = None) -> bytes:
    """One IPCTNL_MSG_CT_GET dump request for ``family`` (AF_UNSPEC: all), optionally one zone."""
    body = struct.pack("<BBH", family, 0, 0)
    if zone is not None:
        body += struct.pack("<HH", 6, CTA_ZONE) + struct.pack(">H", zone) + bytes(2)
    return struct.pack("<IHHII", 16 + len(body), CT_GET, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


def flush_request(family: int = AF_UNSPEC, seq: int = 1) -> bytes:
    """A delete with no tuple: the kernel drops every entry of ``family`` (AF_UNSPEC: all)."""
    flags = NLM_F_REQUEST | NLM_F_ACK
    return struct.pack("<IHHIIBBH", 20, CT_DELETE, flags, seq, 0, family, 0, 0)


def parse_errors(data, n: int) -> list[tuple[int, int]]:
    """(original seq, errno) of every NLMSG_ERROR in ``data[:n]`` that is not an ack."""
    out, off = [], 0
    while off + 16 <= n:
        length, kind = struct.unpack_from("<IH", data, off)
        if kind == NLMSG_ERROR and off + 32 <= n:
            err, seq = struct.unpack_from("<i8xI", data, off + 16)
            if err:
                out.append((seq, -err))
        off += max((length + 3) & ~3, 16)
    return out


def datagram_messages(buf: np.ndarray, start: int, n: int,
                      kinds: tuple = (CT_NEW,)) -> tuple[np.ndarray, int]:  # fmt: skip
    """Offsets of the conntrack messages (of the types ``kinds``: a dump's CT_NEW, or events'
    CT_NEW and CT_DELETE) in the datagram ``buf[start:start+n]`` and how it ends: 0 more to
    come, -1 NLMSG_DONE seen, or the errno of an NLMSG_ERROR. A datagram of k messages of one
    length and type (the usual case) is checked with numpy, others walked."""
    length, kind = struct.unpack_from("<IH", buf, start)
    if kind in kinds and length and n % length == 0:
        offs = start + length * np.arange(n // length, dtype=np.int64)
        heads = buf[offs[:, None] + np.arange(8)].copy().view("<u4")
        if (heads[:, 0] == length).all() and ((heads[:, 1] & 0xFFFF) == kind).all():
            return offs, 0
    found, off, end = [], start, start + n
    while off + 16 <= end:
        length, kind = struct.unpack_from("<IH", buf, off)
        if kind == NLMSG_DONE:
            err = struct.unpack_from("<i", buf, off + 16)[0] if length >= 20 else 0
            return np.array(found, np.int64), -err if err else -1
        if kind == NLMSG_ERROR:
            err = struct.unpack_from("<i", buf, off + 16)[0]
            if err:
                return np.array(found, np.int64), -err
        elif kind in kinds:
            found.append(off)
        off += max((length + 3) & ~3, 16)
    return np.array(found, np.int64), 0


def _parse_table() -> dict[tuple, list[tuple[str, tuple | None, str]]]:
    """Attribute path in a dumped message -> the columns its payload goes to."""
    v4, v6 = (3,), (0, 1, 2, 3)
    t: dict[tuple, list[tuple[str, tuple | None, str]]] = {}
    for top, side in ((CTA_TUPLE_ORIG, ""), (CTA_TUPLE_REPLY, "r_")):
        ip, pr = (top, CTA_TUPLE_IP), (top, CTA_TUPLE_PROTO)
        t[(*ip, CTA_IP_V4_SRC)] = [(side + "src", v4, ">u4")]
        t[(*ip, CTA_IP_V4_DST)] = [(side + "dst", v4, ">u4")]
        t[(*ip, CTA_IP_V6_SRC)] = [(side + "src", v6, ">u4")]
        t[(*ip, CTA_IP_V6_DST)] = [(side + "dst", v6, ">u4")]
        t[(*pr, CTA_PROTO_SRC_PORT)] = [(side + "sport", None, ">u2")]
        t[(*pr, CTA_PROTO_DST_PORT)] = [(side + "dport", None, ">u2")]
        for echo_id in (CTA_PROTO_ICMP_ID, CTA_PROTO_ICMPV6_ID):
            t[(*pr, echo_id)] = [(side + "sport", None, ">u2"), (side + "dport", None, ">u2")]
    orig = (CTA_TUPLE_ORIG, CTA_TUPLE_PROTO)
    t[(*orig, CTA_PROTO_NUM)] = [("proto", None, "u1")]
    for echo_id in (CTA_PROTO_ICMP_ID, CTA_PROTO_ICMPV6_ID):
        t[(*orig, echo_id + 1)] = [("icmp_type", None, "u1")]
        t[(*orig, echo_id + 2)] = [("icmp_code", None, "u1")]
    for attr, col, fmt in ((CTA_ZONE, "zone", ">u2"), (CTA_STATUS, "status", ">u4"),
                           (CTA_TIMEOUT, "timeout_s", ">u4"), (CTA_MARK, "mark", ">u4"),
                           (CTA_USE, "use", ">u4"), (CTA_ID, "id", ">u4")):  # fmt: skip
        t[(attr,)] = [(col, None, fmt)]
    t[(CTA_LABELS,)] = [("label", (3, 2, 1, 0), "<u4")]
    tcp = (CTA_PROTOINFO, CTA_PROTOINFO_TCP)
    t[(*tcp, TCP_STATE)] = [("tcp_state", None, "u1")]
    t[(*tcp, TCP_WSCALE_ORIG)] = [("tcp_wscale", (0,), "u1")]
    t[(*tcp, TCP_WSCALE_REPLY)] = [("tcp_wscale", (1,), "u1")]
    t[(*tcp, TCP_FLAGS_ORIG)] = [("tcp_flags", (0,), "u1")]  # the flags byte; the mask follows
    t[(*tcp, TCP_FLAGS_REPLY)] = [("tcp_flags", (1,), "u1")]
    return t


_PARSE = _parse_table()
# nested whether or not the kernel set NLA_F_NESTED on them
_NESTED = {(1,), (2,), (1, 1), (1, 2), (2, 1), (2, 2), (4,), (4, 1)}


def _walk(buf: np.ndarray, off: int) -> tuple[list[int], dict[tuple, tuple[int, int]]]:
    """One message's attribute header positions and {path: (payload offset, length)} of its
    leaves, both relative to the message."""
    heads: list[int] = []
    leaves: dict[tuple, tuple[int, int]] = {}

    def walk(p: int, end: int, path: tuple) -> None:
        while p + 4 <= end:
            length, kind = struct.unpack_from("<HH", buf, off + p)
            if length < 4 or p + length > end:
                return
            heads.append(p)
            key = (*path, kind & 0x3FFF)
            if kind & NLA_F_NESTED or key in _NESTED:
                walk(p + 4, p + length, key)
            else:
                leaves[key] = (p + 4, length - 4)
            p += (length + 3) & ~3

    walk(20, struct.unpack_from("<I", buf, off)[0], ())
    return heads, leaves


def _gather(buf: np.ndarray, offs: np.ndarray, leaves: dict, out: KernelEntries, rows) -> None:
    """Every known field of messages ``offs`` (all of one layout, ``leaves``) into ``rows``."""
    for path, (at, size) in leaves.items():
        for col, words, fmt in _PARSE.get(path, ()):
            dt = np.dtype(fmt)
            count = 1 if words is None else len(words)
            if size < dt.itemsize * count:
                continue
            raw = buf[offs[:, None] + (at + np.arange(dt.itemsize * count))]
            values = raw.view(dt).astype(np.int64)
            target = getattr(out, col)
            if words is None:
                target[rows] = values[:, 0]
            else:
                target[np.ix_(rows, words)] = values


def parse_entries(buf: np.ndarray, offs: np.ndarray, max_groups: int = MAX_GROUPS):
    """Conntrack messages at ``offs`` (4-aligned) in ``buf`` as :class:`KernelEntries`.

    Messages whose length and every attribute header equal a representative's are one group,
    read field by field with numpy; after ``max_groups`` groups the rest are walked one by one
    and bucketed by their exact header bytes (odd layouts, entries of real traffic)."""
    out = KernelEntries.empty(len(offs))
    if not len(offs):
        return out
    words = buf[: len(buf) // 4 * 4].view("<u4")
    lens = words[offs >> 2]
    out.family[:] = buf[offs + 16]
    todo = np.arange(len(offs))
    for _ in range(max_groups):
        if not len(todo):
            break
        rep = int(offs[todo[0]])
        heads, leaves = _walk(buf, rep)
        rel = np.array(heads, np.int64)
        cand = todo[lens[todo] == lens[todo[0]]]
        same = (words[(offs[cand, None] + rel) >> 2] == words[(rep + rel) >> 2]).all(axis=1)
        group = cand[same]
        _gather(buf, offs[group], leaves, out, group)
        todo = np.setdiff1d(todo, group, assume_unique=True)
    buckets: dict[bytes, tuple[dict, list[int]]] = {}
    for i in todo.tolist():
        heads, leaves = _walk(buf, int(offs[i]))
        sig = lens[i].tobytes() + words[(offs[i] + np.array(heads, np.int64)) >> 2].tobytes()
        buckets.setdefault(sig, (leaves, []))[1].append(i)
    for leaves, rows in buckets.values():
        group = np.array(rows, np.int64)
        _gather(buf, offs[group], leaves, out, group)
    return out
