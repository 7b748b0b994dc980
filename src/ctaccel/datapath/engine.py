"""The datapath engine: the compiled batch path in two modes, with Python on misses only.

What: ``DatapathEngine(rules, mode)`` processes batches of frames. ``recirc`` is OVS's
model (megaflow cache, conntrack, recirculation); ``assume-established`` puts the talk's
exact-match fast path in front. Both give exactly the reference engine's results.

Design: the per-packet work is ``kernel.run_batch`` (numba). It returns to Python only for
an upcall (megaflow miss: ``ofproto.xlate.translate`` once per megaflow, install, resume the
packet where it stopped), for a packet the compiled path leaves to the reference engine (IP
fragments, or when fragment reassembly has fragments to release: the reference engine shares
this engine's conntrack, ipf and rules, so state stays one), or when its output array is
full. Rule counters belong to the engine, not to the rules: one ``rule_stats`` array
(n_packets, n_bytes per rule id, the ids ``FlowTables`` gave) that the compiled code and this
engine's reference engine both count into; ``rule_counters()`` reads it. Python time spent on
the slow path (upcalls and packets left to the reference engine) is added up in
``slow_path_seconds``, one clock read pair per upcall or slow packet, never per packet of the
compiled path. ``memory_bytes()`` and BatchResult's whole-batch arrays (``n_outputs``,
``ct_state_codes``, ``drop_codes``, ``output_ports``) are the benchmark's view of it.

Invariants: caches and counters never outlive the rules they were built from
(``replace_flows`` starts both afresh); programs are deduplicated by content; nothing here
keeps per-packet state between batches; the engine never modifies the rules it is given (a
``FlowTables`` may be shared by several engines, each with its own counters).
"""

from __future__ import annotations

import time

import numpy as np

from ctaccel.arrays import aligned_zeros
from ctaccel.conntrack import Conntrack
from ctaccel.conntrack.ftp import MAX_GROWTH as ALG_MAX_GROWTH
from ctaccel.conntrack.ipf import Ipf
from ctaccel.conntrack.nat import NS_WIDTH, no_nat_spec
from ctaccel.datapath import layout as L
from ctaccel.datapath.fpstore import FastPathStore
from ctaccel.datapath.kernel import run_batch
from ctaccel.datapath.megaflow import MF_RECIRC, MF_WIDTH, MegaflowCache
from ctaccel.datapath.reference import CONTROLLER, PacketResult, ReferenceEngine
from ctaccel.ofproto.bridge import Bridge
from ctaccel.ofproto.classifier import FlowTables
from ctaccel.ofproto.program import (
    CONTROLLER_PORT,
    DROP_REASON_NAMES,
    OPW,
    table_for_recirc_id,
)
from ctaccel.ofproto.rules import carried_counters
from ctaccel.packet import key as K
from ctaccel.packet.rewrite import MAX_TAG_BYTES

MODES = ("recirc", "assume-established")


class BatchResult:
    """Per-packet results of one batch as arrays (see kernel R_* columns), plus the
    reference engine's results for packets it processed."""

    def __init__(self, res, out_ports, slow, out_fofs=None, out_fbuf=None, out_flen=None):
        self.res = res
        self.out_ports = out_ports
        self.slow = slow  # {packet index: PacketResult}
        # per output: -1 (the received frame) or the offset of its rewritten copy in out_fbuf
        self.out_fofs = out_fofs
        self.out_fbuf = out_fbuf
        self.out_flen = out_flen  # per output with a rewritten copy: its length

    def slow_outputs(self):
        """The outputs of the packets the reference engine processed (``slow``), as the
        batch writers read them: per packet of the batch, where its outputs start in the
        arrays and how many there are (-1 for the engine's own packets: read them from
        ``res``); then, in packet order, each output's port (CONTROLLER_PORT for the
        controller), offset and length in the returned buffer, which holds their frames."""
        n = self.res.shape[0]
        first, count = np.full(n, -1, np.int64), np.full(n, -1, np.int64)
        port, length, frames = [], [], []
        for j in sorted(self.slow):
            first[j], count[j] = len(port), len(self.slow[j].outputs)
            for p, frame in self.slow[j].outputs:
                b = bytes(frame)
                port.append(CONTROLLER_PORT if p == CONTROLLER else int(p))
                length.append(len(b))
                frames.append(b)
        lengths = np.array(length, np.int64)
        offsets = np.zeros(len(lengths), np.int64)
        if len(lengths):
            np.cumsum(lengths[:-1], out=offsets[1:])
        buf = np.frombuffer(b"".join(frames), np.uint8).copy() if frames else np.zeros(0, np.uint8)
        return first, count, np.array(port, np.int64), offsets, lengths, buf

    # --- whole-batch arrays (no per-packet Python): packets the reference engine processed
    # (``slow``) show 0 outputs, ct_state code -1 and drop code 0 here; read them from ``slow``.
    def n_outputs(self) -> np.ndarray:
        """Outputs per packet (int64, one per packet)."""
        return self.res[:, L.R_NOUT]

    def ct_state_codes(self) -> np.ndarray:
        """The ct_state bits the last matched rule saw, per packet (-1: no rule matched)."""
        return self.res[:, L.R_CT_STATE]

    def drop_codes(self) -> np.ndarray:
        """Drop reason codes per packet (``ofproto.program.DROP_REASON_NAMES``; 0: none)."""
        return self.res[:, L.R_DROP]

    def output_ports(self) -> np.ndarray:
        """Every packet's output ports in packet order, concatenated (a gather)."""
        nout = self.res[:, L.R_NOUT]
        total = int(nout.sum())
        if not total:
            return np.zeros(0, np.int64)
        first = np.repeat(self.res[:, L.R_OUT_START], nout)
        within = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(nout) - nout, nout)
        return self.out_ports[first + within]

    def ports(self, i: int) -> list:
        if i in self.slow:
            return self.slow[i].out_ports
        n, start = int(self.res[i, L.R_NOUT]), int(self.res[i, L.R_OUT_START])
        return [CONTROLLER if p == CONTROLLER_PORT else int(p)
                for p in self.out_ports[start : start + n]]  # fmt: skip

    def outputs(self, i: int, frame) -> list:
        """[(port, frame)] of packet i, whose received frame is ``frame``: that frame, or the
        rewritten copy an output carried (NAT)."""
        if i in self.slow:
            return self.slow[i].outputs
        ports = self.ports(i)
        if self.out_fofs is None or self.res[i, L.R_REWRITTEN] == 0:
            return [(p, frame) for p in ports]
        start, n = int(self.res[i, L.R_OUT_START]), len(ports)
        fofs = self.out_fofs[start : start + n].tolist()
        flens = self.out_flen[start : start + n].tolist()
        return [(p, frame if f < 0 else self.out_fbuf[f : f + ln].tobytes())
                for p, f, ln in zip(ports, fofs, flens, strict=True)]  # fmt: skip

    def ct_state(self, i: int):
        if i in self.slow:
            return self.slow[i].ct_state
        s = int(self.res[i, L.R_CT_STATE])
        return None if s < 0 else K.format_ct_state(s)

    def drop_reason(self, i: int):
        if i in self.slow:
            return self.slow[i].drop_reason
        return DROP_REASON_NAMES[int(self.res[i, L.R_DROP])] or None

    def path(self, i: int) -> str:
        return L.PATH_NAMES[int(self.res[i, L.R_PATH])]

    def punt(self, i: int) -> str:
        return L.PUNT_NAMES[int(self.res[i, L.R_PUNT])]

    def recirculations(self, i: int) -> int:
        if i in self.slow:
            return self.slow[i].recirculations
        return int(self.res[i, L.R_RECIRCS])


# Fast-path entries to start with: one per direction of as many connections as conntrack
# starts with room for (growing the entry arrays mid-run costs a copy and fresh pages).
FASTPATH_CAPACITY = 1 << 15


class DatapathEngine:
    """OVS semantics, compiled; ``mode`` is "recirc" or "assume-established"."""

    def __init__(self, rules, mode: str = "assume-established", conntrack: Conntrack | None = None,
                 ipf: Ipf | None = None, batch_size: int = 256, megaflow_capacity: int = 4096,
                 fastpath_capacity: int = FASTPATH_CAPACITY,
                 max_fast_path: int = 1 << 22, bridge: Bridge | None = None,
                 fast_path_admit: int = 100):  # fmt: skip
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self.mode = mode
        self.batch_size = int(batch_size)
        self.conntrack = conntrack if conntrack is not None else Conntrack()
        self.ipf = ipf if ipf is not None else Ipf()
        self._megaflow_capacity = megaflow_capacity
        self._fastpath_capacity = fastpath_capacity
        self.max_fast_path = max_fast_path
        self.fast_path_admit = max(int(fast_path_admit), 1)  # a full cache takes 1 install in N
        self.kstats = aligned_zeros(L.KS_WIDTH)
        self.upcalls = 0
        self.slow_packets = 0
        self.slow_path_seconds = 0.0  # Python time on upcalls and reference-engine packets
        self._vm = aligned_zeros(L.VM_WIDTH)
        self._vm_pipeline = self._vm[L.VM_PF_KEY : L.VM_PARSED + 1]  # reset per batch (a view)
        depth = L.MAX_RECIRC_DEPTH + 1
        self._stack_key = aligned_zeros((depth, K.KEY_WIDTH))
        self._stack_md = aligned_zeros((depth, L.NCT))
        self._stack_frame = aligned_zeros((depth, L.STACK_WIDTH))
        self._frames_w = aligned_zeros((depth + 2, 2048), np.uint8)  # rows: depths, then scratch
        self._cur_key = aligned_zeros(K.KEY_WIDTH)
        self._cur_md = aligned_zeros(L.NCT)
        self._trace_steps = aligned_zeros((L.MAX_STEPS, L.TRACE_WIDTH))
        self._trace_rules = aligned_zeros(L.MAX_FP_RULES)
        self._mf_key = aligned_zeros(MF_WIDTH)
        self._scratch = aligned_zeros(L.SCR_WIDTH)
        self._scratch[L.SCR_NO_NAT : L.SCR_NO_NAT + NS_WIDTH] = no_nat_spec()
        self._saved = aligned_zeros((L.MAX_STEPS, self.conntrack.conns.shape[1]))
        self._out_ports = aligned_zeros(max(4096, self.batch_size * 8))
        self._out_fofs = aligned_zeros(len(self._out_ports))
        self._out_flen = aligned_zeros(len(self._out_ports))
        self._out_fbuf = aligned_zeros(1 << 20, np.uint8)
        self._out_n = aligned_zeros(2)  # outputs and out_fbuf bytes used by the batch
        # the kernel parses each packet just ahead of use into a small ring (L.RING rows)
        self._keys = aligned_zeros((L.RING, K.KEY_WIDTH))
        self._emk = aligned_zeros((L.RING, L.EMK_WIDTH))
        self.bridge = bridge  # NORMAL's ports and MAC table (None: from the first rules)
        self._install_rules(rules)

    # ------------------------------------------------------------------ rules and caches
    def _install_rules(self, rules) -> None:
        self.tables = rules if isinstance(rules, FlowTables) else FlowTables(rules)
        self.rules = self.tables.all_rules()  # rule ids: positions here (FlowTables)
        self.rule_stats = aligned_zeros((max(len(self.rules), 1), 2))
        # The fast path's entry key leaves TCP flags out unless a rule looks at them.
        self._em_flags_mask = 0
        for rule in self.rules:
            if any(col == K.TCP_FLAGS and mask for col, _v, mask in rule.match):
                self._em_flags_mask = 0xFFF
        if self.bridge is None:
            self.bridge = Bridge.from_rules(self.rules)
        self._bridge_version = self.bridge.version
        self.reference = ReferenceEngine(self.tables, self.conntrack, self.ipf,
                                         rule_stats=self.rule_stats, bridge=self.bridge)  # fmt: skip
        self.megaflow = MegaflowCache(self._megaflow_capacity)
        # recirc mode never uses the fast path: it gets minimal arrays
        self.fast = FastPathStore(
            self._fastpath_capacity,
            self.max_fast_path,
            self.fast_path_admit,
            self.mode == "assume-established",
        )
        self._prog_ops = aligned_zeros((256, OPW))
        self._prog_start = aligned_zeros(64)
        self._prog_len = aligned_zeros(64)
        self._n_ops = 0
        self._programs: dict[bytes, int] = {}

    def replace_flows(self, rules) -> None:
        """Replace the rule set (rules or a FlowTables) in one step: every cache built from
        the old rules is dropped; a rule identical to an old one keeps its counters, the
        others start at zero (as ``ovs-ofctl replace-flows``). Connections stay."""
        old_rules, old_stats = self.rules, self.rule_stats.copy()
        self._install_rules(rules)
        self.rule_stats[:] = carried_counters(old_rules, old_stats, self.rules)

    def flush_fast_path(self) -> None:
        self.fast.flush()
        self._emk[:, L.EMK_EPOCH] = -1  # lookups the kernel made ahead are void too

    def _check_bridge(self) -> None:
        """NORMAL's MAC table or ports changed (a learned address, a new port): every cached
        decision may be stale, so every cache goes, as OVS revalidates all its flows."""
        if self.bridge.version != self._bridge_version:
            self._bridge_version = self.bridge.version
            self.megaflow = MegaflowCache(self._megaflow_capacity)
            self.flush_fast_path()

    def rule_counters(self) -> list[tuple[int, int]]:
        """(n_packets, n_bytes) per rule, in ``tables.all_rules()`` order (rule id order)."""
        return [(p, b) for p, b in self.rule_stats[: len(self.rules)].tolist()]

    def memory_bytes(self) -> dict:
        """Bytes held by the engine's tables: conntrack's connection table (``conntrack``:
        rows, index, free list) and its fixed arrays (zone limits, timeouts, counters), the
        megaflow cache, and the fast path (exact-match index + entries; 0 in recirc mode,
        which keeps only placeholder arrays); plus the connection count and table shape."""
        ct = self.conntrack
        fast_path = 0
        if self.mode == "assume-established":
            fast_path = self.fast.nbytes()
        return {
            "connections": len(ct),
            "conntrack_capacity": int(ct.conns.shape[0]),
            "conn_row_bytes": int(ct.conns.shape[1] * ct.conns.itemsize),
            "conntrack_bytes": _nbytes((ct.conns, ct.index, ct.free_slots)),
            "conntrack_fixed_bytes": _nbytes((ct.stats, ct.zone_limits, ct.timeouts)),
            "megaflow_bytes": _nbytes(self.megaflow.tables),
            "fast_path_bytes": fast_path,
        }

    # ------------------------------------------------------------------ programs
    def _program_id(self, ops: np.ndarray) -> int:
        blob = ops.tobytes()
        pid = self._programs.get(blob)
        if pid is not None:
            return pid
        pid = len(self._programs)
        n = len(ops)
        while self._n_ops + n > len(self._prog_ops):
            self._prog_ops = np.concatenate([self._prog_ops, np.zeros_like(self._prog_ops)])
        if pid >= len(self._prog_start):
            self._prog_start = np.concatenate([self._prog_start, np.zeros_like(self._prog_start)])
            self._prog_len = np.concatenate([self._prog_len, np.zeros_like(self._prog_len)])
        self._prog_ops[self._n_ops : self._n_ops + n] = ops
        self._prog_start[pid] = self._n_ops
        self._prog_len[pid] = n
        self._n_ops += n
        self._programs[blob] = pid
        return pid

    def _upcall(self) -> None:
        """Translate the suspended packet's current pass and install its megaflow."""
        from ctaccel.ofproto.xlate import translate

        key = self._cur_key.copy()
        recirc_id = int(self._vm[L.VM_RECIRC_ID])
        table = 0 if recirc_id == 0 else table_for_recirc_id(recirc_id)
        if recirc_id == 0:
            self.bridge.saw_port(int(key[K.IN_PORT]))
        tr = translate(self.tables, key, table, self.bridge)
        self._check_bridge()
        pid = self._program_id(np.asarray(tr.ops, np.int64).reshape(-1, OPW))
        mask = np.zeros(MF_WIDTH, np.int64)
        mask[: K.PARSE_FIRST] = tr.wc[: K.PARSE_FIRST]
        mask[K.IN_PORT] = -1
        mask[MF_RECIRC] = -1
        mf_key = np.zeros(MF_WIDTH, np.int64)
        mf_key[: K.PARSE_FIRST] = key[: K.PARSE_FIRST]
        mf_key[MF_RECIRC] = recirc_id
        self.megaflow.insert(mask, mf_key, pid)
        self.upcalls += 1

    # ------------------------------------------------------------------ processing
    def run(self, buf, offsets, lengths, in_ports, now_ms) -> BatchResult:
        """Process one batch given as a flat buffer + per-packet arrays."""
        n = len(offsets)
        # One array type for every argument (C-contiguous, writable): numba compiles a kernel
        # once per argument types, and a read-only buffer would be a second specialisation.
        buf = _c_writable(buf, _U8)
        offsets = _c_writable(offsets, _I64)
        lengths = _c_writable(lengths, _I64)
        in_ports = _c_writable(in_ports, _I64)
        now_ms = _c_writable(now_ms, _I64)
        self._check_bridge()  # the MAC table may have changed between batches (fdb-flush)
        if self.mode == "assume-established":
            self.fast.reserve(n)
        # Scratch is kept between calls (the key rings; the parser zeroes each key itself).
        # The results are the caller's: a fresh array (small enough to come from the heap),
        # every row written by the kernel.
        # Frames wider than frames_w, or outputs beyond the output arrays, stop the kernel
        # (ST_FULL) and are made room for below: no per-batch scan of the lengths.
        res = np.empty((n, L.RES_WIDTH), np.int64)
        out_n = self._out_n
        out_n.fill(0)
        need = n * 4 + L.MAX_OUT_PER_PACKET
        if len(self._out_ports) < need:
            self._out_ports = np.zeros(need, np.int64)
            self._out_fofs = np.zeros(need, np.int64)
            self._out_flen = np.zeros(need, np.int64)
        slow: dict[int, PacketResult] = {}
        start = 0
        vm = self._vm
        vm[L.VM_RESUME] = 0
        self._vm_pipeline.fill(0)  # a new batch: nothing parsed or prefetched
        mode = L.MODE_ASSUME_ESTABLISHED if self.mode == "assume-established" else L.MODE_RECIRC
        while True:
            self.conntrack.reserve(4 * (n - start) + 16)
            run_batch(
                mode,
                start,
                self.ipf.next_flush_ms,
                self._em_flags_mask,
                *self.kernel_bundles((buf, offsets, lengths, in_ports, now_ms), res),
            )
            status = vm.item(L.VM_STATUS)
            i = vm.item(L.VM_PACKET)
            if status == L.ST_DONE:
                break
            if status == L.ST_MISS:
                t0 = time.perf_counter()
                self._upcall()
                self.slow_path_seconds += time.perf_counter() - t0
                start = i
                vm[L.VM_RESUME] = 1
            elif status == L.ST_SLOW:
                off, ln = int(offsets[i]), int(lengths[i])
                t0 = time.perf_counter()
                r = self.reference.process(buf[off : off + ln], int(in_ports[i]), int(now_ms[i]))
                self._check_bridge()
                self.slow_path_seconds += time.perf_counter() - t0
                slow[i] = r
                res[i, L.R_PATH] = L.PATH_SLOW
                res[i, L.R_OUT_START] = out_n[0]
                res[i, L.R_NOUT] = 0
                self.slow_packets += 1
                start = i + 1
            elif status == L.ST_FULL:
                used = int(out_n[0])
                if used + L.MAX_OUT_PER_PACKET > len(self._out_ports):
                    self._out_ports = _grown(self._out_ports, used)
                    self._out_fofs = _grown(self._out_fofs, used)
                    self._out_flen = _grown(self._out_flen, used)
                # room for the widest frame still to come, so wide frames stop the kernel once
                # + pushed VLAN tags, + what an FTP command rewritten for NAT may add
                flen = int(lengths[i:].max()) + MAX_TAG_BYTES + ALG_MAX_GROWTH
                if flen > self._frames_w.shape[1]:
                    self._frames_w = np.zeros((self._frames_w.shape[0], flen), np.uint8)
                fneed = (L.MAX_OUT_PER_PACKET + 1) * (flen + 4)
                if int(out_n[1]) + fneed > len(self._out_fbuf):
                    self._out_fbuf = _grown(self._out_fbuf, int(out_n[1]), fneed)
                start = i
            else:  # pragma: no cover - a kernel bug
                raise RuntimeError(f"run_batch returned status {status}")
        used, fbytes = out_n.item(0), out_n.item(1)
        # no output carried a rewritten frame (fbytes 0): out_fofs would be all -1, no copies
        fofs = self._out_fofs[:used].copy() if fbytes else None
        fbuf = self._out_fbuf[:fbytes].copy() if fbytes else None
        flens = self._out_flen[:used].copy() if fbytes else None
        return BatchResult(res, self._out_ports[:used].copy(), slow, fofs, fbuf, flens)

    def kernel_bundles(self, batch, res) -> tuple:
        """The batch kernel's seven bundles (datapath/layout.py), as plain tuples, for the
        packets ``batch`` (buf, offsets, lengths, in_ports, now_ms) and results ``res``.
        Built per call: conntrack, the caches and the output arrays may have been replaced
        (grown) since the last one."""
        ct = self.conntrack
        return (
            batch,
            ct.bundle(),
            self.megaflow.tables,
            (self._prog_ops, self._prog_start, self._prog_len),
            self.fast.tables,
            (res, self._out_ports, self._out_n, self._out_fofs, self._out_fbuf, self.rule_stats,
             self.kstats, self._out_flen),
            (self._vm, self._keys, self._emk, self._stack_key, self._stack_md, self._stack_frame,
             self._frames_w, self._cur_key, self._cur_md, self._trace_steps, self._trace_rules,
             self._mf_key, self._saved, self._scratch),
        )  # fmt: skip

    def process_batch(self, frames, in_ports, now_ms) -> list[PacketResult]:
        """Process frames (bytes) in order; one PacketResult per frame, like the reference
        engine's, plus ``path`` and ``punt``."""
        lengths = np.array([len(f) for f in frames], np.int64)
        offsets = np.zeros(len(frames), np.int64)
        if len(frames) > 1:
            offsets[1:] = np.cumsum(lengths[:-1])
        buf = np.frombuffer(b"".join(bytes(f) for f in frames), np.uint8)
        out: list[PacketResult] = []
        for lo in range(0, len(frames), self.batch_size):
            hi = min(lo + self.batch_size, len(frames))
            br = self.run(buf, offsets[lo:hi], lengths[lo:hi], in_ports[lo:hi], now_ms[lo:hi])
            for j in range(hi - lo):
                i = lo + j
                if j in br.slow:
                    r = br.slow[j]
                    r.path = "slow"
                    r.punt = br.punt(j)
                    out.append(r)
                    continue
                frame = bytes(frames[i])
                r = PacketResult(
                    outputs=br.outputs(j, frame),
                    ct_state=br.ct_state(j),
                    drop_reason=br.drop_reason(j),
                    recirculations=br.recirculations(j),
                )
                r.path = br.path(j)
                r.punt = br.punt(j)
                out.append(r)
        return out

    def process(self, frame, in_port: int, now_ms: int) -> PacketResult:
        """One packet (a batch of one): the reference engine's interface."""
        return self.process_batch([frame], [in_port], [now_ms])[0]

    # ------------------------------------------------------------------ stats
    @property
    def stats(self) -> dict:
        ks, fp = self.kstats, self.fast.counts()
        return {
            "fast_path_hits": int(ks[L.KS_FAST]),
            "punt_miss": int(ks[L.KS_PUNT_MISS]),
            "punt_conn": int(ks[L.KS_PUNT_CONN]),
            "punt_state": int(ks[L.KS_PUNT_STATE]),
            "punt_ineligible": int(ks[L.KS_PUNT_INELIGIBLE]),
            "megaflow_lookups": int(ks[L.KS_MF_LOOKUPS]),
            "megaflow_hits": int(ks[L.KS_MF_HITS]),
            "upcalls": self.upcalls,
            "recirculations": int(ks[L.KS_RECIRCS]),
            "fast_path_installs": int(ks[L.KS_FP_INSTALLS]),
            "fast_path_full": int(ks[L.KS_FP_FULL]),
            "fast_path_replaced": int(ks[L.KS_FP_REPLACED]),
            "ct_executions": int(ks[L.KS_CT_CALLS]),
            "output_overflow": int(ks[L.KS_OUT_OVERFLOW]),
            "slow_path_packets": self.slow_packets,
            "megaflows": len(self.megaflow),
            "megaflow_masks": self.megaflow.n_masks,
            "fast_path_entries": len(self.fast),
            "fast_path_compact_entries": fp["compact"],
            "fast_path_slim_entries": fp["slim"],
            "fast_path_templates": fp["templates"],
            "fast_path_full_layouts": fp["full_layouts"],
            "programs": len(self._programs),
        }


_NPY_C_WRITABLE = 0x1 | 0x400  # NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_WRITEABLE (flags.num)
_U8, _I64 = np.dtype(np.uint8), np.dtype(np.int64)


def _c_writable(a, dtype):
    """``a`` as a C-contiguous writable array of ``dtype`` (itself when it already is): one
    argument type per kernel parameter, so numba compiles each kernel once. ``dtype`` is a
    ``np.dtype``; the test is written for speed (it runs five times a batch)."""
    if (
        type(a) is np.ndarray
        and a.dtype is dtype
        and a.flags.num & _NPY_C_WRITABLE == _NPY_C_WRITABLE
    ):
        return a
    return np.require(a, dtype, ("C", "W"))


def _nbytes(arrays) -> int:
    return int(sum(a.nbytes for a in arrays))


def _grown(a, used: int, extra: int = 0):
    """A twice-as-large copy of ``a`` (at least ``used + extra``) keeping ``a[:used]``."""
    bigger = np.zeros(max(2 * len(a), 2 * (used + extra)), a.dtype)
    bigger[:used] = a[:used]
    return bigger
