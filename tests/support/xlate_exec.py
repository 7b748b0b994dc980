"""A plain-Python interpreter of datapath programs, for the translation tests only.

What: :class:`ProgramExecutor` processes packets the way the compiled datapath will: parse,
translate the pass (``ofproto/xlate.py``) or reuse a cached program whose megaflow
(``wc``, masked key) covers the key, execute its ops with the real
:class:`~ctaccel.conntrack.Conntrack`, and on ``OP_RECIRC`` translate and run the copy's pass
to completion first. It returns the reference engine's :class:`PacketResult`, so tests can
compare the two packet for packet.

Design: mirrors ``datapath/reference.py`` for everything a program leaves to run time: the
packet's ct metadata (``md``) and connection handle, the recirculation depth cap, counters,
the ct_state the last matched rule saw, and the drop reason computation. The megaflow cache
is a plain list scanned linearly (a test helper, not the real cache); with ``verify`` every
cache hit is checked against a fresh translation.

Invariants: no IP fragments (ipf is the engine's business; the tests send none), every
pass-start key and program is recorded in ``passes`` for soundness checks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ctaccel.conntrack import Conntrack, action_row
from ctaccel.conntrack.nat import NS_WIDTH
from ctaccel.datapath.reference import ETH_HEADER_LEN, MAX_RECIRC_DEPTH, PacketResult
from ctaccel.ofproto import program as P
from ctaccel.ofproto.classifier import FlowTables
from ctaccel.ofproto.xlate import translate
from ctaccel.packet import key as K
from ctaccel.packet.parse import parse_frame

_CT_FIRST, _CT_LAST = K.CT_STATE, K.CT_TP_DST


@dataclass
class _Packet:
    frame: np.ndarray
    key: np.ndarray
    md: np.ndarray | None = None  # the packet's ct metadata (OVS md), None: untracked
    ct_handle: int = -1
    depth: int = 0


def _label_int(words) -> int:
    value = 0
    for w in words:
        value = (value << 32) | int(w)
    return value


class ProgramExecutor:
    """Runs packets through translated programs (with an optional megaflow cache)."""

    def __init__(self, rules, conntrack: Conntrack | None = None, cache=True, verify=True):
        self.tables = rules if isinstance(rules, FlowTables) else FlowTables(rules)
        self.rules = self.tables.all_rules()
        self.rule_stats = [[0, 0] for _ in self.rules]  # (n_packets, n_bytes) per rule id
        self.conntrack = conntrack if conntrack is not None else Conntrack()
        self.cache = cache
        self.verify = verify
        self.megaflows: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []
        self.passes: list[tuple[int, np.ndarray, np.ndarray]] = []  # (table, key, ops)
        self.counters: dict[str, int] = {}
        self.upcalls = 0
        self.hits = 0
        self._result: PacketResult | None = None
        self._now_ms = 0

    def rule_counters(self) -> list[tuple[int, int]]:
        return [(p, b) for p, b in self.rule_stats]

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    # ------------------------------------------------------------------ programs
    def program(self, key: np.ndarray, table: int) -> np.ndarray:
        if self.cache:
            for m_table, wc, masked, ops in self.megaflows:
                if m_table == table and np.array_equal(key & wc, masked):
                    self.hits += 1
                    if self.verify:
                        fresh = translate(self.tables, key, table).ops
                        assert np.array_equal(fresh, ops), (
                            "megaflow hit with a different program:\n"
                            f"{P.format_program(ops)}\n--- fresh ---\n{P.format_program(fresh)}"
                        )
                    return ops
        self.upcalls += 1
        tr = translate(self.tables, key, table)
        if self.cache:
            self.megaflows.append((table, tr.wc.copy(), key & tr.wc, tr.ops))
        return tr.ops

    # ------------------------------------------------------------------ packets
    def process(self, frame, in_port: int, now_ms: int) -> PacketResult:
        if not isinstance(frame, np.ndarray):
            frame = np.frombuffer(bytes(frame), np.uint8)
        res = PacketResult()
        self._result = res
        self._now_ms = int(now_ms)
        if len(frame) < ETH_HEADER_LEN:
            res.drop_reason = "rx_invalid"
            self.count("drop_rx_invalid")
            return res
        key = np.zeros(K.KEY_WIDTH, np.int64)
        parse_frame(frame, np.int64(in_port), key)
        assert not key[K.NW_FRAG] & K.FRAG_ANY, "xlate_exec does not model ipf"
        self._run_pass(_Packet(frame, key), 0)
        if res.settle_drop_reason():
            self.count("drop_" + res.drop_reason)
        return res

    def _run_pass(self, pkt: _Packet, table: int) -> None:
        ops = self.program(pkt.key, table)
        self.passes.append((table, pkt.key.copy(), ops))
        res = self._result
        key = pkt.key
        for pc, row in enumerate(ops):
            op = int(row[0])
            if op == P.OP_RULE:
                stats = self.rule_stats[int(row[1])]
                stats[0] += 1
                stats[1] += len(pkt.frame)
                res.matched = True
                res.last_lookup_missed = False
                res.ct_state = K.format_ct_state(int(key[K.CT_STATE]))
            elif op == P.OP_MISS:
                res.last_lookup_missed = True
            elif op == P.OP_OUTPUT:
                res.outputs.append((int(row[1]), pkt.frame.tobytes()))
            elif op == P.OP_CONTROLLER:
                res.outputs.append(("controller", pkt.frame.tobytes()))
            elif op == P.OP_SET:
                col, value, mask = int(row[1]), int(row[2]), int(row[3])
                key[col] = (int(key[col]) & ~mask) | (value & mask)
            elif op == P.OP_CT:
                nat = ops[pc + 1][1 : 1 + NS_WIDTH] if int(row[2]) & P.CTF_NAT else None
                self._ct(pkt, row, nat)
            elif op == P.OP_NAT_SPEC:
                pass
            elif op == P.OP_RECIRC:
                self._recirculate(pkt, P.table_for_recirc_id(int(row[1])))
            elif op == P.OP_CLEAR_CT_FIELDS:
                key[_CT_FIRST : _CT_LAST + 1] = 0
            elif op == P.OP_CT_CLEAR:
                key[_CT_FIRST : _CT_LAST + 1] = 0
                pkt.ct_handle = -1
                pkt.md = None
            elif op == P.OP_DROP:
                res.drop_reason = P.DROP_REASON_NAMES[int(row[1])]
                return
            else:
                raise AssertionError(f"unknown op {op}")

    def _ct(self, pkt: _Packet, row, nat) -> None:
        zone, flags = int(row[1]), int(row[2])
        mark = int(row[3]) if flags & P.CTF_SET_MARK else None
        mark_mask = int(row[4]) if flags & P.CTF_SET_MARK else 0xFFFFFFFF
        label = _label_int(row[5:9]) if flags & P.CTF_SET_LABEL else None
        label_mask = _label_int(row[9:13]) if flags & P.CTF_SET_LABEL else (1 << 128) - 1
        key = pkt.key
        key[_CT_FIRST : _CT_LAST + 1] = 0 if pkt.md is None else pkt.md
        if nat is not None:
            nat = np.array(nat, np.int64)
            if not pkt.frame.flags.writeable:
                pkt.frame = pkt.frame.copy()
        act = action_row(zone, bool(flags & P.CTF_COMMIT), bool(flags & P.CTF_FORCE), mark,
                         mark_mask, label, label_mask)  # fmt: skip
        pkt.ct_handle = self.conntrack.execute(
            pkt.frame,
            key,
            act,
            now_ms=self._now_ms,
            cached_conn=pkt.ct_handle,
            nat=nat,
        )
        pkt.md = key[_CT_FIRST : _CT_LAST + 1].copy()

    def _recirculate(self, pkt: _Packet, table: int) -> None:
        res = self._result
        if pkt.depth >= MAX_RECIRC_DEPTH:
            self.count("recirc_depth_exceeded")
            res.recirc_dropped = True
            return
        res.recirculations += 1
        copy_key = pkt.key.copy()
        copy = _Packet(
            pkt.frame.copy() if pkt.frame.flags.writeable else pkt.frame,
            copy_key,
            md=copy_key[_CT_FIRST : _CT_LAST + 1].copy(),
            ct_handle=pkt.ct_handle,
            depth=pkt.depth + 1,
        )
        self._run_pass(copy, table)
