"""Security groups -> ovs-ofctl flows that behave as Neutron's OVS firewall driver's flows.

What: ``compile_flows(groups, ports)`` returns flow lines for an integration bridge: the base
flows the OVS agent installs ahead of the firewall (table 0 -> 60, table 60's NORMAL), the
firewall's driver-wide flows, then each port's, then the remote-group address flows.

Design: the table layout of Neutron's driver (neutron/agent/linux/openvswitch_firewall):

    60 transient: a VM port's packets -> 71 (egress); a frame for a port's MAC, tagged with
       its network's local VLAN (from a patch port) -> strip the tag, 81 (ingress);
       reg5 = the port's ofport, reg6 = the network's local VLAN (= its conntrack zone)
    71 base egress: port security (source MAC + IP, incl. allowed address pairs; ARP by
       sender IP; IPv6 ND by target; DHCP/DHCPv6 client only, no DHCP server, no router
       advertisements); IP -> ct(zone=reg6, table=72); the rest is dropped
    72 rules egress: replies/related of an unmarked connection pass; marked (ct_mark=1) and
       invalid dropped; rule flows (priority 70-77) -> 73; an established connection no rule
       allows any more gets ct_mark=1 (priority 40) and is dropped from then on
    73 accept or ingress: to a local port of the same network -> its ingress (81);
       else commit new connections, -> 91 -> 94 (NORMAL)
    81 base ingress: ARP, ND, RA and DHCP replies out directly; IP -> ct(zone=reg6, table=82)
    82 rules ingress: as 72, the accepting flows output to the port
    91-94: accepted egress, accepted ingress (drop), dropped (drop), NORMAL
    A port with port security disabled: 60 -> 73 -> 94, no filtering.

Rules with a remote group or address group are conjunctions (remote.py). Flows are written
with the field names and value forms Neutron's driver uses, and the conjunction ids it
allocates, so the two flow sets can also be compared as text.

Stateless groups (``"stateful": false``) compile exactly as stateful ones: Neutron's OVS
firewall driver does not implement statelessness (the flag never reaches it), and these flows
must give the verdicts that driver's flows give.

Invariants: output is deterministic for a given input (ports and rules in file order, address
pairs and MACs in first-seen order); every line parses with ``ofproto.rules.parse_flows``.
"""

from __future__ import annotations

import ipaddress

from ctaccel.sg import remote as R
from ctaccel.sg.model import Groups, Port

TRANSIENT, BASE_EGRESS, BASE_INGRESS = 60, 71, 81
ACCEPTED_EGRESS, DROPPED, ACCEPTED_EGRESS_NORMAL = 91, 93, 94
ZONE = R.ZONE
ARP, RARP, IP, IPV6 = "0x0806", "0x8035", "0x0800", "0x86dd"
ICMPV6_EGRESS_ALLOWED = (130, 133, 135)  # MLD query, router solicitation, neighbour solicitation
ICMPV6_NA, ICMPV6_RA = 136, 134
ICMPV6_INGRESS_ALLOWED = (130, 135, 136, 134)  # MLD query, NS, NA, and RA
DEAD_VLAN = 4095  # the agent's tag for ports not (yet) bound: dropped on entry


def prelude() -> list[str]:
    """The integration bridge's flows around the firewall (the OVS agent's br-int setup):
    everything enters table 60 (through two empty rate-limit tables in the agent), and what
    the firewall does not claim there is switched by NORMAL."""
    return [
        f"table=0,priority=65535,dl_vlan={DEAD_VLAN},actions=drop",
        f"table=0,priority=0,actions=resubmit(,{TRANSIENT})",
        f"table={TRANSIENT},priority=1,actions=normal",
    ]


def driver_flows() -> list[str]:
    """The firewall's own flows, independent of ports."""
    lines = [f"table={t},priority=0,actions=drop" for t in (71, 72, 73, 81, 82)]
    lines += [
        f"table={BASE_EGRESS},priority=110,ct_state=+trk,actions=ct_clear,resubmit(,{BASE_EGRESS})",
        f"table={ACCEPTED_EGRESS_NORMAL},priority=1,actions=normal",
        f"table={ACCEPTED_EGRESS},priority=1,actions=resubmit(,{ACCEPTED_EGRESS_NORMAL})",
        f"table={R.ACCEPTED_INGRESS},priority=0,actions=drop",
        f"table={DROPPED},priority=0,actions=drop",
    ]
    return lines


def link_local(mac: str) -> str:
    """The port's IPv6 link-local address (EUI-64 from its MAC)."""
    b = bytes.fromhex(mac.replace(":", ""))
    eui = bytes([b[0] ^ 2, b[1], b[2], 0xFF, 0xFE, b[3], b[4], b[5]])
    return str(ipaddress.IPv6Address(b"\xfe\x80" + bytes(6) + eui))


def _version(addr: str) -> int:
    return ipaddress.ip_network(addr, strict=False).version


def _pairs(port: Port, version: int) -> list[tuple[str, str]]:
    """(MAC, address) the port may send from: its fixed IPs, its allowed address pairs and,
    for IPv6, its link-local address."""
    out = [(mac, ip) for ip, mac in port.allowed_address_pairs if _version(ip) == version]
    if version == 6:
        out.append((port.mac_address, link_local(port.mac_address)))
    out += [(port.mac_address, ip) for ip in port.fixed_ips if _version(ip) == version]
    return list(dict.fromkeys(out))


def _macs(port: Port) -> list[str]:
    return list(dict.fromkeys([port.mac_address] + [m for _ip, m in port.allowed_address_pairs]))


def _line(fields: list[tuple[str, object]], actions: str) -> str:
    return R.flow_text(fields, actions)


def _classify(port: Port) -> list[str]:
    """Table 60: the port's own packets to egress; frames for its MACs to ingress."""
    of, vlan = port.ofport, port.local_vlan
    regs = f"set_field:{of}->reg5,set_field:{vlan}->reg6"
    lines = [_line([("table", TRANSIENT), ("priority", 100), ("in_port", of)],
                   f"{regs},resubmit(,{BASE_EGRESS})")]  # fmt: skip
    for mac in _macs(port):
        lines.append(_line([("table", TRANSIENT), ("priority", 90), ("dl_dst", mac),
                            ("dl_vlan", f"0x{vlan:x}")],
                           f"{regs},strip_vlan,resubmit(,{BASE_INGRESS})"))  # fmt: skip
    return lines


def _egress_spoofing(port: Port) -> list[str]:
    """Table 71: what the port may send, by source MAC and address (port security)."""
    of = port.ofport
    base = [("table", BASE_EGRESS), ("in_port", of), ("reg5", of)]
    to_normal = f"resubmit(,{ACCEPTED_EGRESS_NORMAL})"
    track = f"ct(table={R.RULES_EGRESS},{ZONE})"
    lines = []
    v4, v6 = _pairs(port, 4), _pairs(port, 6)
    for mac, ip in v4:
        lines.append(_line(base + [("priority", 95), ("dl_src", mac), ("dl_type", ARP),
                                   ("arp_spa", ip)], to_normal))  # fmt: skip
        lines.append(_line(base + [("priority", 95), ("dl_src", mac), ("dl_type", RARP)],
                           to_normal))  # fmt: skip
        lines.append(_line(base + [("priority", 65), ("dl_src", mac), ("dl_type", IP),
                                   ("nw_src", ip)], track))  # fmt: skip
    icmp6 = base + [("priority", 95), ("dl_type", IPV6), ("nw_proto", 58)]
    for mac, ip in v6:
        for icmp_type in ICMPV6_EGRESS_ALLOWED:
            lines.append(_line(icmp6 + [("icmp_type", icmp_type), ("dl_src", mac),
                                        ("ipv6_src", ip)], to_normal))  # fmt: skip
        # a neighbour advertisement is judged by the address it advertises, not its source
        lines.append(_line(icmp6 + [("icmp_type", ICMPV6_NA), ("nd_target", ip)], to_normal))
    for mac, ip in v6:
        lines.append(_line(base + [("priority", 65), ("dl_src", mac), ("dl_type", IPV6),
                                   ("ipv6_src", ip)], track))  # fmt: skip
    return lines


def _egress_dhcp_and_rest(port: Port) -> list[str]:
    """Table 71: DHCP clients (also from 0.0.0.0) allowed, DHCP servers and router
    advertisements refused, everything else dropped."""
    of = port.ofport
    base = [("table", BASE_EGRESS), ("in_port", of), ("reg5", of)]
    lines = []
    v4 = _pairs(port, 4) + [(port.mac_address, "0.0.0.0")]
    for dl_type, key, pairs, sport, dport in ((IP, "nw_src", v4, 68, 67),
                                              (IPV6, "ipv6_src", _pairs(port, 6), 546, 547)):  # fmt: skip
        for mac, ip in pairs:
            lines.append(_line(base + [("priority", 80), ("dl_type", dl_type), ("dl_src", mac),
                                       (key, ip), ("nw_proto", 17), ("tp_src", sport),
                                       ("tp_dst", dport)],
                               f"resubmit(,{R.ACCEPT_OR_INGRESS})"))  # fmt: skip
    drop = f"resubmit(,{DROPPED})"
    for dl_type, sport, dport in ((IP, 67, 68), (IPV6, 547, 546)):
        lines.append(_line(base + [("priority", 70), ("dl_type", dl_type), ("nw_proto", 17),
                                   ("tp_src", sport), ("tp_dst", dport)], drop))  # fmt: skip
    lines.append(_line(base + [("priority", 70), ("dl_type", IPV6), ("nw_proto", 58),
                               ("icmp_type", ICMPV6_RA)], drop))  # fmt: skip
    lines.append(_line(base + [("priority", 10)], f"ct_clear,{drop}"))
    return lines


def _accept_or_ingress(port: Port) -> list[str]:
    """Table 73: to this port from a local port of its network -> its ingress; otherwise a
    new connection is committed before NORMAL."""
    of, vlan = port.ofport, port.local_vlan
    lines = [_line([("table", R.ACCEPT_OR_INGRESS), ("priority", 100), ("dl_dst", mac),
                    ("reg6", vlan)], f"set_field:{of}->reg5,resubmit(,{BASE_INGRESS})")
             for mac in _macs(port)]  # fmt: skip
    for dl_type in (IP, IPV6):
        lines.append(_line([("table", R.ACCEPT_OR_INGRESS), ("priority", 90),
                            ("dl_type", dl_type), ("ct_state", "+new-est"), ("reg5", of)],
                           f"ct(commit,{ZONE}),resubmit(,{ACCEPTED_EGRESS})"))  # fmt: skip
    lines.append(_line([("table", R.ACCEPT_OR_INGRESS), ("priority", 80), ("reg5", of)],
                       f"resubmit(,{ACCEPTED_EGRESS_NORMAL})"))  # fmt: skip
    return lines


def _base_ingress(port: Port) -> list[str]:
    """Table 81: ARP, ND, MLD, RA and DHCP replies straight out; IP tracked in zone reg6."""
    of = port.ofport
    out = f"output:{of}"
    base = [("table", BASE_INGRESS), ("reg5", of)]
    lines = [_line(base + [("priority", 100), ("dl_type", ARP)], out)]
    for icmp_type in ICMPV6_INGRESS_ALLOWED:
        lines.append(_line(base + [("priority", 100), ("dl_type", IPV6), ("nw_proto", 58),
                                   ("icmp_type", icmp_type)], out))  # fmt: skip
    for dl_type, sport, dport in ((IP, 67, 68), (IPV6, 547, 546)):
        lines.append(_line(base + [("priority", 95), ("dl_type", dl_type), ("nw_proto", 17),
                                   ("tp_src", sport), ("tp_dst", dport)], out))  # fmt: skip
    for dl_type in (IP, IPV6):
        lines.append(_line(base + [("priority", 90), ("dl_type", dl_type), ("ct_state", "-trk")],
                           f"ct(table={R.RULES_INGRESS},{ZONE})"))  # fmt: skip
    lines.append(_line(base + [("priority", 80), ("ct_state", "+trk")],
                       f"resubmit(,{R.RULES_INGRESS})"))  # fmt: skip
    return lines


def _tracked(port: Port, table: int, accept: str) -> list[str]:
    """Tables 72/82 below the rules: invalid and invalidated (ct_mark=1) dropped, replies and
    related of live connections accepted, anything else not established dropped, and an
    established connection that no rule accepts marked invalid (ct_mark=1)."""
    of = port.ofport
    drop = f"resubmit(,{DROPPED})"
    lines = [_line([("table", table), ("priority", 50), ("ct_state", "+trk+inv")], drop),
             _line([("table", table), ("priority", 50), ("ct_mark", "0x1"), ("reg5", of)], drop)]  # fmt: skip
    for state in ("+est-rel+rpl", "-new-est+rel-inv"):
        lines.append(_line([("table", table), ("priority", 50), ("ct_state", state),
                            ("ct_mark", "0x0"), ("ct_zone", port.local_vlan), ("reg5", of)],
                           accept))  # fmt: skip
    lines.append(_line([("table", table), ("priority", 40), ("ct_state", "-est"), ("reg5", of)],
                       drop))  # fmt: skip
    for dl_type in (IP, IPV6):
        lines.append(_line([("table", table), ("priority", 40), ("dl_type", dl_type),
                            ("ct_state", "+est"), ("reg5", of)],
                           f"ct(commit,{ZONE},exec(set_field:0x1->ct_mark))"))  # fmt: skip
    return lines


def _rule_flows(port: Port, groups: Groups) -> list[str]:
    """The port's rules without a remote group: each accepts established (original
    direction) and new connections that match it."""
    lines = []
    for sg_id in port.security_groups:
        for rule in groups.group(sg_id).rules:
            if rule.remote_id:
                continue
            accept = R.accept_actions(rule.direction, port.ofport)
            for fields in R.rule_matches(rule.direction, rule.ethertype, rule.protocol,
                                         rule.port_range_min, rule.port_range_max,
                                         rule.remote_ip_prefix, port.ofport, False):  # fmt: skip
                for state, actions in zip(R.CT_STATES, accept, strict=True):
                    lines.append(_line(fields + [("ct_state", state)], actions))
    return lines


def _unfiltered(port: Port) -> list[str]:
    """A port with port security disabled: identified, then straight to NORMAL."""
    of = port.ofport
    return [
        _line([("table", TRANSIENT), ("priority", 100), ("in_port", of)],
              f"set_field:{of}->reg5,set_field:{port.local_vlan}->reg6,"
              f"resubmit(,{R.ACCEPT_OR_INGRESS})"),
        _line([("table", R.ACCEPT_OR_INGRESS), ("priority", 80), ("reg5", of)],
              f"resubmit(,{ACCEPTED_EGRESS_NORMAL})"),
    ]  # fmt: skip


def compile_flows(groups: Groups, ports) -> list[str]:
    """ovs-ofctl flow lines for ``ports`` (validated ``model.Port``s) under ``groups``."""
    lines = prelude() + driver_flows()
    conj = R.ConjIds()
    used = R.new_usage()
    for port in ports:
        if not port.port_security_enabled:
            lines += _unfiltered(port)
            continue
        lines += _classify(port)
        lines += _egress_spoofing(port)
        lines += _egress_dhcp_and_rest(port)
        lines += _accept_or_ingress(port)
        lines += _base_ingress(port)
        lines += _tracked(port, R.RULES_INGRESS, f"output:{port.ofport}")
        lines += _tracked(port, R.RULES_EGRESS, f"resubmit(,{ACCEPTED_EGRESS_NORMAL})")
        lines += _rule_flows(port, groups)
        lines += R.port_conjunction_flows(port, groups, conj, used)
    lines += R.member_flows(used, groups, ports)
    return lines
