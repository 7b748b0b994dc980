"""``ctaccel trace``: an ofproto/trace-style account of one packet, with real conntrack state.

What: replays packets 1..N-1 to build the real connection table, then runs packet N with a
tracer attached and prints each pass (the original and every recirculation), each table
lookup with the rule it matched, each action, and the ct_state conntrack really returned.
OVS's own ofproto/trace does not consult conntrack (it assumes the ``--ct-next`` flags).

Design: the engine calls the tracer's ``on_*`` hooks; this module only formats.
"""

from __future__ import annotations

import ipaddress

from ctaccel.errors import InputError
from ctaccel.packet import key as K
from ctaccel.replay import run_quietly

RULE_LINE = "=" * 79


def _mac(v: int) -> str:
    return ":".join(f"{(v >> s) & 0xFF:02x}" for s in range(40, -8, -8))


def _addr(key, col, dl_type) -> str:
    if dl_type == K.ETH_TYPE_IPV6:
        return str(ipaddress.IPv6Address(K.get_wide(key, col, 4)))
    return str(ipaddress.IPv4Address(int(key[col + 3])))


_PROTO_NAMES = {
    (K.ETH_TYPE_IP, K.IPPROTO_TCP): "tcp",
    (K.ETH_TYPE_IP, K.IPPROTO_UDP): "udp",
    (K.ETH_TYPE_IP, K.IPPROTO_ICMP): "icmp",
    (K.ETH_TYPE_IP, K.IPPROTO_SCTP): "sctp",
    (K.ETH_TYPE_IPV6, K.IPPROTO_TCP): "tcp6",
    (K.ETH_TYPE_IPV6, K.IPPROTO_UDP): "udp6",
    (K.ETH_TYPE_IPV6, K.IPPROTO_ICMPV6): "icmp6",
    (K.ETH_TYPE_IPV6, K.IPPROTO_SCTP): "sctp6",
}


def format_flow(key) -> str:
    """The flow as ofproto/trace prints it (the fields that are set)."""
    parts = []
    if key[K.CT_STATE]:
        parts.append(f"ct_state={K.format_ct_state(int(key[K.CT_STATE]))}")
        if key[K.CT_ZONE]:
            parts.append(f"ct_zone={int(key[K.CT_ZONE])}")
        if key[K.CT_MARK]:
            parts.append(f"ct_mark={int(key[K.CT_MARK]):#x}")
        label = K.get_wide(key, K.CT_LABEL, 4)
        if label:
            parts.append(f"ct_label={label:#x}")
    for i in range(16):
        if key[K.REG0 + i]:
            parts.append(f"reg{i}={int(key[K.REG0 + i]):#x}")
    meta = K.get_wide(key, K.METADATA, 2)
    if meta:
        parts.append(f"metadata={meta:#x}")
    dl_type = int(key[K.DL_TYPE])
    proto = int(key[K.NW_PROTO])
    name = _PROTO_NAMES.get((dl_type, proto))
    if name is None:
        name = {K.ETH_TYPE_IP: "ip", K.ETH_TYPE_IPV6: "ipv6", K.ETH_TYPE_ARP: "arp"}.get(dl_type)
    if name:
        parts.append(name)
    parts.append(f"in_port={int(key[K.IN_PORT])}")
    tci = int(key[K.VLAN_TCI])
    if tci & 0x1000:  # a tag: OVS prints its VID and PCP, and the (empty) second tag
        parts += [f"dl_vlan={tci & 0xFFF}", f"dl_vlan_pcp={tci >> 13}", "vlan_tci1=0x0000"]
    else:
        parts.append(f"vlan_tci={tci:#06x}")
    parts.append(f"dl_src={_mac(int(key[K.DL_SRC]))}")
    parts.append(f"dl_dst={_mac(int(key[K.DL_DST]))}")
    if name is None:
        parts.append(f"dl_type={dl_type:#06x}")
    if dl_type in (K.ETH_TYPE_IP, K.ETH_TYPE_IPV6):
        pre = "nw" if dl_type == K.ETH_TYPE_IP else "ipv6"
        parts.append(f"{pre}_src={_addr(key, K.NW_SRC, dl_type)}")
        parts.append(f"{pre}_dst={_addr(key, K.NW_DST, dl_type)}")
        if dl_type == K.ETH_TYPE_IPV6:
            parts.append(f"ipv6_label={int(key[K.IPV6_LABEL]):#07x}")
        if name in ("ip", "ipv6"):
            parts.append(f"nw_proto={proto}")
        parts.append(f"nw_tos={int(key[K.NW_TOS]) & 0xFC}")
        parts.append(f"nw_ecn={int(key[K.NW_TOS]) & 3}")
        parts.append(f"nw_ttl={int(key[K.NW_TTL])}")
        frag = int(key[K.NW_FRAG])
        parts.append("nw_frag=" + ("no" if not frag else "later" if frag & 2 else "first"))
        if frag & 2:
            pass  # a later fragment has no L4 fields
        elif proto in (K.IPPROTO_ICMP, K.IPPROTO_ICMPV6):
            parts.append(f"icmp_type={int(key[K.TP_SRC])}")
            parts.append(f"icmp_code={int(key[K.TP_DST])}")
            if proto == K.IPPROTO_ICMPV6 and key[K.TP_SRC] in (135, 136) and not key[K.TP_DST]:
                parts.append(f"nd_target={ipaddress.IPv6Address(K.get_wide(key, K.ND_TARGET, 4))}")
                parts.append(f"nd_sll={_mac(int(key[K.ARP_SHA]))}")
                parts.append(f"nd_tll={_mac(int(key[K.ARP_THA]))}")
        elif proto in (K.IPPROTO_TCP, K.IPPROTO_UDP, K.IPPROTO_SCTP):
            parts.append(f"tp_src={int(key[K.TP_SRC])}")
            parts.append(f"tp_dst={int(key[K.TP_DST])}")
            if proto == K.IPPROTO_TCP:
                parts.append(f"tcp_flags={_tcp_flags(int(key[K.TCP_FLAGS]))}")
    elif dl_type == K.ETH_TYPE_ARP:
        parts.append(f"arp_spa={ipaddress.IPv4Address(int(key[K.NW_SRC + 3]))}")
        parts.append(f"arp_tpa={ipaddress.IPv4Address(int(key[K.NW_DST + 3]))}")
        parts.append(f"arp_op={proto}")
        parts.append(f"arp_sha={_mac(int(key[K.ARP_SHA]))}")
        parts.append(f"arp_tha={_mac(int(key[K.ARP_THA]))}")
    return ",".join(parts)


_TCP_FLAG_NAMES = ("fin", "syn", "rst", "psh", "ack", "urg", "ece", "cwr", "ns")


def _tcp_flags(v: int) -> str:
    names = [n for i, n in enumerate(_TCP_FLAG_NAMES) if v & (1 << i)]
    return "|".join(names) if names else "0"


def _rule_text(rule) -> str:
    text = getattr(rule, "match_text", None)
    if text is None:
        text = str(rule)
    return f"{text}, priority {rule.priority}" if text else f"priority {rule.priority}"


def _action_text(act) -> str:
    fmt = getattr(act, "format", None)
    return fmt() if callable(fmt) else str(act)


class TextTracer:
    """Collects the engine's hooks into ofproto/trace-like text."""

    def __init__(self):
        self.lines: list[str] = []
        self._recirc = 0

    def _indent(self, depth):
        return "    " * depth

    def on_pass(self, group, table_id, parent):
        if parent is not None:
            self._recirc += 1
            self.lines += [
                "",
                RULE_LINE,
                f"recirc(#{self._recirc}) - resume conntrack with ct_state="
                f"{K.format_ct_state(int(group.key[K.CT_STATE]))} at table {table_id}",
                RULE_LINE,
            ]
        self.lines += ["", f"Flow: {format_flow(group.key)}", "", 'bridge("br0")', "-------------"]

    def on_lookup(self, group, table_id, rule, depth):
        ind = self._indent(depth)
        if rule is None:
            self.lines.append(f"{ind}{table_id:2d}. No match.")
            self.lines.append(f"{ind}    drop")
        else:
            self.lines.append(f"{ind}{table_id:2d}. {_rule_text(rule)}")

    def on_action(self, group, act, depth):
        self.lines.append(f"{self._indent(depth)}    {_action_text(act)}")

    def on_notes(self, notes):
        """What an action decided, one ``-> note`` line each (NORMAL's learning and choice)."""
        self.lines.extend(f"     -> {note}" for note in notes)

    def on_ct(self, group, act):
        key = group.key
        state = K.format_ct_state(int(key[K.CT_STATE]))
        extra = [f"ct_zone={int(key[K.CT_ZONE])}"]
        if key[K.CT_MARK]:
            extra.append(f"ct_mark={int(key[K.CT_MARK]):#x}")
        label = K.get_wide(key, K.CT_LABEL, 4)
        if label:
            extra.append(f"ct_label={label:#x}")
        self.lines.append(f"     -> conntrack: ct_state={state}," + ",".join(extra))
        if act.table is not None:
            self.lines.append(
                "     -> A clone of the packet is forked to recirculate. The "
                f"forked pipeline will be resumed at table {act.table}."
            )
        self.lines.append(
            "     -> Sets the packet to an untracked state, and clears all the conntrack fields."
        )


def trace_packet(flows_path, inputs, packet_no: int, *, zone_limits=None,
                 mode="assume-established", bridge=None, timeout_policies=None) -> str:  # fmt: skip
    """The trace text for packet ``packet_no`` (1-based, in processing order): packets before
    it run through the ``mode`` engine; packet N through the reference engine on the same
    conntrack and rules (same results by the modes' invariant), with the tracer attached."""
    if packet_no < 1:
        raise InputError("--packet must be 1 or more")
    engine = run_quietly(flows_path, inputs, zone_limits=zone_limits, stop_before=packet_no,
                         mode=mode, bridge=bridge, timeout_policies=timeout_policies)  # fmt: skip
    if engine.next_packet is None:
        raise InputError(f"--packet {packet_no}: the inputs hold fewer packets")
    n, in_port, frame, now_ms = engine.next_packet
    engine = getattr(engine, "reference", engine)
    tracer = TextTracer()
    engine.tracer = tracer
    res = engine.process(frame, in_port, now_ms)
    engine.tracer = None
    out = [f"Packet {n} (in_port {in_port}, t={now_ms / 1000:.3f} s, {len(frame)} bytes)"]
    out += tracer.lines
    out += ["", RULE_LINE]
    if res.outputs:
        ports = ",".join(str(p) for p in res.out_ports)
        out.append(
            f"Result: output to {ports}; ct_state seen by the last rule: "
            f"{res.ct_state if res.ct_state else '(untracked)'}"
        )
    else:
        out.append(f"Result: dropped ({res.drop_reason})")
    return "\n".join(out) + "\n"
