"""Traffic for the security-group equivalence tests, made from a case's ports and rules.

What: ``sg_traffic(groups, ports, seed)`` -> (packets, split): the packets (in_port, frame,
now_ms) of two phases, and the index where the second phase starts (a rule change goes
there). Phase 1 opens connections and sends single probes; phase 2 continues every
connection (data both ways, then FIN) and probes again. ``bridge_spec(ports)`` is the
bridge's port list for NORMAL: the patch port 1 (a trunk, where traffic from other hosts
arrives tagged with the network's local VLAN) and each VM port as an access port of its VLAN.

Design: every port is the target of ingress and the source of egress; the peers are the
other VM ports (local traffic, untagged) and hosts behind the patch port (tagged), whose
addresses are taken from the rules (a host inside each remote prefix, address-group
addresses), the other ports' addresses (remote-group members, seen from outside too) and one
stranger. Protocols: TCP and UDP to the ports the rules name (each range's ends and the port
after it), ICMP echo and an ICMP error, GRE; spoofed source MAC and IP; ARP, IPv6 neighbour
discovery (NS, NA for the port's own and a foreign target), router solicitations and
advertisements, DHCP and DHCPv6 from clients, servers and the network. A seeded draw keeps a
subset so a case stays a few hundred packets.

Invariants: a pure function of its arguments; sequence numbers are right (TcpConversation).
"""

from __future__ import annotations

import ipaddress
import random

from ctaccel.packet import build as B
from support.conversations import TcpConversation
from support.hosts import START_MS, Host

PATCH = 1
OUTSIDE_MAC = "02:00:00:00:99:01"
STRANGER = {4: "198.51.100.7", 6: "2001:db8:ffff::7"}
BROADCAST = "ff:ff:ff:ff:ff:ff"


def bridge_spec(ports) -> str:
    return ",".join([str(PATCH)] + [f"{p.ofport}:tag={p.local_vlan}" for p in ports])


def _tagged(frame: bytes, vlan: int) -> bytes:
    return frame[:12] + b"\x81\x00" + vlan.to_bytes(2, "big") + frame[12:]


def _host_in(prefix: str) -> str:
    net = ipaddress.ip_network(prefix, strict=False)
    return str(net[0] if net.num_addresses == 1 else net[1])


def _link_local(mac: str) -> str:
    b = bytes.fromhex(mac.replace(":", ""))
    return str(ipaddress.IPv6Address(b"\xfe\x80" + bytes(6) + bytes([b[0] ^ 2, b[1], b[2], 0xFF,
                                                                       0xFE, b[3], b[4], b[5]])))  # fmt: skip


class _Emit:
    """Collects (port, frame) pairs, tagging what enters on the patch port."""

    def __init__(self):
        self.packets: list[tuple[int, bytes]] = []

    def add(self, port: int, frame: bytes, vlan: int) -> None:
        self.packets.append((port, _tagged(frame, vlan) if port == PATCH else frame))


def _outside_addresses(groups, ports, vlan: int) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {4: [STRANGER[4]], 6: [STRANGER[6]]}
    for sg in groups.security_groups:
        for rule in sg.rules:
            if rule.remote_ip_prefix:
                out[int(rule.ethertype[-1])].append(_host_in(rule.remote_ip_prefix))
    for ag in groups.address_groups:
        for addr in ag.addresses:
            out[ipaddress.ip_network(addr, strict=False).version].append(_host_in(addr))
    for p in ports:
        for ip in p.fixed_ips + tuple(a for a, _m in p.allowed_address_pairs):
            out[ipaddress.ip_network(ip, strict=False).version].append(_host_in(ip))
    return {v: list(dict.fromkeys(a)) for v, a in out.items()}


def _l4_ports(groups, port, protocol: int) -> list[int]:
    """Destination ports worth probing for ``port``'s rules of one protocol."""
    found = {22, 80} if protocol == 6 else {53}
    for sg_id in port.security_groups:
        for rule in groups.group(sg_id).rules:
            if rule.protocol == protocol and rule.port_range_min:
                found |= {rule.port_range_min, rule.port_range_max,
                          min(rule.port_range_max + 1, 65535)}  # fmt: skip
    return sorted(found)


def _conversations(emit_open, emit_later, client: Host, server: Host, vlan, rng, tcp_ports,
                   udp_ports, seq):  # fmt: skip
    """TCP, UDP, ICMP and GRE between client and server (each host's port says where its
    frames enter)."""
    v6 = client.v6
    dport = rng.choice(tcp_ports)
    conv = TcpConversation(client, server, 40000 + seq, dport, 1000 + seq, 9000 + seq)
    for p, f in conv.handshake():
        emit_open.add(p, f, vlan)
    for p, f in (
        conv.data(True),
        conv.data(False),
        conv.fin(True),
        conv.fin(False),
        conv.ack(True),
    ):
        emit_later.add(p, f, vlan)
    uport = rng.choice(udp_ports)
    for emit in (emit_open, emit_later):
        emit.add(client.port, B.udp_frame(client.mac, server.mac, client.ip, server.ip,
                                          30000 + seq, uport, b"q" * 20), vlan)  # fmt: skip
        emit.add(server.port, B.udp_frame(server.mac, client.mac, server.ip, client.ip,
                                          uport, 30000 + seq, b"r" * 20), vlan)  # fmt: skip
    echo, reply = (128, 129) if v6 else (8, 0)
    for emit in (emit_open, emit_later):
        emit.add(client.port, B.icmp_frame(client.mac, server.mac, client.ip, server.ip, echo,
                                           0, seq, 1), vlan)  # fmt: skip
        emit.add(server.port, B.icmp_frame(server.mac, client.mac, server.ip, client.ip, reply,
                                           0, seq, 1), vlan)  # fmt: skip
    if not v6:
        err = B.icmp_frame(client.mac, server.mac, client.ip, server.ip, 3, 4, 0, 1400)
        emit_open.add(client.port, err, vlan)
        gre = B.ether(client.mac, server.mac, 0x0800, B.ipv4(client.ip, server.ip, 47, b"\0" * 8))
        emit_later.add(client.port, gre, vlan)


def _port_specials(emit, port, rng) -> None:
    """Port security probes sent by ``port``: spoofing, ARP, ND, RA, DHCP."""
    of, vlan, mac = port.ofport, port.local_vlan, port.mac_address
    v4 = [ip for ip in port.fixed_ips if ":" not in ip]
    v6 = [ip for ip in port.fixed_ips if ":" in ip]
    lla = _link_local(mac)
    my4 = v4[0] if v4 else "10.254.0.1"
    emit.add(of, B.arp_frame(mac, BROADCAST, 1, my4, "10.254.0.254"), vlan)
    emit.add(of, B.arp_frame(mac, BROADCAST, 1, "10.254.9.9", "10.254.0.254"), vlan)  # spoofed
    emit.add(PATCH, B.arp_frame(OUTSIDE_MAC, mac, 2, "10.254.0.254", my4, B.mac_bytes(mac)), vlan)
    emit.add(of, B.tcp_frame(mac, OUTSIDE_MAC, STRANGER[4], "10.254.0.254", 1234, 80), vlan)
    emit.add(of, B.tcp_frame("02:00:00:00:ee:ee", OUTSIDE_MAC, my4, "10.254.0.254", 1235, 80),
             vlan)  # fmt: skip
    dhcp = B.udp_frame(mac, BROADCAST, "0.0.0.0", "255.255.255.255", 68, 67, b"d" * 40)
    emit.add(of, dhcp, vlan)
    emit.add(of, B.udp_frame(mac, BROADCAST, my4, "255.255.255.255", 67, 68, b"o" * 40), vlan)
    emit.add(PATCH, B.udp_frame(OUTSIDE_MAC, mac, "10.254.0.2", my4, 67, 68, b"o" * 40), vlan)
    my6 = v6[0] if v6 else lla
    target = B.ip_bytes(my6)
    for src, ntype, tgt in ((lla, 135, target), (lla, 136, target),
                            (lla, 136, B.ip_bytes("fd00:ffff::1")), (lla, 133, b""),
                            (lla, 134, b""), (lla, 130, b"")):  # fmt: skip
        flags = 0x6000 if ntype == 136 else 0
        emit.add(of, B.icmp_frame(mac, "33:33:00:00:00:01", src, "ff02::1", ntype, 0, flags, 0,
                                  tgt), vlan)  # fmt: skip
    emit.add(PATCH, B.icmp_frame(OUTSIDE_MAC, mac, "fe80::1", lla, 136, 0, 0x6000, 0,
                                 B.ip_bytes("fe80::1")), vlan)  # fmt: skip
    emit.add(PATCH, B.icmp_frame(OUTSIDE_MAC, mac, "fe80::1", lla, 134, 0, 0, 0, b""), vlan)
    emit.add(of, B.udp_frame(mac, "33:33:00:01:00:02", lla, "ff02::1:2", 546, 547, b"s"), vlan)
    emit.add(of, B.udp_frame(mac, "33:33:00:01:00:02", lla, "ff02::1:2", 547, 546, b"s"), vlan)
    emit.add(PATCH, B.udp_frame(OUTSIDE_MAC, mac, "fe80::1", lla, 547, 546, b"a"), vlan)
    emit.add(PATCH, B.tcp_frame(OUTSIDE_MAC, mac, STRANGER[4], my4, 1, 22), 4095)  # dead VLAN


def _candidates(groups, ports):
    """Every (target port, its address as a Host, peer Host, inbound?) worth a conversation."""
    out = []
    for target in ports:
        outside = _outside_addresses(groups, ports, target.local_vlan)
        for ip in target.fixed_ips + tuple(a for a, _m in target.allowed_address_pairs):
            version = ipaddress.ip_network(ip, strict=False).version
            me = Host(target.ofport, B.mac_bytes(target.mac_address), B.ip_bytes(_host_in(ip)))
            peers = [Host(PATCH, B.mac_bytes(OUTSIDE_MAC), B.ip_bytes(a)) for a in outside[version]]
            for other in ports:
                if other is not target:
                    peers += [Host(other.ofport, B.mac_bytes(other.mac_address), B.ip_bytes(o))
                              for o in other.fixed_ips
                              if ipaddress.ip_address(o).version == version]  # fmt: skip
            out += [(target, me, peer, inbound) for peer in peers for inbound in (True, False)]
    return out


def sg_traffic(groups, ports, seed: int = 0, conversations: int = 20):
    """(packets, split): phase 1 then phase 2 (see the module docstring); ``conversations``
    caps the peer conversations drawn (about 14 packets each) beside the port probes."""
    rng = random.Random(seed)
    opened, later = _Emit(), _Emit()
    candidates = _candidates(groups, ports)
    chosen = sorted(rng.sample(range(len(candidates)), min(conversations, len(candidates))))
    for seq, index in enumerate(chosen, start=1):
        target, me, peer, inbound = candidates[index]
        tcp_ports, udp_ports = _l4_ports(groups, target, 6), _l4_ports(groups, target, 17)
        client, server = (peer, me) if inbound else (me, peer)
        if not inbound:
            tcp_ports, udp_ports = [22, 80, 443] + tcp_ports[:2], [53] + udp_ports[:2]
        _conversations(opened, later, client, server, target.local_vlan, rng, tcp_ports,
                       udp_ports, seq)  # fmt: skip
    for target in ports:
        if target.port_security_enabled:
            _port_specials(opened, target, rng)
            probes = _Emit()
            _port_specials(probes, target, rng)
            later.packets += rng.sample(probes.packets, 6)
    packets = [(p, f, START_MS + i) for i, (p, f) in enumerate(opened.packets + later.packets)]
    return packets, len(opened.packets)
