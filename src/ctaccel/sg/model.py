"""Security groups and ports in Neutron's API JSON: loading, validation, normalization.

What: ``parse_groups`` reads ``{"security_groups": [...], "address_groups": [...]}``,
``parse_ports`` reads ``{"ports": [...]}`` (each port with the ``ofport`` and ``local_vlan``
the OVS agent learns locally); both return frozen objects the compiler takes.

Design: validation follows what Neutron's API accepts (extensions/securitygroup.py's
converters and SecurityGroupDbMixin's rule checks) and the values are normalized as the API
stores them: protocol names lower-cased, ``"any"`` -> any, numbers as numbers, the legacy
IPv6 ICMP spellings (``icmp``, ``icmpv6``, ``1``) -> 58, a full port range 1-65535 -> no
range, ``remote_ip_prefix`` -> its network (``normalized_cidr``). Keys this module does not
know (name, description, project_id, ...) are ignored: real API dumps carry them.

Invariants: a malformed file raises one ``ConfigError`` naming the file, the object (with its
id when it has one) and the field, and nothing of the file is used; every id that a rule or a
port names exists; ids, ofports and rules are unique.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from dataclasses import dataclass

from ctaccel.errors import ConfigError

DIRECTIONS = ("ingress", "egress")
ETHERTYPES = ("IPv4", "IPv6")
# IANA protocol numbers of the names Neutron's API accepts (neutron_lib IP_PROTOCOL_MAP)
PROTOCOL_NUMBERS = {
    "ah": 51, "dccp": 33, "egp": 8, "esp": 50, "gre": 47, "hopopt": 0, "icmp": 1, "igmp": 2,
    "ip": 0, "ipip": 4, "ipv6-encap": 41, "ipv6-frag": 44, "ipv6-icmp": 58, "icmpv6": 58,
    "ipv6-nonxt": 59, "ipv6-opts": 60, "ipv6-route": 43, "ospf": 89, "pgm": 113, "rsvp": 46,
    "sctp": 132, "tcp": 6, "udp": 17, "udplite": 136, "vrrp": 112,
}  # fmt: skip
ICMP_NUMBERS = (1, 58)
PORT_PROTOCOLS = (6, 17, 33, 132, 136)  # tcp udp dccp sctp udplite: the API checks their ports
IPV6_ONLY = ("ipv6-encap", "ipv6-frag", "ipv6-icmp", "icmpv6", "ipv6-nonxt", "ipv6-opts",
             "ipv6-route", "41", "44", "58", "59", "60", "43")  # fmt: skip
_MAC = re.compile(r"^[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}$")
MAX_OFPORT = 0xFEFF  # OpenFlow physical ports end below 0xff00


@dataclass(frozen=True)
class SgRule:
    """One security group rule, normalized. ``protocol`` is an IP protocol number or None
    (any); for ICMP, ``port_range_min``/``max`` are type and code."""

    direction: str
    ethertype: str
    protocol: int | None
    port_range_min: int | None
    port_range_max: int | None
    remote_ip_prefix: str | None  # network form (Neutron's normalized_cidr)
    remote_group_id: str | None
    remote_address_group_id: str | None

    @property
    def remote_id(self) -> str | None:
        return self.remote_group_id or self.remote_address_group_id


@dataclass(frozen=True)
class SecurityGroup:
    id: str
    stateful: bool
    rules: tuple[SgRule, ...]


@dataclass(frozen=True)
class AddressGroup:
    id: str
    addresses: tuple[str, ...]  # CIDRs as written


@dataclass(frozen=True)
class Groups:
    security_groups: tuple[SecurityGroup, ...]
    address_groups: tuple[AddressGroup, ...] = ()

    def group(self, sg_id: str) -> SecurityGroup:
        return next(sg for sg in self.security_groups if sg.id == sg_id)


@dataclass(frozen=True)
class Port:
    id: str
    mac_address: str  # lower case, colon separated
    fixed_ips: tuple[str, ...]
    allowed_address_pairs: tuple[tuple[str, str], ...]  # (IP or CIDR as written, MAC)
    security_groups: tuple[str, ...]
    port_security_enabled: bool
    ofport: int
    local_vlan: int


class _Where:
    """Where a value sits, for the error message: file, object path, field."""

    def __init__(self, filename: str, path: str = ""):
        self.filename = filename
        self.path = path

    def at(self, part: str) -> _Where:
        return _Where(self.filename, f"{self.path} {part}".strip())

    def fail(self, field: str, reason: str) -> ConfigError:
        return ConfigError(reason, self.filename, self.path, field)


def _show(value) -> str:
    return json.dumps(value)


def _load_json(text: str, filename: str, top_key: str) -> dict:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"line {exc.lineno} col {exc.colno}: invalid JSON: {exc.msg}",
                          filename) from None  # fmt: skip
    if not isinstance(data, dict) or not isinstance(data.get(top_key), list):
        raise ConfigError(f'expected an object with a "{top_key}" list', filename)
    return data


def _object(item, where: _Where) -> dict:
    if not isinstance(item, dict):
        raise where.fail("", f"must be an object, got {_show(item)}")
    return item


def _string(obj: dict, key: str, where: _Where, required: bool = True) -> str | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise where.fail(key, "missing")
        return None
    if not isinstance(value, str) or not value:
        raise where.fail(key, f"must be a non-empty string, got {_show(value)}")
    return value


def _bool(obj: dict, key: str, where: _Where, default: bool) -> bool:
    value = obj.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise where.fail(key, f"must be true or false, got {_show(value)}")
    return value


def _int(obj: dict, key: str, where: _Where, lo: int, hi: int, required: bool) -> int | None:
    """An integer in [lo, hi]; digit strings count (the API converts them)."""
    value = obj.get(key)
    if value is None:
        if required:
            raise where.fail(key, "missing")
        return None
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise where.fail(key, f"must be an integer {lo}-{hi}, got {_show(obj.get(key))}")
    return value


def _list(obj: dict, key: str, where: _Where) -> list:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise where.fail(key, f"must be a list, got {_show(value)}")
    return value


def _mac(value, where: _Where, field: str) -> str:
    if not isinstance(value, str) or not _MAC.match(value):
        raise where.fail(field, f"must be a MAC address like fa:16:3e:00:00:01, got {_show(value)}")
    return value.lower().replace("-", ":")


def _network(value, where: _Where, field: str, allow_prefix: bool):
    """An ipaddress network (a bare address is a /32 or /128)."""
    if not isinstance(value, str):
        raise where.fail(field, f"must be an IP {'prefix' if allow_prefix else 'address'}, "
                                f"got {_show(value)}")  # fmt: skip
    if not allow_prefix and "/" in value:
        raise where.fail(
            field, f"must be an IP address without a prefix length, got {_show(value)}"
        )
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        what = "an IPv4 or IPv6 prefix" if allow_prefix else "an IPv4 or IPv6 address"
        raise where.fail(field, f"must be {what}, got {_show(value)}") from None


def _protocol(rule: dict, ethertype: str, where: _Where) -> int | None:
    """The API's convert_protocol, then the IPv6 ICMP canonical form; a number or None."""
    value = rule.get("protocol")
    if value is None or value == "any":
        return None
    if isinstance(value, bool):
        value = None  # falls through to the error below
    elif isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        number = int(value)
        if 0 <= number <= 255:
            if ethertype == "IPv4" and str(number) in IPV6_ONLY:
                raise where.fail("protocol", f"{number} is an IPv6 protocol, not allowed "
                                             f"with ethertype IPv4")  # fmt: skip
            return 58 if ethertype == "IPv6" and number == 1 else number
    elif isinstance(value, str) and value.lower() in PROTOCOL_NUMBERS:
        name = value.lower()
        if ethertype == "IPv4" and name in IPV6_ONLY:
            raise where.fail("protocol", f'"{name}" is an IPv6 protocol, not allowed with '
                                         f"ethertype IPv4")  # fmt: skip
        if ethertype == "IPv6" and name == "icmp":
            return 58
        return PROTOCOL_NUMBERS[name]
    raise where.fail("protocol", "must be a protocol name (tcp, udp, icmp, ipv6-icmp, sctp, "
                                 f"...), a number 0-255 or null, got {_show(rule.get('protocol'))}")  # fmt: skip


def _ports(rule: dict, protocol: int | None, where: _Where) -> tuple[int | None, int | None]:
    """port_range_min/max as the API checks them (for ICMP: type and code)."""
    lo = _int(rule, "port_range_min", where, 0, 65535, False)
    hi = _int(rule, "port_range_max", where, 0, 65535, False)
    if lo == 1 and hi == 65535:
        return None, None  # the API stores the full range as no range
    if lo is None and hi is None:
        return None, None
    if protocol is None:
        raise where.fail("port_range_min" if lo is not None else "port_range_max",
                         "a port range needs a protocol")  # fmt: skip
    if protocol in PORT_PROTOCOLS:
        for key, v in (("port_range_min", lo), ("port_range_max", hi)):
            if v is None:
                raise where.fail(key, "missing (a port range needs both ends)")
            if v == 0:
                raise where.fail(key, "must be an integer 1-65535, got 0")
        if lo > hi:
            raise where.fail("port_range_min", f"must not exceed port_range_max ({lo} > {hi})")
        return lo, hi
    if protocol in ICMP_NUMBERS:
        for key, v, what in (("port_range_min", lo, "type"), ("port_range_max", hi, "code")):
            if v is not None and v > 255:
                raise where.fail(key, f"must be an ICMP {what} 0-255, got {v}")
        if lo is None:
            raise where.fail("port_range_min", "missing: an ICMP code needs an ICMP type")
        return lo, hi
    raise where.fail("port_range_min" if lo is not None else "port_range_max",
                     f"protocol {protocol} has no ports (only tcp, udp, dccp, sctp, udplite "
                     "and ICMP types/codes)")  # fmt: skip


def _rule(raw, where: _Where) -> SgRule:
    rule = _object(raw, where)
    direction = rule.get("direction")
    if direction is None:
        raise where.fail("direction", "missing")
    if direction not in DIRECTIONS:
        raise where.fail("direction", f"must be ingress or egress, got {_show(direction)}")
    ethertype = rule.get("ethertype", "IPv4")
    names = {e.lower(): e for e in ETHERTYPES}
    if not isinstance(ethertype, str) or ethertype.lower() not in names:
        raise where.fail("ethertype", f"must be IPv4 or IPv6, got {_show(ethertype)}")
    ethertype = names[ethertype.lower()]
    protocol = _protocol(rule, ethertype, where)
    lo, hi = _ports(rule, protocol, where)
    prefix = None
    if rule.get("remote_ip_prefix") is not None:
        net = _network(rule["remote_ip_prefix"], where, "remote_ip_prefix", True)
        if f"IPv{net.version}" != ethertype:
            raise where.fail("remote_ip_prefix", f"{_show(rule['remote_ip_prefix'])} is not an "
                                                 f"{ethertype} prefix")  # fmt: skip
        prefix = str(net)
    group = _string(rule, "remote_group_id", where, required=False)
    address_group = _string(rule, "remote_address_group_id", where, required=False)
    remotes = [k for k, v in (("remote_ip_prefix", prefix), ("remote_group_id", group),
                              ("remote_address_group_id", address_group)) if v]  # fmt: skip
    if len(remotes) > 1:
        raise where.fail(remotes[1], f"only one of {', '.join(remotes)} may be given")
    return SgRule(direction, ethertype, protocol, lo, hi, prefix, group, address_group)


def _address_group(raw, where: _Where) -> AddressGroup:
    obj = _object(raw, where)
    ag_id = _string(obj, "id", where)
    where = _Where(where.filename, f"{where.path} (id {ag_id})")
    addresses = []
    for i, addr in enumerate(_list(obj, "addresses", where)):
        _network(addr, where, f"addresses[{i}]", True)
        addresses.append(addr)
    return AddressGroup(ag_id, tuple(addresses))


def _group(raw, where: _Where) -> SecurityGroup:
    obj = _object(raw, where)
    sg_id = _string(obj, "id", where)
    where = _Where(where.filename, f"{where.path} (id {sg_id})")
    stateful = _bool(obj, "stateful", where, True)
    rules: list[SgRule] = []
    for i, raw_rule in enumerate(_list(obj, "security_group_rules", where)):
        rule_where = where.at(f"security_group_rules[{i}]")
        rule = _rule(raw_rule, rule_where)
        if rule in rules:
            raise rule_where.fail("", f"duplicate of security_group_rules[{rules.index(rule)}]")
        rules.append(rule)
    return SecurityGroup(sg_id, stateful, tuple(rules))


def _unique(ids: list[str], where_of, kind: str) -> None:
    seen: dict[str, int] = {}
    for i, obj_id in enumerate(ids):
        if obj_id in seen:
            raise where_of(i).fail("id", f"duplicate {kind} id {_show(obj_id)} "
                                         f"(also [{seen[obj_id]}])")  # fmt: skip
        seen[obj_id] = i


def parse_groups(text: str, filename: str = "<groups>") -> Groups:
    """Security groups (and address groups) from Neutron API JSON; ConfigError if malformed."""
    data = _load_json(text, filename, "security_groups")
    top = _Where(filename)
    groups = [_group(g, top.at(f"security_groups[{i}]"))
              for i, g in enumerate(data["security_groups"])]  # fmt: skip
    ags = [_address_group(a, top.at(f"address_groups[{i}]"))
           for i, a in enumerate(_list(data, "address_groups", top))]  # fmt: skip
    _unique([g.id for g in groups] + [a.id for a in ags],
            lambda i: top.at(f"security_groups[{i}]" if i < len(groups)
                             else f"address_groups[{i - len(groups)}]"), "group")  # fmt: skip
    sg_ids = {g.id for g in groups}
    ag_ids = {a.id for a in ags}
    for i, g in enumerate(groups):
        for j, rule in enumerate(g.rules):
            where = top.at(f"security_groups[{i}] (id {g.id}) security_group_rules[{j}]")
            if rule.remote_group_id and rule.remote_group_id not in sg_ids:
                raise where.fail("remote_group_id", f"names no security group in this file: "
                                                    f"{_show(rule.remote_group_id)}")  # fmt: skip
            if rule.remote_address_group_id and rule.remote_address_group_id not in ag_ids:
                raise where.fail("remote_address_group_id", "names no address group in this "
                                 f"file: {_show(rule.remote_address_group_id)}")  # fmt: skip
    return Groups(tuple(groups), tuple(ags))


def _port(raw, where: _Where, groups: Groups) -> Port:
    obj = _object(raw, where)
    port_id = _string(obj, "id", where)
    where = _Where(where.filename, f"{where.path} (id {port_id})")
    mac = _mac(obj.get("mac_address"), where, "mac_address")
    fixed = []
    for i, item in enumerate(_list(obj, "fixed_ips", where)):
        entry = _object(item, where.at(f"fixed_ips[{i}]"))
        ip = entry.get("ip_address")
        _network(ip, where.at(f"fixed_ips[{i}]"), "ip_address", False)
        fixed.append(ip)
    pairs = []
    for i, item in enumerate(_list(obj, "allowed_address_pairs", where)):
        pair_where = where.at(f"allowed_address_pairs[{i}]")
        entry = _object(item, pair_where)
        _network(entry.get("ip_address"), pair_where, "ip_address", True)
        pair_mac = entry.get("mac_address")
        pair_mac = mac if pair_mac is None else _mac(pair_mac, pair_where, "mac_address")
        pairs.append((entry["ip_address"], pair_mac))
    sg_ids = _list(obj, "security_groups", where)
    known = {g.id: g for g in groups.security_groups}
    for i, sg_id in enumerate(sg_ids):
        if sg_id not in known:
            raise where.fail(f"security_groups[{i}]", f"names no security group: {_show(sg_id)}")
        if sg_ids.index(sg_id) != i:
            raise where.fail(f"security_groups[{i}]", f"{_show(sg_id)} listed twice")
    if len({known[s].stateful for s in sg_ids}) > 1:
        raise where.fail("security_groups", "mixes stateful and stateless groups")
    enabled = _bool(obj, "port_security_enabled", where, True)
    if not enabled and (sg_ids or pairs):
        field = "security_groups" if sg_ids else "allowed_address_pairs"
        raise where.fail(field, "must be empty when port_security_enabled is false")
    ofport = _int(obj, "ofport", where, 1, MAX_OFPORT, True)
    vlan = _int(obj, "local_vlan", where, 1, 4094, True)
    return Port(port_id, mac, tuple(fixed), tuple(pairs), tuple(sg_ids), enabled, ofport, vlan)


def parse_ports(text: str, groups: Groups, filename: str = "<ports>") -> tuple[Port, ...]:
    """Ports from Neutron API JSON (+ ofport, local_vlan); ConfigError if malformed."""
    data = _load_json(text, filename, "ports")
    top = _Where(filename)
    ports = [_port(p, top.at(f"ports[{i}]"), groups) for i, p in enumerate(data["ports"])]
    _unique([p.id for p in ports], lambda i: top.at(f"ports[{i}]"), "port")
    seen_ofport: dict[int, int] = {}
    seen_mac: dict[tuple[int, str], int] = {}
    for i, p in enumerate(ports):
        where = top.at(f"ports[{i}] (id {p.id})")
        if p.ofport in seen_ofport:
            raise where.fail("ofport", f"{p.ofport} is also ports[{seen_ofport[p.ofport]}]'s")
        seen_ofport[p.ofport] = i
        if (p.local_vlan, p.mac_address) in seen_mac:
            raise where.fail("mac_address", f"{p.mac_address} is also the MAC of "
                             f"ports[{seen_mac[p.local_vlan, p.mac_address]}] on local_vlan "
                             f"{p.local_vlan}")  # fmt: skip
        seen_mac[p.local_vlan, p.mac_address] = i
    return tuple(ports)


def _read(path: str | os.PathLike) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except OSError as exc:
        raise ConfigError(exc.strerror or str(exc), os.fspath(path)) from None
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 text", os.fspath(path)) from None


def load_groups(path: str | os.PathLike) -> Groups:
    return parse_groups(_read(path), os.path.basename(path))


def load_ports(path: str | os.PathLike, groups: Groups) -> tuple[Port, ...]:
    return parse_ports(_read(path), groups, os.path.basename(path))
