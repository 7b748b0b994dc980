"""The compiled datapath's shared layouts: the VM's scalars, per-packet results, kernel
statistics, fast-path entry rows, and the bundles of arrays the batch kernel takes.

What: constants only (and the bundle types): every part of the compiled path (kernel.py, the
action VM in vm.py, the fast path in fastpath.py and install.py) and the Python side
(engine.py, the bench) name columns and codes from here.

Design: a table is a flat numpy array whose columns are named by constants (numba reads
them as compile-time values). The kernel's arguments come in bundles, one per table or
concern (:class:`Batch`, :class:`CtTables`, :class:`MegaflowTables`, :class:`Programs`,
:class:`FastPathTables`, :class:`Results`, :class:`VmState`): Python passes each as a plain
tuple (numba types a plain tuple of arrays as fast as loose arguments, a named tuple several
microseconds slower per call) and the kernel wraps it in its named type on entry, so compiled
code reads ``ct.conns``, not argument 11. Adding an array to a bundle: add the field here and
where engine.py builds the tuple.

Invariants: the numbering of PUNT_* equals that of KS_PUNT_* (a punt reason indexes the
statistics); every width covers the columns before it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ctaccel.conntrack.layout import CtTables  # noqa: F401  (the kernel's ct bundle, owned by conntrack)
from ctaccel.conntrack.nat import NS_WIDTH
from ctaccel.conntrack.table import CT_SCRATCH_WIDTH
from ctaccel.jit import njit
from ctaccel.ofproto.program import DROP_CODE
from ctaccel.packet.key import CS_DST_NAT, CS_SRC_NAT, CT_STATE, CT_TP_DST

# the datapath modes, as the kernel's ``mode`` argument
MODE_RECIRC = 0  # OVS: megaflow cache, conntrack, recirculation
MODE_ASSUME_ESTABLISHED = 1  # the talk: the exact-match fast path in front

MAX_RECIRC_DEPTH = 8
DROP_CODE_RX_INVALID = DROP_CODE["rx_invalid"]
DROP_CODE_TABLE_MISS = DROP_CODE["table_miss"]
DROP_CODE_RULE_DROP = DROP_CODE["rule_drop"]
DROP_CODE_RECIRC_DEPTH = DROP_CODE["recirc_depth"]
NCT = CT_TP_DST - CT_STATE + 1  # ct columns of the key
# The entry key: in_port and every header field (key columns IN_PORT..TCP_FLAGS, 490 bits)
# packed into 8 words of 63 bits, so an entry's key is one cache line (_pack_em_key).
EM_WIDTH = 8
# emk[i]: packet i's entry key (EM_WIDTH words), its index hash (exact.em_hash31 of its
# hash_row), and the entry (row) found when it was prefetched (a hint: only used to prefetch;
# the packet's own lookup decides)
EMK_HASH = EM_WIDTH
EMK_HINT = EM_WIDTH + 1
EMK_EPOCH = EM_WIDTH + 2  # kstats[KS_FP_INSTALLS] when the hint was taken: while no entry has
#                           been installed since, the hint is the lookup's answer (only an
#                           install adds, replaces or drops entries)
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
VM_WLEN = 27  # the length of the rewritten copy (when VM_FRAME_W): VLAN pushes and pops
VM_PASS_DELTA = 28  # bytes VLAN pushes/pops added in this pass: rules count the pass's start
VM_WIDTH = 32

# per-packet results
R_NOUT = 0
R_OUT_START = 1
R_CT_STATE = 2  # -1: no rule matched
R_DROP = 3  # program.DROP_REASON_NAMES index
R_PATH = 4
R_RECIRCS = 5
R_PUNT = 6
R_REWRITTEN = 7  # 1: out_fofs says which outputs carried a rewritten frame (NAT, header
#                  rewrites, VLAN tags; out_flen its length); else none did
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
KS_FP_FULL = 9  # installs that found the fast-path cache full
KS_FP_REPLACED = 12  # ... of which replaced an entry (one in FP_ADMIT: install.py)
KS_CT_CALLS = 10
KS_OUT_OVERFLOW = 11
KS_WIDTH = 16

# fast-path entries: a row of FC_ROW int64 per entry (``rows``, 128 bytes): first a line of
# FC_WIDTH words, everything a hit of a common entry reads (at most one ct step without
# translation, at most one output and two rules, values small enough to pack), then the
# entry's key (FK_KEY: the exact-match index keeps none, exact.py). Other entries
# (FC_HEAD without FC_COMPACT) have a full layout in a row of ``full`` (FP_WIDTH int64: FI_*,
# from FP_FULL; its first FC_WIDTH words unused), whose index is their line's FC_OUT, packed
# so that what a hit reads (the header, its steps, outputs and rule ids) is contiguous. Only
# such entries pay for a full row (896 bytes): most entries are compact (workload A: all).
FC_HEAD = 0  # FC_COMPACT | nsteps << 1 | nout << 2 | nrules << 3 | drop << 8 | recircs << 16
#              | (ct_state + 1) << 24
FC_SLOT = 1  # the first step's connection slot, -1 if none (full entries too: prefetch)
FC_GEN = 2  # its generation
FC_STEP = 3  # reply | update << 1 | proto << 2 | expected ct_state << 10
FC_LABEL = 4  # 2 words: ct_label words 0 | 1 << 32 and 2 | 3 << 32 (words 1, 3 < 2**31)
FC_OUT = 6  # the output port (< 2**31) | ct_mark << 31; an entry without a compact line: its
#            row of ``full``
FC_RULES = 7  # rule id | rule id << 31
FC_WIDTH = 8
FK_KEY = FC_WIDTH  # the entry's key (EM_WIDTH words) follows its line, in the same row
FC_ROW = FC_WIDTH + EM_WIDTH  # an entry's row: 128 bytes, two cache lines
FC_COMPACT = 1
M31 = (1 << 31) - 1
M32 = (1 << 32) - 1


# The compact line's words, packed and read by name (inlined: the same shifts and masks).
@njit(forceinline=True)
def pack_head(nsteps, nout, nrules, drop, recircs, ct_state):
    """FC_HEAD of a compact entry (ct_state -1: none; it is stored + 1)."""
    return (FC_COMPACT | (nsteps << 1) | (nout << 2) | (nrules << 3) | (drop << 8)
            | (recircs << 16) | ((ct_state + 1) << 24))  # fmt: skip


@njit(forceinline=True)
def head_has_step(head):
    return (head & 2) != 0


@njit(forceinline=True)
def head_nout(head):
    return (head >> 2) & 1


@njit(forceinline=True)
def head_nrules(head):
    return (head >> 3) & 3


@njit(forceinline=True)
def head_drop(head):
    return (head >> 8) & 0xFF


@njit(forceinline=True)
def head_recircs(head):
    return (head >> 16) & 0xFF


@njit(forceinline=True)
def head_ct_state(head):
    return ((head >> 24) & 0x3FF) - 1


@njit(forceinline=True)
def pack_step(reply, update, proto, ct_state):
    """FC_STEP: the step's direction, whether it updated the connection, the IP protocol and
    the ct_state it expects (without the NAT bits)."""
    return (1 if reply else 0) | (2 if update else 0) | (proto << 2) | (ct_state << 10)


@njit(forceinline=True)
def step_reply(step):
    return step & 1


@njit(forceinline=True)
def step_updates(step):
    return (step & 2) != 0


@njit(forceinline=True)
def step_proto(step):
    return (step >> 2) & 0xFF


@njit(forceinline=True)
def step_ct_state(step):
    return step >> 10


@njit(forceinline=True)
def pack31(low, high):
    """Two values in one word: ``low`` < 2**31 (FC_OUT: the port; FC_RULES: a rule id) and
    ``high`` above it (the ct_mark; the second rule id)."""
    return low | (high << 31)


@njit(forceinline=True)
def low31(word):
    return word & M31


@njit(forceinline=True)
def high31(word):
    return word >> 31


@njit(forceinline=True)
def pack32(low, high):
    """Two 32-bit words in one (FC_LABEL: ct_label words 0 and 1, 2 and 3; high < 2**31)."""
    return low | (high << 32)


@njit(forceinline=True)
def low32(word):
    return word & M32


@njit(forceinline=True)
def high32(word):
    return word >> 32


MAX_STEPS = 4
MAX_FP_OUT = 8
MAX_FP_RULES = 16
# A traced rule: its id, | (RULE_LEN_BIAS + bytes its count differs from the received frame's)
# << 32 when a VLAN push or pop in an earlier pass changed the length it counts
RULE_LEN_BIAS = 16
FP_FULL = FC_WIDTH
FI_NSTEPS = FP_FULL + 0
FI_NOUT = FP_FULL + 1
FI_NRULES = FP_FULL + 2
FI_CT_STATE = FP_FULL + 3
FI_DROP = FP_FULL + 4
FI_RECIRCS = FP_FULL + 5
FI_NAT = FP_FULL + 6  # 1: some step rewrites the frame (NAT): outputs carry the rewritten copy
FI_VLAN = FP_FULL + 7  # 0, or FI_VLAN_SET | TPID << 16 | TCI: outputs carry the frame with its
#                        outer VLAN tag made to say TCI (0: popped) — NORMAL, VLAN actions
FI_VLAN_SET = 1 << 40
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
STACK_WIDTH = 7  # stack_frame columns: pc, end, handle, recirc id, frame rewritten, its
#                 length, the pass's VLAN delta
NAT_BITS = CS_SRC_NAT | CS_DST_NAT
MAX_OUT_PER_PACKET = 256  # outputs beyond this are not emitted (counted: KS_OUT_OVERFLOW)
# scratch: what the kernel would otherwise allocate (it runs without numba's runtime)
SCR_NO_NAT = 0
SCR_TUPS = SCR_NO_NAT + NS_WIDTH
SCR_WIDTH = SCR_TUPS + CT_SCRATCH_WIDTH
FP_CAP = 1  # fp_state: entries the cache may hold now (the engine grows it to its maximum)
FP_ROWS = 0  # rows of ``rows`` ever taken (classic entries and templates; then the free chain)
FP_ROW_CAP = 7  # rows ``rows`` holds
FP_ROW_FREE = 8  # the first row of ``rows`` freed (+ 1; 0: none), chained through FC_SLOT
FP_FULL_COUNT = 2  # rows of ``full`` used
FP_FULL_CAP = 3  # rows ``full`` holds
FP_FULL_FREE = 4  # the first row of ``full`` freed (+ 1; 0: none), chained through word 0
FP_HAND = 5  # the exact-match slot where the next replacement looks (install.py _evict)
FP_ADMIT = 6  # a full cache takes one install in FP_ADMIT (<= 1: every one), as OVS's EMC
FP_SLIMS = 9  # rows of ``slim`` ever taken (then the free chain)
FP_SLIM_CAP = 10  # rows ``slim`` holds
FP_SLIM_FREE = 11  # the first row of ``slim`` freed (+ 1; 0: none), chained through SL_CONN
FP_STATE_WIDTH = 12

# Slim entries (entries.py): an IPv4 TCP/UDP entry of one ct step on a connection without an
# extension row, whose addresses and ports are the connection's tuple, keeps no key and no
# line of its own: a row of ``slim`` (SL_WIDTH int64, 16 bytes) names its connection and a
# *template*, a row of ``rows`` shared by every entry with the same line and the same key
# but for the tuple (MACs, in_port, VLAN, TOS/TTL, protocol, flags...). Its key is that
# template key with the connection's tuple of the step's direction put in (TUPLE2/TUPLE6).
# Its exact-match value is its ``slim`` row + SLIM_TAG.
SLIM_TAG = 1 << 30
SL_CONN = 0  # the connection: slot | generation << 32
SL_TPL = 1  # the template's row of ``rows``
SL_WIDTH = 2
FC_REFS = FC_GEN  # a template: the slim entries using it (its FC_SLOT is 0)
TUPLE6 = M32 | (1 << 52)  # the bits of key word 6 a tuple gives (ports, address bit 31)
#                          (key word 2 is the two addresses' low 63 bits: all the tuple's)


# --- the batch kernel's argument bundles ---------------------------------------------------
class Batch(NamedTuple):
    """The packets: frames back to back in ``buf``, and per packet its offset, length, input
    port and time (ms)."""

    buf: np.ndarray
    offsets: np.ndarray
    lengths: np.ndarray
    in_ports: np.ndarray
    now_ms: np.ndarray


class MegaflowTables(NamedTuple):
    """The megaflow cache (megaflow.MegaflowCache.tables, in that order)."""

    masks: np.ndarray
    mask_cols: np.ndarray
    mask_ncols: np.ndarray
    mask_hits: np.ndarray
    mask_order: np.ndarray
    entry_key: np.ndarray
    entry_mask_id: np.ndarray
    entry_value: np.ndarray
    entry_hits: np.ndarray
    index: np.ndarray
    state: np.ndarray


class Programs(NamedTuple):
    """The action programs (ofproto/program.py): ops rows, and per program its first row
    and row count."""

    ops: np.ndarray
    start: np.ndarray
    length: np.ndarray


class FastPathTables(NamedTuple):
    """The exact-match index (exact.ExactIndex.tables), the rows of classic entries and
    templates (FC_* line, then the key from FK_KEY), the full layouts of entries without a
    compact line (FI_*), the counts (FP_*), the slim entries (SL_*) and the templates' index
    (entries.py)."""

    em_index: np.ndarray
    em_state: np.ndarray
    rows: np.ndarray
    full: np.ndarray
    state: np.ndarray
    slim: np.ndarray
    tpl_index: np.ndarray
    tpl_state: np.ndarray


class Results(NamedTuple):
    """What the kernel reports: per packet ``res`` (R_*), the outputs (``out_ports``,
    ``out_fofs``, ``out_fbuf``, counts in ``out_n``), per-rule packets/bytes and KS_* counts."""

    res: np.ndarray
    out_ports: np.ndarray
    out_n: np.ndarray
    out_fofs: np.ndarray
    out_fbuf: np.ndarray
    rule_stats: np.ndarray
    kstats: np.ndarray
    out_flen: np.ndarray  # per output with a rewritten copy: its length


class VmState(NamedTuple):
    """Caller-owned working state, kept between calls so a packet can be suspended (an
    upcall) and resumed: VM scalars (VM_*), the parsed-key ring, the recirculation stack,
    rewritten frames, the current key and ct metadata, the trace of the packet's ct steps
    and rules (for an install), the megaflow lookup key, the re-check undo rows, scratch."""

    vm: np.ndarray
    keys: np.ndarray
    emk: np.ndarray
    stack_key: np.ndarray
    stack_md: np.ndarray
    stack_frame: np.ndarray
    frames_w: np.ndarray
    cur_key: np.ndarray
    cur_md: np.ndarray
    trace_steps: np.ndarray
    trace_rules: np.ndarray
    mf_key: np.ndarray
    saved: np.ndarray
    scratch: np.ndarray
