"""The compiled batch datapath: megaflow passes, conntrack, recirculation, the fast path.

What: ``run_batch`` processes packets ``start..n-1`` of a batch in arrival order, in numba,
and stops only when Python is needed: a megaflow miss (an upcall: translate, install,
resume this very packet where it stopped) or a packet the compiled path does not handle
(IP fragments, or a moment when fragment reassembly has something to release): Python runs
that packet through the reference engine, then calls again from the next one.

Design:
- Each packet is parsed just ahead of use (``parse_record``; in assume-established mode
  PF_KEY_AHEAD packets ahead, for the prefetch pipeline) into a ring of RING keys, then run.
- recirc mode (OVS): each pass looks up the megaflow cache with (key, recirc id); the entry's
  program (datapath/program.py) runs; ``OP_RECIRC`` pushes the original on a small stack and
  processes the copy to completion first, as dpif-netdev does; depth is capped at 8.
- assume-established mode (the talk): first an exact-match lookup on the packet's entry key
  (in_port and every header field; TCP flags only when a rule matches on them). An entry exists only for packets whose every ct step was
  ``+est`` on a committed TCP/UDP connection. On a hit each step is re-checked with
  ``ct_recheck`` (alive, same generation, not expired, the tracker update valid and without
  a state change); any doubt restores every touched row and punts to the megaflow path, as
  if the cache did not exist. Entries are installed here, in compiled code, after full
  processing of a packet that qualifies.
- The VM's state (stack, current key, counters of the packet) lives in caller-owned arrays,
  so a miss can suspend a packet and a later call can resume it.

Invariants:
- Packets are completed strictly in order; a suspended packet is resumed before any later
  packet runs.
- The fast path never creates or deletes a connection and never changes protocol state.
- Rule counters, outputs, ct_state and drop reason are exactly what the reference engine
  would produce (tests/test_equivalence.py).
"""

from __future__ import annotations

from ctaccel.conntrack.core import ct_execute
from ctaccel.conntrack.established import RECHECK_GONE, ct_recheck, ct_recheck_one
from ctaccel.conntrack.layout import (
    C_GENERATION,
    C_LABEL,
    C_MARK,
    C_NAT_FLAGS,
    C_PROTO,
    C_USED,
    C_ZONE,
    HOT_WIDTH,
)
from ctaccel.conntrack.nat import NS_WIDTH, nat_rewrite, nat_target
from ctaccel.conntrack.table import ST_LAST_CONN, TUP_WIDTH
from ctaccel.datapath.exact import (
    ES_COUNT,
    ES_LIMIT,
    em_insert,
    em_lookup_hashed,
    hash_row,
)
from ctaccel.datapath.megaflow import MF_RECIRC, mf_lookup
from ctaccel.datapath.program import (
    CTF_COMMIT,
    CTF_FORCE,
    CTF_NAT,
    CTF_SET_LABEL,
    CTF_SET_MARK,
    DROP_CODE,
    OP_CLEAR_CT_FIELDS,
    OP_CONTROLLER,
    OP_CT,
    OP_CT_CLEAR,
    OP_DROP,
    OP_MISS,
    OP_OUTPUT,
    OP_RECIRC,
    OP_RULE,
    OP_SET,
)
from ctaccel.jit import njit, prefetch, prefetch2, prefetch2_write
from ctaccel.packet.key import (
    CS_DST_NAT,
    CS_ESTABLISHED,
    CS_INVALID,
    CS_NEW,
    CS_RELATED,
    CS_SRC_NAT,
    CT_STATE,
    CT_TP_DST,
    CT_ZONE,
    DL_DST,
    DL_SRC,
    DL_TYPE,
    ETH_TYPE_IP,
    ETH_TYPE_IPV6,
    FRAG_ANY,
    IN_PORT,
    IPPROTO_TCP,
    IPPROTO_UDP,
    IPV6_LABEL,
    KEY_WIDTH,
    L3_OFS,
    L4_LEN,
    L4_OFS,
    NW_DST,
    NW_FRAG,
    NW_PROTO,
    NW_SRC,
    NW_TOS,
    NW_TTL,
    PARSE_FIRST,
    PARSE_FLAGS,
    TCP_FLAGS,
    TP_DST,
    TP_SRC,
    VLAN_TCI,
)
from ctaccel.packet.parse import parse_record

MAX_RECIRC_DEPTH = 8
DROP_CODE_RX_INVALID = DROP_CODE["rx_invalid"]
DROP_CODE_TABLE_MISS = DROP_CODE["table_miss"]
DROP_CODE_RULE_DROP = DROP_CODE["rule_drop"]
DROP_CODE_RECIRC_DEPTH = DROP_CODE["recirc_depth"]
NCT = CT_TP_DST - CT_STATE + 1  # ct columns of the key
# The entry key: in_port and every header field (key columns IN_PORT..TCP_FLAGS, 490 bits)
# packed into 8 words of 63 bits, so an entry's key is one cache line (_pack_em_key).
EM_WIDTH = 8
# emk[i]: packet i's entry key (EM_WIDTH words), its hash_row, and the entry id found when it
# was prefetched (a hint: only used to prefetch; the packet's own lookup decides)
EMK_HASH = EM_WIDTH
EMK_HINT = EM_WIDTH + 1
EMK_EPOCH = EM_WIDTH + 2  # kstats[KS_FP_INSTALLS] when the hint was taken: while no entry has
#                           been installed since, the hint is the lookup's answer (entries are
#                           only ever added, or all dropped by an install into a full cache)
EMK_WIDTH = EM_WIDTH + 3
# Packets are parsed just ahead of use into a ring of keys (and entry keys) indexed by
# i & RING_MASK, so the batch's keys do not crowd the tables out of the caches; a packet's
# row stays until packet i + RING is parsed, which happens after packet i is done.
RING = 64
RING_MASK = RING - 1
# prefetch distances (packets ahead of the one being processed) of the three stages
PF_KEY_AHEAD = 16
PF_ENTRY_AHEAD = 8
PF_CONN_AHEAD = 3
# The capture itself, ahead of the parser (packets past the one being parsed): its frame,
# and further ahead the batch's per-packet arrays (8 packets to a line). Hardware prefetchers
# do not keep up here (measured on a shared VM: ~7% of an assume-established hit).
PF_FRAME_AHEAD = 12
PF_META_AHEAD = 24
# the first lines of an entry's row, prefetched with the entry: all a one-step entry's hit reads
# (header, step, a few outputs and rule ids); the conn stage prefetches the rest of longer ones
FP_HOT_WORDS = 24
ETH_HEADER_LEN = 14

# run_batch return status (vm[VM_STATUS])
ST_DONE = 0  # every packet processed
ST_MISS = 1  # megaflow miss: vm holds the suspended packet; upcall then resume
ST_SLOW = 2  # packet vm[VM_PACKET] must be processed by the reference engine
ST_FULL = 3  # output arrays full, or a frame wider than frames_w: Python grows them, calls again

# vm scalars
VM_STATUS = 0
VM_PACKET = 1  # packet index the status refers to
VM_RESUME = 2  # 1: the packet at `start` is suspended and must be resumed
VM_DEPTH = 3  # stack depth (recirculations in progress)
VM_PROG = 4
VM_PC = 5
VM_END = 6
VM_HANDLE = 7
VM_RECIRC_ID = 8
VM_MATCHED = 9
VM_MISSED = 10
VM_LAST_CT = 11
VM_RECIRC_DROPPED = 12
VM_DROP_CODE = 13
VM_RECIRCS = 14
VM_NOUT = 15  # outputs of the current packet
VM_OUT_BASE = 16  # where its outputs start in out_ports
VM_NSTEPS = 17  # ct steps recorded for a fast-path install
VM_NRULES = 18
VM_ELIGIBLE = 19
VM_UPCALLED = 20  # this packet needed at least one upcall
VM_NEED_LOOKUP = 21
VM_FRAME_W = 22  # 1: the packet's frame is its rewritten copy in frames_w[depth] (after nat)
# assume-established prefetch pipeline (see run_batch): the next packet of the batch whose ...
VM_PF_KEY = 23  # ... entry key and hash are in emk, its exact-match slot prefetched
VM_PF_ENTRY = 24  # ... entry was looked up (hint in emk[i, EMK_HINT]), its row prefetched
VM_PF_CONN = 25  # ... connections were prefetched
VM_PARSED = 26  # the next packet of the batch to parse (into keys[i & RING_MASK])
# (the caller zeroes VM_PF_KEY..VM_PARSED when it starts a batch)
VM_WIDTH = 28

# per-packet results
R_NOUT = 0
R_OUT_START = 1
R_CT_STATE = 2  # -1: no rule matched
R_DROP = 3  # program.DROP_REASON_NAMES index
R_PATH = 4
R_RECIRCS = 5
R_PUNT = 6
R_REWRITTEN = 7  # 1: out_fofs says which outputs carried a rewritten frame (NAT); else none did
RES_WIDTH = 8

PATH_NONE = 0
PATH_FAST = 1
PATH_MEGAFLOW = 2
PATH_UPCALL = 3
PATH_SLOW = 4
PATH_RX_INVALID = 5
PATH_NAMES = ("", "fast", "megaflow", "upcall", "slow", "rx_invalid")

PUNT_NONE = 0
PUNT_MISS = 1  # no exact-match entry
PUNT_CONN = 2  # a connection is gone, replaced or expired
PUNT_STATE = 3  # the tracker would change state or reject the packet
PUNT_INELIGIBLE = 4  # the packet itself cannot take the fast path (parse flags, fragment)
PUNT_NAMES = ("", "miss", "conn", "state", "ineligible")

# kernel statistics (kstats)
KS_FAST = 0
KS_PUNT_MISS = 1
KS_PUNT_CONN = 2
KS_PUNT_STATE = 3
KS_PUNT_INELIGIBLE = 4
KS_MF_LOOKUPS = 5
KS_MF_HITS = 6
KS_RECIRCS = 7
KS_FP_INSTALLS = 8
KS_FP_FULL = 9  # times the fast-path cache was full and started afresh
KS_CT_CALLS = 10
KS_OUT_OVERFLOW = 11
KS_WIDTH = 16

# fast-path entries: one row of FP_WIDTH int64 per entry. It opens with a compact line
# (FC_*, one cache line): everything a hit of a common entry reads (at most one ct step
# without translation, at most one output and two rules, values small enough to pack), so
# such a hit reads one line of its row. Other entries (FC_HEAD without FC_COMPACT) have the
# full layout after it (FI_*, from FP_FULL), packed so that what a hit reads (the header, its
# steps, outputs and rule ids) is contiguous; compact entries leave it unwritten.
FC_HEAD = 0  # FC_COMPACT | nsteps << 1 | nout << 2 | nrules << 3 | drop << 8 | recircs << 16
#              | (ct_state + 1) << 24
FC_SLOT = 1  # the first step's connection slot, -1 if none (full entries too: prefetch)
FC_GEN = 2  # its generation
FC_STEP = 3  # reply | update << 1 | proto << 2 | expected ct_state << 10
FC_LABEL = 4  # 2 words: ct_label words 0 | 1 << 32 and 2 | 3 << 32 (words 1, 3 < 2**31)
FC_OUT = 6  # the output port (< 2**31) | ct_mark << 31
FC_RULES = 7  # rule id | rule id << 31
FC_WIDTH = 8
FC_COMPACT = 1
M31 = (1 << 31) - 1
M32 = (1 << 32) - 1
MAX_STEPS = 4
MAX_FP_OUT = 8
MAX_FP_RULES = 16
FP_FULL = FC_WIDTH
FI_NSTEPS = FP_FULL + 0
FI_NOUT = FP_FULL + 1
FI_NRULES = FP_FULL + 2
FI_CT_STATE = FP_FULL + 3
FI_DROP = FP_FULL + 4
FI_RECIRCS = FP_FULL + 5
FI_NAT = FP_FULL + 6  # 1: some step rewrites the frame (NAT): outputs carry the rewritten copy
FI_STEPS = FP_FULL + 8  # steps start here, S_WIDTH words each; then the outputs; then rule ids
S_SLOT = 0
S_GEN = 1
S_REPLY = 2
S_PROTO = 3
S_STATE = 4  # expected ct_state after the step
S_UPDATE = 5  # 1: the step updated the connection (first lookup); 0: reused the handle
S_MARK = 6  # ct_mark and ct_label the rules saw (later rules may match on them)
S_LABEL = 7  # 4 columns
S_NAT = 11  # the step translated the packet (ct(nat) on a NATed connection): NAT_SRC or
#             NAT_DST; its cached header transposition (nat.nat_target) is kept apart
S_WIDTH = 12
# The transposition of a translating step, N_WIDTH words: after the step's S_WIDTH columns in
# a trace row; in an entry, in a region at the end of the row (FN_NAT + step * N_WIDTH), so
# what every hit reads (header, steps, outputs, rules) stays in the first cache lines.
N_ADDR = 0  # 4 columns: the new source (NAT_SRC) or destination (NAT_DST) address
N_SPORT = 4
N_DPORT = 5
N_WIDTH = 6
TRACE_WIDTH = S_WIDTH + N_WIDTH
FN_NAT = FI_STEPS + MAX_STEPS * S_WIDTH + MAX_FP_OUT + MAX_FP_RULES  # 88
FP_WIDTH = FN_NAT + MAX_STEPS * N_WIDTH  # 112
STACK_WIDTH = 6  # stack_frame columns: pc, end, handle, recirc id, frame rewritten
_NAT_BITS = CS_SRC_NAT | CS_DST_NAT
MAX_OUT_PER_PACKET = 256  # outputs beyond this are not emitted (counted: KS_OUT_OVERFLOW)
# scratch: what the kernel would otherwise allocate (it runs without numba's runtime)
SCR_NO_NAT = 0
SCR_TUPS = SCR_NO_NAT + NS_WIDTH
SCR_WIDTH = SCR_TUPS + 2 * TUP_WIDTH
FP_COUNT = 0  # fp_state: entries used
FP_CAP = 1


@njit(forceinline=True)
def _pack_em_key(key, em_key, flags_mask):
    """The entry key of a packet: every header column, packed without loss into 8 words (each
    column holds at most its field's width: ports/types/VLAN 16 bits, MACs 48, address words
    32, TOS/TTL/protocol 8, IPv6 label 20, TCP flags 12, fragment bits 2). No word reaches
    its sign bit (int64 shifts must not overflow). TCP flags count only under ``flags_mask``
    (see run_batch)."""
    # Address words are 32 bits: a word shifted by 32 keeps its low 31 bits there and its top
    # bit goes to word 6; the 20-bit IPv6 label is spread over the spare bits of four words.
    low31 = 0x7FFFFFFF
    label = key[IPV6_LABEL]
    em_key[0] = key[DL_SRC] | (key[NW_TOS] << 48) | ((label & 0x1F) << 56)
    em_key[1] = key[DL_DST] | (key[NW_TTL] << 48) | (((label >> 5) & 0x1F) << 56)
    em_key[2] = key[NW_SRC + 3] | ((key[NW_DST + 3] & low31) << 32)
    em_key[3] = key[NW_SRC] | ((key[NW_SRC + 1] & low31) << 32)
    em_key[4] = key[NW_SRC + 2] | ((key[NW_DST] & low31) << 32)
    em_key[5] = key[NW_DST + 1] | ((key[NW_DST + 2] & low31) << 32)
    em_key[6] = (
        key[TP_SRC]
        | (key[TP_DST] << 16)
        | ((key[TCP_FLAGS] & flags_mask) << 32)
        | (key[NW_PROTO] << 44)
        | ((key[NW_DST + 3] >> 31) << 52)
        | ((key[NW_SRC + 1] >> 31) << 53)
        | ((key[NW_DST] >> 31) << 54)
        | ((key[NW_DST + 2] >> 31) << 55)
        | (((label >> 10) & 0x7F) << 56)
    )
    em_key[7] = (
        key[IN_PORT]
        | (key[DL_TYPE] << 16)
        | (key[VLAN_TCI] << 32)
        | (((label >> 17) & 0x7) << 48)
        | (key[NW_FRAG] << 51)
    )


@njit(forceinline=True)
def _copy_ct_fields(src, dst):
    for c in range(NCT):
        dst[c] = src[CT_STATE + c]


@njit(forceinline=True)
def _drop_code(vm):
    """The packet's drop reason (program.DROP_REASON_NAMES index), by the reference engine's
    rule: none if anything was emitted; else an explicit reason, then the recirculation cap,
    then a table miss, else the rules dropped it."""
    if vm[VM_NOUT] != 0:
        return 0
    if vm[VM_DROP_CODE] != 0:
        return vm[VM_DROP_CODE]
    if vm[VM_RECIRC_DROPPED]:
        return DROP_CODE_RECIRC_DEPTH
    if vm[VM_MISSED]:
        return DROP_CODE_TABLE_MISS
    return DROP_CODE_RULE_DROP


@njit(forceinline=True)
def _finish_packet(i, vm, res, out_ports):
    """Fill the packet's results from the VM scalars (the reference engine's rules)."""
    nout = vm[VM_NOUT]
    res[i, R_NOUT] = nout
    res[i, R_OUT_START] = vm[VM_OUT_BASE]
    res[i, R_CT_STATE] = vm[VM_LAST_CT] if vm[VM_MATCHED] else -1
    res[i, R_RECIRCS] = vm[VM_RECIRCS]
    res[i, R_DROP] = _drop_code(vm)


@njit(forceinline=True)
def _translated(row, base0, stride, nbase, nstride, nsteps, key, frame, flen, copy):
    """``copy`` := ``frame`` with the cached transpositions of the steps that translate
    applied in order. Step s is ``row[base0 + s * stride + S_*]``, its transposition
    ``row[nbase + s * nstride + N_*]``."""
    for b in range(flen):
        copy[b] = frame[b]
    l3 = key[L3_OFS]
    l4 = key[L4_OFS]
    l4_size = min(key[L4_LEN], flen - l4)
    for s in range(nsteps):
        b = base0 + s * stride
        kind = row[b + S_NAT]
        if kind != 0:
            n = nbase + s * nstride
            nat_rewrite(kind, row[n + N_ADDR], row[n + N_ADDR + 1], row[n + N_ADDR + 2],
                        row[n + N_ADDR + 3], row[n + N_SPORT], row[n + N_DPORT],
                        row[b + S_PROTO], key[DL_TYPE], copy, l3, l4, l4_size)  # fmt: skip


@njit
def _fast_nat_frame(e, fp_rows, frame, flen, key, out_n, out_fbuf):
    """The received frame with the entry's translations, written once to ``out_fbuf`` for all
    outputs; its offset. (A call, not inlined: only NATed entries pay for it.)"""
    fofs = out_n[1]
    _translated(fp_rows[e], FI_STEPS, S_WIDTH, FN_NAT, N_WIDTH, fp_rows[e, FI_NSTEPS], key, frame,
                flen, out_fbuf[fofs : fofs + flen])  # fmt: skip
    out_n[1] = fofs + flen
    return fofs


@njit(forceinline=True)
def _fast_apply_compact(e, head, frame, flen, key, now_ms, conns, timeouts, fp_rows, rule_stats,
                        saved, res, i, out_ports, out_n):  # fmt: skip
    """_fast_apply for an entry with a compact line (``head`` = its FC_HEAD): the same checks
    and effects, reading only that line of the row."""
    if head & 2:  # one ct step
        slot = fp_rows[e, FC_SLOT]
        gen = fp_rows[e, FC_GEN]
        if conns[slot, C_USED] == 0 or conns[slot, C_GENERATION] != gen:
            return PUNT_CONN
        lab01 = fp_rows[e, FC_LABEL]
        lab23 = fp_rows[e, FC_LABEL + 1]
        if (conns[slot, C_MARK] != (fp_rows[e, FC_OUT] >> 31)
                or conns[slot, C_LABEL] != (lab01 & M32)
                or conns[slot, C_LABEL + 1] != (lab01 >> 32)
                or conns[slot, C_LABEL + 2] != (lab23 & M32)
                or conns[slot, C_LABEL + 3] != (lab23 >> 32)):  # fmt: skip
            return PUNT_STATE  # later rules may match ct_mark/ct_label: their path could differ
        step = fp_rows[e, FC_STEP]
        if step & 2:  # the step updated the connection
            l4_ofs = key[L4_OFS]
            l4_len = min(key[L4_LEN], flen - l4_ofs)
            st = ct_recheck_one(conns, slot, gen, step & 1, (step >> 2) & 0xFF, frame, l4_ofs,
                                l4_len, now_ms, timeouts, saved[0], step >> 10)  # fmt: skip
            if st != (step >> 10):
                return PUNT_CONN if st == RECHECK_GONE else PUNT_STATE
    nrules = (head >> 3) & 3
    if nrules > 0:
        rules = fp_rows[e, FC_RULES]
        rid = rules & M31
        rule_stats[rid, 0] += 1
        rule_stats[rid, 1] += flen
        if nrules > 1:
            rid = rules >> 31
            rule_stats[rid, 0] += 1
            rule_stats[rid, 1] += flen
    base = out_n[0]
    nout = (head >> 2) & 1
    if nout:
        out_ports[base] = fp_rows[e, FC_OUT] & M31
        out_n[0] = base + 1
    res[i, R_NOUT] = nout
    res[i, R_OUT_START] = base
    res[i, R_CT_STATE] = ((head >> 24) & 0x3FF) - 1
    res[i, R_DROP] = 0 if nout else (head >> 8) & 0xFF
    res[i, R_RECIRCS] = (head >> 16) & 0xFF
    res[i, R_PATH] = PATH_FAST
    return PUNT_NONE


@njit(forceinline=True)
def _compact_line(e, fp_rows, nsteps, nout, nrules, any_nat, ct_state, drop, recircs,
                  trace_steps, trace_rules, port):  # fmt: skip
    """Write entry ``e``'s FC_* line: compact when everything a hit needs fits it (True),
    else a head of 0 (the full layout serves) with the first step's slot for the prefetcher
    (False)."""
    for c in range(FC_WIDTH):
        fp_rows[e, c] = 0
    fp_rows[e, FC_SLOT] = trace_steps[0, S_SLOT] if nsteps > 0 else -1
    if any_nat != 0 or nsteps > 1 or nout > 1 or nrules > 2:
        return False
    if not (-1 <= ct_state <= 1022 and 0 <= drop <= 0xFF and 0 <= recircs <= 0xFF):
        return False
    for r in range(nrules):
        if not 0 <= trace_rules[r] <= M31:
            return False
    if nout == 1 and not 0 <= port <= M31:
        return False
    mark = 0
    if nsteps == 1:
        mark = trace_steps[0, S_MARK]
        lab = trace_steps[0, S_LABEL : S_LABEL + 4]
        if not (0 <= mark <= M32 and 0 <= lab[0] <= M32 and 0 <= lab[1] <= M31
                and 0 <= lab[2] <= M32 and 0 <= lab[3] <= M31):  # fmt: skip
            return False
        proto = trace_steps[0, S_PROTO]
        state = trace_steps[0, S_STATE] & ~_NAT_BITS
        if not (0 <= proto <= 0xFF and 0 <= state <= 0xFF and trace_steps[0, S_SLOT] >= 0):
            return False
        fp_rows[e, FC_GEN] = trace_steps[0, S_GEN]
        fp_rows[e, FC_STEP] = ((1 if trace_steps[0, S_REPLY] else 0)
                               | (2 if trace_steps[0, S_UPDATE] else 0)
                               | (proto << 2) | (state << 10))  # fmt: skip
        fp_rows[e, FC_LABEL] = lab[0] | (lab[1] << 32)
        fp_rows[e, FC_LABEL + 1] = lab[2] | (lab[3] << 32)
    fp_rows[e, FC_OUT] = (port if nout == 1 else 0) | (mark << 31)
    if nrules > 0:
        fp_rows[e, FC_RULES] = trace_rules[0] | ((trace_rules[1] << 31) if nrules > 1 else 0)
    fp_rows[e, FC_HEAD] = (FC_COMPACT | (nsteps << 1) | (nout << 2) | (nrules << 3)
                           | (drop << 8) | (recircs << 16) | ((ct_state + 1) << 24))  # fmt: skip
    return True


@njit(forceinline=True)
def _fast_apply(e, frame, flen, key, now_ms, conns, timeouts, fp_rows, rule_stats, saved, res,
                i, out_ports, out_n, out_fofs, out_fbuf):  # fmt: skip
    """Try the fast path with entry ``e``; PUNT_NONE when the packet was completed."""
    nsteps = fp_rows[e, FI_NSTEPS]
    l4_ofs = key[L4_OFS]
    l4_len = min(key[L4_LEN], flen - l4_ofs)
    for s in range(nsteps):
        base = FI_STEPS + s * S_WIDTH
        slot = fp_rows[e, base + S_SLOT]
        if conns[slot, C_USED] == 0 or conns[slot, C_GENERATION] != fp_rows[e, base + S_GEN]:
            _restore(conns, fp_rows, e, s, saved)
            return PUNT_CONN
        same_md = conns[slot, C_MARK] == fp_rows[e, base + S_MARK]
        for c in range(4):
            if conns[slot, C_LABEL + c] != fp_rows[e, base + S_LABEL + c]:
                same_md = False
        if not same_md:  # later rules may match ct_mark/ct_label: their path could differ
            _restore(conns, fp_rows, e, s, saved)
            return PUNT_STATE
        if fp_rows[e, base + S_UPDATE] == 0:
            continue  # full processing reuses the packet's connection without an update
        st = ct_recheck(conns, slot, fp_rows[e, base + S_GEN], fp_rows[e, base + S_REPLY],
                        fp_rows[e, base + S_PROTO], frame, l4_ofs, l4_len, now_ms, timeouts,
                        saved[s])  # fmt: skip
        # NAT bits are not the tracker's: the step's translation (or an earlier one in the same
        # zone) adds them, the same way for every packet of the entry
        if st != (fp_rows[e, base + S_STATE] & ~_NAT_BITS):
            _restore(conns, fp_rows, e, s, saved)
            if st >= 0:  # valid but a different ct_state than recorded: undo this one too
                for c in range(HOT_WIDTH):
                    conns[slot, c] = saved[s, c]
            return PUNT_CONN if st == RECHECK_GONE else PUNT_STATE
    nout = fp_rows[e, FI_NOUT]
    outs = FI_STEPS + nsteps * S_WIDTH
    rules = outs + nout
    for r in range(fp_rows[e, FI_NRULES]):
        rid = fp_rows[e, rules + r]
        rule_stats[rid, 0] += 1
        rule_stats[rid, 1] += flen
    base = out_n[0]
    for o in range(nout):
        out_ports[base + o] = fp_rows[e, outs + o]
    out_n[0] = base + nout
    if fp_rows[e, FI_NAT] != 0 and nout > 0:  # every output carries the translated frame
        fofs = _fast_nat_frame(e, fp_rows, frame, flen, key, out_n, out_fbuf)
        for o in range(nout):
            out_fofs[base + o] = fofs
        res[i, R_REWRITTEN] = 1
    res[i, R_NOUT] = nout
    res[i, R_OUT_START] = base
    res[i, R_CT_STATE] = fp_rows[e, FI_CT_STATE]
    res[i, R_DROP] = fp_rows[e, FI_DROP] if nout == 0 else 0
    res[i, R_RECIRCS] = fp_rows[e, FI_RECIRCS]
    res[i, R_PATH] = PATH_FAST
    return PUNT_NONE


@njit
def _restore(conns, fp_rows, e, upto, saved):
    """Undo the updates of steps 0..upto-1 (in reverse), so the rows are as before."""
    for s in range(upto - 1, -1, -1):
        base = FI_STEPS + s * S_WIDTH
        if fp_rows[e, base + S_UPDATE] == 0:
            continue
        slot = fp_rows[e, base + S_SLOT]
        for c in range(HOT_WIDTH):
            conns[slot, c] = saved[s, c]


@njit
def _outputs_match(frame, flen, key, vm, trace_steps, out_fofs, out_fbuf, wframe):
    """True when every output of the packet carried the frame its steps' cached translations
    make of the received frame (the fast path emits that one frame on every port)."""
    _translated(trace_steps.reshape(trace_steps.size), 0, TRACE_WIDTH, S_WIDTH, TRACE_WIDTH,
                vm[VM_NSTEPS], key, frame, flen, wframe)  # fmt: skip
    for o in range(vm[VM_NOUT]):
        fo = out_fofs[vm[VM_OUT_BASE] + o]
        for b in range(flen):
            got = frame[b] if fo < 0 else out_fbuf[fo + b]
            if got != wframe[b]:
                return False
    return True


@njit(forceinline=True)
def _install_wanted(vm, trace_steps, conns):
    """Whether the packet just completed can have a fast-path entry: every ct step +est on a
    committed TCP/UDP connection (ICMP ids and other keys are not all in the entry key), and
    within the entry's limits. Inline: most packets that fail are NEW ones on a hot path."""
    nsteps = vm[VM_NSTEPS]
    if nsteps > MAX_STEPS or vm[VM_NRULES] > MAX_FP_RULES or vm[VM_NOUT] > MAX_FP_OUT:
        return False
    for s in range(nsteps):
        slot = trace_steps[s, S_SLOT]
        if slot < 0:
            return False
        st = trace_steps[s, S_STATE]
        if not (st & CS_ESTABLISHED) or (st & (CS_NEW | CS_INVALID | CS_RELATED)):
            return False
        proto = conns[slot, C_PROTO]
        if proto != IPPROTO_TCP and proto != IPPROTO_UDP:
            return False
    return True


@njit
def _install(em_key, em_hash, vm, trace_steps, trace_rules, out_ports, fp_rows, fp_state,
             em_keys, em_used, em_value, em_hashes, em_state, kstats, frame, flen, key,
             out_fofs, out_fbuf, wframe):  # fmt: skip
    """Record a fast-path entry for a packet whose full processing qualified (the caller
    checked _install_wanted)."""
    nsteps = vm[VM_NSTEPS]
    nrules = vm[VM_NRULES]
    nout = vm[VM_NOUT]
    any_nat = 0
    for s in range(nsteps):
        if trace_steps[s, S_NAT]:
            any_nat = 1
    if any_nat == 0:
        for o in range(nout):
            if out_fofs[vm[VM_OUT_BASE] + o] >= 0:
                any_nat = 2  # rewritten copies that NAT left as they were: check them
    if any_nat != 0 and not _outputs_match(frame, flen, key, vm, trace_steps, out_fofs,
                                           out_fbuf, wframe):  # fmt: skip
        return
    e = em_lookup_hashed(em_keys, em_used, em_value, em_hashes, em_key, em_hash)
    if e < 0:
        e = fp_state[FP_COUNT]
        if e >= fp_state[FP_CAP] or em_state[ES_COUNT] >= em_state[ES_LIMIT]:
            # Full: start the cache afresh (an entry is only ever a shortcut; dropping all
            # of them costs a punt each, never a different answer).
            kstats[KS_FP_FULL] += 1
            em_used[:] = 0
            em_hashes[:] = 0
            em_state[ES_COUNT] = 0
            e = 0
        em_insert(em_keys, em_used, em_value, em_hashes, em_state, em_key, e)
        fp_state[FP_COUNT] = e + 1
    ct_state = vm[VM_LAST_CT] if vm[VM_MATCHED] else -1
    drop = _drop_code(vm)
    port = out_ports[vm[VM_OUT_BASE]] if nout > 0 else 0
    kstats[KS_FP_INSTALLS] += 1
    if _compact_line(e, fp_rows, nsteps, nout, nrules, any_nat, ct_state, drop, vm[VM_RECIRCS],
                     trace_steps, trace_rules, port):  # fmt: skip
        return  # a hit reads the compact line only: the full layout would never be read
    fp_rows[e, FI_NSTEPS] = nsteps
    fp_rows[e, FI_NOUT] = nout
    fp_rows[e, FI_NRULES] = nrules
    fp_rows[e, FI_CT_STATE] = ct_state
    fp_rows[e, FI_RECIRCS] = vm[VM_RECIRCS]
    fp_rows[e, FI_DROP] = drop
    fp_rows[e, FI_NAT] = 1 if any_nat == 1 else 0
    for s in range(nsteps):
        for c in range(S_WIDTH):
            fp_rows[e, FI_STEPS + s * S_WIDTH + c] = trace_steps[s, c]
        if trace_steps[s, S_NAT] != 0:  # read only for a translating step
            for c in range(N_WIDTH):
                fp_rows[e, FN_NAT + s * N_WIDTH + c] = trace_steps[s, S_WIDTH + c]

    outs = FI_STEPS + nsteps * S_WIDTH
    for o in range(nout):
        fp_rows[e, outs + o] = out_ports[vm[VM_OUT_BASE] + o]
    for r in range(nrules):
        fp_rows[e, outs + nout + r] = trace_rules[r]


@njit(forceinline=True)
def _prefetch_stages(i, n, keys, emk, em_flags_mask, vm, em_keys, em_used, em_value, em_hashes,
                     fp_rows, conns, kstats):  # fmt: skip
    """Software pipeline of the assume-established lookups: while packet ``i`` runs, packet
    i+PF_KEY_AHEAD gets its entry key hashed and its exact-match slot prefetched, packet
    i+PF_ENTRY_AHEAD its entry looked up and the entry's row prefetched, packet i+PF_CONN_AHEAD
    the rows of its connections prefetched. Only hints: results never depend on them."""
    slot_mask = em_used.shape[0] - 1
    lim = min(n, i + PF_KEY_AHEAD)
    while vm[VM_PF_KEY] < lim:
        j = vm[VM_PF_KEY]
        r = j & RING_MASK
        row = emk[r]
        _pack_em_key(keys[r], row, em_flags_mask)
        h = hash_row(row[:EM_WIDTH])
        row[EMK_HASH] = h
        row[EMK_HINT] = -1
        row[EMK_EPOCH] = -1
        if keys[r, PARSE_FLAGS] == 0:
            s = h & slot_mask
            prefetch(em_used, s)
            prefetch(em_hashes, s)
            prefetch2(em_keys, s, 0)  # a key row is one cache line
            prefetch(em_value, s)
        vm[VM_PF_KEY] = j + 1
    lim = min(vm[VM_PF_KEY], i + PF_ENTRY_AHEAD)
    while vm[VM_PF_ENTRY] < lim:
        r = vm[VM_PF_ENTRY] & RING_MASK
        if keys[r, PARSE_FLAGS] == 0:
            e = em_lookup_hashed(em_keys, em_used, em_value, em_hashes, emk[r, :EM_WIDTH],
                                 emk[r, EMK_HASH])  # fmt: skip
            emk[r, EMK_HINT] = e
            emk[r, EMK_EPOCH] = kstats[KS_FP_INSTALLS]
            if e >= 0 and e < fp_rows.shape[0]:
                prefetch2(fp_rows, e, 0)  # the compact line
        vm[VM_PF_ENTRY] += 1
    lim = min(vm[VM_PF_ENTRY], i + PF_CONN_AHEAD)
    while vm[VM_PF_CONN] < lim:
        e = emk[vm[VM_PF_CONN] & RING_MASK, EMK_HINT]
        if e >= 0 and e < fp_rows.shape[0]:
            if fp_rows[e, FC_HEAD] & FC_COMPACT == 0:  # a full entry: its layout's first lines
                for c in range(FP_FULL, FP_FULL + FP_HOT_WORDS, 8):
                    prefetch2(fp_rows, e, c)
            slot = fp_rows[e, FC_SLOT]  # the first step's connection (later ones: none)
            if slot >= 0 and slot < conns.shape[0]:
                for c in range(0, HOT_WIDTH, 8):  # what a re-check reads and writes
                    prefetch2(conns, slot, c)
        vm[VM_PF_CONN] += 1


@njit(_nrt=False)
def run_batch(
    mode,
    start,
    buf,
    offsets,
    lengths,
    in_ports,
    now_ms,
    keys,
    ipf_next_flush_ms,
    em_flags_mask,
    # conntrack
    conns,
    ct_index,
    free_slots,
    ct_stats,
    zone_limits,
    timeouts,
    # megaflow cache
    masks,
    mask_cols,
    mask_ncols,
    mask_hits,
    mask_order,
    entry_key,
    entry_mask_id,
    entry_value,
    entry_hits,
    mf_index,
    mf_state,
    # programs
    prog_ops,
    prog_start,
    prog_len,
    # exact-match fast path
    em_keys,
    em_used,
    em_value,
    em_hashes,
    em_state,
    fp_rows,
    fp_state,
    # counters and results
    rule_stats,
    kstats,
    res,
    out_ports,
    out_n,
    out_fofs,
    out_fbuf,
    # VM state
    vm,
    stack_key,
    stack_md,
    stack_frame,
    frames_w,
    cur_key,
    cur_md,
    trace_steps,
    trace_rules,
    mf_key,
    emk,
    saved,
    scratch,
):
    """Process packets from ``start``; returns with vm[VM_STATUS] set (see ST_*).

    Outputs: ``out_ports[k]`` the port of output k, ``out_fofs[k]`` -1 when it carried the
    received frame, else the offset in ``out_fbuf`` of the rewritten copy it carried (NAT);
    ``out_n[0]`` outputs and ``out_n[1]`` bytes of ``out_fbuf`` used. ``frames_w`` holds the
    rewritten frame of each recirculation depth, its last row is scratch. ``scratch``: the
    NAT spec of a ct() without nat (``SCR_NO_NAT``), then conntrack's tuple scratch
    (``SCR_TUPS``); the kernel allocates nothing."""
    n = offsets.shape[0]
    no_nat = scratch[SCR_NO_NAT : SCR_NO_NAT + NS_WIDTH]
    ct_tups = scratch[SCR_TUPS : SCR_TUPS + 2 * TUP_WIDTH]
    spare = frames_w.shape[0] - 1
    for i in range(start, n):
        off = offsets[i]
        flen = lengths[i]
        frame = buf[off : off + flen]
        now = now_ms[i]
        if vm[VM_RESUME] == 1 and i == start:
            vm[VM_RESUME] = 0
        else:
            # ---- a fresh packet ----------------------------------------------------------
            for c in range(RES_WIDTH):
                res[i, c] = 0  # PUNT_NONE, not rewritten, ...
            if flen < ETH_HEADER_LEN:
                res[i, R_NOUT] = 0
                res[i, R_OUT_START] = out_n[0]
                res[i, R_CT_STATE] = -1
                res[i, R_DROP] = DROP_CODE_RX_INVALID
                res[i, R_PATH] = PATH_RX_INVALID
                res[i, R_RECIRCS] = 0
                continue
            if (
                out_n[0] + MAX_OUT_PER_PACKET > out_ports.shape[0]
                or out_n[1] + (MAX_OUT_PER_PACKET + 1) * flen > out_fbuf.shape[0]
                or flen > frames_w.shape[1]
            ):
                vm[VM_STATUS] = ST_FULL
                vm[VM_PACKET] = i
                return
            lim = min(n, i + (PF_KEY_AHEAD if mode == 1 else 1))
            while vm[VM_PARSED] < lim:
                j = vm[VM_PARSED]
                jm = j + PF_META_AHEAD
                if jm < n:
                    prefetch(offsets, jm)
                    prefetch(lengths, jm)
                    prefetch(in_ports, jm)
                    prefetch(now_ms, jm)
                jf = j + PF_FRAME_AHEAD
                if jf < n:
                    prefetch(buf, offsets[jf])  # a hint: any address is harmless
                    prefetch(buf, offsets[jf] + 63)
                parse_record(buf, offsets, lengths, in_ports, j, keys[j & RING_MASK])
                vm[VM_PARSED] = j + 1
            key = keys[i & RING_MASK]
            dl_type = key[DL_TYPE]
            is_ip = dl_type == ETH_TYPE_IP or dl_type == ETH_TYPE_IPV6
            if (is_ip and key[NW_FRAG] & FRAG_ANY) or now >= ipf_next_flush_ms:
                vm[VM_STATUS] = ST_SLOW
                vm[VM_PACKET] = i
                return
            if mode == 1:
                # TCP flags are part of the entry key only if some rule matches on them;
                # otherwise the pipeline cannot depend on them (the recheck still looks).
                _prefetch_stages(i, n, keys, emk, em_flags_mask, vm, em_keys, em_used, em_value,
                                 em_hashes, fp_rows, conns, kstats)  # fmt: skip
                punt = PUNT_INELIGIBLE
                if key[PARSE_FLAGS] == 0:
                    r = i & RING_MASK
                    if emk[r, EMK_EPOCH] == kstats[KS_FP_INSTALLS]:
                        e = emk[r, EMK_HINT]
                    else:
                        e = em_lookup_hashed(em_keys, em_used, em_value, em_hashes,
                                             emk[r, :EM_WIDTH], emk[r, EMK_HASH])  # fmt: skip
                    if e < 0:
                        punt = PUNT_MISS
                        # the row an install at the end of full processing would fill
                        nxt = fp_state[FP_COUNT]
                        if nxt < fp_rows.shape[0]:
                            for c in range(0, FP_FULL + FP_HOT_WORDS, 8):
                                prefetch2_write(fp_rows, nxt, c)
                    else:
                        head = fp_rows[e, FC_HEAD]
                        if head & FC_COMPACT:
                            punt = _fast_apply_compact(e, head, frame, flen, key, now, conns,
                                                       timeouts, fp_rows, rule_stats, saved, res,
                                                       i, out_ports, out_n)  # fmt: skip
                        else:
                            punt = _fast_apply(e, frame, flen, key, now, conns, timeouts,
                                               fp_rows, rule_stats, saved, res, i, out_ports,
                                               out_n, out_fofs, out_fbuf)  # fmt: skip
                if punt == PUNT_NONE:
                    kstats[KS_FAST] += 1
                    continue
                kstats[punt] += 1  # KS_PUNT_* == PUNT_* by construction
                res[i, R_PUNT] = punt
                vm[VM_ELIGIBLE] = 1 if key[PARSE_FLAGS] == 0 else 0
            else:
                vm[VM_ELIGIBLE] = 0
            for c in range(KEY_WIDTH):
                cur_key[c] = key[c]
            for c in range(NCT):
                cur_md[c] = 0
            vm[VM_DEPTH] = 0
            vm[VM_HANDLE] = -1
            vm[VM_RECIRC_ID] = 0
            vm[VM_MATCHED] = 0
            vm[VM_MISSED] = 0
            vm[VM_LAST_CT] = 0
            vm[VM_RECIRC_DROPPED] = 0
            vm[VM_DROP_CODE] = 0
            vm[VM_RECIRCS] = 0
            vm[VM_NOUT] = 0
            vm[VM_OUT_BASE] = out_n[0]
            vm[VM_NSTEPS] = 0
            vm[VM_NRULES] = 0
            vm[VM_UPCALLED] = 0
            vm[VM_NEED_LOOKUP] = 1
            vm[VM_FRAME_W] = 0
        # ---- the VM: passes until the packet and all its recirculations are done ---------
        while True:
            if vm[VM_NEED_LOOKUP] == 1:
                for c in range(PARSE_FIRST):
                    mf_key[c] = cur_key[c]
                mf_key[MF_RECIRC] = vm[VM_RECIRC_ID]
                kstats[KS_MF_LOOKUPS] += 1
                ent = mf_lookup(masks, mask_cols, mask_ncols, mask_hits, mask_order, entry_key,
                                entry_mask_id, entry_value, entry_hits, mf_index, mf_state,
                                mf_key)  # fmt: skip
                if ent < 0:
                    vm[VM_STATUS] = ST_MISS
                    vm[VM_PACKET] = i
                    vm[VM_UPCALLED] = 1
                    return
                kstats[KS_MF_HITS] += 1
                prog = entry_value[ent]
                vm[VM_PROG] = prog
                vm[VM_PC] = prog_start[prog]
                vm[VM_END] = prog_start[prog] + prog_len[prog]
                vm[VM_NEED_LOOKUP] = 0
            pc = vm[VM_PC]
            end = vm[VM_END]
            recirculate = False
            while pc < end:
                op = prog_ops[pc, 0]
                pc += 1
                if op == OP_RULE:
                    rid = prog_ops[pc - 1, 1]
                    rule_stats[rid, 0] += 1
                    rule_stats[rid, 1] += flen
                    vm[VM_MATCHED] = 1
                    vm[VM_MISSED] = 0
                    vm[VM_LAST_CT] = cur_key[CT_STATE]
                    if vm[VM_NRULES] < MAX_FP_RULES:
                        trace_rules[vm[VM_NRULES]] = rid
                    vm[VM_NRULES] += 1
                elif op == OP_MISS:
                    vm[VM_MISSED] = 1
                elif op == OP_OUTPUT or op == OP_CONTROLLER:
                    if vm[VM_NOUT] >= MAX_OUT_PER_PACKET:
                        kstats[KS_OUT_OVERFLOW] += 1
                        continue
                    port = prog_ops[pc - 1, 1] if op == OP_OUTPUT else -1
                    k = vm[VM_OUT_BASE] + vm[VM_NOUT]
                    out_ports[k] = port
                    if vm[VM_FRAME_W]:
                        fb = out_n[1]
                        d = vm[VM_DEPTH]
                        for b in range(flen):
                            out_fbuf[fb + b] = frames_w[d, b]
                        out_fofs[k] = fb
                        out_n[1] = fb + flen
                        res[i, R_REWRITTEN] = 1
                    else:
                        out_fofs[k] = -1
                    vm[VM_NOUT] += 1
                    out_n[0] = vm[VM_OUT_BASE] + vm[VM_NOUT]
                elif op == OP_SET:
                    col = prog_ops[pc - 1, 1]
                    mask = prog_ops[pc - 1, 3]
                    cur_key[col] = (cur_key[col] & ~mask) | (prog_ops[pc - 1, 2] & mask)
                elif op == OP_CT:
                    zone = prog_ops[pc - 1, 1]
                    flags = prog_ops[pc - 1, 2]
                    ct_row = pc - 1
                    has_nat = (flags & CTF_NAT) != 0
                    if has_nat:
                        pc += 1  # the OP_NAT_SPEC row
                    d = vm[VM_DEPTH]
                    if has_nat and vm[VM_FRAME_W] == 0:
                        for b in range(flen):
                            frames_w[d, b] = frame[b]
                        vm[VM_FRAME_W] = 1
                    label4 = prog_ops[ct_row, 5:9]
                    label_mask4 = prog_ops[ct_row, 9:13]
                    for c in range(NCT):
                        cur_key[CT_STATE + c] = cur_md[c]
                    handle_in = vm[VM_HANDLE]
                    force = (flags & CTF_FORCE) != 0
                    reuse = False
                    if handle_in >= 0 and not force and cur_key[CT_STATE] != CS_INVALID:
                        hs = handle_in >> 1
                        if hs < conns.shape[0] and conns[hs, C_USED] != 0:
                            reuse = conns[hs, C_ZONE] == zone
                    kstats[KS_CT_CALLS] += 1
                    state_in = cur_key[CT_STATE]
                    zone_in = cur_key[CT_ZONE]
                    wframe = frames_w[d, :flen] if vm[VM_FRAME_W] else frame
                    nat = prog_ops[ct_row + 1, 1 : 1 + NS_WIDTH] if has_nat else no_nat
                    handle = ct_execute(conns, ct_index, free_slots, ct_stats, zone_limits,
                                        wframe, cur_key, zone, (flags & CTF_COMMIT) != 0, force,
                                        (flags & CTF_SET_MARK) != 0, prog_ops[ct_row, 3],
                                        prog_ops[ct_row, 4], (flags & CTF_SET_LABEL) != 0,
                                        label4, label_mask4, now, timeouts, handle_in,
                                        nat, ct_tups)  # fmt: skip
                    vm[VM_HANDLE] = handle
                    _copy_ct_fields(cur_key, cur_md)
                    s = vm[VM_NSTEPS]
                    if s < MAX_STEPS:
                        conn = ct_stats[ST_LAST_CONN]
                        slot = conn >> 1 if conn >= 0 else -1
                        trace_steps[s, S_SLOT] = slot
                        trace_steps[s, S_GEN] = conns[slot, C_GENERATION] if slot >= 0 else 0
                        trace_steps[s, S_REPLY] = conn & 1 if conn >= 0 else 0
                        # OVS handle_nat: a NATed connection translates unless this zone did
                        trace_steps[s, S_NAT] = 0
                        if (
                            has_nat
                            and slot >= 0
                            and conns[slot, C_NAT_FLAGS] != 0
                            and (not (state_in & _NAT_BITS) or zone_in != zone)
                        ):
                            t = nat_target(conns, slot, conn & 1)
                            trace_steps[s, S_NAT] = t[0]
                            for c in range(4):
                                trace_steps[s, S_WIDTH + N_ADDR + c] = t[1 + c]
                            trace_steps[s, S_WIDTH + N_SPORT] = t[5]
                            trace_steps[s, S_WIDTH + N_DPORT] = t[6]
                        trace_steps[s, S_PROTO] = conns[slot, C_PROTO] if slot >= 0 else 0
                        trace_steps[s, S_STATE] = cur_key[CT_STATE]
                        trace_steps[s, S_UPDATE] = 0 if reuse else 1
                        trace_steps[s, S_MARK] = conns[slot, C_MARK] if slot >= 0 else 0
                        for c in range(4):
                            trace_steps[s, S_LABEL + c] = (
                                conns[slot, C_LABEL + c] if slot >= 0 else 0
                            )
                    vm[VM_NSTEPS] = s + 1
                    if flags & (CTF_SET_MARK | CTF_SET_LABEL | CTF_FORCE):
                        vm[VM_ELIGIBLE] = 0
                elif op == OP_RECIRC:
                    if vm[VM_DEPTH] >= MAX_RECIRC_DEPTH:
                        vm[VM_RECIRC_DROPPED] = 1
                        continue
                    d = vm[VM_DEPTH]
                    for c in range(KEY_WIDTH):
                        stack_key[d, c] = cur_key[c]
                    for c in range(NCT):
                        stack_md[d, c] = cur_md[c]
                    stack_frame[d, 0] = pc
                    stack_frame[d, 1] = end
                    stack_frame[d, 2] = vm[VM_HANDLE]
                    stack_frame[d, 3] = vm[VM_RECIRC_ID]
                    stack_frame[d, 4] = vm[VM_FRAME_W]
                    if vm[VM_FRAME_W]:  # the copy works on its own copy of the rewritten frame
                        for b in range(flen):
                            frames_w[d + 1, b] = frames_w[d, b]
                    vm[VM_DEPTH] = d + 1
                    vm[VM_RECIRCS] += 1
                    kstats[KS_RECIRCS] += 1
                    vm[VM_RECIRC_ID] = prog_ops[pc - 1, 1]
                    vm[VM_NEED_LOOKUP] = 1
                    recirculate = True
                    break
                elif op == OP_CLEAR_CT_FIELDS:
                    for c in range(NCT):
                        cur_key[CT_STATE + c] = 0
                elif op == OP_CT_CLEAR:
                    for c in range(NCT):
                        cur_key[CT_STATE + c] = 0
                        cur_md[c] = 0
                    vm[VM_HANDLE] = -1
                elif op == OP_DROP:
                    vm[VM_DROP_CODE] = prog_ops[pc - 1, 1]
                    pc = end
            vm[VM_PC] = pc
            if recirculate:
                continue
            # this pass is over: resume the original of the innermost fork, if any
            if vm[VM_DEPTH] == 0:
                break
            d = vm[VM_DEPTH] - 1
            vm[VM_DEPTH] = d
            for c in range(KEY_WIDTH):
                cur_key[c] = stack_key[d, c]
            for c in range(NCT):
                cur_md[c] = stack_md[d, c]
            vm[VM_PC] = stack_frame[d, 0]
            vm[VM_END] = stack_frame[d, 1]
            vm[VM_HANDLE] = stack_frame[d, 2]
            vm[VM_RECIRC_ID] = stack_frame[d, 3]
            vm[VM_FRAME_W] = stack_frame[d, 4]
        # ---- the packet is complete -------------------------------------------------------
        _finish_packet(i, vm, res, out_ports)
        res[i, R_PATH] = PATH_UPCALL if vm[VM_UPCALLED] else PATH_MEGAFLOW
        if mode == 1 and vm[VM_ELIGIBLE] == 1 and _install_wanted(vm, trace_steps, conns):
            r = i & RING_MASK
            _install(emk[r, :EM_WIDTH], emk[r, EMK_HASH], vm, trace_steps, trace_rules, out_ports,
                     fp_rows, fp_state, em_keys, em_used, em_value, em_hashes, em_state, kstats, frame, flen,
                     keys[r], out_fofs, out_fbuf, frames_w[spare, :flen])  # fmt: skip
    vm[VM_STATUS] = ST_DONE
    vm[VM_PACKET] = n
