"""Rule files (``ovs-ofctl add-flows`` syntax) -> validated :class:`Rule` objects.

What: parses a flow file line by line into rules the classifier and the engine use: table,
priority, cookie, the match as ``(key column, value, mask)`` triples, action objects, and
the canonical match text OVS would print. Validation follows ovs-ofctl: unknown fields and
actions, values too wide for their field, masks on unmaskable fields, prerequisites, ``ct``
outside ip/ipv6, ``goto_table`` backwards, tables out of range, writes to read-only fields,
``ct(exec)`` of anything but ct_mark/ct_label. The first bad line rejects the whole file
(``RuleError("file:line: reason")``); nothing is applied.

Design: a line is split into top-level tokens (commas and/or blanks, parentheses kept
together); the tokens up to ``actions=`` are info keys and match fields, the rest is the
action list, which is split with the ``ovs.flow`` KV parser (the one ``ovs-ofctl``'s Python
bindings use for dump-flows) and decoded here, because its value decoders are lossy for our
needs (``controller`` becomes ``output``, ct exec loses the written text). A match is built
per *storage* field (``tcp_src`` and ``tp_src`` are one slot; the last one written wins, as
in ovs-ofctl) and only then checked against prerequisites and printed.

Deviation from ovs-ofctl: a field whose prerequisite is missing (``tp_src`` without
tcp/udp/sctp, ``nw_src`` without ip) is *rejected*. ovs-ofctl (OpenFlow 1.0 normalisation)
silently drops such a field with an INFO log, which makes the rule match far more than it
says. Header-rewriting ``set_field``/``load`` targets (eth/ip/ports) are refused as
unsupported. ``ct(...,nat(...))`` is parsed and checked as ovs-ofctl does (str_to_nat_range,
parse_NAT, check_NAT).

Invariants: every Rule's match values are already masked; ``Rule.order`` is the rule's
position in the file (the classifier's tie-break among equal priorities).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from ovs.flow.kv import KVDecoders, KVParser, ParseError

from ctaccel.errors import InputError, RuleError
from ctaccel.ofproto import fields as F
from ctaccel.ofproto.actions import (
    OFPP_CONTROLLER_MAX_LEN,
    OFPP_LOCAL,
    Controller,
    Ct,
    CtClear,
    GotoTable,
    Move,
    Nat,
    Note,
    Output,
    OutputInPort,
    Resubmit,
    SetField,
    format_actions,
)
from ctaccel.packet import key as K

DEFAULT_PRIORITY = 32768
MAX_TABLE = 254  # 255 means "no table" in OpenFlow

# Real OVS actions this engine does not implement (a clearer error than "unknown action").
_UNSUPPORTED_ACTIONS = frozenset(
    "normal flood all mod_vlan_vid mod_vlan_pcp strip_vlan pop_vlan push_vlan mod_dl_src "
    "mod_dl_dst mod_nw_src mod_nw_dst mod_nw_tos mod_nw_ecn mod_tp_src mod_tp_dst dec_ttl "
    "set_tunnel set_queue pop_queue enqueue learn group meter clone sample conjunction "
    "multipath bundle bundle_load output_reg push_mpls pop_mpls fin_timeout exit "
    "write_actions clear_actions write_metadata check_pkt_larger dec_nsh_ttl encap decap "
    "set_mpls_label set_mpls_tc set_mpls_ttl dec_mpls_ttl stack push pop".split()
)
_CT_ALGS = {"ftp": K.IPPROTO_TCP, "tftp": K.IPPROTO_UDP}
# Storage slot -> the Field whose columns it fills.
_STORAGE = {f.storage: f for f in F.FIELDS.values() if f.storage == f.name}


@dataclass
class Rule:
    """One OpenFlow rule as loaded from a file."""

    table: int
    priority: int
    cookie: int
    match: list[tuple[int, int, int]]  # (key column, value & mask, mask)
    actions: list
    match_text: str  # canonical match, as OVS prints it (without priority)
    filename: str = "<rules>"
    line: int = 0
    order: int = 0  # position in the file: earlier wins among equal priorities
    idle_timeout: int = 0
    hard_timeout: int = 0

    def format_match(self) -> str:
        """``priority=N,`` (omitted at the default 32768) followed by the match, as OVS."""
        parts = []
        if self.priority != DEFAULT_PRIORITY:
            parts.append(f"priority={self.priority}")
        if self.match_text:
            parts.append(self.match_text)
        return ",".join(parts)

    def format_actions(self) -> str:
        return format_actions(self.actions)

    def matches(self, key) -> bool:
        """True if ``key`` (an int64 flow key) satisfies every (col, value, mask)."""
        return all((int(key[c]) & m) == v for c, v, m in self.match)


# --- tokenizing -------------------------------------------------------------------------------


def _split_top(text: str) -> list[str]:
    """Split at commas/blanks outside parentheses and brackets; empty pieces dropped."""
    out, depth, cur = [], 0, []
    for ch in text:
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        if depth <= 0 and (ch == "," or ch.isspace()):
            if cur:
                out.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    if cur:
        out.append("".join(cur))
    return out


_ACTIONS_RE = re.compile(r"(?:^|[\s,])(actions?)\s*=")


def _split_line(text: str) -> tuple[list[str], str]:
    """(match/info tokens, action text) of one rule line."""
    m = _ACTIONS_RE.search(text)
    if not m:
        raise ValueError("must specify an action")
    return _split_top(text[: m.start(1)]), text[m.end() :].strip()


def _kv_split(text: str) -> list[tuple[str, str, str]]:
    """(key, value, delimiter) of each top-level action, split by ovs.flow's KV parser."""
    decoders = KVDecoders(default=lambda k, v: (k, v), default_free=lambda k: (k, True))
    parser = KVParser(text, decoders)
    try:
        parser.parse()
    except ParseError as exc:
        raise ValueError(f"cannot parse actions: {exc}") from None
    return [(kv.meta.kstring, kv.meta.vstring, kv.meta.delim) for kv in parser.kv()]


# --- match ------------------------------------------------------------------------------------


class _Match:
    """The match of one rule being parsed: storage slot -> (value, mask)."""

    def __init__(self):
        self.slots: dict[str, tuple[int, int]] = {}
        self.named: list[tuple[str, F.Field]] = []  # (name as written, field) for prereqs

    def set(self, slot: str, value: int, mask: int, merge: bool = False) -> None:
        if merge and slot in self.slots:
            v0, m0 = self.slots[slot]
            value, mask = (v0 & ~mask) | value, m0 | mask
        self.slots[slot] = (value & mask, mask)

    def get(self, slot: str) -> int | None:
        vm = self.slots.get(slot)
        return vm[0] if vm else None

    def add_token(self, name: str, value: str | None) -> None:
        if value is None:
            if name not in F.SHORTHANDS:
                raise ValueError(f"unknown keyword {name}")
            dl_type, proto = F.SHORTHANDS[name]
            self.set("dl_type", dl_type, 0xFFFF)
            if proto is not None:
                self.set("nw_proto", proto, 0xFF)
            return
        if name == "dl_vlan":
            vid = F.parse_int(value)
            if vid == 0xFFFF:  # OVS: match packets without a VLAN tag
                self.set("vlan_tci", 0, 0xFFFF)
            elif vid > 0xFFF:
                raise ValueError(f"{value}: invalid VLAN id")
            else:
                self.set("vlan_tci", 0x1000 | vid, 0x1FFF, merge=True)
            return
        if name == "dl_vlan_pcp":
            pcp = F.parse_int(value)
            if pcp > 7:
                raise ValueError(f"{value}: invalid VLAN priority")
            self.set("vlan_tci", 0x1000 | (pcp << 13), 0xF000, merge=True)
            return
        fld = F.FIELDS.get(name)
        if fld is None:
            raise ValueError(f"unknown keyword {name}")
        if value == "":
            raise ValueError(f"field {name} missing value")
        v, m = F.parse_value(fld, value)
        self.set(fld.storage, v, m, merge=fld.storage == "nw_tos")
        self.named.append((name, fld))

    # -- prerequisites --

    def _ct_valid(self) -> bool:
        """OVS is_ct_valid on a match: a bit implying a valid entry, or +trk-inv."""
        vm = self.slots.get("ct_state")
        if vm is None:
            return False
        value, mask = vm
        valid_bits = (
            K.CS_NEW
            | K.CS_ESTABLISHED
            | K.CS_RELATED
            | K.CS_REPLY_DIR
            | K.CS_SRC_NAT
            | K.CS_DST_NAT
        )
        return bool(value & valid_bits) or bool(
            value & K.CS_TRACKED and mask & K.CS_INVALID and not value & K.CS_INVALID
        )

    def prereq_ok(self, p: str) -> bool:
        dl_type, proto = self.get("dl_type"), self.get("nw_proto")
        ip_any = dl_type in (K.ETH_TYPE_IP, K.ETH_TYPE_IPV6)
        later = (self.get("nw_frag") or 0) & K.FRAG_LATER
        checks = {
            F.P_NONE: True,
            F.P_IPV4: dl_type == K.ETH_TYPE_IP,
            F.P_IPV6: dl_type == K.ETH_TYPE_IPV6,
            F.P_IP_ANY: ip_any,
            F.P_ARP: dl_type == K.ETH_TYPE_ARP,
            F.P_L4: ip_any
            and proto in (K.IPPROTO_TCP, K.IPPROTO_UDP, K.IPPROTO_SCTP)
            and not later,
            F.P_TCP: ip_any and proto == K.IPPROTO_TCP and not later,
            F.P_UDP: ip_any and proto == K.IPPROTO_UDP and not later,
            F.P_SCTP: ip_any and proto == K.IPPROTO_SCTP and not later,
            F.P_ICMP: dl_type == K.ETH_TYPE_IP and proto == K.IPPROTO_ICMP,
            F.P_ICMP6: dl_type == K.ETH_TYPE_IPV6 and proto == K.IPPROTO_ICMPV6,
            F.P_CT: self._ct_valid(),
            F.P_CT_IPV4: self._ct_valid() and dl_type == K.ETH_TYPE_IP,
            F.P_CT_IPV6: self._ct_valid() and dl_type == K.ETH_TYPE_IPV6,
            F.P_CT_L4: self._ct_valid() and "ct_nw_proto" in self.slots,
        }
        return checks[p]

    def check_prerequisites(self) -> None:
        for name, fld in self.named:
            if fld.storage in self.slots and not self.prereq_ok(fld.prereq):
                raise ValueError(f"{name} requires {F.PREREQ_TEXT[fld.prereq]} in the match")

    # -- output --

    def columns(self) -> list[tuple[int, int, int]]:
        out = []
        for slot, (value, mask) in self.slots.items():
            out.extend(F.split_columns(_STORAGE[slot], value, mask))
        return sorted(out)

    def format(self) -> str:
        """OVS match_format order and spelling (lib/match.c), without the priority."""
        s = self.slots
        out: list[str] = []

        def put(name, text):
            out.append(f"{name}={text}")

        if "ct_state" in s:
            v, m = s["ct_state"]
            put("ct_state", F.format_flags_masked(v, m, 0xFF, F.CT_STATE_FLAG_NAMES))
        if "ct_zone" in s:
            put("ct_zone", F.format_dec_or_hex_masked(*s["ct_zone"], 0xFFFF))
        if "ct_mark" in s:
            put("ct_mark", F.format_hex_masked(*s["ct_mark"], 0xFFFFFFFF))
        if "ct_label" in s:
            v, m = s["ct_label"]
            full = (1 << 128) - 1
            put("ct_label", f"{v:#x}" + ("" if m == full else f"/{m:#x}"))
        for name, fmt in (
            ("ct_nw_src", F.format_ipv4),
            ("ct_ipv6_src", F.format_ipv6),
            ("ct_nw_dst", F.format_ipv4),
            ("ct_ipv6_dst", F.format_ipv6),
        ):
            if name in s:
                put(name, fmt(*s[name]))
        if "ct_nw_proto" in s:
            put("ct_nw_proto", str(s["ct_nw_proto"][0]))
            for name in ("ct_tp_src", "ct_tp_dst"):
                if name in s:
                    put(name, F.format_dec_or_hex_masked(*s[name], 0xFFFF))
        dl_type, proto = self.get("dl_type"), self.get("nw_proto")
        skip_type = skip_proto = False
        if dl_type is not None:
            skip_type = True
            names = {
                K.ETH_TYPE_IP: ("ip", {1: "icmp", 6: "tcp", 17: "udp", 132: "sctp"}),
                K.ETH_TYPE_IPV6: ("ipv6", {58: "icmp6", 6: "tcp6", 17: "udp6", 132: "sctp6"}),
            }
            if dl_type in names:
                base, by_proto = names[dl_type]
                if proto is not None and proto in by_proto:
                    out.append(by_proto[proto])
                    skip_proto = True
                else:
                    out.append(base)
            elif dl_type == K.ETH_TYPE_ARP:
                out.append("arp")
            else:
                skip_type = False
        for i in range(16):
            if f"reg{i}" in s:
                put(f"reg{i}", F.format_hex_masked(*s[f"reg{i}"], 0xFFFFFFFF))
        if "metadata" in s:
            put("metadata", F.format_hex_masked(*s["metadata"], (1 << 64) - 1))
        if "in_port" in s:
            put("in_port", str(s["in_port"][0]))
        if "vlan_tci" in s:
            out.extend(_format_vlan(*s["vlan_tci"]))
        for name in ("dl_src", "dl_dst"):
            if name in s:
                v, m = s[name]
                text = F.format_eth(v) + ("" if m == (1 << 48) - 1 else "/" + F.format_eth(m))
                put(name, text)
        if not skip_type and dl_type is not None:
            put("dl_type", f"0x{dl_type:04x}")
        if dl_type == K.ETH_TYPE_IPV6:
            for name in ("ipv6_src", "ipv6_dst"):
                if name in s:
                    put(name, F.format_ipv6(*s[name]))
            if "ipv6_label" in s:
                v, m = s["ipv6_label"]
                put("ipv6_label", f"0x{v:05x}" + ("" if m == 0xFFFFF else f"/0x{m:05x}"))
        else:
            arp = dl_type == K.ETH_TYPE_ARP
            for name, arp_name in (("nw_src", "arp_spa"), ("nw_dst", "arp_tpa")):
                if name in s:
                    put(arp_name if arp else name, F.format_ipv4(*s[name]))
        if not skip_proto and proto is not None:
            put("arp_op" if dl_type == K.ETH_TYPE_ARP else "nw_proto", str(proto))
        if "nw_tos" in s:
            v, m = s["nw_tos"]
            if m & 0xFC:
                put("nw_tos", str(v & 0xFC))
            if m & 0x03:
                put("nw_ecn", str(v & 0x03))
        if "nw_ttl" in s:
            put("nw_ttl", str(s["nw_ttl"][0]))
        if "nw_frag" in s:
            put("nw_frag", _format_frag(*s["nw_frag"]))
        icmp = (dl_type == K.ETH_TYPE_IP and proto == K.IPPROTO_ICMP) or (
            dl_type == K.ETH_TYPE_IPV6 and proto == K.IPPROTO_ICMPV6
        )
        for name, icmp_name in (("tp_src", "icmp_type"), ("tp_dst", "icmp_code")):
            if name in s:
                v, m = s[name]
                if icmp:  # OVS stores icmp_type/code with a full 16-bit mask
                    m = 0xFFFF
                put(icmp_name if icmp else name, F.format_dec_or_hex_masked(v, m, 0xFFFF))
        if "tcp_flags" in s and proto == K.IPPROTO_TCP:
            v, m = s["tcp_flags"]
            put("tcp_flags", F.format_flags_masked(v, m, 0xFFF, F.TCP_FLAG_NAMES))
        return ",".join(out)


def _format_vlan(value: int, mask: int) -> list[str]:
    vid_mask, pcp_mask, cfi = mask & 0x0FFF, mask & 0xE000, mask & 0x1000
    if (
        cfi
        and value & 0x1000
        and vid_mask in (0, 0x0FFF)
        and pcp_mask in (0, 0xE000)
        and (vid_mask or pcp_mask)
    ):
        out = []
        if vid_mask:
            out.append(f"dl_vlan={value & 0x0FFF}")
        if pcp_mask:
            out.append(f"dl_vlan_pcp={value >> 13}")
        return out
    if mask == 0xFFFF:
        return [f"vlan_tci=0x{value:04x}"]
    return [f"vlan_tci=0x{value:04x}/0x{mask:04x}"]


def _format_frag(value: int, mask: int) -> str:
    m = mask & (K.FRAG_ANY | K.FRAG_LATER)
    if m == K.FRAG_ANY | K.FRAG_LATER:
        if value & K.FRAG_ANY:
            return "later" if value & K.FRAG_LATER else "first"
        return "<error>" if value & K.FRAG_LATER else "no"
    if m == K.FRAG_ANY:
        return "yes" if value & K.FRAG_ANY else "no"
    return "later" if value & K.FRAG_LATER else "not_later"


# --- actions ------------------------------------------------------------------------------------


def _parse_table(text: str) -> int:
    t = F.parse_int(text)
    if t > 255:
        raise ValueError(f'unknown table "{text}"')
    return t


def _dst_ref_for_write(text: str, in_ct_exec: bool) -> F.FieldRef:
    ref = F.parse_field_ref(text)
    _check_writable(ref.field, in_ct_exec)
    return ref


def _check_writable(fld: F.Field, in_ct_exec: bool) -> None:
    if in_ct_exec:
        if fld.name not in F.CT_ONLY_WRITABLE:
            raise ValueError(f"ct action doesn't support nested modification of {fld.name}")
        return
    if fld.name in F.CT_ONLY_WRITABLE:
        raise ValueError("cannot set CT fields outside of ct action")
    if fld.name.startswith("ct_") or fld.name == "in_port":
        raise ValueError(f"{fld.name} is read-only")
    if not fld.writable:
        raise ValueError(f"writing {fld.name} is not supported")


def _parse_load(text: str, in_ct_exec: bool) -> SetField:
    value_text, arrow, dst_text = text.partition("->")
    if not arrow:
        raise ValueError(f"{text}: missing `->' in load")
    ref = _dst_ref_for_write(dst_text, in_ct_exec)
    value = F.parse_int(value_text)
    if value >> ref.nbits:
        raise ValueError(f"{text}: value {value:#x} does not fit into {ref.nbits} bits")
    return SetField(ref, value, (1 << ref.nbits) - 1)


def _parse_set_field(text: str, in_ct_exec: bool) -> SetField:
    value_text, arrow, dst_text = text.rpartition("->")
    if not arrow:
        raise ValueError(f"{text}: missing `->' in set_field")
    fld = F.lookup_field(dst_text.strip())
    if fld is None:
        raise ValueError(f"{dst_text}: unknown field `{dst_text}'")
    _check_writable(fld, in_ct_exec)
    value, mask = F.parse_value(fld, value_text)
    return SetField(F.field_ref_for(fld), value, mask)


def _parse_move(text: str) -> Move:
    src_text, arrow, dst_text = text.partition("->")
    if not arrow:
        raise ValueError(f"{text}: missing `->' in move")
    src = F.parse_field_ref(src_text)
    dst = F.parse_field_ref(dst_text)
    _check_writable(dst.field, False)
    if src.nbits != dst.nbits:
        raise ValueError(
            f"{text}: source field is {src.nbits} bits wide but destination is "
            f"{dst.nbits} bits wide"
        )
    return Move(src, dst)


_IPV4_RE = r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}"
_IPV6_RE = r"[0-9a-fA-F:.]+|\[[0-9a-fA-F:.]+\]"


def _nat_addr(text: str, family: int) -> int:
    import ipaddress

    text = text.strip("[]")
    try:
        addr = ipaddress.IPv4Address(text) if family == 4 else ipaddress.IPv6Address(text)
    except ValueError:
        raise ValueError("bad address") from None
    return int(addr)


def _parse_nat_range(text: str) -> dict:
    """ovs-ofctl str_to_nat_range: ADDR[-ADDR][:PORT[-PORT]], IPv6 optionally bracketed."""
    bad = f'invalid nat range "{text}"'
    out: dict = {"family": 0}
    rest = text
    for family, pattern in ((4, _IPV4_RE), (6, _IPV6_RE)):
        m = re.match(rf"({pattern})(?:-({pattern}))?", rest)
        if not m:
            continue
        try:
            lo = _nat_addr(m.group(1), family)
            hi = _nat_addr(m.group(2), family) if m.group(2) else None
        except ValueError:
            if family == 4 and not m.group(2):
                continue  # maybe an IPv6 address after all
            raise ValueError(bad) from None
        if hi is not None and hi < lo:
            raise ValueError(bad)
        out.update(family=family, min_addr=lo, max_addr=hi)
        rest = rest[m.end() :]
        break
    if out["family"] and rest.startswith(":"):
        m = re.match(r":(\d+)(?:-(\d+))?", rest)
        if not m:
            raise ValueError(bad)
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) else 0
        if lo > 0xFFFF or hi > 0xFFFF or (m.group(2) and hi < lo):
            raise ValueError(bad)
        out.update(min_port=lo, max_port=hi)
        rest = rest[m.end() :]
    if rest:
        raise ValueError(f'garbage ({rest}) after nat range "{text}"')
    return out


def _parse_nat(value: str) -> Nat:
    """ovs-ofctl parse_NAT."""
    if not value:
        return Nat()
    kind = None
    fields: dict = {}
    flags = {"persistent": False, "hash": False, "random": False}
    for k, v, _ in _kv_split(value):
        if k in ("src", "dst"):
            if kind is not None and kind != k:
                raise ValueError('May only specify one of "src" or "dst".')
            kind = k
            fields = _parse_nat_range(v) if v else {}
        elif k in flags:
            flags[k] = True
        else:
            raise ValueError(f'invalid key "{k}" in "nat" argument')
    if kind is None:
        raise ValueError('Flags allowed only with "src" or "dst".')
    if flags["hash"] and flags["random"]:
        raise ValueError('Both "hash" and "random" are not allowed.')
    return Nat(kind=kind, **fields, **flags)


def _parse_ct(text: str, match: _Match, allow_nat: bool = True) -> Ct:
    ct = Ct()
    for key, value, _delim in _kv_split(text) if text else []:
        k = key.lower()
        if k == "commit":
            ct.commit = True
        elif k == "force":
            ct.force = True
        elif k == "table":
            t = _parse_table(value)
            if t > MAX_TABLE:
                raise ValueError(f"ct(table={value}): table must be 0..{MAX_TABLE}")
            ct.table = t
        elif k == "zone":
            if re.fullmatch(r"\d+|0x[0-9a-fA-F]+", value):
                zone = F.parse_int(value)
                if zone > 0xFFFF:
                    raise ValueError(f"ct(zone={value}): zone must be 0..65535")
                ct.zone, ct.zone_field = zone, None
            else:
                ref = F.parse_field_ref(value)
                if ref.nbits != 16:
                    raise ValueError(f"ct(zone={value}): zone field must be 16 bits wide")
                ct.zone, ct.zone_field = None, ref
        elif k == "exec":
            for ek, ev, _ in _kv_split(value) if value else []:
                ekl = ek.lower()
                if ekl == "set_field":
                    ct.exec_.append(_parse_set_field(ev, in_ct_exec=True))
                elif ekl == "load":
                    ct.exec_.append(_parse_load(ev, in_ct_exec=True))
                else:
                    raise ValueError(f"ct action doesn't support nested action {ek}")
        elif k == "nat":
            ct.nat = _parse_nat("" if value in ("", True) else value)
        elif k == "alg":
            if value not in _CT_ALGS:
                raise ValueError(f"ct(alg={value}): unknown algorithm")
            ct.alg = value
        else:
            raise ValueError(f"ct: unknown argument {key}")
    dl_type = match.get("dl_type")
    if dl_type not in (K.ETH_TYPE_IP, K.ETH_TYPE_IPV6):
        raise ValueError("ct needs ip or ipv6 in the match")
    if ct.force and not ct.commit:
        raise ValueError("ct(force) needs commit")
    state = match.slots.get("ct_state")
    if ct.commit and state and state[0] & K.CS_INVALID:
        raise ValueError("ct(commit) cannot match ct_state=+inv")
    if ct.alg and match.get("nw_proto") != _CT_ALGS[ct.alg]:
        raise ValueError(f"ct(alg={ct.alg}) needs {'tcp' if ct.alg == 'ftp' else 'udp'}")
    nat_family = ct.nat.family if ct.nat is not None else 0
    if nat_family and nat_family != (4 if dl_type == K.ETH_TYPE_IP else 6):
        raise ValueError(f"ct({ct.nat.format()}): address family does not match the rule's match")
    return ct


def _parse_port(text: str):
    t = text.strip()
    if t.lower() == "in_port":
        return OutputInPort()
    if t.lower() == "local":
        return Output(OFPP_LOCAL)
    if t.lower() == "controller":
        return Controller()
    if not re.fullmatch(r"\d+|0x[0-9a-fA-F]+", t) or F.parse_int(t) > 0xFFFFFFFF:
        raise ValueError(f"{text}: output to unknown port")
    return Output(F.parse_int(t))


def _parse_controller(value: str, delim: str) -> Controller:
    c = Controller()
    if delim == ":" and value:
        c.max_len = F.parse_int(value)
    elif delim == "(" and value:
        for k, v, _ in _kv_split(value):
            if k == "reason":
                c.reason = v
            elif k == "max_len":
                c.max_len = F.parse_int(v)
            elif k == "id":
                c.controller_id = F.parse_int(v)
            elif k == "userdata":
                c.userdata = bytes.fromhex(v.replace(".", ""))
            else:
                raise ValueError(f"controller: unknown argument {k}")
    if c.max_len > OFPP_CONTROLLER_MAX_LEN:
        raise ValueError(f"controller: max_len {c.max_len} out of range")
    return c


def _parse_actions(text: str, table: int, match: _Match, allow_nat: bool) -> list:
    actions: list = []
    items = _kv_split(text) if text else []
    for key, value, delim in items:
        k = key.lower()
        if k == "drop":
            if len(items) > 1:
                raise ValueError('"drop" must not be accompanied by any other action')
            continue  # an explicit drop is the empty action list
        if k == "output":
            actions.append(_parse_port(value))
        elif re.fullmatch(r"\d+", k) or k in ("in_port", "local"):
            actions.append(_parse_port(key))
        elif k == "controller":
            actions.append(_parse_controller(value, delim))
        elif k == "ct":
            actions.append(_parse_ct(value if isinstance(value, str) else "", match, allow_nat))
        elif k == "ct_clear":
            actions.append(CtClear())
        elif k == "resubmit":
            if delim == "(":
                port_text, _, table_text = value.partition(",")
                port_text, table_text = port_text.strip(), table_text.strip()
                in_port = None
                if port_text and port_text.lower() != "in_port":
                    in_port = F.parse_int(port_text)
                rtable = _parse_table(table_text) if table_text else None
            else:
                in_port, rtable = (F.parse_int(value) if value else None), None
            if rtable == 255:
                rtable = None
            if in_port is None and rtable is None:
                raise ValueError('at least one "in_port" or "table" must be specified on resubmit')
            actions.append(Resubmit(in_port, rtable))
        elif k == "goto_table":
            target = _parse_table(value)
            if target <= table:
                raise ValueError(f"goto_table:{target} must name a table after {table}")
            if target > MAX_TABLE:
                raise ValueError(f'unknown table "{value}"')
            actions.append(GotoTable(target))
        elif k == "load":
            actions.append(_parse_load(value, in_ct_exec=False))
        elif k == "set_field":
            actions.append(_parse_set_field(value, in_ct_exec=False))
        elif k == "move":
            actions.append(_parse_move(value))
        elif k == "note":
            hexdigits = value.replace(".", "")
            if not re.fullmatch(r"([0-9a-fA-F]{2})*", hexdigits):
                raise ValueError(f"{value}: bad hex digit in note")
            actions.append(Note(bytes.fromhex(hexdigits)))
        elif k in _UNSUPPORTED_ACTIONS:
            raise ValueError(f"unsupported action {key}")
        else:
            raise ValueError(f"unknown action {key}")
    if actions and isinstance(actions[-1], GotoTable):
        pass
    elif any(isinstance(a, GotoTable) for a in actions):
        raise ValueError("goto_table must be the last action")
    return actions


# --- lines and files ------------------------------------------------------------------------------


def parse_rule(
    text: str, filename: str = "<rules>", line: int = 0, order: int = 0, allow_nat: bool = False
) -> Rule:
    """Parse one add-flows line (no comment, not blank). Raises ValueError with the reason."""
    tokens, action_text = _split_line(text)
    table, priority, cookie, idle, hard = 0, DEFAULT_PRIORITY, 0, 0, 0
    match = _Match()
    for tok in tokens:
        name, eq, value = tok.partition("=")
        name = name.strip()
        if not eq:
            value = None
        if name == "table":
            table = _parse_table(value or "")
            if table > MAX_TABLE:
                raise ValueError(f"table {table} is outside 0..{MAX_TABLE}")
        elif name == "priority":
            if not value or not value.isdigit() or int(value) > 0xFFFF:
                raise ValueError(f'invalid priority "{value}"')
            priority = int(value)
        elif name == "cookie":
            if value and "/" in value:
                raise ValueError("flow additions cannot use a cookie mask")
            cookie = F.parse_int(value or "")
            if cookie >> 64:
                raise ValueError(f"{value}: cookie too large")
        elif name in ("idle_timeout", "hard_timeout"):
            t = F.parse_int(value or "")
            if t > 0xFFFF:
                raise ValueError(f"{name}={value}: out of range")
            idle, hard = (t, hard) if name == "idle_timeout" else (idle, t)
        else:
            match.add_token(name, value)
    match.check_prerequisites()
    actions = _parse_actions(action_text, table, match, allow_nat)
    return Rule(
        table=table,
        priority=priority,
        cookie=cookie,
        match=match.columns(),
        actions=actions,
        match_text=match.format(),
        filename=filename,
        line=line,
        order=order,
        idle_timeout=idle,
        hard_timeout=hard,
    )


def parse_flows(text: str, filename: str = "<rules>", allow_nat: bool = False) -> list[Rule]:
    """Parse a whole add-flows file; the first bad line raises RuleError(reason, file, line).

    ``#`` starts a comment (to the end of the line); blank lines are skipped. A rule with the
    same table, priority and match as an earlier one replaces it, as in OVS. ``allow_nat``
    lets ``ct(nat)`` through (for tests of the parser; the engine does not implement NAT).
    """
    rules: list[Rule] = []
    # OVS: adding a flow with the same table, priority and match replaces the existing one
    # (a modify); the replacement keeps the earlier rule's place in the file order.
    index: dict[tuple, int] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        body = raw.split("#", 1)[0].strip()
        if not body:
            continue
        try:
            rule = parse_rule(body, filename, lineno, len(rules), allow_nat)
        except ValueError as exc:
            raise RuleError(str(exc), filename, lineno) from None
        identity = (rule.table, rule.priority, tuple(rule.match))
        if identity in index:
            rule.order = index[identity]
            rules[rule.order] = rule
        else:
            index[identity] = len(rules)
            rules.append(rule)
    return rules


def load_flows(path: str | os.PathLike, allow_nat: bool = False) -> list[Rule]:
    """Read and parse a flow file; a missing or unreadable file is an InputError."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read rule file: {exc}") from None
    return parse_flows(text, str(path), allow_nat)


__all__ = ["Rule", "parse_flows", "load_flows", "parse_rule", "DEFAULT_PRIORITY"]
