"""Translation of the OpenFlow tables into a datapath program, with megaflow wildcards.

What: :func:`translate` runs one datapath pass of the reference engine's pipeline *at
translation time* for a flow key (rule lookups, resubmit, goto_table, register writes, output
resolution) and records what must still happen per packet as a program of op rows
(``ofproto/program.py``): rule counters, key writes, ct, recirculation, outputs. It also
returns ``wc``, the key bits the result depended on: any key agreeing with this one on ``wc``
gets the very same program, so the program can be installed as a megaflow (OVS's upcall:
xlate_actions filling ``wc``, then a datapath flow with that mask).

Design: a small tree-walking translator over a private copy of the key, mirroring
``datapath/reference.py`` step for step (same lookup key, same resubmit/goto order, same
depth limit), so that executing the program reproduces the reference engine exactly. What
depends on the key is decided here and the bits read go into ``wc``:
- every lookup ORs into ``wc`` the masks of the rules it examined (``FlowTables.lookup``);
- ``IN_PORT`` and ``DL_TYPE`` are always exact (output-to-in_port and the classifier's
  dl_type index depend on them), ``NW_FRAG`` too (fragments hide the ports from lookups);
- ``move`` and ``ct(zone=REG...)`` read their source bits now and put them in ``wc``.
What depends on conntrack (ct results, a fragment held by reassembly, the recirculation
depth) is not known here: the program carries ``OP_CT``/``OP_RECIRC`` and the executor
translates the recirculated pass from the copy's key later, as OVS freezes and recirculates.

Invariants:
- The caller's key is never modified; ``wc`` has no bit in columns >= ``PARSE_FIRST``.
- Ops appear in the order the reference engine acts; ``OP_CT`` is followed by an optional
  ``OP_RECIRC`` and then ``OP_CLEAR_CT_FIELDS``; ``OP_DROP`` ends the program.
- Soundness: ``(k2 & wc) == (key & wc)`` on matchable columns implies
  ``translate(tables, k2, t).ops == translate(tables, key, t).ops``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ctaccel.conntrack.nat import spec_from_action
from ctaccel.errors import CtaccelError
from ctaccel.ofproto import actions as A
from ctaccel.ofproto import program as P
from ctaccel.ofproto.bridge import vlan_action_tci
from ctaccel.ofproto.classifier import MAX_RESUBMIT_DEPTH, lookup_key
from ctaccel.packet import key as K

_COLUMN_MASK = 0xFFFFFFFF  # one 32-bit column of a multi-column field
_IN_PORT_MASK = 0xFFFFFFFF  # OpenFlow port numbers are at most 32 bits
_DL_TYPE_MASK = 0xFFFF
_NW_FRAG_MASK = K.FRAG_ANY | K.FRAG_LATER
_ZONE_MASK = 0xFFFF
_LABEL_WORDS = 4
_CT_FIRST, _CT_LAST = K.CT_STATE, K.CT_TP_DST


@dataclass
class Translation:
    """One translated pass: the program and the key bits it depends on."""

    ops: np.ndarray  # int64[n, OPW]
    wc: np.ndarray  # int64[KEY_WIDTH]

    def format(self) -> str:
        return P.format_program(self.ops)


def translate(tables, key, table_id: int, bridge=None) -> Translation:
    """Translate the pass that starts at ``table_id`` for flow key ``key``.

    ``tables`` is a :class:`~ctaccel.ofproto.classifier.FlowTables` (rules carry
    ``rule_id``); ``key`` the packet's key at the start of the pass (registers, metadata and
    ct fields included). ``key`` is not modified. ``bridge`` (ofproto/bridge.py) is what
    NORMAL switches with; translating NORMAL may learn a MAC there (its version changes).
    """
    translator = _Translator(tables, key, bridge)
    translator.lookup_and_execute(int(table_id), resubmit_depth=0)
    return Translation(translator.program(), translator.final_wc())


def _column_words(col: int, ncols: int, whole: int):
    """(column, bits) of a field-wide value, split over its columns (MSB column first).
    A one-column field keeps all its bits (a MAC is 48 bits in one column)."""
    if ncols == 1:
        return [(col, whole)]
    return [(col + i, (whole >> (32 * (ncols - 1 - i))) & _COLUMN_MASK) for i in range(ncols)]


class _Translator:
    """The state of one translation: the evolving key, the wildcards, the ops so far."""

    def __init__(self, tables, key, bridge=None):
        self.tables = tables
        self.bridge = bridge
        self.key = np.array(key, dtype=np.int64, copy=True)
        self.wc = np.zeros(K.KEY_WIDTH, np.int64)
        self.ops: list[list[int]] = []
        self.stopped = False  # OP_DROP emitted: nothing more happens in this pass
        # Fragments: lookups see zero ports, so the port bits they examine are not a
        # dependency (NW_FRAG, always exact, already tells which packets are fragments).
        self.is_fragment = bool(self.key[K.NW_FRAG] & K.FRAG_ANY)
        self.wc[K.IN_PORT] = _IN_PORT_MASK
        self.wc[K.DL_TYPE] = _DL_TYPE_MASK
        # For every packet, not only IP ones: the lookup key transformation tests NW_FRAG
        # alone, and the parser leaves it 0 for non-IP packets, so this splits nothing.
        self.wc[K.NW_FRAG] = _NW_FRAG_MASK
        self._dispatch = {
            A.Output: self._output,
            A.OutputInPort: self._output_in_port,
            A.Controller: self._controller,
            A.Drop: self._nothing,
            A.Note: self._nothing,
            A.Ct: self._ct,
            A.CtClear: self._ct_clear,
            A.Resubmit: self._resubmit,
            A.GotoTable: self._goto_table,
            A.SetField: self._set_field,
            A.Move: self._move,
            A.SetEth: self._set_eth,
            A.SetTos: self._set_tos,
            A.DecTtl: self._dec_ttl,
            A.StripVlan: self._vlan,
            A.PushVlan: self._vlan,
            A.SetVlanVid: self._vlan,
            A.SetVlanPcp: self._vlan,
            A.Normal: self._normal,
        }

    # ------------------------------------------------------------------ results
    def emit(self, opcode: int, *args: int) -> None:
        row = [0] * P.OPW
        row[0] = opcode
        row[1 : 1 + len(args)] = [int(a) for a in args]
        self.ops.append(row)

    def program(self) -> np.ndarray:
        if not self.ops:
            return np.zeros((0, P.OPW), np.int64)
        return np.array(self.ops, dtype=np.int64)

    def final_wc(self) -> np.ndarray:
        self.wc[K.PARSE_FIRST :] = 0
        return self.wc

    # ------------------------------------------------------------------ lookups
    def lookup_and_execute(self, table_id, resubmit_depth: int) -> None:
        """Look up ``table_id`` and execute the hit, following goto_table (reference's
        ``_lookup_and_execute``)."""
        while table_id is not None and not self.stopped:
            lookup_wc = np.zeros(K.KEY_WIDTH, np.int64)
            rule = self.tables.lookup(table_id, lookup_key(self.key), lookup_wc)
            if self.is_fragment:
                lookup_wc[K.TP_SRC] = 0
                lookup_wc[K.TP_DST] = 0
            self.wc |= lookup_wc
            if rule is None:
                self.emit(P.OP_MISS)
                return
            self.emit(P.OP_RULE, self.tables.rule_id(rule))
            table_id = self.execute(rule.actions, table_id, resubmit_depth)

    def execute(self, actions, table_id: int, resubmit_depth: int):
        """A rule's actions; returns the goto_table target (the last one) or None."""
        goto = None
        for act in actions:
            if self.stopped:
                return None
            handler = self._dispatch.get(type(act))
            if handler is None:
                raise CtaccelError(f"xlate: unsupported action {act!r}")
            target = handler(act, table_id, resubmit_depth)
            if target is A.SKIP_REST:
                return None
            if target is not None:
                goto = target
        return goto

    # ------------------------------------------------------------------ key access
    def read_field(self, ref, nbits: int | None = None) -> int:
        """Bits of a field range (the low ``nbits`` of it if given), recorded in ``wc``."""
        nbits = ref.nbits if nbits is None else min(nbits, ref.nbits)
        range_mask = ((1 << nbits) - 1) << ref.start
        for col, bits in _column_words(ref.col, ref.ncols, range_mask):
            self.wc[col] |= bits
        whole = K.get_wide(self.key, ref.col, ref.ncols)
        return (whole >> ref.start) & ((1 << nbits) - 1)

    def write_field(self, ref, value: int, mask: int) -> None:
        """Write ``value`` under ``mask`` (relative to the range) into the key and emit one
        OP_SET per column touched, as the reference's _write_field does to its key."""
        mask &= (1 << ref.nbits) - 1
        whole_mask = mask << ref.start
        whole_value = (value & mask) << ref.start
        values = _column_words(ref.col, ref.ncols, whole_value)
        for (col, col_mask), (_c, col_value) in zip(
            _column_words(ref.col, ref.ncols, whole_mask), values, strict=True
        ):
            if not col_mask:
                continue
            self.key[col] = (int(self.key[col]) & ~col_mask) | col_value
            self.emit(P.OP_SET, col, col_value, col_mask)

    def set_in_port(self, port: int) -> None:
        self.key[K.IN_PORT] = port
        self.emit(P.OP_SET, K.IN_PORT, port, _IN_PORT_MASK)

    # ------------------------------------------------------------------ actions
    def _output(self, act, _table, _depth):
        port = int(act.port)
        if port != int(self.key[K.IN_PORT]):  # OVS: output to in_port needs `in_port`
            self.emit(P.OP_OUTPUT, port)

    def _output_in_port(self, _act, _table, _depth):
        self.emit(P.OP_OUTPUT, int(self.key[K.IN_PORT]))

    def _controller(self, _act, _table, _depth):
        self.emit(P.OP_CONTROLLER)

    def _nothing(self, _act, _table, _depth):
        return None

    def _goto_table(self, act, _table, _depth):
        return int(act.table)

    def _resubmit(self, act, table_id, depth):
        if depth + 1 > MAX_RESUBMIT_DEPTH:
            self.emit(P.OP_DROP, P.DROP_CODE["resubmit_depth"])
            self.stopped = True
            return
        target = table_id if act.table is None else int(act.table)
        saved_port = int(self.key[K.IN_PORT])
        if act.in_port is not None:
            # Emitted (not only tracked here) so that a recirculation inside the resubmit
            # freezes the key with this in_port, as the reference's copy has it.
            self.set_in_port(int(act.in_port))
        self.lookup_and_execute(target, depth + 1)
        if act.in_port is not None and not self.stopped:
            self.set_in_port(saved_port)

    def _set_field(self, act, _table, _depth):
        self.write_field(act.field, act.value, act.mask)

    def _set_eth(self, act, _table, _depth):
        self.key[K.DL_DST if act.dst else K.DL_SRC] = act.mac
        self.emit(P.OP_SET_ETH, 1 if act.dst else 0, act.mac)

    def _is_ip(self) -> bool:
        return int(self.key[K.DL_TYPE]) in (K.ETH_TYPE_IP, K.ETH_TYPE_IPV6)  # dl_type: in wc

    def _set_tos(self, act, _table, _depth):
        if self._is_ip():
            self.key[K.NW_TOS] = (int(self.key[K.NW_TOS]) & 0x03) | act.tos
            self.emit(P.OP_SET_TOS, act.tos)

    def _dec_ttl(self, _act, _table, _depth):
        if not self._is_ip():
            return None
        self.wc[K.NW_TTL] = 0xFF  # the verdict depends on the TTL
        if int(self.key[K.NW_TTL]) > 1:
            self.key[K.NW_TTL] -= 1
            self.emit(P.OP_DEC_TTL)
            return None
        return A.SKIP_REST  # OVS: "packet's TTL is invalid", the rule's other actions skipped

    def _vlan(self, act, _table, _depth):
        """strip_vlan, push_vlan, mod_vlan_vid, mod_vlan_pcp (the reference's _act_vlan)."""
        self.wc[K.VLAN_TCI] = 0xFFFF  # whether a tag is there decides push or rewrite
        tci = int(self.key[K.VLAN_TCI])
        new = vlan_action_tci(act, tci)
        second = 1 if isinstance(act, A.PushVlan) and tci else 0
        tpid = act.tpid if isinstance(act, A.PushVlan) else K.ETH_TYPE_VLAN
        self.key[K.VLAN_TCI] = new
        self.emit(P.OP_SET_VLAN, new, 0xFFFF, tpid, second)

    def _normal(self, _act, _table, _depth):
        """NORMAL: decided now with the bridge's current MAC table (the engine drops its caches
        when the table changes); each output tags the frame as its port wants."""
        if self.bridge is None:
            raise CtaccelError("NORMAL needs the bridge's ports (translate(..., bridge=))")
        vlan, ports = self.bridge.normal(self.key, self.wc)
        for port in ports:
            self.emit(P.OP_OUTPUT_VLAN, port.number, 0 if port.tag is not None else 1, vlan)

    def _move(self, act, _table, _depth):
        value = self.read_field(act.src)
        self.write_field(act.dst, value, (1 << act.dst.nbits) - 1)

    def _ct_clear(self, _act, _table, _depth):
        self.key[_CT_FIRST : _CT_LAST + 1] = 0
        self.emit(P.OP_CT_CLEAR)

    def _ct(self, act, _table, _depth):
        zone = int(act.zone) if act.zone is not None else 0
        if act.zone_field is not None:
            # Only the low 16 bits of the range become the zone: only they are a dependency.
            zone = self.read_field(act.zone_field, nbits=16) & _ZONE_MASK
        flags = (P.CTF_COMMIT if act.commit else 0) | (P.CTF_FORCE if act.force else 0)
        mark = mark_mask = label = label_mask = 0
        for sf in act.exec_ or ():  # the last write of each field wins, as the reference
            if sf.field.name == "ct_mark":
                flags |= P.CTF_SET_MARK
                mark, mark_mask = sf.whole_value, sf.whole_mask
            elif sf.field.name == "ct_label":
                flags |= P.CTF_SET_LABEL
                label, label_mask = sf.whole_value, sf.whole_mask
        label_words = [w for _c, w in _column_words(0, _LABEL_WORDS, label)]
        label_mask_words = [w for _c, w in _column_words(0, _LABEL_WORDS, label_mask)]
        if act.nat is not None:
            flags |= P.CTF_NAT
        flags |= P.CTF_ALG[act.alg]
        self.emit(P.OP_CT, zone, flags, mark, mark_mask, *label_words, *label_mask_words)
        if act.nat is not None:
            self.emit(P.OP_NAT_SPEC, *(int(v) for v in spec_from_action(act.nat)))
        if act.table is not None:
            self.emit(P.OP_RECIRC, P.recirc_id_for_table(int(act.table)))
        # The original continues untracked (flow_clear_conntrack); the copy, if any, is
        # translated from its own key when the executor recirculates it.
        self.key[_CT_FIRST : _CT_LAST + 1] = 0
        self.emit(P.OP_CLEAR_CT_FIELDS)
