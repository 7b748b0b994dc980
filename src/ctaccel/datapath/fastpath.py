"""The assume-established fast path: entry keys, exact-match lookup, re-check and apply.

What: :func:`fast_path` tries to complete packet ``i`` of a batch from its exact-match entry
(the talk's *assume established*): the entry records the final outcome of full processing
for packets of that exact flow whose every ct step was ``+est`` on a committed connection.
It returns PUNT_NONE when the packet is done, else the reason it must take full processing
(the megaflow passes, datapath/vm.py), exactly as if the cache did not exist.

Design:
- Two passes over the batch, software-pipelined (:func:`_prefetch_stages`): packet i+16 gets
  its entry key packed and hashed and its exact-match slot prefetched, packet i+8 the first
  entry with its hash (a hint) and that entry's row prefetched, packet i+3 its connection rows
  (and a full layout) prefetched; the key is compared at packet i's turn.
- An entry is one line of ``FastPathTables.rows`` (layout.py FC_*), and, when it does not
  fit a compact line, a row of ``FastPathTables.full`` (FI_*); or it is slim (entries.py):
  its connection and a template's line, its key that template's with the connection's tuple.
  A compact entry (at most one ct step without translation, one output, two rules) is served
  from its first cache line (:func:`_fast_apply_compact`); others from the full layout
  (:func:`_fast_apply`), which may translate the frame (NAT) and undo re-checked steps when
  a later one fails.
- Each step is re-checked with the very tracker update conntrack runs
  (conntrack/established.py): alive, same generation, not expired, same ct_mark/ct_label,
  and an update that yields exactly the recorded ct_state without a state change.
Entries are installed after full processing (datapath/install.py).

Invariants: the fast path never creates or deletes a connection and never changes protocol
state; a punt leaves every connection row as it was; results equal full processing's
(tests/equivalence/test_equivalence.py, tests/datapath/test_fastpath.py).
"""

from __future__ import annotations

from ctaccel.conntrack.established import RECHECK_GONE, ct_recheck, ct_recheck_one
from ctaccel.conntrack.layout import (
    C_GENERATION,
    C_LABEL,
    C_MARK,
    C_USED,
    CONN_LINE_WORDS,
    HOT_WIDTH,
    ROW_CONN,
)
from ctaccel.conntrack.nat import nat_rewrite
from ctaccel.datapath.entries import entry_matches, fp_candidate, fp_find, slim_conn
from ctaccel.datapath.exact import em_hash31, hash_row
from ctaccel.datapath.layout import (
    EM_WIDTH,
    EMK_EPOCH,
    EMK_HASH,
    EMK_HINT,
    FC_COMPACT,
    FC_GEN,
    FC_HEAD,
    FC_LABEL,
    FC_OUT,
    FC_RULES,
    FC_SLOT,
    FC_STEP,
    FI_CT_STATE,
    FI_DROP,
    FI_NAT,
    FI_NOUT,
    FI_NRULES,
    FI_NSTEPS,
    FI_RECIRCS,
    FI_STEPS,
    FI_VLAN,
    FK_KEY,
    FN_NAT,
    FP_FULL,
    FP_HOT_WORDS,
    KS_FP_INSTALLS,
    M32,
    N_ADDR,
    N_DPORT,
    N_SPORT,
    N_WIDTH,
    NAT_BITS,
    PATH_FAST,
    PF_CONN_AHEAD,
    PF_ENTRY_AHEAD,
    PF_KEY_AHEAD,
    PUNT_CONN,
    PUNT_INELIGIBLE,
    PUNT_MISS,
    PUNT_NONE,
    PUNT_STATE,
    R_CT_STATE,
    R_DROP,
    R_NOUT,
    R_OUT_START,
    R_PATH,
    R_RECIRCS,
    R_REWRITTEN,
    RING_MASK,
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
    SL_CONN,
    SL_TPL,
    SLIM_TAG,
    VM_PF_CONN,
    VM_PF_ENTRY,
    VM_PF_KEY,
    head_ct_state,
    head_drop,
    head_has_step,
    head_nout,
    head_nrules,
    head_recircs,
    high31,
    high32,
    low31,
    low32,
    step_ct_state,
    step_proto,
    step_reply,
    step_updates,
)
from ctaccel.jit import njit, prefetch, prefetch2
from ctaccel.packet.key import (
    DL_DST,
    DL_SRC,
    DL_TYPE,
    IN_PORT,
    IPV6_LABEL,
    L3_OFS,
    L4_LEN,
    L4_OFS,
    NW_DST,
    NW_FRAG,
    NW_PROTO,
    NW_SRC,
    NW_TOS,
    NW_TTL,
    PARSE_FLAGS,
    TCP_FLAGS,
    TP_DST,
    TP_SRC,
    VLAN_TCI,
)
from ctaccel.packet.rewrite import set_vlan


@njit(forceinline=True)
def _pack_em_key(key, em_key, flags_mask):
    """The entry key of a packet: every header column, packed without loss into 8 words (each
    column holds at most its field's width: ports/types/VLAN 16 bits, MACs 48, address words
    32, TOS/TTL/protocol 8, IPv6 label 20, TCP flags 12, fragment bits 2). No word reaches
    its sign bit (int64 shifts must not overflow). TCP flags count only under ``flags_mask``
    (see :func:`fast_path`)."""
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
            target = (kind, row[n + N_ADDR], row[n + N_ADDR + 1], row[n + N_ADDR + 2],
                      row[n + N_ADDR + 3], row[n + N_SPORT], row[n + N_DPORT])  # fmt: skip
            nat_rewrite(target, row[b + S_PROTO], key[DL_TYPE], copy, l3, l4, l4_size)


@njit
def _fast_nat_frame(e, fp_rows, frame, flen, key, out_n, out_fbuf):
    """The received frame with the entry's translations and VLAN tag, written once to
    ``out_fbuf`` for all outputs; its offset and length. (A call, not inlined: only entries
    that rewrite pay for it.)"""
    fofs = out_n[1]
    _translated(fp_rows[e], FI_STEPS, S_WIDTH, FN_NAT, N_WIDTH, fp_rows[e, FI_NSTEPS], key, frame,
                flen, out_fbuf[fofs : fofs + flen])  # fmt: skip
    n = flen
    vlan = fp_rows[e, FI_VLAN]
    if vlan != 0:
        n = set_vlan(out_fbuf[fofs:], flen, key[VLAN_TCI], vlan & 0xFFFF, (vlan >> 16) & 0xFFFF)
    out_n[1] = fofs + n
    return fofs, n


@njit(forceinline=True)
def _fast_apply_compact(t, slot, gen, frame, flen, key, now_ms, ct, fp, out, saved, i):
    """_fast_apply for an entry with a compact line: row ``t`` of ``fp.rows`` (its own, or a
    slim entry's template), ``slot``/``gen`` its step's connection. The same checks and
    effects, reading only that line."""
    conns, timeouts, fp_rows = ct.conns, ct.timeouts, fp.rows
    head = fp_rows[t, FC_HEAD]
    rule_stats, res, out_ports, out_n = out.rule_stats, out.res, out.out_ports, out.out_n
    if head_has_step(head):  # one ct step
        if conns[slot, C_USED] != ROW_CONN or conns[slot, C_GENERATION] != gen:
            return PUNT_CONN
        lab01 = fp_rows[t, FC_LABEL]
        lab23 = fp_rows[t, FC_LABEL + 1]
        if (conns[slot, C_MARK] != high31(fp_rows[t, FC_OUT])
                or conns[slot, C_LABEL] != low32(lab01)
                or conns[slot, C_LABEL + 1] != high32(lab01)
                or conns[slot, C_LABEL + 2] != low32(lab23)
                or conns[slot, C_LABEL + 3] != high32(lab23)):  # fmt: skip
            return PUNT_STATE  # later rules may match ct_mark/ct_label: their path could differ
        step = fp_rows[t, FC_STEP]
        if step_updates(step):  # the step updated the connection
            l4_ofs = key[L4_OFS]
            l4_len = min(key[L4_LEN], flen - l4_ofs)
            expect = step_ct_state(step)
            st = ct_recheck_one(conns, slot, gen, step_reply(step), step_proto(step), frame,
                                l4_ofs, l4_len, now_ms, timeouts, saved[0], expect)  # fmt: skip
            if st != expect:
                return PUNT_CONN if st == RECHECK_GONE else PUNT_STATE
    nrules = head_nrules(head)
    if nrules > 0:
        rules = fp_rows[t, FC_RULES]
        rid = low31(rules)
        rule_stats[rid, 0] += 1
        rule_stats[rid, 1] += flen
        if nrules > 1:
            rid = high31(rules)
            rule_stats[rid, 0] += 1
            rule_stats[rid, 1] += flen
    base = out_n[0]
    nout = head_nout(head)
    if nout:
        out_ports[base] = low31(fp_rows[t, FC_OUT])
        out_n[0] = base + 1
    res[i, R_NOUT] = nout
    res[i, R_OUT_START] = base
    res[i, R_CT_STATE] = head_ct_state(head)
    res[i, R_DROP] = 0 if nout else head_drop(head)
    res[i, R_RECIRCS] = head_recircs(head)
    res[i, R_PATH] = PATH_FAST
    return PUNT_NONE


@njit(forceinline=True)
def _fast_apply(e, frame, flen, key, now_ms, ct, fp, out, saved, i):
    """Try the fast path with the full layout ``fp.full[e]`` (an entry without a compact
    line: its exact-match value names that row); PUNT_NONE when the packet was completed."""
    conns, timeouts, fp_rows = ct.conns, ct.timeouts, fp.full
    rule_stats, res, out_ports, out_n = out.rule_stats, out.res, out.out_ports, out.out_n
    out_fofs, out_fbuf = out.out_fofs, out.out_fbuf
    nsteps = fp_rows[e, FI_NSTEPS]
    l4_ofs = key[L4_OFS]
    l4_len = min(key[L4_LEN], flen - l4_ofs)
    for s in range(nsteps):
        base = FI_STEPS + s * S_WIDTH
        slot = fp_rows[e, base + S_SLOT]
        if conns[slot, C_USED] != ROW_CONN or conns[slot, C_GENERATION] != fp_rows[e, base + S_GEN]:
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
        if st != (fp_rows[e, base + S_STATE] & ~NAT_BITS):
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
        counted = flen
        if rid >> 32:  # counted at a length a VLAN push or pop changed (vm.py _op_rule)
            counted += (rid >> 32) - RULE_LEN_BIAS
            rid &= 0xFFFFFFFF
        rule_stats[rid, 0] += 1
        rule_stats[rid, 1] += counted
    base = out_n[0]
    for o in range(nout):
        out_ports[base + o] = fp_rows[e, outs + o]
    out_n[0] = base + nout
    if (fp_rows[e, FI_NAT] != 0 or fp_rows[e, FI_VLAN] != 0) and nout > 0:
        # every output carries the translated / retagged frame
        fofs, n = _fast_nat_frame(e, fp_rows, frame, flen, key, out_n, out_fbuf)
        for o in range(nout):
            out_fofs[base + o] = fofs
            out.out_flen[base + o] = n
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


@njit(forceinline=True)
def _prefetch_stages(i, n, em_flags_mask, ct, fp, kstats, st):
    """Software pipeline of the assume-established lookups: while packet ``i`` runs, packet
    i+PF_KEY_AHEAD gets its entry key hashed and its exact-match slot prefetched, packet
    i+PF_ENTRY_AHEAD the first entry on its probe path with its hash (entries.fp_candidate:
    the hint) and that entry's row (or slim row) prefetched, packet i+PF_CONN_AHEAD the rows
    of the hint's connection and, for an entry without a compact line, its full layout. The
    key is compared when the packet's turn comes (fast_path), on rows now in cache. Only
    hints: results never depend on them."""
    keys, emk, vm, conns, fp_rows, full = st.keys, st.emk, st.vm, ct.conns, fp.rows, fp.full
    em_index, slim = fp.em_index, fp.slim
    slot_mask = em_index.shape[0] - 1
    lim = min(n, i + PF_KEY_AHEAD)
    while vm[VM_PF_KEY] < lim:
        j = vm[VM_PF_KEY]
        r = j & RING_MASK
        row = emk[r]
        _pack_em_key(keys[r], row, em_flags_mask)
        h = em_hash31(hash_row(row[:EM_WIDTH]))
        row[EMK_HASH] = h
        row[EMK_HINT] = -1
        row[EMK_EPOCH] = -1
        if keys[r, PARSE_FLAGS] == 0:
            prefetch(em_index, h & slot_mask)
        vm[VM_PF_KEY] = j + 1
    lim = min(vm[VM_PF_KEY], i + PF_ENTRY_AHEAD)
    while vm[VM_PF_ENTRY] < lim:
        r = vm[VM_PF_ENTRY] & RING_MASK
        if keys[r, PARSE_FLAGS] == 0:
            e = fp_candidate(em_index, emk[r, EMK_HASH])
            emk[r, EMK_HINT] = e
            emk[r, EMK_EPOCH] = kstats[KS_FP_INSTALLS]
            if e >= SLIM_TAG:
                if e - SLIM_TAG < slim.shape[0]:
                    prefetch2(slim, e - SLIM_TAG, 0)
            elif e >= 0:
                prefetch2(fp_rows, e, 0)
                prefetch2(fp_rows, e, FK_KEY)
        vm[VM_PF_ENTRY] += 1
    lim = min(vm[VM_PF_ENTRY], i + PF_CONN_AHEAD)
    while vm[VM_PF_CONN] < lim:
        e = emk[vm[VM_PF_CONN] & RING_MASK, EMK_HINT]
        slot = -1
        if e >= SLIM_TAG:
            if e - SLIM_TAG < slim.shape[0]:
                slot = slim[e - SLIM_TAG, SL_CONN] & M32
        elif e >= 0:
            if fp_rows[e, FC_HEAD] & FC_COMPACT == 0:
                f = fp_rows[e, FC_OUT]
                if 0 <= f < full.shape[0]:  # a full entry: its layout's first lines
                    for c in range(FP_FULL, FP_FULL + FP_HOT_WORDS, 8):
                        prefetch2(full, f, c)
            slot = fp_rows[e, FC_SLOT]  # the first step's connection (later ones: none)
        if 0 <= slot < conns.shape[0]:
            # what a re-check touches (its second line holds the tuple a slim key compares)
            for c in range(0, HOT_WIDTH, CONN_LINE_WORDS):
                prefetch2(conns, slot, c)
        vm[VM_PF_CONN] += 1


@njit
def _find(fp, conns, key, h31):
    """entries.fp_find, called (not inlined): only lookups the lookahead could not settle."""
    return fp_find(fp.em_index, fp.rows, fp.slim, conns, key, h31)


@njit(forceinline=True)
def fast_path(i, n, frame, flen, now_ms, em_flags_mask, ct, fp, out, st):
    """Try to complete packet ``i`` (of ``n``; parsed into ``st.keys``) from its exact-match
    entry; PUNT_NONE when it was, else the punt reason (PUNT_*). TCP flags are part of the
    entry key only under ``em_flags_mask`` (some rule matches on them); otherwise the
    pipeline cannot depend on them (the re-check still looks)."""
    _prefetch_stages(i, n, em_flags_mask, ct, fp, out.kstats, st)
    r = i & RING_MASK
    key = st.keys[r]
    if key[PARSE_FLAGS] != 0:
        return PUNT_INELIGIBLE
    emk = st.emk
    em_key = emk[r, :EM_WIDTH]
    conns, rows = ct.conns, fp.rows
    e = emk[r, EMK_HINT]  # the first entry with the key's hash, or none has it
    if emk[r, EMK_EPOCH] != out.kstats[KS_FP_INSTALLS] or (
        e >= 0 and not entry_matches(rows, fp.slim, conns, e, em_key)
    ):  # an install since the hint, or another key with the same hash: look it up
        e = _find(fp, conns, em_key, emk[r, EMK_HASH])
    if e < 0:
        return PUNT_MISS
    if e >= SLIM_TAG:
        s = e - SLIM_TAG
        t = fp.slim[s, SL_TPL]
        slot, gen = slim_conn(fp.slim, s)
        return _fast_apply_compact(t, slot, gen, frame, flen, key, now_ms, ct, fp, out, st.saved,
                                   i)  # fmt: skip
    head = rows[e, FC_HEAD]
    if head & FC_COMPACT:
        return _fast_apply_compact(e, rows[e, FC_SLOT], rows[e, FC_GEN], frame, flen, key, now_ms,
                                   ct, fp, out, st.saved, i)  # fmt: skip
    f = rows[e, FC_OUT]  # its full layout
    if f >= 0:
        return _fast_apply(f, frame, flen, key, now_ms, ct, fp, out, st.saved, i)
    return PUNT_MISS  # an entry the install found no room to lay out (install.py)
