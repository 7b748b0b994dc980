"""Security group and port files: a valid file loads; every malformed one is rejected whole,
with one ConfigError naming the file, the object and the field."""

from __future__ import annotations

import copy
import json

import pytest

from ctaccel.errors import ConfigError, CtaccelError
from ctaccel.sg import load_groups, load_ports, parse_groups, parse_ports
from support.sg_flows import DATA

GROUPS = {
    "security_groups": [
        {"id": "sg-web", "name": "web", "security_group_rules": [
            {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
             "port_range_min": 80, "port_range_max": 90},
            {"direction": "ingress", "ethertype": "IPv4", "protocol": "icmp",
             "port_range_min": 8, "port_range_max": 0},
            {"direction": "egress", "ethertype": "IPv6", "remote_ip_prefix": "fd00::5/64"},
            {"direction": "ingress", "ethertype": "IPv4", "remote_group_id": "sg-db"},
            {"direction": "ingress", "ethertype": "IPv4", "protocol": "6",
             "remote_address_group_id": "ag-1"},
        ]},
        {"id": "sg-db", "stateful": True, "security_group_rules": []},
    ],
    "address_groups": [{"id": "ag-1", "addresses": ["10.0.0.0/24"]}],
}  # fmt: skip
PORTS = {"ports": [
    {"id": "p1", "mac_address": "FA:16:3E:00:00:01", "fixed_ips": [{"ip_address": "10.0.0.1"}],
     "allowed_address_pairs": [{"ip_address": "10.0.0.128/25"}],
     "security_groups": ["sg-web"], "ofport": 5, "local_vlan": 12},
    {"id": "p2", "mac_address": "fa:16:3e:00:00:02", "fixed_ips": [], "security_groups": [],
     "port_security_enabled": False, "ofport": 6, "local_vlan": 12},
]}  # fmt: skip


def test_a_valid_file_loads_normalized():
    groups = parse_groups(json.dumps(GROUPS), "groups.json")
    rules = groups.group("sg-web").rules
    assert [r.protocol for r in rules] == [6, 1, None, None, 6]
    assert (rules[1].port_range_min, rules[1].port_range_max) == (8, 0)
    assert rules[2].remote_ip_prefix == "fd00::/64"  # the network, as Neutron's normalized_cidr
    assert groups.group("sg-db").stateful
    ports = parse_ports(json.dumps(PORTS), groups, "ports.json")
    assert ports[0].mac_address == "fa:16:3e:00:00:01"
    assert ports[0].allowed_address_pairs == (("10.0.0.128/25", "fa:16:3e:00:00:01"),)
    assert not ports[1].port_security_enabled


def test_the_api_normalizations():
    def one(rule):
        text = json.dumps({"security_groups": [{"id": "a", "security_group_rules": [rule]}]})
        return parse_groups(text).security_groups[0].rules[0]

    assert one({"direction": "ingress", "ethertype": "ipv6", "protocol": "icmp"}).protocol == 58
    assert one({"direction": "ingress", "ethertype": "IPv6", "protocol": "1"}).protocol == 58
    assert one({"direction": "ingress", "ethertype": "IPv6", "protocol": "icmpv6"}).protocol == 58
    assert one({"direction": "ingress", "protocol": "any"}).protocol is None
    assert one({"direction": "ingress", "protocol": "TCP"}).protocol == 6
    full = one({"direction": "ingress", "protocol": "udp", "port_range_min": 1,
                "port_range_max": 65535})  # fmt: skip
    assert (full.port_range_min, full.port_range_max) == (None, None)


def test_every_data_case_loads():
    for case in sorted(p for p in DATA.iterdir() if p.is_dir()):
        groups = load_groups(case / "groups.json")
        assert load_ports(case / "ports.json", groups)


def _rule_edit(i, **changes):
    def edit(g, p):
        rule = g["security_groups"][0]["security_group_rules"][i]
        for k, v in changes.items():
            if v is _DELETE:
                rule.pop(k, None)
            else:
                rule[k] = v

    return edit


_DELETE = object()
R0 = "groups.json: security_groups[0] (id sg-web) security_group_rules[0]"
R1 = "groups.json: security_groups[0] (id sg-web) security_group_rules[1]"
R2 = "groups.json: security_groups[0] (id sg-web) security_group_rules[2]"
P0 = "ports.json: ports[0] (id p1)"

MALFORMED = [
    (_rule_edit(0, port_range_min="http"),
     f'{R0}: port_range_min: must be an integer 0-65535, got "http"'),
    (_rule_edit(0, direction="inbound"), f'{R0}: direction: must be ingress or egress, got "inbound"'),
    (_rule_edit(0, direction=_DELETE), f"{R0}: direction: missing"),
    (_rule_edit(0, ethertype="IPv5"), f'{R0}: ethertype: must be IPv4 or IPv6, got "IPv5"'),
    (_rule_edit(0, protocol="tcpp"), f"{R0}: protocol: must be a protocol name"),
    (_rule_edit(0, protocol=256), f"{R0}: protocol: must be a protocol name"),
    (_rule_edit(0, protocol="ipv6-icmp", port_range_min=None, port_range_max=None),
     f"{R0}: protocol: " + '"ipv6-icmp" is an IPv6 protocol'),
    (_rule_edit(0, port_range_min=91), f"{R0}: port_range_min: must not exceed port_range_max (91 > 90)"),
    (_rule_edit(0, port_range_max=70000), f"{R0}: port_range_max: must be an integer 0-65535, got 70000"),
    (_rule_edit(0, port_range_min=0), f"{R0}: port_range_min: must be an integer 1-65535, got 0"),
    (_rule_edit(0, port_range_max=None), f"{R0}: port_range_max: missing"),
    (_rule_edit(0, protocol=None), f"{R0}: port_range_min: a port range needs a protocol"),
    (_rule_edit(0, protocol="gre"), f"{R0}: port_range_min: protocol 47 has no ports"),
    (_rule_edit(1, port_range_min=256), f"{R1}: port_range_min: must be an ICMP type 0-255, got 256"),
    (_rule_edit(1, port_range_max=300), f"{R1}: port_range_max: must be an ICMP code 0-255, got 300"),
    (_rule_edit(1, port_range_min=None), f"{R1}: port_range_min: missing: an ICMP code needs an ICMP type"),
    (_rule_edit(2, remote_ip_prefix="fd00::/129"), f'{R2}: remote_ip_prefix: must be an IPv4 or IPv6 prefix, got "fd00::/129"'),
    (_rule_edit(2, remote_ip_prefix="10.0.0.0/8"), f'{R2}: remote_ip_prefix: "10.0.0.0/8" is not an IPv6 prefix'),
    (_rule_edit(2, remote_ip_prefix=7), f"{R2}: remote_ip_prefix: must be an IP prefix, got 7"),
    (_rule_edit(2, remote_group_id="sg-db"), f"{R2}: remote_group_id: only one of remote_ip_prefix, remote_group_id"),
    (_rule_edit(0, remote_group_id="sg-nope"), f'{R0}: remote_group_id: names no security group in this file: "sg-nope"'),
    (_rule_edit(0, remote_address_group_id="ag-x"), f'{R0}: remote_address_group_id: names no address group in this file: "ag-x"'),
    (lambda g, p: g["security_groups"][0]["security_group_rules"].append(
        dict(g["security_groups"][0]["security_group_rules"][0])),
     "groups.json: security_groups[0] (id sg-web) security_group_rules[5]: duplicate of security_group_rules[0]"),
    (lambda g, p: g["security_groups"][1].update(id="sg-web"),
     'groups.json: security_groups[1]: id: duplicate group id "sg-web" (also [0])'),
    (lambda g, p: g["security_groups"][1].pop("id"), "groups.json: security_groups[1]: id: missing"),
    (lambda g, p: g["security_groups"][1].update(stateful="yes"),
     'groups.json: security_groups[1] (id sg-db): stateful: must be true or false, got "yes"'),
    (lambda g, p: g["security_groups"][1].update(security_group_rules={}),
     "groups.json: security_groups[1] (id sg-db): security_group_rules: must be a list, got {}"),
    (lambda g, p: g["security_groups"].append(3), "groups.json: security_groups[2]: must be an object, got 3"),
    (lambda g, p: g["address_groups"][0]["addresses"].append("10.0.0.300/32"),
     'groups.json: address_groups[0] (id ag-1): addresses[1]: must be an IPv4 or IPv6 prefix, got "10.0.0.300/32"'),
    (lambda g, p: g.pop("security_groups"), 'groups.json: expected an object with a "security_groups" list'),
]  # fmt: skip

MALFORMED_PORTS = [
    (lambda g, p: p["ports"][0].update(mac_address="fa:16:3e:00:00"),
     f'{P0}: mac_address: must be a MAC address like fa:16:3e:00:00:01, got "fa:16:3e:00:00"'),
    (lambda g, p: p["ports"][0]["fixed_ips"][0].update(ip_address="10.0.0.256"),
     f'{P0} fixed_ips[0]: ip_address: must be an IPv4 or IPv6 address, got "10.0.0.256"'),
    (lambda g, p: p["ports"][0]["fixed_ips"][0].update(ip_address="10.0.0.1/24"),
     f'{P0} fixed_ips[0]: ip_address: must be an IP address without a prefix length'),
    (lambda g, p: p["ports"][0]["allowed_address_pairs"][0].update(ip_address="10.0.0/8"),
     f'{P0} allowed_address_pairs[0]: ip_address: must be an IPv4 or IPv6 prefix, got "10.0.0/8"'),
    (lambda g, p: p["ports"][0]["allowed_address_pairs"][0].update(mac_address="zz"),
     f'{P0} allowed_address_pairs[0]: mac_address: must be a MAC address'),
    (lambda g, p: p["ports"][0].update(security_groups=["sg-nope"]),
     f'{P0}: security_groups[0]: names no security group: "sg-nope"'),
    (lambda g, p: p["ports"][0].update(security_groups=["sg-web", "sg-web"]),
     f'{P0}: security_groups[1]: "sg-web" listed twice'),
    (lambda g, p: p["ports"][0].update(ofport="five"), f'{P0}: ofport: must be an integer 1-65279, got "five"'),
    (lambda g, p: p["ports"][0].pop("local_vlan"), f"{P0}: local_vlan: missing"),
    (lambda g, p: p["ports"][0].update(local_vlan=4095), f"{P0}: local_vlan: must be an integer 1-4094, got 4095"),
    (lambda g, p: p["ports"][0].update(port_security_enabled="no"),
     f'{P0}: port_security_enabled: must be true or false, got "no"'),
    (lambda g, p: p["ports"][0].update(port_security_enabled=False),
     f"{P0}: security_groups: must be empty when port_security_enabled is false"),
    (lambda g, p: p["ports"][1].update(ofport=5), "ports.json: ports[1] (id p2): ofport: 5 is also ports[0]'s"),
    (lambda g, p: p["ports"][1].update(id="p1"), 'ports.json: ports[1]: id: duplicate port id "p1" (also [0])'),
    (lambda g, p: p["ports"][1].update(mac_address="fa:16:3e:00:00:01"),
     "ports.json: ports[1] (id p2): mac_address: fa:16:3e:00:00:01 is also the MAC of ports[0] on local_vlan 12"),
    (lambda g, p: (g["security_groups"][1].update(stateful=False),
                   p["ports"][0].update(security_groups=["sg-web", "sg-db"])),
     f"{P0}: security_groups: mixes stateful and stateless groups"),
]  # fmt: skip


def _load(edit):
    g, p = copy.deepcopy(GROUPS), copy.deepcopy(PORTS)
    edit(g, p)
    groups = parse_groups(json.dumps(g), "groups.json")
    return parse_ports(json.dumps(p), groups, "ports.json")


@pytest.mark.parametrize("edit,message", MALFORMED + MALFORMED_PORTS,
                         ids=[m.split(": ", 1)[1][:60] for _e, m in MALFORMED + MALFORMED_PORTS])  # fmt: skip
def test_malformed_input_is_rejected_naming_object_and_field(edit, message):
    with pytest.raises(ConfigError) as info:
        _load(edit)
    assert str(info.value).startswith(message), str(info.value)
    assert isinstance(info.value, CtaccelError)


def test_json_syntax_error_gives_line_and_column():
    with pytest.raises(ConfigError, match=r"^groups.json: line 3 col 1: invalid JSON: "):
        parse_groups('{"security_groups": [\n  {"id": "a"}\n', "groups.json")


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="nope.json"):
        load_groups(tmp_path / "nope.json")
