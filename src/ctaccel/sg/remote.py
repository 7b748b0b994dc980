"""Rule matches shared by every port, and remote groups as OpenFlow conjunctions.

What: the match of one security group rule (protocol, ICMP type/code, port ranges as
value/mask pairs, the remote prefix) and its priority; for rules with a remote group or
address group, the two dimensions of a conjunctive match: dimension 2 is the rule on the port
(``reg5``), dimension 1 the remote group's addresses on the network (``reg6``), and the
``conj_id`` flow that accepts what both match.

Design: conjunction ids come in blocks of 8, one block per (group, remote group, direction,
ethertype) in the order ports first use them, starting at 16 (as Neutron's driver on a fresh
bridge); within a block, 2 ids per priority offset, one for each of the two accepted
connection states (``+est-rel-rpl`` and ``+new-est``), so the priority is ``70 + (id % 8) // 2``.
Several remote rules of one port that share direction, ethertype and protocol are merged first
(by ICMP type/code, or into non-overlapping port segments that carry every conj id covering
them), because two flows with the same match and priority cannot both stand: this is the
behaviour of Neutron's OVS firewall driver, which the flows must reproduce packet for packet,
down to its edges (a merged TCP/UDP/SCTP port cover no longer matches port 0; ports of DCCP
and UDP-Lite rules are not matched at all; a later rule with the same match replaces an
earlier one).

Invariants: every value here is text in ovs-ofctl syntax; ``port_masks`` covers exactly
``[lo, hi]`` with the fewest value/mask pairs.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict

from ctaccel.sg.model import Groups, Port, SgRule

RULES_EGRESS, ACCEPT_OR_INGRESS, RULES_INGRESS, ACCEPTED_INGRESS = 72, 73, 82, 92
DL_TYPE = {"IPv4": "0x0800", "IPv6": "0x86dd"}
# the two connection states a rule accepts: an established one in its original direction,
# and a new one; dimension/conj ids use +0 for the first and +1 for the second
CT_STATES = ("+est-rel-rpl", "+new-est")
ZONE = "zone=NXM_NX_REG6[0..15]"
PORT_FIELD = {6: "tcp", 17: "udp", 132: "sctp"}  # the protocols whose port ranges are matched
FIRST_CONJ_ID, CONJ_BLOCK = 16, 8


def flow_text(fields: list[tuple[str, object]], actions: str) -> str:
    return ",".join(f"{k}={v}" for k, v in fields) + f",actions={actions}"


def port_masks(lo: int, hi: int) -> list[str]:
    """The fewest ``value/mask`` blocks covering [lo, hi] (16-bit), as ovs-ofctl text."""
    out = []
    while lo <= hi:
        size = lo & -lo if lo else 1 << 16
        while size > hi - lo + 1:
            size >>= 1
        mask = 0xFFFF & ~(size - 1)
        out.append(f"0x{lo:04x}" if size == 1 else f"0x{lo:04x}/0x{mask:04x}")
        lo += size
    return out


def priority_offset(protocol, lo, hi, conjunctive: bool) -> int:
    """0-3 within the rule band: ICMP rules by how much of type/code they name, any other
    protocol highest; plain rules sit 4 above conjunctive ones."""
    base = 0 if conjunctive else 4
    if protocol is None:
        return base
    if protocol in (1, 58):
        if lo is None:
            return base + 1
        if hi is None:
            return base + 2
    return base + 3


def _prefix_is_real(prefix: str | None) -> bool:
    return bool(prefix) and ipaddress.ip_network(prefix).prefixlen > 0


def rule_matches(direction, ethertype, protocol, lo, hi, prefix, ofport, conjunctive):
    """[(priority, fields)] for one rule on one port (without ct_state and actions)."""
    prio = 70 + priority_offset(protocol, lo, hi, conjunctive)
    table = RULES_INGRESS if direction == "ingress" else RULES_EGRESS
    fields: list[tuple[str, object]] = [("table", table), ("priority", prio),
                                        ("dl_type", DL_TYPE[ethertype]), ("reg5", ofport)]  # fmt: skip
    if _prefix_is_real(prefix):
        side = "src" if direction == "ingress" else "dst"
        fields.append((f"nw_{side}" if ethertype == "IPv4" else f"ipv6_{side}", prefix))
    if protocol is not None:
        fields.append(("nw_proto", protocol))
    if protocol in (1, 58):
        if lo is not None:
            fields.append(("icmp_type", lo))
            if hi is not None:
                fields.append(("icmp_code", hi))
        return [fields]
    if protocol in PORT_FIELD and lo and hi:
        return [fields + [(f"{PORT_FIELD[protocol]}_dst", m)] for m in port_masks(lo, hi)]
    return [fields]


def accept_actions(direction: str, ofport: int) -> tuple[str, str]:
    """Actions of the accepting flows for (+est-rel-rpl, +new-est): ingress goes out to the
    port (committing a new connection), egress on to the accept-or-ingress table."""
    if direction == "ingress":
        out = f"output:{ofport}"
        return out, f"ct(commit,{ZONE}),{out},resubmit(,{ACCEPTED_INGRESS})"
    step = f"resubmit(,{ACCEPT_OR_INGRESS})"
    return step, step


class ConjIds:
    """Conjunction id blocks by (group, remote, direction, ethertype), first use first."""

    def __init__(self):
        self.blocks: dict[tuple, int] = {}

    def get(self, sg_id: str, rule: SgRule) -> int:
        key = (sg_id, rule.remote_id, rule.direction, rule.ethertype)
        if key not in self.blocks:
            self.blocks[key] = FIRST_CONJ_ID + CONJ_BLOCK * len(self.blocks)
        offset = priority_offset(rule.protocol, rule.port_range_min, rule.port_range_max, True)
        return self.blocks[key] + 2 * offset


def _merge_same(items: list[tuple[SgRule, int]]) -> list[tuple[tuple, list[int]]]:
    """Group conj ids by (type/code or ports) in first-seen order."""
    groups: dict[tuple, list[int]] = {}
    for rule, cid in items:
        groups.setdefault((rule.port_range_min, rule.port_range_max), []).append(cid)
    return list(groups.items())


def _merge_ranges(items: list[tuple[SgRule, int]]) -> list[tuple[tuple, list[int]]]:
    """Non-overlapping port segments, each with the conj ids whose ranges cover it (a rule
    without a range covers 1-65535); one segment of 1-65535 means no port match at all."""
    if len(items) == 1:
        rule, cid = items[0]
        return [((rule.port_range_min, rule.port_range_max), [cid])]
    events = []  # (sort key, port, is_start, conj id): starts before ends at the same port
    for rule, cid in items:
        lo = rule.port_range_min if rule.port_range_min is not None else 1
        hi = rule.port_range_max if rule.port_range_max is not None else 65535
        events += [(2 * lo, lo, True, cid), (2 * hi + 1, hi, False, cid)]
    events.sort(key=lambda e: e[0])  # stable: rule order among equal ports
    active: dict[int, int] = {}  # conj id -> how many of its ranges are open
    out: list[tuple[tuple, list[int]]] = []
    start = None
    for _key, port, is_start, cid in events:
        if is_start:
            if cid in active:
                active[cid] += 1
                continue
            if active and start != port:
                out.append(((start, port - 1), list(active)))
            start = port
            active[cid] = 1
        else:
            if active[cid] > 1:
                active[cid] -= 1
                continue
            if start <= port:
                out.append(((start, port), list(active)))
                start = port + 1
            del active[cid]
    if len(out) == 1 and out[0][0] == (1, 65535):
        out[0] = ((None, None), out[0][1])
    return out


def port_conjunction_flows(port: Port, groups: Groups, conj: ConjIds, used: dict) -> list[str]:
    """Dimension-2 flows and conj_id accept flows of ``port``'s remote-group rules; records
    in ``used[vlan][(direction, ethertype)][remote id]`` the conj ids the network needs."""
    by_kind: dict[tuple, list[tuple[SgRule, int]]] = {}
    for sg_id in port.security_groups:
        for rule in groups.group(sg_id).rules:
            if not rule.remote_id:
                continue
            cid = conj.get(sg_id, rule)
            used[port.local_vlan][rule.direction, rule.ethertype][rule.remote_id].add(cid)
            by_kind.setdefault((rule.direction, rule.ethertype, rule.protocol), []).append(
                (rule, cid)
            )
    lines = []
    for (direction, ethertype, protocol), items in by_kind.items():
        merge = _merge_ranges if protocol in PORT_FIELD else _merge_same
        for (lo, hi), cids in merge(items):
            for fields in rule_matches(direction, ethertype, protocol, lo, hi, None,
                                       port.ofport, True):  # fmt: skip
                for i, state in enumerate(CT_STATES):
                    acts = ",".join(f"conjunction({c + i},2/2)" for c in cids)
                    lines.append(flow_text(fields + [("ct_state", state)], acts))
        accept = accept_actions(direction, port.ofport)
        table = RULES_INGRESS if direction == "ingress" else RULES_EGRESS
        for cid in sorted({c for _r, c in items}):
            for i, state in enumerate(CT_STATES):
                fields = [("table", table), ("priority", 70 + cid % 8 // 2),
                          ("conj_id", cid + i), ("dl_type", DL_TYPE[ethertype]),
                          ("reg5", port.ofport), ("ct_state", state)]  # fmt: skip
                lines.append(flow_text(fields, f"set_field:{cid + i}->reg7,{accept[i]}"))
    return lines


def _members(remote_id: str, groups: Groups, ports) -> list[tuple[str, str | None]]:
    """(address, MAC or None) of a security group's ports or an address group, as Neutron's
    server lists them: fixed IPs without MAC, allowed address pairs with theirs."""
    out: list[tuple[str, str | None]] = []
    for ag in groups.address_groups:
        if ag.id == remote_id:
            out += [(a, None) for a in ag.addresses]
    for p in ports:
        if remote_id in p.security_groups:
            out += [(ip, None) for ip in p.fixed_ips]
            out += list(p.allowed_address_pairs)
    return list(dict.fromkeys(out))


def member_flows(used: dict, groups: Groups, ports) -> list[str]:
    """Dimension-1 flows: per network, direction and ethertype, each remote member address
    with every conj id (at its priority) of the remote groups that contain it."""
    lines = []
    for vlan, kinds in used.items():
        for (direction, ethertype), remotes in kinds.items():
            by_addr: dict[tuple, set[int]] = {}
            by_cidr: dict[str, set[int]] = defaultdict(set)
            for remote_id, cids in remotes.items():
                for addr, mac in _members(remote_id, groups, ports):
                    net = ipaddress.ip_network(addr, strict=False)
                    if f"IPv{net.version}" != ethertype:
                        continue
                    by_addr[addr, mac] = set()
                    by_cidr[str(net)] |= cids
            for addr, mac in by_addr:
                net = ipaddress.ip_network(addr, strict=False)
                lines += _member_lines(vlan, direction, ethertype, net, mac, by_cidr[str(net)])
    return lines


def _member_lines(vlan, direction, ethertype, net, mac, cids) -> list[str]:
    side = "src" if direction == "ingress" else "dst"
    field = f"nw_{side}" if ethertype == "IPv4" else f"ipv6_{side}"
    table = RULES_INGRESS if direction == "ingress" else RULES_EGRESS
    lines = []
    for offset in range(4):
        ids = sorted(c for c in cids if c % 8 // 2 == offset)
        if not ids:
            continue
        fields = [("table", table), ("priority", 70 + offset), ("dl_type", DL_TYPE[ethertype]),
                  ("reg6", vlan), (field, str(net))]  # fmt: skip
        if net.prefixlen == 0 and mac:
            fields.append(("dl_src", mac))
        for i, state in enumerate(CT_STATES):
            acts = ",".join(f"conjunction({c + i},1/2)" for c in ids)
            lines.append(flow_text(fields + [("ct_state", state)], acts))
    return lines


def new_usage() -> dict:
    return defaultdict(lambda: defaultdict(lambda: defaultdict(set)))
