"""The action VM: a packet's passes through megaflow lookups and action programs, compiled.

What: :func:`run_passes` runs the current packet (its key in ``VmState.cur_key``) until it
and every recirculated copy are done, or stops at a megaflow miss with the packet suspended
in ``VmState`` (the caller upcalls, installs the megaflow and calls again: the packet resumes
at the pass that missed). :func:`start_packet` readies the VM for a fresh packet and
:func:`finish_packet` writes its results.

Design (OVS dpif-netdev): each pass looks up the megaflow cache with (key, recirc id) and runs
the entry's program (ofproto/program.py, one op per row). ``OP_RECIRC`` pushes the original
on a small stack and processes the copy to completion first; depth is capped at
MAX_RECIRC_DEPTH. ``OP_CT`` runs conntrack (conntrack.core.ct_execute) and records the step in
``trace_steps`` (connection, generation, direction, the state it produced, NAT), which is what
an assume-established entry is installed from. Each op has its helper here; adding an op is
a case in :func:`_run_program` and its helper. All helpers are inlined into the kernel
(``forceinline``): the VM is the hot loop of recirc mode.

Invariants: the VM's state lives in caller-owned arrays only, so a pass can be suspended at
any lookup; counters, outputs, ct_state and drop reason follow the reference engine's rules
(datapath/reference.py), checked by tests/equivalence/test_equivalence.py.
"""

from __future__ import annotations

from ctaccel.conntrack.core import ct_execute
from ctaccel.conntrack.ftp import MAX_GROWTH as ALG_MAX_GROWTH
from ctaccel.conntrack.layout import (
    C_GENERATION,
    C_LABEL,
    C_MARK,
    C_PROTO,
    C_USED,
    C_ZONE,
    CA_WIDTH,
    ROW_CONN,
    X_NAT_FLAGS,
    ext_get,
)
from ctaccel.conntrack.nat import NS_WIDTH, nat_target
from ctaccel.conntrack.table import ST_FRAME_LEN, ST_LAST_ALG, ST_LAST_CONN
from ctaccel.datapath.layout import (
    DROP_CODE_RECIRC_DEPTH,
    DROP_CODE_RULE_DROP,
    DROP_CODE_TABLE_MISS,
    KS_CT_CALLS,
    KS_MF_HITS,
    KS_MF_LOOKUPS,
    KS_OUT_OVERFLOW,
    KS_RECIRCS,
    MAX_FP_RULES,
    MAX_OUT_PER_PACKET,
    MAX_RECIRC_DEPTH,
    MAX_STEPS,
    N_ADDR,
    N_DPORT,
    N_SPORT,
    NAT_BITS,
    NCT,
    R_CT_STATE,
    R_DROP,
    R_NOUT,
    R_OUT_START,
    R_RECIRCS,
    R_REWRITTEN,
    RULE_LEN_BIAS,
    S_GEN,
    S_LABEL,
    S_MARK,
    S_NAT,
    S_PROTO,
    S_REPLY,
    S_SLOT,
    S_STATE,
    S_UPDATE,
    S_WIDTH,
    VM_DEPTH,
    VM_DROP_CODE,
    VM_ELIGIBLE,
    VM_END,
    VM_FRAME_W,
    VM_HANDLE,
    VM_LAST_CT,
    VM_MATCHED,
    VM_MISSED,
    VM_NEED_LOOKUP,
    VM_NOUT,
    VM_NRULES,
    VM_NSTEPS,
    VM_OUT_BASE,
    VM_PASS_DELTA,
    VM_PC,
    VM_PROG,
    VM_RECIRC_DROPPED,
    VM_RECIRC_ID,
    VM_RECIRCS,
    VM_UPCALLED,
    VM_WLEN,
)
from ctaccel.datapath.megaflow import MF_RECIRC, mf_lookup
from ctaccel.jit import linked_separately, njit
from ctaccel.ofproto.program import (
    CTF_FORCE,
    CTF_NAT,
    CTF_SET_LABEL,
    CTF_SET_MARK,
    OP_CLEAR_CT_FIELDS,
    OP_CONTROLLER,
    OP_CT,
    OP_CT_CLEAR,
    OP_DEC_TTL,
    OP_DROP,
    OP_MISS,
    OP_OUTPUT,
    OP_OUTPUT_VLAN,
    OP_RECIRC,
    OP_RULE,
    OP_SET,
    OP_SET_ETH,
    OP_SET_TOS,
    OP_SET_VLAN,
)
from ctaccel.packet.key import (
    CS_INVALID,
    CT_STATE,
    CT_ZONE,
    DL_DST,
    DL_SRC,
    DL_TYPE,
    KEY_WIDTH,
    L3_OFS,
    L4_OFS,
    NW_TOS,
    NW_TTL,
    PARSE_FIRST,
    VLAN_TCI,
)
from ctaccel.packet.rewrite import MAX_TAG_BYTES, set_eth, set_ip_tos_ttl, set_vlan

# conntrack's ct action, called through its own machine code (not linked into the VM: it is
# large, runs once per ct step, and would otherwise be compiled again at every VM level)
_ct_execute = linked_separately(ct_execute)

# stack_frame columns of a suspended original (OP_RECIRC)
SF_PC = 0
SF_END = 1
SF_HANDLE = 2
SF_RECIRC_ID = 3
SF_FRAME_W = 4
SF_WLEN = 5
SF_PASS_DELTA = 6

ETH_TYPE_VLAN = 0x8100


@njit(forceinline=True)
def _copy_ct_fields(src, dst):
    for c in range(NCT):
        dst[c] = src[CT_STATE + c]


@njit(forceinline=True)
def drop_code(vm):
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
def finish_packet(i, vm, res):
    """Fill the packet's results from the VM scalars (the reference engine's rules)."""
    res[i, R_NOUT] = vm[VM_NOUT]
    res[i, R_OUT_START] = vm[VM_OUT_BASE]
    res[i, R_CT_STATE] = vm[VM_LAST_CT] if vm[VM_MATCHED] else -1
    res[i, R_RECIRCS] = vm[VM_RECIRCS]
    res[i, R_DROP] = drop_code(vm)


@njit(forceinline=True)
def start_packet(key, st, out_base):
    """Ready the VM for a fresh packet whose parsed key is ``key``; its outputs will start at
    ``out_base``."""
    vm = st.vm
    for c in range(KEY_WIDTH):
        st.cur_key[c] = key[c]
    for c in range(NCT):
        st.cur_md[c] = 0
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
    vm[VM_OUT_BASE] = out_base
    vm[VM_NSTEPS] = 0
    vm[VM_NRULES] = 0
    vm[VM_UPCALLED] = 0
    vm[VM_NEED_LOOKUP] = 1
    vm[VM_FRAME_W] = 0
    vm[VM_WLEN] = 0
    vm[VM_PASS_DELTA] = 0


@njit(forceinline=True)
def cur_len(vm, flen):
    """The length of the packet's frame as it is now (VLAN tags pushed or popped)."""
    return vm[VM_WLEN] if vm[VM_FRAME_W] else flen


@njit(forceinline=True)
def _lookup(mf, progs, kstats, st):
    """The megaflow lookup of the current pass: sets the program to run and returns True, or
    False on a miss."""
    vm, mf_key, cur_key = st.vm, st.mf_key, st.cur_key
    for c in range(PARSE_FIRST):
        mf_key[c] = cur_key[c]
    mf_key[MF_RECIRC] = vm[VM_RECIRC_ID]
    kstats[KS_MF_LOOKUPS] += 1
    ent = mf_lookup(mf.masks, mf.mask_cols, mf.mask_ncols, mf.mask_hits, mf.mask_order,
                    mf.entry_key, mf.entry_mask_id, mf.entry_value, mf.entry_hits, mf.index,
                    mf.state, mf_key)  # fmt: skip
    if ent < 0:
        return False
    kstats[KS_MF_HITS] += 1
    prog = mf.entry_value[ent]
    vm[VM_PROG] = prog
    vm[VM_PC] = progs.start[prog]
    vm[VM_END] = progs.start[prog] + progs.length[prog]
    vm[VM_NEED_LOOKUP] = 0
    return True


@njit(forceinline=True)
def _op_rule(rid, flen, out, st):
    """A rule matched: count it, remember it for an install, note the ct_state it saw."""
    vm = st.vm
    counted = cur_len(vm, flen) - vm[VM_PASS_DELTA]  # the frame's length when the pass began
    out.rule_stats[rid, 0] += 1
    out.rule_stats[rid, 1] += counted
    vm[VM_MATCHED] = 1
    vm[VM_MISSED] = 0
    vm[VM_LAST_CT] = st.cur_key[CT_STATE]
    if vm[VM_NRULES] < MAX_FP_RULES:
        if counted != flen:
            rid |= (counted - flen + RULE_LEN_BIAS) << 32
        st.trace_rules[vm[VM_NRULES]] = rid
    vm[VM_NRULES] += 1


@njit(forceinline=True)
def _op_output(i, port, flen, out, st):
    """Emit the packet on ``port`` (-1: the controller): the received frame, or the current
    depth's rewritten copy (NAT, header rewrites, VLAN tags)."""
    vm, kstats = st.vm, out.kstats
    if vm[VM_NOUT] >= MAX_OUT_PER_PACKET:
        kstats[KS_OUT_OVERFLOW] += 1
        return
    k = vm[VM_OUT_BASE] + vm[VM_NOUT]
    out.out_ports[k] = port
    if vm[VM_FRAME_W]:
        fb = out.out_n[1]
        d = vm[VM_DEPTH]
        n = vm[VM_WLEN]
        for b in range(n):
            out.out_fbuf[fb + b] = st.frames_w[d, b]
        out.out_fofs[k] = fb
        out.out_flen[k] = n
        out.out_n[1] = fb + n
        out.res[i, R_REWRITTEN] = 1
    else:
        out.out_fofs[k] = -1
    vm[VM_NOUT] += 1
    out.out_n[0] = vm[VM_OUT_BASE] + vm[VM_NOUT]


@njit(forceinline=True)
def _op_output_vlan(i, row, frame, flen, out, st):
    """OP_OUTPUT_VLAN (``row``: port, trunk?, VLAN): NORMAL's output, the frame tagged as
    the port wants it (a copy when that changes the tag); the flow and its frame stay."""
    vm = st.vm
    tci = st.cur_key[VLAN_TCI]
    out_tci = _output_vlan_tci(row[2], row[3], tci)
    if out_tci == tci or vm[VM_NOUT] >= MAX_OUT_PER_PACKET:
        _op_output(i, row[1], flen, out, st)
        return
    k = vm[VM_OUT_BASE] + vm[VM_NOUT]
    out.out_ports[k] = row[1]
    fb = out.out_n[1]
    n = cur_len(vm, flen)
    src = st.frames_w[vm[VM_DEPTH]] if vm[VM_FRAME_W] else frame
    for b in range(n):
        out.out_fbuf[fb + b] = src[b]
    n = set_vlan(out.out_fbuf[fb:], n, tci, out_tci, ETH_TYPE_VLAN)
    out.out_fofs[k] = fb
    out.out_flen[k] = n
    out.out_n[1] = fb + n
    out.res[i, R_REWRITTEN] = 1
    vm[VM_NOUT] += 1
    out.out_n[0] = vm[VM_OUT_BASE] + vm[VM_NOUT]


@njit(forceinline=True)
def _output_vlan_tci(trunk, vlan, tci):
    """The tag NORMAL's output carries (ofproto/bridge.py Port.out_tci): none on an access
    port, else the VLAN with the flow's priority."""
    if not trunk:
        return 0
    t = vlan | ((tci & 0xE000) if tci & 0x1000 else 0)
    return t | 0x1000 if t else 0


@njit(forceinline=True)
def _trace_step(conns, conn, reuse, has_nat, state_in, zone_in, zone, st):
    """Record the ct step just executed (its connection handle ``conn``) in trace_steps."""
    vm, trace_steps, cur_key = st.vm, st.trace_steps, st.cur_key
    s = vm[VM_NSTEPS]
    if s < MAX_STEPS:
        slot = conn >> 1 if conn >= 0 else -1
        trace_steps[s, S_SLOT] = slot
        trace_steps[s, S_GEN] = conns[slot, C_GENERATION] if slot >= 0 else 0
        trace_steps[s, S_REPLY] = conn & 1 if conn >= 0 else 0
        # OVS handle_nat: a NATed connection translates unless this zone did
        trace_steps[s, S_NAT] = 0
        if (
            has_nat
            and slot >= 0
            and ext_get(conns, slot, X_NAT_FLAGS) != 0
            and (not (state_in & NAT_BITS) or zone_in != zone)
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
            trace_steps[s, S_LABEL + c] = conns[slot, C_LABEL + c] if slot >= 0 else 0
    vm[VM_NSTEPS] = s + 1


@njit(forceinline=True)
def _op_ct(row, frame, flen, now, ct, ops, kstats, st, no_nat, ct_tups):
    """``ct(...)`` (the op at ``ops[row]``, its NAT spec on the next row when it has one):
    conntrack on the current key and frame, the key's ct fields updated, the step traced.
    Returns the row after the op."""
    vm, cur_key, cur_md, frames_w, conns = st.vm, st.cur_key, st.cur_md, st.frames_w, ct.conns
    zone = ops[row, 1]
    flags = ops[row, 2]
    has_nat = (flags & CTF_NAT) != 0
    d = vm[VM_DEPTH]
    if has_nat:
        _own_frame(frame, flen, vm, frames_w)
    for c in range(NCT):
        cur_key[CT_STATE + c] = cur_md[c]
    handle_in = vm[VM_HANDLE]
    force = (flags & CTF_FORCE) != 0
    reuse = False
    if handle_in >= 0 and not force and cur_key[CT_STATE] != CS_INVALID:
        hs = handle_in >> 1
        if hs < conns.shape[0] and conns[hs, C_USED] == ROW_CONN:
            reuse = conns[hs, C_ZONE] == zone
    kstats[KS_CT_CALLS] += 1
    state_in = cur_key[CT_STATE]
    zone_in = cur_key[CT_ZONE]
    owned = vm[VM_FRAME_W] != 0
    # the room an FTP rewrite may take: what the kernel's room checks kept for this packet
    wbuf = frames_w[d, : flen + MAX_TAG_BYTES + ALG_MAX_GROWTH] if owned else frame
    wlen = vm[VM_WLEN] if owned else flen
    nat = ops[row + 1, 1 : 1 + NS_WIDTH] if has_nat else no_nat
    handle = _ct_execute(ct, wbuf, wlen, cur_key, ops[row, 1 : 1 + CA_WIDTH], now, handle_in,
                         nat, ct_tups)  # fmt: skip
    if owned:
        vm[VM_WLEN] = ct.stats[ST_FRAME_LEN]  # an FTP command rewritten for NAT moved it
    vm[VM_HANDLE] = handle
    _copy_ct_fields(cur_key, cur_md)
    _trace_step(conns, ct.stats[ST_LAST_CONN], reuse, has_nat, state_in, zone_in, zone, st)
    if flags & (CTF_SET_MARK | CTF_SET_LABEL | CTF_FORCE):
        vm[VM_ELIGIBLE] = 0
    if ct.stats[ST_LAST_ALG] != 0:
        # an FTP/TFTP control connection: what OVS does with its packets depends on their
        # payload (commands, sequence adjustment), so they always take the full path
        vm[VM_ELIGIBLE] = 0
    return row + 2 if has_nat else row + 1


@njit(forceinline=True)
def _op_recirc(recirc_id, pc, end, flen, kstats, st):
    """Recirculate: push the original (to resume at ``pc``) and make the copy the current
    pass, looked up next with ``recirc_id``. False (nothing pushed) past the depth cap."""
    vm = st.vm
    if vm[VM_DEPTH] >= MAX_RECIRC_DEPTH:
        vm[VM_RECIRC_DROPPED] = 1
        return False
    d = vm[VM_DEPTH]
    for c in range(KEY_WIDTH):
        st.stack_key[d, c] = st.cur_key[c]
    for c in range(NCT):
        st.stack_md[d, c] = st.cur_md[c]
    frame_row = st.stack_frame[d]
    frame_row[SF_PC] = pc
    frame_row[SF_END] = end
    frame_row[SF_HANDLE] = vm[VM_HANDLE]
    frame_row[SF_RECIRC_ID] = vm[VM_RECIRC_ID]
    frame_row[SF_FRAME_W] = vm[VM_FRAME_W]
    frame_row[SF_WLEN] = vm[VM_WLEN]
    frame_row[SF_PASS_DELTA] = vm[VM_PASS_DELTA]
    vm[VM_PASS_DELTA] = 0  # the copy's pass begins
    if vm[VM_FRAME_W]:  # the copy works on its own copy of the rewritten frame
        for b in range(vm[VM_WLEN]):
            st.frames_w[d + 1, b] = st.frames_w[d, b]
    vm[VM_DEPTH] = d + 1
    vm[VM_RECIRCS] += 1
    kstats[KS_RECIRCS] += 1
    vm[VM_RECIRC_ID] = recirc_id
    vm[VM_NEED_LOOKUP] = 1
    return True


@njit(forceinline=True)
def _pop_original(st):
    """The innermost recirculation is over: resume its original where it forked."""
    vm = st.vm
    d = vm[VM_DEPTH] - 1
    vm[VM_DEPTH] = d
    for c in range(KEY_WIDTH):
        st.cur_key[c] = st.stack_key[d, c]
    for c in range(NCT):
        st.cur_md[c] = st.stack_md[d, c]
    vm[VM_PC] = st.stack_frame[d, SF_PC]
    vm[VM_END] = st.stack_frame[d, SF_END]
    vm[VM_HANDLE] = st.stack_frame[d, SF_HANDLE]
    vm[VM_RECIRC_ID] = st.stack_frame[d, SF_RECIRC_ID]
    vm[VM_FRAME_W] = st.stack_frame[d, SF_FRAME_W]
    vm[VM_WLEN] = st.stack_frame[d, SF_WLEN]
    vm[VM_PASS_DELTA] = st.stack_frame[d, SF_PASS_DELTA]


@njit(forceinline=True)
def _own_frame(frame, flen, vm, frames_w):
    """Make sure the packet has its rewritten copy of its frame at this depth
    (``frames_w[depth]``), copied now if it has none yet (outputs so far carried the received
    frame); returns the depth."""
    d = vm[VM_DEPTH]
    if vm[VM_FRAME_W] == 0:
        for b in range(flen):
            frames_w[d, b] = frame[b]
        vm[VM_FRAME_W] = 1
        vm[VM_WLEN] = flen
    return d


@njit(forceinline=True)
def _op_rewrite(op, a0, a1, frame, flen, vm, frames_w, cur_key):
    """OP_SET_ETH (a0: destination?, a1: MAC), OP_SET_TOS (a0: DSCP), OP_DEC_TTL: the key's
    column and the packet's rewritten frame (packet/rewrite.py)."""
    f = frames_w[_own_frame(frame, flen, vm, frames_w)]
    if op == OP_SET_ETH:
        cur_key[DL_DST if a0 else DL_SRC] = a1
        set_eth(f, a0, a1)
        return
    tos = a0 if op == OP_SET_TOS else -1
    if tos >= 0:
        cur_key[NW_TOS] = (cur_key[NW_TOS] & 0x03) | tos
    else:
        cur_key[NW_TTL] -= 1
    set_ip_tos_ttl(f, vm[VM_WLEN], cur_key[L3_OFS], cur_key[DL_TYPE], tos, tos < 0)


@njit(forceinline=True)
def _op_set_vlan(row, frame, flen, vm, frames_w, cur_key):
    """OP_SET_VLAN (``row`` = its op row): the key's VLAN TCI, then the frame's outer tag;
    the header offsets move with a push or pop (see the reference's _commit_vlan)."""
    old = cur_key[VLAN_TCI]
    new = (old & ~row[2]) | (row[1] & row[2])
    cur_key[VLAN_TCI] = new
    if row[4]:
        old = 0  # a second tag pushed: the key shows the outer one only
    if new == old:
        return
    shift = (4 if new else 0) - (4 if old else 0)
    if cur_len(vm, flen) - flen + shift > MAX_TAG_BYTES:
        return  # no room for another tag: the flow changes, the frame does not (reference)
    f = frames_w[_own_frame(frame, flen, vm, frames_w)]
    vm[VM_WLEN] = set_vlan(f, vm[VM_WLEN], old, new, row[3])
    vm[VM_PASS_DELTA] += shift
    if cur_key[L3_OFS] >= 0:
        cur_key[L3_OFS] += shift
    if cur_key[L4_OFS] >= 0:
        cur_key[L4_OFS] += shift


@njit(forceinline=True)
def _run_program(i, frame, flen, now, ct, progs, out, st, no_nat, ct_tups):
    """Run the current pass's program from vm[VM_PC]; True when it recirculated (the copy's
    lookup comes next), False when the program ended."""
    vm, ops, cur_key = st.vm, progs.ops, st.cur_key
    pc = vm[VM_PC]
    end = vm[VM_END]
    while pc < end:
        op = ops[pc, 0]
        if op == OP_RULE:
            _op_rule(ops[pc, 1], flen, out, st)
        elif op == OP_MISS:
            vm[VM_MISSED] = 1
        elif op == OP_OUTPUT:
            _op_output(i, ops[pc, 1], flen, out, st)
        elif op == OP_CONTROLLER:
            _op_output(i, -1, flen, out, st)
        elif op == OP_SET:
            col = ops[pc, 1]
            mask = ops[pc, 3]
            cur_key[col] = (cur_key[col] & ~mask) | (ops[pc, 2] & mask)
        elif op == OP_SET_ETH or op == OP_SET_TOS or op == OP_DEC_TTL:
            _op_rewrite(op, ops[pc, 1], ops[pc, 2], frame, flen, st.vm, st.frames_w, st.cur_key)
        elif op == OP_CT:
            pc = _op_ct(pc, frame, flen, now, ct, ops, out.kstats, st, no_nat, ct_tups)
            continue
        elif op == OP_RECIRC:
            if _op_recirc(ops[pc, 1], pc + 1, end, flen, out.kstats, st):
                vm[VM_PC] = pc + 1
                return True
        elif op == OP_CLEAR_CT_FIELDS:
            for c in range(NCT):
                cur_key[CT_STATE + c] = 0
        elif op == OP_CT_CLEAR:
            for c in range(NCT):
                cur_key[CT_STATE + c] = 0
                st.cur_md[c] = 0
            vm[VM_HANDLE] = -1
        elif op == OP_DROP:
            vm[VM_DROP_CODE] = ops[pc, 1]
            pc = end
            continue
        elif op == OP_OUTPUT_VLAN:  # NORMAL and VLAN ops last: the firewall ops come first
            _op_output_vlan(i, ops[pc], frame, flen, out, st)
        elif op == OP_SET_VLAN:
            _op_set_vlan(ops[pc], frame, flen, st.vm, st.frames_w, st.cur_key)
        pc += 1
    vm[VM_PC] = pc
    return False


@njit(forceinline=True)
def run_passes(i, frame, flen, now, ct, mf, progs, out, st, no_nat, ct_tups):
    """Passes until the packet and all its recirculations are done (True), or a megaflow
    miss (False: the packet is suspended in ``st`` at the pass that missed)."""
    vm = st.vm
    while True:
        if vm[VM_NEED_LOOKUP] == 1 and not _lookup(mf, progs, out.kstats, st):
            return False
        if _run_program(i, frame, flen, now, ct, progs, out, st, no_nat, ct_tups):
            continue
        if vm[VM_DEPTH] == 0:
            return True
        _pop_original(st)
