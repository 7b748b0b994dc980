"""The action half of a rule line: ovs-ofctl action text -> action objects (actions.py).

What: :func:`parse_actions` decodes an ``actions=`` list as ovs-ofctl does: outputs, ports,
controller, ``ct(...)`` with ``exec`` and ``nat``, ``ct_clear``, resubmit, goto_table, load,
set_field, move, note, drop; unknown and unsupported actions are refused with the reason.

Design: the list is split with the ``ovs.flow`` KV parser (the one ovs-ofctl's Python
bindings use for dump-flows) and each action decoded here, because its value decoders are
lossy for our needs (``controller`` becomes ``output``, ct exec loses the written text).
``ct(...,nat(...))`` is checked as ovs-ofctl does (str_to_nat_range, parse_NAT, check_NAT).

Invariants: writes target writable fields only (``ct(exec)``: ct_mark/ct_label only);
``goto_table`` is last and goes forward; every error is a ValueError with ovs-ofctl's reason.
"""

from __future__ import annotations

import re

from ovs.flow.kv import KVDecoders, KVParser, ParseError

from ctaccel.ofproto import fields as F
from ctaccel.ofproto.actions import (
    OFPP_CONTROLLER_MAX_LEN,
    OFPP_LOCAL,
    Conjunction,
    Controller,
    Ct,
    CtClear,
    DecTtl,
    GotoTable,
    Move,
    Nat,
    Normal,
    Note,
    Output,
    OutputInPort,
    PushVlan,
    Resubmit,
    SetEth,
    SetField,
    SetTos,
    SetVlanPcp,
    SetVlanVid,
    StripVlan,
)
from ctaccel.ofproto.rule_match import MatchBuilder
from ctaccel.packet import key as K

MAX_TABLE = 254  # 255 means "no table" in OpenFlow

# Real OVS actions this engine does not implement (a clearer error than "unknown action").
_UNSUPPORTED_ACTIONS = frozenset(
    "flood all "
    "mod_nw_src mod_nw_dst mod_nw_ecn mod_tp_src mod_tp_dst "
    "set_tunnel set_queue pop_queue enqueue learn group meter clone sample "
    "multipath bundle bundle_load output_reg push_mpls pop_mpls fin_timeout exit "
    "write_actions clear_actions write_metadata check_pkt_larger dec_nsh_ttl encap decap "
    "set_mpls_label set_mpls_tc set_mpls_ttl dec_mpls_ttl stack push pop".split()
)
_CT_ALGS = {"ftp": K.IPPROTO_TCP, "tftp": K.IPPROTO_UDP}


def _kv_split(text: str) -> list[tuple[str, str, str]]:
    """(key, value, delimiter) of each top-level action, split by ovs.flow's KV parser."""
    decoders = KVDecoders(default=lambda k, v: (k, v), default_free=lambda k: (k, True))
    # OVS reads a tab or CR as a blank (its delimiters are ", \t\r\n"); ovs.flow's parser
    # loops for ever, growing, on either (found by ctaccel fuzz)
    parser = KVParser(text.replace("\t", " ").replace("\r", " "), decoders)
    try:
        parser.parse()
    except ParseError as exc:
        raise ValueError(f"cannot parse actions: {exc}") from None
    return [(kv.meta.kstring, kv.meta.vstring, kv.meta.delim) for kv in parser.kv()]


def parse_table(text: str) -> int:
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


def _parse_ct(text: str, match: MatchBuilder, allow_nat: bool = True) -> Ct:
    ct = Ct()
    for key, value, _delim in _kv_split(text) if text else []:
        k = key.lower()
        if k == "commit":
            ct.commit = True
        elif k == "force":
            ct.force = True
        elif k == "table":
            t = parse_table(value)
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


_MAC_AT_START = re.compile(r"\s*" + ":".join([r"([0-9a-fA-F]+)"] * 6))


def _parse_mac(value) -> int:
    """A MAC address as ovs-ofctl's str_to_mac reads one: six hex bytes at the start (text
    after them is ignored, as its scanf does)."""
    m = _MAC_AT_START.match(value if isinstance(value, str) else "")
    if not m:
        raise ValueError(f"invalid mac address {value if isinstance(value, str) else ''}")
    mac = 0
    for part in m.groups():
        mac = (mac << 8) | (int(part, 16) & 0xFF)
    return mac


def _parse_tos(value) -> int:
    """``mod_nw_tos``'s value as ovs-ofctl checks it: 0..255, a multiple of 4 (DSCP only)."""
    text = value if isinstance(value, str) else ""
    try:
        tos = F.parse_int(text)
    except ValueError:
        raise ValueError(f'invalid TOS "{text}"') from None
    if tos > 255:
        raise ValueError(f'invalid TOS "{text}"')
    if tos & 3:
        raise ValueError(f"{text}: not a valid TOS")
    return tos


def _parse_conjunction(value: str) -> Conjunction:
    """``conjunction(id, k/n)``, checked as ovs-ofctl checks it."""
    m = re.fullmatch(
        r"\s*(\w+)\s*,\s*(\w+)\s*/\s*(\w+)\s*", value if isinstance(value, str) else ""
    )
    if not m:
        raise ValueError(f'"{value}": syntax error in conjunction (expected "id, k/n")')
    cid, k, n = (F.parse_int(x) for x in m.groups())
    if cid >> 32:
        raise ValueError(f"{m.group(1)}: conjunction id too large")
    if n < 2:
        raise ValueError("conjunction must have at least 2 clauses")
    if n > 64:
        raise ValueError("conjunction must have at most 64 clauses")
    if k < 1:
        raise ValueError("clause index must be positive")
    if k > n:
        raise ValueError("clause index must be less than or equal to number of clauses")
    return Conjunction(cid, k, n)


def _check_conjunctions(actions: list, names: list[str]) -> None:
    """A rule with conjunction actions may carry notes, nothing else (ovs-ofctl's rule)."""
    if not any(isinstance(a, Conjunction) for a in actions):
        return
    for a, name in zip(actions, names, strict=True):
        if isinstance(a, (Output, OutputInPort)):
            name = "output"
        if not isinstance(a, (Conjunction, Note)):
            raise ValueError(
                '"conjunction" actions may be used along with "note" but not any other kind '
                f'of action (such as the "{name}" action used here)'
            )


def parse_actions(text: str, table: int, match: MatchBuilder, allow_nat: bool) -> list:
    """The actions of a rule in table ``table`` whose match is ``match`` (ct needs ip)."""
    actions: list = []
    names: list[str] = []  # each action's keyword, for messages
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
                rtable = parse_table(table_text) if table_text else None
            else:
                in_port, rtable = (F.parse_int(value) if value else None), None
            if rtable == 255:
                rtable = None
            if in_port is None and rtable is None:
                raise ValueError('at least one "in_port" or "table" must be specified on resubmit')
            actions.append(Resubmit(in_port, rtable))
        elif k == "goto_table":
            target = parse_table(value)
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
        elif k == "conjunction":
            actions.append(_parse_conjunction(value))
        elif k in ("mod_dl_src", "mod_dl_dst"):
            actions.append(SetEth(k == "mod_dl_dst", _parse_mac(value)))
        elif k == "mod_nw_tos":
            actions.append(SetTos(_parse_tos(value)))
        elif k == "dec_ttl":
            ids = value.split(",") if delim == "(" and isinstance(value, str) else []
            actions.append(DecTtl(tuple(F.parse_int(i.strip()) for i in ids if i.strip())))
        elif k in ("strip_vlan", "pop_vlan"):
            actions.append(StripVlan())
        elif k == "push_vlan":
            tpid = F.parse_int(value)
            if tpid not in (K.ETH_TYPE_VLAN, K.ETH_TYPE_QINQ):
                raise ValueError(f"{value}: not a valid VLAN ethertype")
            actions.append(PushVlan(tpid))
        elif k == "mod_vlan_vid":
            vid = F.parse_int(value)
            if not 0 <= vid <= 0xFFF:
                raise ValueError(f"{value}: not a valid VLAN VID")
            actions.append(SetVlanVid(vid))
        elif k == "mod_vlan_pcp":
            pcp = F.parse_int(value)
            if not 0 <= pcp <= 7:
                raise ValueError(f"{value}: not a valid VLAN PCP")
            actions.append(SetVlanPcp(pcp))
        elif k == "normal":
            actions.append(Normal())
        elif k in _UNSUPPORTED_ACTIONS:
            raise ValueError(f"unsupported action {key}")
        else:
            raise ValueError(f"unknown action {key}")
        names.append(k)
    _check_conjunctions(actions, names)
    if actions and isinstance(actions[-1], GotoTable):
        pass
    elif any(isinstance(a, GotoTable) for a in actions):
        raise ValueError("goto_table must be the last action")
    return actions
