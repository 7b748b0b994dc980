"""The reference engine: OVS's pipeline, one packet at a time, in plain Python.

What: parse a frame, look it up in table 0, execute the matched rule's actions (resubmit,
goto_table, registers, ct, output, ...), recirculate after ``ct(table=N)``, and report what
happened: the frames emitted on each port in order, the ct_state the last matched rule saw,
and a named drop reason when nothing left.

Design: this is the *semantics*; the compiled datapath (next issue) must produce the same
results. Rule lookup and action interpretation are plain Python; conntrack and header parsing
are the numba kernels shared with the compiled path. Execution follows dpif-netdev's order:
a ``ct(table=N)`` runs conntrack, then the recirculated copy is processed to completion (it
may recirculate again, up to depth 8), then the original continues with its ct fields cleared.
A pass works on a *group* of frames that share one flow key: normally one frame, but when the
last fragment of a datagram completes reassembly at a ct action, all its fragments continue
together, as OVS puts them back in the batch, and each recirculates separately.

Invariants:
- Nothing here reads a clock or opens a file; ``now_ms`` comes from the caller.
- Per-rule counters count every lookup that matched (recirculated passes too), bytes are the
  frame length, as OVS's rule stats. They live in this engine's ``rule_stats`` array
  (n_packets, n_bytes per rule id), never in the rules: a datapath engine hands its own
  array in, so packets it leaves to this engine count where its compiled path counts.
- A packet's ct handle (OVS's ``md.conn``) travels with the packet through recirculation and
  is dropped by ``ct_clear``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ctaccel.conntrack import Conntrack, action_row
from ctaccel.conntrack.nat import spec_from_action
from ctaccel.ofproto import actions as A
from ctaccel.ofproto.bridge import Bridge, vlan_action_tci
from ctaccel.ofproto.classifier import MAX_RESUBMIT_DEPTH, FlowTables, lookup_key
from ctaccel.ofproto.rules import carried_counters
from ctaccel.packet import key as K
from ctaccel.packet.parse import parse_frame
from ctaccel.packet.rewrite import MAX_TAG_BYTES, set_eth, set_ip_tos_ttl, set_vlan

MAX_RECIRC_DEPTH = 8  # dpif-netdev MAX_RECIRC_DEPTH
ETH_HEADER_LEN = 14
CONTROLLER = "controller"

_CT_FIRST, _CT_LAST = K.CT_STATE, K.CT_TP_DST
_HDR_FIRST, _HDR_LAST = K.NW_SRC, K.TP_DST


@dataclass
class PacketResult:
    """What happened to one input packet."""

    outputs: list = field(default_factory=list)  # [(port or "controller", frame bytes)]
    ct_state: str | None = None  # as OVS prints it; "" untracked; None if no rule matched
    drop_reason: str | None = None
    last_lookup_missed: bool = False
    matched: bool = False
    recirculations: int = 0
    recirc_dropped: bool = False

    @property
    def out_ports(self) -> list:
        return [p for p, _f in self.outputs]

    def verdict(self) -> tuple:
        """What two engines must agree on for this packet: the outputs (port and frame
        bytes, in order), the ct_state and the drop reason."""
        return ([(p, bytes(f)) for p, f in self.outputs], self.ct_state, self.drop_reason)

    def settle_drop_reason(self) -> str | None:
        """Set the final drop reason (none if anything was emitted; else an explicit reason,
        then the recirculation cap, then a table miss, else the rules dropped it); return it."""
        if self.outputs:
            self.drop_reason = None
        elif self.drop_reason is None:
            if self.recirc_dropped:
                self.drop_reason = "recirc_depth"
            elif self.last_lookup_missed:
                self.drop_reason = "table_miss"
            else:
                self.drop_reason = "rule_drop"
        return self.drop_reason


@dataclass
class _Group:
    """Frames that share one flow key through a pass (usually one frame)."""

    frames: list  # list of np.ndarray[uint8]
    key: np.ndarray
    # Per frame: None, or the ct columns (CT_STATE..CT_TP_DST) this frame carries instead of
    # the key's (fragments flushed by ipf with another datagram's ct results).
    frame_ct: list | None = None
    ct_handle: int = -1  # OVS md.conn: slot * 2 + reply, or -1
    # The ct fields the *packet* carries (OVS's datapath metadata), as opposed to the key's,
    # which are what rules see: after a ct action the flow reads as untracked again
    # (flow_clear_conntrack) but a later ct in the pass still starts from this.
    md: np.ndarray | None = None
    # The packet's own L3/L4 header columns (NW_SRC..TP_DST) once a ct(nat) rewrote them: the
    # rules of this pass still see the headers the pass started with (OVS translates a whole
    # pass before the datapath runs it); conntrack and recirculated copies see the rewrite.
    hdr: np.ndarray | None = None
    depth: int = 0  # recirculations so far
    table: int = 0  # table of the rule being executed (for resubmit without a table)
    # bytes VLAN pushes and pops added since the pass began: a rule counts the length the
    # frame had then (OVS credits rules with their datapath flow's packet sizes)
    pass_delta: int = 0
    # bytes VLAN pushes and pops added since the packet was received (the cap: MAX_TAG_BYTES)
    tag_bytes: int = 0


class ReferenceEngine:
    """OVS pipeline semantics over a rule set and a connection tracker."""

    def __init__(self, rules, conntrack: Conntrack | None = None, ipf=None, tracer=None,
                 rule_stats: np.ndarray | None = None, bridge: Bridge | None = None):  # fmt: skip
        self.replace_rules(rules, rule_stats)
        # NORMAL's ports and MAC table (ofproto/bridge.py); a datapath engine shares its own
        self.bridge = bridge if bridge is not None else Bridge.from_rules(self.tables.all_rules())
        self.conntrack = conntrack if conntrack is not None else Conntrack()
        if ipf is None:
            from ctaccel.conntrack.ipf import Ipf

            ipf = Ipf()
        self.ipf = ipf
        self.tracer = tracer
        self.counters: dict[str, int] = {}
        self._result: PacketResult | None = None
        self._now_ms = 0
        self._dispatch = {
            A.Output: self._act_output,
            A.OutputInPort: self._act_output_in_port,
            A.Controller: self._act_controller,
            A.Drop: self._act_nothing,
            A.Note: self._act_nothing,
            A.Ct: self._act_ct,
            A.CtClear: self._act_ct_clear,
            A.Resubmit: self._act_resubmit,
            A.GotoTable: self._act_goto_table,
            A.SetField: self._act_set_field,
            A.SetEth: self._act_set_eth,
            A.SetTos: self._act_set_tos,
            A.DecTtl: self._act_dec_ttl,
            A.Move: self._act_move,
            A.StripVlan: self._act_vlan,
            A.PushVlan: self._act_vlan,
            A.SetVlanVid: self._act_vlan,
            A.SetVlanPcp: self._act_vlan,
            A.Normal: self._act_normal,
        }

    # ------------------------------------------------------------------ public
    def replace_rules(self, rules, rule_stats: np.ndarray | None = None) -> None:
        """Use ``rules`` (rules or a FlowTables) from now on; their counters start at zero, in
        ``rule_stats`` when given (int64, a row per rule id: n_packets, n_bytes)."""
        self.tables = rules if isinstance(rules, FlowTables) else FlowTables(rules)
        if rule_stats is None:
            rule_stats = np.zeros((max(len(self.tables), 1), 2), np.int64)
        self.rule_stats = rule_stats

    def replace_flows(self, rules) -> None:
        """As DatapathEngine.replace_flows: the new rules from the next packet on, the
        counters of unchanged rules kept."""
        old_rules, old_stats = self.tables.all_rules(), self.rule_stats.copy()
        self.replace_rules(rules)
        self.rule_stats[:] = carried_counters(old_rules, old_stats, self.tables.all_rules())

    def rule_counters(self) -> list[tuple[int, int]]:
        """(n_packets, n_bytes) per rule, in ``tables.all_rules()`` order (rule id order)."""
        return [(p, b) for p, b in self.rule_stats[: len(self.tables)].tolist()]

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def process(self, frame, in_port: int, now_ms: int) -> PacketResult:
        """Run one packet through the pipeline. ``frame`` is bytes or a uint8 array."""
        # writable arrays only: a read-only one is another type, so another compile of the parser
        if not isinstance(frame, np.ndarray):
            frame = np.frombuffer(bytearray(frame), np.uint8)
        elif not frame.flags.writeable:
            frame = frame.copy()
        res = PacketResult()
        self._result = res
        self._now_ms = int(now_ms)
        if len(frame) < ETH_HEADER_LEN:
            res.drop_reason = "rx_invalid"
            self.count("drop_rx_invalid")
            return res
        key = np.zeros(K.KEY_WIDTH, np.int64)
        parse_frame(frame, np.int64(in_port), key)
        self.bridge.saw_port(int(in_port))
        group = _Group([frame], key)
        if self.tracer:
            self.tracer.on_pass(group, 0, None)
        self._pass(group, 0)
        if res.settle_drop_reason():
            self.count("drop_" + res.drop_reason)
        return res

    # ------------------------------------------------------------------ passes
    def _pass(self, group: _Group, table_id: int) -> None:
        """One datapath pass: look up ``table_id`` and execute, following goto_table."""
        self._lookup_and_execute(group, table_id, resubmit_depth=0)

    def _lookup_and_execute(self, group: _Group, table_id, resubmit_depth: int) -> None:
        res = self._result
        while table_id is not None and group.frames:
            rule = self.tables.lookup(table_id, lookup_key(group.key))
            if self.tracer:
                self.tracer.on_lookup(group, table_id, rule, resubmit_depth)
            if rule is None:
                res.last_lookup_missed = True
                return
            group.table = table_id
            res.last_lookup_missed = False
            res.matched = True
            res.ct_state = K.format_ct_state(int(group.key[K.CT_STATE]))
            stats = self.rule_stats[self.tables.rule_id(rule)]
            stats[0] += 1
            stats[1] += len(group.frames[-1]) - group.pass_delta
            table_id = self._execute(group, rule.actions, resubmit_depth)

    def _execute(self, group: _Group, actions, resubmit_depth: int):
        """Execute a rule's actions; returns the goto_table target or None."""
        goto = None
        for act in actions:
            if not group.frames:  # stolen (fragment held) or dropped
                return None
            if self.tracer:
                self.tracer.on_action(group, act, resubmit_depth)
            r = self._dispatch[type(act)](group, act, resubmit_depth)
            if r is A.SKIP_REST:
                return None
            if r is not None:
                goto = r
        return goto

    # ------------------------------------------------------------------ actions
    def _emit(self, group: _Group, port) -> None:
        for f in group.frames:
            self._result.outputs.append((port, f.tobytes()))

    def _act_output(self, group, act, _d):
        port = int(act.port)
        if port != int(group.key[K.IN_PORT]):  # OVS: output to in_port needs `in_port`
            self._emit(group, port)

    def _act_output_in_port(self, group, _act, _d):
        self._emit(group, int(group.key[K.IN_PORT]))

    def _act_controller(self, group, _act, _d):
        self._emit(group, CONTROLLER)

    def _act_nothing(self, _group, _act, _d):
        return None

    def _act_goto_table(self, _group, act, _d):
        return int(act.table)

    def _act_resubmit(self, group, act, depth):
        if depth + 1 > MAX_RESUBMIT_DEPTH:
            self._result.drop_reason = "resubmit_depth"
            group.frames = []
            return
        table = group.table if act.table is None else int(act.table)
        saved_port = int(group.key[K.IN_PORT])
        if act.in_port is not None:
            group.key[K.IN_PORT] = int(act.in_port)
        saved_table = group.table
        self._lookup_and_execute(group, table, depth + 1)
        group.table = saved_table
        group.key[K.IN_PORT] = saved_port

    def _act_set_field(self, group, act, _d):
        _write_field(group.key, act.field, act.value, act.mask)

    def _act_vlan(self, group, act, _d):
        """strip_vlan, push_vlan, mod_vlan_vid, mod_vlan_pcp: the flow's tag, then the frames'
        (copies; the key's header offsets follow a push or pop)."""
        old_tci = int(group.key[K.VLAN_TCI])
        tpid = getattr(act, "tpid", K.ETH_TYPE_VLAN)
        if isinstance(act, A.PushVlan) and old_tci:
            old_tci = 0  # a second tag: the frame gets it, the key keeps showing the outer one
        group.key[K.VLAN_TCI] = vlan_action_tci(act, int(group.key[K.VLAN_TCI]))
        _commit_vlan(group, old_tci, tpid)

    def _act_normal(self, group, _act, _d):
        """NORMAL (ofproto/bridge.py): each chosen port gets the frames with its VLAN tag; the
        flow itself is unchanged."""
        vlan, ports = self.bridge.normal(group.key)
        if self.tracer:
            self.tracer.on_notes(self.bridge.notes)
        tci = int(group.key[K.VLAN_TCI])
        for port in ports:
            out = port.out_tci(vlan, tci & 0xE000 if tci & 0x1000 else 0)
            for f in group.frames:
                self._result.outputs.append((port.number, _vlan_rewritten(f, tci, out).tobytes()))

    def _act_set_eth(self, group, act, _d):
        """mod_dl_src/mod_dl_dst: the flow and every frame of the group (fresh copies, so
        what was output before, and a recirculated copy's frames, keep theirs)."""
        group.key[K.DL_DST if act.dst else K.DL_SRC] = act.mac
        frames = [f.copy() for f in group.frames]
        for f in frames:
            set_eth(f, act.dst, act.mac)
        group.frames = frames

    def _act_set_tos(self, group, act, _d):
        """mod_nw_tos: the DSCP bits of an IP packet's flow and frames (copies)."""
        if int(group.key[K.DL_TYPE]) in (K.ETH_TYPE_IP, K.ETH_TYPE_IPV6):
            group.key[K.NW_TOS] = (int(group.key[K.NW_TOS]) & 0x03) | act.tos
            group.frames = [_ip_rewritten(f, group.key, tos=act.tos) for f in group.frames]

    def _act_dec_ttl(self, group, _act, _d):
        """dec_ttl: an IP packet's TTL minus one; at 0 or 1 the rule's other actions are
        skipped (OVS: "packet's TTL is invalid")."""
        if int(group.key[K.DL_TYPE]) not in (K.ETH_TYPE_IP, K.ETH_TYPE_IPV6):
            return None
        if int(group.key[K.NW_TTL]) <= 1:
            return A.SKIP_REST
        group.key[K.NW_TTL] -= 1
        group.frames = [_ip_rewritten(f, group.key, ttl_down=True) for f in group.frames]
        return None

    def _act_move(self, group, act, _d):
        value = _read_field(group.key, act.src)
        _write_field(group.key, act.dst, value, (1 << act.dst.nbits) - 1)

    def _act_ct_clear(self, group, _act, _d):
        group.key[_CT_FIRST : _CT_LAST + 1] = 0
        group.ct_handle = -1
        group.md = None

    def _act_ct(self, group, act, _depth):
        key = group.key
        zone = int(act.zone) if act.zone is not None else 0
        if act.zone_field is not None:
            zone = _read_field(key, act.zone_field) & 0xFFFF
        mark = label = None
        mark_mask, label_mask = 0xFFFFFFFF, (1 << 128) - 1
        for sf in act.exec_ or ():
            if sf.field.name == "ct_mark":
                mark, mark_mask = sf.whole_value, sf.whole_mask
            elif sf.field.name == "ct_label":
                label, label_mask = sf.whole_value, sf.whole_mask

        nat = spec_from_action(act.nat) if act.nat is not None else None
        if nat is not None:  # the frames may be rewritten: the packet's own copies
            group.frames = [f if f.flags.writeable else f.copy() for f in group.frames]

        ct_act = action_row(zone, bool(act.commit), bool(act.force), mark, mark_mask, label,
                            label_mask, act.alg)  # fmt: skip

        def conntrack(frame, ct_key, cached):
            return self.conntrack.execute(frame, ct_key, ct_act, self._now_ms, cached, nat)

        key[_CT_FIRST : _CT_LAST + 1] = 0 if group.md is None else group.md
        if key[K.NW_FRAG] & K.FRAG_ANY:
            self._ct_fragment(group, zone, conntrack, nat is not None)
        else:
            pkt_key = packet_key(group)
            group.ct_handle = conntrack(group.frames[0], pkt_key, group.ct_handle)
            if nat is not None:  # an FTP command rewritten for NAT may change the length
                group.frames[0] = self.conntrack.last_frame
            if pkt_key is not key:
                key[_CT_FIRST : _CT_LAST + 1] = pkt_key[_CT_FIRST : _CT_LAST + 1]
                hdr = pkt_key[_HDR_FIRST : _HDR_LAST + 1]
                if group.hdr is not None or (hdr != key[_HDR_FIRST : _HDR_LAST + 1]).any():
                    group.hdr = hdr.copy()
            if self._now_ms >= self.ipf.next_flush_ms:
                self._append_flushed(group, self.ipf.flush(self._now_ms, 1, int(key[K.DL_TYPE])))
        group.md = key[_CT_FIRST : _CT_LAST + 1].copy()
        if self.tracer:
            self.tracer.on_ct(group, act)
        if act.table is not None and group.frames:
            self._recirculate(group, int(act.table))
        # The original continues with its ct fields cleared (flow_clear_conntrack); the
        # packet keeps its connection handle for a later ct in the same zone.
        key[_CT_FIRST : _CT_LAST + 1] = 0

    def _ct_fragment(self, group: _Group, zone: int, conntrack, nat: bool = False) -> None:
        """A fragment at a ct action (OVS ipf): held, invalid, or the last one of its
        datagram: conntrack then runs on the reassembled datagram (which is never emitted)
        and every fragment continues with its result. See conntrack/ipf.py."""
        key = group.key
        r = self.ipf.process(
            group.frames[0].tobytes(), key, zone, self._now_ms, recirc_id=group.depth
        )
        if r.kind == "not_fragment":
            group.ct_handle = conntrack(group.frames[0], key, group.ct_handle)
        elif r.kind == "held":
            group.frames, group.frame_ct = [], None
            self._result.drop_reason = "ipf_held"
        elif r.kind == "invalid":
            self.count("ipf_" + str(r.reason))
            key[_CT_FIRST : _CT_LAST + 1] = 0
            key[K.CT_STATE] = K.CS_INVALID | K.CS_TRACKED
            key[K.CT_ZONE] = zone
            group.ct_handle = -1
        else:  # complete
            whole = np.frombuffer(r.reassembled, np.uint8).copy()
            whole_key = np.zeros(K.KEY_WIDTH, np.int64)
            parse_frame(whole, np.int64(key[K.IN_PORT]), whole_key)
            _copy_metadata(key, whole_key)
            whole_key[_CT_FIRST : _CT_LAST + 1] = key[_CT_FIRST : _CT_LAST + 1]
            conntrack(whole, whole_key, -1)
            r.ct_md = whole_key[_CT_FIRST : _CT_LAST + 1].copy()
            key[_CT_FIRST : _CT_LAST + 1] = r.ct_md
            group.frames = [np.frombuffer(bytearray(f), np.uint8) for f in r.fragments]
            if nat:
                group.frames = _nat_fragments(whole, whole_key, group.frames)
            group.frame_ct = None
            group.ct_handle = -1
        self._append_flushed(group, r.flushed)

    def _append_flushed(self, group: _Group, flushed) -> None:
        """Fragments of other datagrams that ipf releases after this packet: they follow it
        through the actions after the current ct, each with its own ct results."""
        if not flushed:
            return
        if group.frame_ct is None:
            group.frame_ct = [None] * len(group.frames)
        for ff in flushed:
            md = np.zeros(_CT_LAST - _CT_FIRST + 1, np.int64)
            if ff.expired:
                md[0] = K.CS_INVALID  # OVS: inv without trk
                md[K.CT_ZONE - _CT_FIRST] = ff.zone
            else:
                md[:] = ff.result.ct_md
            group.frames.append(np.frombuffer(bytearray(ff.frame), np.uint8))
            group.frame_ct.append(md)

    # ------------------------------------------------------------------ recirculation
    def _recirculate(self, group: _Group, table_id: int) -> None:
        res = self._result
        if group.depth >= MAX_RECIRC_DEPTH:
            self.count("recirc_depth_exceeded")
            res.recirc_dropped = True
            return
        res.recirculations += 1
        for frame, key in _split_for_recirc(group):
            copy = _Group(
                [frame],
                key,
                ct_handle=group.ct_handle,
                depth=group.depth + 1,
                md=key[_CT_FIRST : _CT_LAST + 1].copy(),
                tag_bytes=group.tag_bytes,
            )
            if self.tracer:
                self.tracer.on_pass(copy, table_id, group)
            self._lookup_and_execute(copy, table_id, 0)


def _nat_fragments(whole, whole_key, frags):
    """What OVS's ipf does after conntrack ran on a reassembled datagram: the first fragment
    takes the datagram's L4 bytes it holds (translated ports, updated checksum) and every
    fragment the datagram's addresses (IPv4: header checksum updated incrementally)."""
    from ctaccel.packet.checksum import recalc32

    out = []
    w3, w4 = int(whole_key[K.L3_OFS]), int(whole_key[K.L4_OFS])
    v6 = whole_key[K.DL_TYPE] == K.ETH_TYPE_IPV6
    for i, frag in enumerate(frags):
        f = frag.copy()
        k = np.zeros(K.KEY_WIDTH, np.int64)
        parse_frame(f, np.int64(0), k)
        l3 = int(k[K.L3_OFS])
        if i == 0 and k[K.L4_OFS] >= 0:
            l4 = int(k[K.L4_OFS])
            size = max(0, min(int(k[K.L4_LEN]), len(f) - l4, len(whole) - w4))
            f[l4 : l4 + size] = whole[w4 : w4 + size]
        if v6:
            f[l3 + 8 : l3 + 40] = whole[w3 + 8 : w3 + 40]
        else:
            csum = (int(f[l3 + 10]) << 8) | int(f[l3 + 11])
            for ofs in (12, 16):
                old = int.from_bytes(f[l3 + ofs : l3 + ofs + 4].tobytes(), "big")
                new = int.from_bytes(whole[w3 + ofs : w3 + ofs + 4].tobytes(), "big")
                csum = recalc32(csum, old, new)
            f[l3 + 10 : l3 + 12] = np.frombuffer(csum.to_bytes(2, "big"), np.uint8)
            f[l3 + 12 : l3 + 20] = whole[w3 + 12 : w3 + 20]
        out.append(f)
    return out


def packet_key(group):
    """The key as the packet itself reads (headers rewritten by NAT), for conntrack: the
    group's key when nothing was rewritten, else a copy with the rewritten headers."""
    if group.hdr is None and not group.frames[0].flags.writeable:
        return group.key
    k = group.key.copy()
    if group.hdr is not None:
        k[_HDR_FIRST : _HDR_LAST + 1] = group.hdr
    return k


def _split_for_recirc(group):
    """(frame, key) per frame for a recirculation: a single frame keeps a copy of the group
    key (with the packet's rewritten headers, as OVS re-parses a recirculated packet) and a
    private copy of a frame that may still be rewritten; several (fragments) are re-parsed
    and get the group's metadata and their ct fields."""
    key = group.key
    if len(group.frames) == 1 and not group.frame_ct:
        frame = group.frames[0]
        k = key.copy()
        if group.hdr is not None:
            k[_HDR_FIRST : _HDR_LAST + 1] = group.hdr
        return [(frame.copy() if frame.flags.writeable else frame, k)]
    out = []
    for i, f in enumerate(group.frames):
        k = np.zeros(K.KEY_WIDTH, np.int64)
        parse_frame(f, np.int64(key[K.IN_PORT]), k)
        _copy_metadata(key, k)
        md = group.frame_ct[i] if group.frame_ct else None
        k[_CT_FIRST : _CT_LAST + 1] = key[_CT_FIRST : _CT_LAST + 1] if md is None else md
        out.append((f, k))
    return out


def _copy_metadata(src, dst) -> None:
    """in_port, registers and metadata: what survives into a re-parsed key."""
    dst[K.IN_PORT] = src[K.IN_PORT]
    dst[K.REG0 : K.METADATA + 2] = src[K.REG0 : K.METADATA + 2]


def _vlan_rewritten(frame, old_tci: int, new_tci: int, tpid: int = K.ETH_TYPE_VLAN):
    """A copy of ``frame`` whose outer tag says ``new_tci`` (packet/rewrite.py set_vlan)."""
    f = np.zeros(len(frame) + 4, np.uint8)
    f[: len(frame)] = frame
    return f[: set_vlan(f, len(frame), old_tci, new_tci, tpid)]


def _commit_vlan(group, old_tci: int, tpid: int = K.ETH_TYPE_VLAN) -> None:
    """The group's frames made to carry the key's VLAN tag, which was ``old_tci``."""
    new_tci = int(group.key[K.VLAN_TCI])
    if new_tci == old_tci:
        return
    shift = (4 if new_tci else 0) - (4 if old_tci else 0)
    if group.tag_bytes + shift > MAX_TAG_BYTES:
        return  # no room for another tag: the flow changes, the frame does not (vm.py too)
    group.frames = [_vlan_rewritten(f, old_tci, new_tci, tpid) for f in group.frames]
    group.tag_bytes += shift
    group.pass_delta += shift
    for col in (K.L3_OFS, K.L4_OFS):
        if group.key[col] >= 0:
            group.key[col] += shift


def _ip_rewritten(frame, key, tos: int = -1, ttl_down: bool = False):
    """A copy of ``frame`` with its IP header's DSCP set to ``tos`` (when >= 0) and/or its TTL
    / hop limit one lower (packet/rewrite.py, the VM's kernel)."""
    f = frame.copy()
    set_ip_tos_ttl(f, len(f), int(key[K.L3_OFS]), int(key[K.DL_TYPE]), tos, ttl_down)
    return f


def _read_field(key, ref) -> int:
    whole = K.get_wide(key, ref.col, ref.ncols)
    return (whole >> ref.start) & ((1 << ref.nbits) - 1)


def _write_field(key, ref, value: int, mask: int) -> None:
    mask &= (1 << ref.nbits) - 1
    whole = K.get_wide(key, ref.col, ref.ncols)
    whole = (whole & ~(mask << ref.start)) | ((value & mask) << ref.start)
    K.set_wide(key, ref.col, ref.ncols, whole)
