"""The match half of a rule line: ovs-ofctl match fields -> key columns and OVS's text.

What: :class:`MatchBuilder` collects the ``field=value[/mask]`` tokens of one rule (and the
protocol shorthands ``tcp``, ``ip6`` ...) per *storage* slot (``tcp_src`` and ``tp_src`` are
one; the last one written wins, as in ovs-ofctl), checks prerequisites, and gives the
``(key column, value, mask)`` triples and the canonical match text OVS prints.

Design: values are parsed by fields.py's per-field parsers; printing follows OVS's
``match_format`` order and spellings (vlan, frag, tcp_flags, icmp type/code).

Invariants: every stored value is already masked; a field whose prerequisite is missing is
rejected (ovs-ofctl drops it silently; see rules.py).
"""

from __future__ import annotations

from ctaccel.ofproto import field_text as FT
from ctaccel.ofproto import fields as F
from ctaccel.packet import key as K

ND_SOLICIT, ND_ADVERT = 135, 136

# Storage slot -> the Field whose columns it fills.
_STORAGE = {f.storage: f for f in F.FIELDS.values() if f.storage == f.name}


class MatchBuilder:
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
        if fld.name in ("icmp_type", "icmp_code"):
            m = 0xFFFF  # OVS sets all 16 bits of tp_src/tp_dst: "tcp,icmp_type=8" is tp_src=8
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
        arp = dl_type in (K.ETH_TYPE_ARP, K.ETH_TYPE_RARP)
        later = (self.get("nw_frag") or 0) & K.FRAG_LATER
        ports = ip_any and proto in (K.IPPROTO_TCP, K.IPPROTO_UDP, K.IPPROTO_SCTP) and not later
        icmp = (dl_type == K.ETH_TYPE_IP and proto == K.IPPROTO_ICMP) or (
            dl_type == K.ETH_TYPE_IPV6 and proto == K.IPPROTO_ICMPV6
        )
        nd = self._nd_type()
        checks = {
            F.P_NONE: True,
            F.P_IPV6: dl_type == K.ETH_TYPE_IPV6,
            F.P_IP_ANY: ip_any,
            F.P_NW_ADDR: dl_type == K.ETH_TYPE_IP or arp,
            F.P_NW_PROTO: ip_any or arp,
            F.P_TP: ports or icmp,
            F.P_TCP: ip_any and proto == K.IPPROTO_TCP and not later,
            F.P_ARP_SHA: arp or nd == ND_SOLICIT,
            F.P_ARP_THA: arp or nd == ND_ADVERT,
            F.P_ND: nd in (ND_SOLICIT, ND_ADVERT),
            F.P_CT: self._ct_valid(),
            F.P_CT_IPV4: self._ct_valid() and dl_type == K.ETH_TYPE_IP,
            F.P_CT_IPV6: self._ct_valid() and dl_type == K.ETH_TYPE_IPV6,
            F.P_CT_L4: self._ct_valid() and "ct_nw_proto" in self.slots,
        }
        return checks[p]

    def _nd_type(self) -> int | None:
        """The neighbor discovery type (135, 136) this match is exactly about, else None:
        icmp6 with that icmp_type and an icmp_code of 0 (or none), as OVS's is_nd."""
        if self.get("dl_type") != K.ETH_TYPE_IPV6 or self.get("nw_proto") != K.IPPROTO_ICMPV6:
            return None
        kind, code = self.slots.get("tp_src"), self.slots.get("tp_dst")
        if kind is None or code is not None and code[0] != 0:
            return None
        return kind[0] if kind[0] in (ND_SOLICIT, ND_ADVERT) else None

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

        if "conj_id" in s:
            put("conj_id", str(s["conj_id"][0]))
        if "ct_state" in s:
            v, m = s["ct_state"]
            put("ct_state", FT.format_flags_masked(v, m, 0xFF, F.CT_STATE_FLAG_NAMES))
        if "ct_zone" in s:
            put("ct_zone", FT.format_dec_or_hex_masked(*s["ct_zone"], 0xFFFF))
        if "ct_mark" in s:
            put("ct_mark", FT.format_hex_masked(*s["ct_mark"], 0xFFFFFFFF))
        if "ct_label" in s:
            v, m = s["ct_label"]
            full = (1 << 128) - 1
            put("ct_label", f"{v:#x}" + ("" if m == full else f"/{m:#x}"))
        for name, fmt in (
            ("ct_nw_src", FT.format_ipv4),
            ("ct_ipv6_src", FT.format_ipv6),
            ("ct_nw_dst", FT.format_ipv4),
            ("ct_ipv6_dst", FT.format_ipv6),
        ):
            if name in s:
                put(name, fmt(*s[name]))
        if "ct_nw_proto" in s:
            put("ct_nw_proto", str(s["ct_nw_proto"][0]))
            for name in ("ct_tp_src", "ct_tp_dst"):
                if name in s:
                    put(name, FT.format_dec_or_hex_masked(*s[name], 0xFFFF))
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
            elif dl_type == K.ETH_TYPE_RARP:
                out.append("rarp")
            else:
                skip_type = False
        for i in range(16):
            if f"reg{i}" in s:
                put(f"reg{i}", FT.format_hex_masked(*s[f"reg{i}"], 0xFFFFFFFF))
        if "metadata" in s:
            put("metadata", FT.format_hex_masked(*s["metadata"], (1 << 64) - 1))
        if "in_port" in s:
            put("in_port", str(s["in_port"][0]))
        if "vlan_tci" in s:
            out.extend(_format_vlan(*s["vlan_tci"]))
        for name in ("dl_src", "dl_dst"):
            if name in s:
                put(name, _format_eth_masked(*s[name]))
        if not skip_type and dl_type is not None:
            put("dl_type", f"0x{dl_type:04x}")
        if dl_type == K.ETH_TYPE_IPV6:
            for name in ("ipv6_src", "ipv6_dst"):
                if name in s:
                    put(name, FT.format_ipv6(*s[name]))
            if "ipv6_label" in s:
                v, m = s["ipv6_label"]
                put("ipv6_label", f"0x{v:05x}" + ("" if m == 0xFFFFF else f"/0x{m:05x}"))
        else:
            arp = dl_type in (K.ETH_TYPE_ARP, K.ETH_TYPE_RARP)
            for name, arp_name in (("nw_src", "arp_spa"), ("nw_dst", "arp_tpa")):
                if name in s:
                    put(arp_name if arp else name, FT.format_ipv4(*s[name]))
        arp = dl_type in (K.ETH_TYPE_ARP, K.ETH_TYPE_RARP)
        if not skip_proto and proto is not None:
            put("arp_op" if arp else "nw_proto", str(proto))
        if arp:
            for name in ("arp_sha", "arp_tha"):
                if name in s:
                    put(name, _format_eth_masked(*s[name]))
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
                put(icmp_name if icmp else name, FT.format_dec_or_hex_masked(v, m, 0xFFFF))
        if dl_type == K.ETH_TYPE_IPV6:
            if "nd_target" in s:
                put("nd_target", FT.format_ipv6(*s["nd_target"]))
            for name, nd_name in (("arp_sha", "nd_sll"), ("arp_tha", "nd_tll")):
                if name in s:
                    put(nd_name, _format_eth_masked(*s[name]))
        if "tcp_flags" in s and proto == K.IPPROTO_TCP:
            v, m = s["tcp_flags"]
            put("tcp_flags", FT.format_flags_masked(v, m, 0xFFF, F.TCP_FLAG_NAMES))
        return ",".join(out)


def _format_eth_masked(value: int, mask: int) -> str:
    return FT.format_eth(value) + ("" if mask == (1 << 48) - 1 else "/" + FT.format_eth(mask))


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
