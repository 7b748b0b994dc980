"""Field registry: OVS field names and NXM/OXM names -> flow-key columns.

What: every field a rule can match, and every field ``load``/``move``/``set_field`` can name,
with its key column(s) (``packet/key.py``), its width, whether it may be masked or written,
and its prerequisite (what the rest of the match must say before the field means anything,
as OVS's meta-flow prerequisites). Also the parsers and printers for field values and the
``FieldRef`` (a bit range of a field, as in ``NXM_NX_REG0[0..15]``).

Design: a :class:`Field` is plain data; the registry is two dicts (OVS name or alias ->
Field, NXM/OXM name -> Field). Several names share a *storage* name (``tcp_src``, ``udp_src``,
``icmp_type`` all live in ``tp_src``); a match is built per storage name so the last writer
wins, as in ovs-ofctl. Wide values (IPv6 addresses, ct_label, metadata) are plain Python ints
here and are split into 32-bit key columns by :func:`split_columns`.

Invariants:
- ``Field.nbits`` is the OpenFlow width (what "value too large" is checked against);
  ``Field.ncols`` 32-bit key columns hold it, most significant first.
- An IPv4 field uses only the last of its four address columns (``key.py`` convention).
- Parsers raise ``ValueError`` with OVS-like text; ``rules.py`` turns it into a RuleError.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from ctaccel.packet import key as K

# Prerequisite codes (OVS MFP_*): checked by rules.check_prerequisites.
P_NONE = ""
P_IPV6 = "ipv6"
P_IP_ANY = "ip_any"
P_TCP = "tcp"
P_VLAN = "vlan"
# Where several fields share storage, the prerequisite is the storage's, as OVS normalizes a
# match (a field is kept when its storage means something for dl_type/nw_proto, whatever the
# name it was written with: "tcp,udp_dst=53" is "tcp,tp_dst=53")
P_NW_ADDR = "nw_addr"  # nw_src/nw_dst, arp_spa/arp_tpa: ip or arp
P_NW_PROTO = "nw_proto"  # nw_proto, arp_op: ip, ipv6 or arp
P_TP = "tp"  # tp_src/tp_dst, tcp_*, udp_*, sctp_*, icmp*_type/code
P_ARP_SHA = "arp_sha"  # arp_sha, nd_sll: arp, or an IPv6 neighbor solicitation
P_ARP_THA = "arp_tha"  # arp_tha, nd_tll: arp, or an IPv6 neighbor advertisement
P_ND = "nd"  # nd_target: an IPv6 neighbor solicitation or advertisement
P_CT = "ct"  # ct_state must say the connection is valid (OVS is_ct_valid)
P_CT_IPV4 = "ct_ip"
P_CT_IPV6 = "ct_ipv6"
P_CT_L4 = "ct_l4"  # ct_nw_proto must be matched

PREREQ_TEXT = {
    P_IPV6: "ipv6",
    P_IP_ANY: "ip or ipv6",
    P_TCP: "tcp",
    P_NW_ADDR: "ip or arp",
    P_NW_PROTO: "ip, ipv6 or arp",
    P_TP: "tcp, udp, sctp, icmp or icmp6",
    P_ARP_SHA: "arp, or icmp6 with icmp_type=135 (code 0)",
    P_ARP_THA: "arp, or icmp6 with icmp_type=136 (code 0)",
    P_ND: "icmp6 with icmp_type=135 or 136 (code 0)",
    P_CT: "a ct_state with +new, +est, +rel, +rpl or +trk-inv",
    P_CT_IPV4: "ip and a valid ct_state",
    P_CT_IPV6: "ipv6 and a valid ct_state",
    P_CT_L4: "ct_nw_proto",
}


@dataclass(frozen=True)
class Field:
    """One matchable and/or settable field."""

    name: str  # the name OVS prints (canonical)
    storage: str  # the match slot it fills (aliases share one)
    col: int  # first key column
    ncols: int  # number of 32-bit key columns
    nbits: int  # OpenFlow width in bits
    kind: str  # value syntax: int, eth, ipv4, ipv6, ct_state, tcp_flags, frag, port, dscp, ecn
    prereq: str = P_NONE
    maskable: bool = True
    writable: bool = False  # load/set_field may target it (ct_* only inside ct(exec))
    nxm: str | None = None  # NXM/OXM name for load/move/set_field

    @property
    def full_mask(self) -> int:
        return (1 << self.nbits) - 1


def _f(
    name,
    col,
    ncols,
    nbits,
    kind="int",
    prereq=P_NONE,
    maskable=True,
    writable=False,
    nxm=None,
    storage=None,
):
    return Field(name, storage or name, col, ncols, nbits, kind, prereq, maskable, writable, nxm)


_REGISTRY: list[tuple[tuple[str, ...], Field]] = [
    (("in_port",), _f("in_port", K.IN_PORT, 1, 16, "port", maskable=False, nxm="NXM_OF_IN_PORT")),
    (("dl_src", "eth_src"), _f("dl_src", K.DL_SRC, 1, 48, "eth", nxm="NXM_OF_ETH_SRC")),
    (("dl_dst", "eth_dst"), _f("dl_dst", K.DL_DST, 1, 48, "eth", nxm="NXM_OF_ETH_DST")),
    (
        ("dl_type", "eth_type"),
        _f("dl_type", K.DL_TYPE, 1, 16, maskable=False, nxm="NXM_OF_ETH_TYPE"),
    ),
    (("vlan_tci",), _f("vlan_tci", K.VLAN_TCI, 1, 16, nxm="NXM_OF_VLAN_TCI")),
    (
        ("nw_src", "ip_src"),
        _f("nw_src", K.NW_SRC + 3, 1, 32, "ipv4", P_NW_ADDR, nxm="NXM_OF_IP_SRC"),
    ),
    (
        ("nw_dst", "ip_dst"),
        _f("nw_dst", K.NW_DST + 3, 1, 32, "ipv4", P_NW_ADDR, nxm="NXM_OF_IP_DST"),
    ),
    (
        ("arp_spa",),
        _f(
            "arp_spa",
            K.NW_SRC + 3,
            1,
            32,
            "ipv4",
            P_NW_ADDR,
            nxm="NXM_OF_ARP_SPA",
            storage="nw_src",
        ),
    ),
    (
        ("arp_tpa",),
        _f(
            "arp_tpa",
            K.NW_DST + 3,
            1,
            32,
            "ipv4",
            P_NW_ADDR,
            nxm="NXM_OF_ARP_TPA",
            storage="nw_dst",
        ),
    ),
    (
        ("arp_op",),
        _f(
            "arp_op",
            K.NW_PROTO,
            1,
            16,
            prereq=P_NW_PROTO,
            maskable=False,
            nxm="NXM_OF_ARP_OP",
            storage="nw_proto",
        ),
    ),
    (("ipv6_src",), _f("ipv6_src", K.NW_SRC, 4, 128, "ipv6", P_IPV6, nxm="NXM_NX_IPV6_SRC")),
    (("ipv6_dst",), _f("ipv6_dst", K.NW_DST, 4, 128, "ipv6", P_IPV6, nxm="NXM_NX_IPV6_DST")),
    (
        ("ipv6_label",),
        _f("ipv6_label", K.IPV6_LABEL, 1, 20, prereq=P_IPV6, nxm="NXM_NX_IPV6_LABEL"),
    ),
    (
        ("nw_proto", "ip_proto"),
        _f("nw_proto", K.NW_PROTO, 1, 8, prereq=P_NW_PROTO, maskable=False, nxm="NXM_OF_IP_PROTO"),
    ),
    (
        ("nw_tos",),
        _f("nw_tos", K.NW_TOS, 1, 8, "dscp", P_IP_ANY, maskable=False, nxm="NXM_OF_IP_TOS"),
    ),
    (
        ("nw_ecn",),
        _f(
            "nw_ecn",
            K.NW_TOS,
            1,
            2,
            "ecn",
            P_IP_ANY,
            maskable=False,
            nxm="NXM_NX_IP_ECN",
            storage="nw_tos",
        ),
    ),
    (
        ("nw_ttl",),
        _f("nw_ttl", K.NW_TTL, 1, 8, prereq=P_IP_ANY, maskable=False, nxm="NXM_NX_IP_TTL"),
    ),
    (
        ("nw_frag", "ip_frag"),
        _f("nw_frag", K.NW_FRAG, 1, 8, "frag", P_IP_ANY, nxm="NXM_NX_IP_FRAG"),
    ),
    (("tp_src",), _f("tp_src", K.TP_SRC, 1, 16, prereq=P_TP, nxm="NXM_OF_TCP_SRC")),
    (("tp_dst",), _f("tp_dst", K.TP_DST, 1, 16, prereq=P_TP, nxm="NXM_OF_TCP_DST")),
    (("tcp_src",), _f("tp_src", K.TP_SRC, 1, 16, prereq=P_TP, nxm="NXM_OF_TCP_SRC")),
    (("tcp_dst",), _f("tp_dst", K.TP_DST, 1, 16, prereq=P_TP, nxm="NXM_OF_TCP_DST")),
    (("udp_src",), _f("tp_src", K.TP_SRC, 1, 16, prereq=P_TP, nxm="NXM_OF_UDP_SRC")),
    (("udp_dst",), _f("tp_dst", K.TP_DST, 1, 16, prereq=P_TP, nxm="NXM_OF_UDP_DST")),
    (("sctp_src",), _f("tp_src", K.TP_SRC, 1, 16, prereq=P_TP, nxm="OXM_OF_SCTP_SRC")),
    (("sctp_dst",), _f("tp_dst", K.TP_DST, 1, 16, prereq=P_TP, nxm="OXM_OF_SCTP_DST")),
    (
        ("tcp_flags",),
        _f("tcp_flags", K.TCP_FLAGS, 1, 12, "tcp_flags", P_TCP, nxm="NXM_NX_TCP_FLAGS"),
    ),
    (
        ("icmp_type",),
        _f(
            "icmp_type",
            K.TP_SRC,
            1,
            8,
            prereq=P_TP,
            maskable=False,
            nxm="NXM_OF_ICMP_TYPE",
            storage="tp_src",
        ),
    ),
    (
        ("icmp_code",),
        _f(
            "icmp_code",
            K.TP_DST,
            1,
            8,
            prereq=P_TP,
            maskable=False,
            nxm="NXM_OF_ICMP_CODE",
            storage="tp_dst",
        ),
    ),
    (
        ("icmpv6_type",),
        _f(
            "icmp_type",
            K.TP_SRC,
            1,
            8,
            prereq=P_TP,
            maskable=False,
            nxm="NXM_NX_ICMPV6_TYPE",
            storage="tp_src",
        ),
    ),
    (
        ("icmpv6_code",),
        _f(
            "icmp_code",
            K.TP_DST,
            1,
            8,
            prereq=P_TP,
            maskable=False,
            nxm="NXM_NX_ICMPV6_CODE",
            storage="tp_dst",
        ),
    ),
    (("arp_sha",), _f("arp_sha", K.ARP_SHA, 1, 48, "eth", P_ARP_SHA, nxm="NXM_NX_ARP_SHA")),
    (("arp_tha",), _f("arp_tha", K.ARP_THA, 1, 48, "eth", P_ARP_THA, nxm="NXM_NX_ARP_THA")),
    (
        ("nd_sll",),
        _f("nd_sll", K.ARP_SHA, 1, 48, "eth", P_ARP_SHA, nxm="NXM_NX_ND_SLL", storage="arp_sha"),
    ),
    (
        ("nd_tll",),
        _f("nd_tll", K.ARP_THA, 1, 48, "eth", P_ARP_THA, nxm="NXM_NX_ND_TLL", storage="arp_tha"),
    ),
    (
        ("nd_target",),
        _f("nd_target", K.ND_TARGET, 4, 128, "ipv6", P_ND, nxm="NXM_NX_ND_TARGET"),
    ),
    (("conj_id",), _f("conj_id", K.CONJ_ID, 1, 32, maskable=False, nxm="NXM_NX_CONJ_ID")),
    (("ct_state",), _f("ct_state", K.CT_STATE, 1, 8, "ct_state", nxm="NXM_NX_CT_STATE")),
    (("ct_zone",), _f("ct_zone", K.CT_ZONE, 1, 16, maskable=False, nxm="NXM_NX_CT_ZONE")),
    (("ct_mark",), _f("ct_mark", K.CT_MARK, 1, 32, writable=True, nxm="NXM_NX_CT_MARK")),
    (("ct_label",), _f("ct_label", K.CT_LABEL, 4, 128, writable=True, nxm="NXM_NX_CT_LABEL")),
    (
        ("ct_nw_src",),
        _f("ct_nw_src", K.CT_NW_SRC + 3, 1, 32, "ipv4", P_CT_IPV4, nxm="NXM_NX_CT_NW_SRC"),
    ),
    (
        ("ct_nw_dst",),
        _f("ct_nw_dst", K.CT_NW_DST + 3, 1, 32, "ipv4", P_CT_IPV4, nxm="NXM_NX_CT_NW_DST"),
    ),
    (
        ("ct_ipv6_src",),
        _f("ct_ipv6_src", K.CT_NW_SRC, 4, 128, "ipv6", P_CT_IPV6, nxm="NXM_NX_CT_IPV6_SRC"),
    ),
    (
        ("ct_ipv6_dst",),
        _f("ct_ipv6_dst", K.CT_NW_DST, 4, 128, "ipv6", P_CT_IPV6, nxm="NXM_NX_CT_IPV6_DST"),
    ),
    (
        ("ct_nw_proto",),
        _f(
            "ct_nw_proto",
            K.CT_NW_PROTO,
            1,
            8,
            prereq=P_CT,
            maskable=False,
            nxm="NXM_NX_CT_NW_PROTO",
        ),
    ),
    (("ct_tp_src",), _f("ct_tp_src", K.CT_TP_SRC, 1, 16, prereq=P_CT_L4, nxm="NXM_NX_CT_TP_SRC")),
    (("ct_tp_dst",), _f("ct_tp_dst", K.CT_TP_DST, 1, 16, prereq=P_CT_L4, nxm="NXM_NX_CT_TP_DST")),
    (("metadata",), _f("metadata", K.METADATA, 2, 64, writable=True, nxm="OXM_OF_METADATA")),
] + [
    ((f"reg{i}",), _f(f"reg{i}", K.REG0 + i, 1, 32, writable=True, nxm=f"NXM_NX_REG{i}"))
    for i in range(16)
]

#: OVS field name or alias -> Field.
FIELDS: dict[str, Field] = {name: fld for names, fld in _REGISTRY for name in names}
#: NXM/OXM name -> Field (the first registered field of that name wins: tcp before udp).
NXM_FIELDS: dict[str, Field] = {}
for _names, _fld in _REGISTRY:
    if _fld.nxm:
        NXM_FIELDS.setdefault(_fld.nxm, _fld)
#: Fields writable only inside ct(exec(...)); OVS rejects them elsewhere.
CT_ONLY_WRITABLE = frozenset({"ct_mark", "ct_label"})

# Protocol shorthands: name -> (dl_type, nw_proto or None).
SHORTHANDS: dict[str, tuple[int, int | None]] = {
    "ip": (K.ETH_TYPE_IP, None),
    "ipv6": (K.ETH_TYPE_IPV6, None),
    "arp": (K.ETH_TYPE_ARP, None),
    "rarp": (K.ETH_TYPE_RARP, None),
    "tcp": (K.ETH_TYPE_IP, K.IPPROTO_TCP),
    "udp": (K.ETH_TYPE_IP, K.IPPROTO_UDP),
    "icmp": (K.ETH_TYPE_IP, K.IPPROTO_ICMP),
    "sctp": (K.ETH_TYPE_IP, K.IPPROTO_SCTP),
    "tcp6": (K.ETH_TYPE_IPV6, K.IPPROTO_TCP),
    "udp6": (K.ETH_TYPE_IPV6, K.IPPROTO_UDP),
    "icmp6": (K.ETH_TYPE_IPV6, K.IPPROTO_ICMPV6),
    "sctp6": (K.ETH_TYPE_IPV6, K.IPPROTO_SCTP),
}

TCP_FLAG_NAMES = ("fin", "syn", "rst", "psh", "ack", "urg", "ece", "cwr", "ns")
CT_STATE_FLAG_NAMES = ("new", "est", "rel", "rpl", "inv", "trk", "snat", "dnat")
FRAG_VALUES = {  # OVS nw_frag keywords -> (value, mask) over FRAG_ANY | FRAG_LATER
    "no": (0, K.FRAG_ANY | K.FRAG_LATER),
    "yes": (K.FRAG_ANY, K.FRAG_ANY),
    "first": (K.FRAG_ANY, K.FRAG_ANY | K.FRAG_LATER),
    "later": (K.FRAG_ANY | K.FRAG_LATER, K.FRAG_ANY | K.FRAG_LATER),
    "not_later": (0, K.FRAG_LATER),
}


# --- value parsing ---------------------------------------------------------------------------


def parse_int(text: str) -> int:
    """An OVS integer: decimal, 0x hex (or 0 octal-looking decimal, as strtoull base 0)."""
    t = text.strip()
    if not t:
        raise ValueError("missing value")
    try:
        return int(t, 0) if not re.fullmatch(r"0[0-7]+", t) else int(t, 8)
    except ValueError:
        raise ValueError(f"{text}: invalid number") from None


def _parse_flags(text: str, names: tuple[str, ...], field: str, what: str) -> tuple[int, int]:
    """``+a-b`` (masked) or ``a|b`` (exact) flag syntax, or an integer value[/mask]."""
    if text and (text[0].isdigit()):
        return _value_mask_int(text, field)
    bits = {n: 1 << i for i, n in enumerate(names)}
    if text and text[0] in "+-":
        value = mask = 0
        for sign, name in re.findall(r"([+-])([^+-]*)", text):
            if name not in bits:
                raise ValueError(f"{name}: unknown {what} flag(s)")
            mask |= bits[name]
            value = value | bits[name] if sign == "+" else value & ~bits[name]
        if re.sub(r"[+-][^+-]*", "", text):
            raise ValueError(f"{text}: unknown {what} flag(s)")
        return value, mask
    value = 0
    for name in text.split("|"):
        if name not in bits:
            raise ValueError(f"{name}: unknown {what} flag(s)")
        value |= bits[name]
    return value, -1  # -1: the field's full mask


def _value_mask_int(text: str, field: str) -> tuple[int, int]:
    if "/" in text:
        v, m = text.split("/", 1)
        return parse_int(v), parse_int(m)
    return parse_int(text), -1


def _parse_eth(text: str) -> int:
    parts = text.split(":")
    if len(parts) != 6 or not all(re.fullmatch(r"[0-9a-fA-F]{1,2}", p) for p in parts):
        raise ValueError(f"{text}: invalid Ethernet address")
    return int("".join(p.zfill(2) for p in parts), 16)


def _parse_ip(text: str, v6: bool) -> tuple[int, int]:
    addr, _, mask = text.partition("/")
    nbits = 128 if v6 else 32
    cls = ipaddress.IPv6Address if v6 else ipaddress.IPv4Address
    try:
        value = int(cls(addr))
    except ValueError:
        raise ValueError(f"{addr}: invalid IP{'v6' if v6 else ''} address") from None
    if not mask:
        return value, (1 << nbits) - 1
    if mask.isdigit():
        n = int(mask)
        if n > nbits:
            raise ValueError(f"{text}: invalid IP{'v6' if v6 else ''} prefix length")
        return value, ((1 << n) - 1) << (nbits - n)
    try:
        return value, int(cls(mask))
    except ValueError:
        raise ValueError(f"{text}: invalid IP{'v6' if v6 else ''} mask") from None


def parse_value(fld: Field, text: str) -> tuple[int, int]:
    """Parse ``value[/mask]`` for ``fld``; returns (value, mask) with the value masked.

    Raises ValueError with an OVS-like message for bad syntax, a value too wide for the field,
    or a mask on a field OVS does not allow masking.
    """
    kind = fld.kind
    full = fld.full_mask
    if kind == "eth":
        addr, _, m = text.partition("/")
        value, mask = _parse_eth(addr), (_parse_eth(m) if m else full)
    elif kind in ("ipv4", "ipv6"):
        value, mask = _parse_ip(text, kind == "ipv6")
    elif kind == "ct_state":
        value, mask = _parse_flags(text, CT_STATE_FLAG_NAMES, fld.name, "ct_state")
    elif kind == "tcp_flags":
        value, mask = _parse_flags(text, TCP_FLAG_NAMES, fld.name, "TCP")
    elif kind == "frag":
        if text not in FRAG_VALUES:
            raise ValueError(
                f'{text}: unknown fragment type (valid types are "no", "yes", "first", '
                f'"later", "not_later"'
            )
        return FRAG_VALUES[text]
    elif kind == "port":
        if "/" in text or not text.isdigit() or int(text) > 0xFFFF:
            raise ValueError(f"{text}: invalid or unknown port for in_port")
        return int(text), full
    else:
        value, mask = _value_mask_int(text, fld.name)
    if mask == -1:
        mask = full
    if value > full or value < 0:
        nbytes = (fld.nbits + 7) // 8
        raise ValueError(f"{text}: value too large for {nbytes}-byte field {fld.name}")
    if kind == "dscp":  # OVS matches the DSCP bits only; ECN bits of the value are ignored
        return value & 0xFC, 0xFC
    if kind == "ecn":
        return value & 0x03, 0x03
    if mask != full and not fld.maskable:
        raise ValueError(f"{text}: invalid mask for field {fld.name}")
    if mask < 0 or mask > full:
        raise ValueError(f"{text}: invalid mask for field {fld.name}")
    return value & mask, mask


# --- wide values <-> key columns ---------------------------------------------------------------


def split_columns(fld: Field, value: int, mask: int) -> list[tuple[int, int, int]]:
    """(column, value, mask) triples for a field value; columns whose mask is 0 are left out."""
    out = []
    for i in range(fld.ncols):
        shift = 32 * (fld.ncols - 1 - i)
        m = (mask >> shift) & 0xFFFFFFFF if fld.ncols > 1 else mask
        if m:
            v = (value >> shift) & 0xFFFFFFFF if fld.ncols > 1 else value
            out.append((fld.col + i, v & m, m))
    return out


# --- field references (NXM_NX_REG0[0..15]) -----------------------------------------------------


@dataclass(frozen=True)
class FieldRef:
    """A bit range of a field: bits ``start .. start+nbits-1`` of field ``name``.

    ``name`` is the OVS field name (``reg0``, ``ct_mark``, ``metadata``, ``tp_src``...);
    ``nxm`` the NXM/OXM name OVS prints in ``load``/``move`` (``NXM_NX_REG0``).
    """

    name: str
    col: int
    ncols: int
    start: int
    nbits: int
    field_nbits: int = 32  # width of the whole field, for "[]" printing
    nxm: str = ""

    @property
    def is_whole(self) -> bool:
        return self.start == 0 and self.nbits == self.field_nbits

    def format(self) -> str:
        name = self.nxm or self.name
        if self.is_whole:
            return f"{name}[]"
        if self.nbits == 1:
            return f"{name}[{self.start}]"
        return f"{name}[{self.start}..{self.start + self.nbits - 1}]"

    def with_bits(self, start: int, nbits: int) -> FieldRef:
        """The same field, another bit range."""
        return FieldRef(self.name, self.col, self.ncols, start, nbits, self.field_nbits, self.nxm)

    @property
    def field(self) -> Field:
        return NXM_FIELDS.get(self.nxm) or FIELDS[self.name]


def lookup_field(name: str) -> Field | None:
    """A field by OVS name, alias or NXM/OXM name."""
    return FIELDS.get(name) or NXM_FIELDS.get(name)


def parse_field_ref(text: str) -> FieldRef:
    """``NXM_NX_REG0[0..15]``, ``NXM_NX_REG0[]``, ``NXM_NX_REG0[3]``, ``reg0[0..15]``."""
    m = re.fullmatch(r"\s*([A-Za-z0-9_]+)\[(?:(\d+)(?:\.\.(\d+))?)?\]\s*", text)
    if not m:
        name = text.split("[", 1)[0]
        raise ValueError(f"{text}: unknown field `{name}'")
    name, lo, hi = m.group(1), m.group(2), m.group(3)
    fld = lookup_field(name)
    if fld is None or fld.nxm is None:
        raise ValueError(f"{text}: unknown field `{name}'")
    if lo is None:
        start, end = 0, (32 if fld.name == "ct_state" else fld.nbits) - 1
    else:
        start = int(lo)
        end = int(hi) if hi is not None else start
    # NXM_NX_CT_STATE is 32 bits wide on the wire although only 8 bits are defined.
    width = 32 if fld.name == "ct_state" else fld.nbits
    if end >= width:
        raise ValueError(
            f"{text}: ending bit {end} is not valid because field is only {width} bits wide"
        )
    if start > end:
        raise ValueError(f"{text}: starting bit {start} is not valid")
    return FieldRef(fld.name, fld.col, fld.ncols, start, end - start + 1, width, fld.nxm)


def field_ref_for(fld: Field, start: int = 0, nbits: int | None = None) -> FieldRef:
    """The FieldRef of a whole field (or of a bit range of it)."""
    width = fld.nbits if nbits is None else nbits
    return FieldRef(fld.name, fld.col, fld.ncols, start, width, fld.nbits, fld.nxm or "")
