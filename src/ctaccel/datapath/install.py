"""Installing assume-established entries, in compiled code, after full processing.

What: :func:`maybe_install` records an exact-match entry for packet ``i`` when its full
processing qualifies: every ct step ``+est`` (not new, invalid or related) on a committed
TCP or UDP connection, no ct_mark/ct_label/force changes on the way, within the entry's
limits (MAX_STEPS steps, MAX_FP_OUT outputs, MAX_FP_RULES rules), and, when outputs carried
a rewritten frame, that frame equal to what the cached translations make of the received one.

Design: the entry stores what a hit needs to replay the outcome (layout.py FC_*/FI_*): the
connections it relied on (slot, generation, direction, expected ct_state, the ct_mark and
ct_label the rules saw), the outputs, the rule ids (their counters), the packet's ct_state,
drop reason and recirculation count. :func:`_compact_line` packs entries that fit into one
cache line; others take a full layout as well. A compact entry of one ct step whose key's
addresses and ports are its connection's IPv4 tuple becomes *slim* (:func:`_install_slim`,
entries.py): 16 bytes naming the connection and a template row that entries with the same
line and the rest of the key share. An install for a key that already has an entry replaces
it. When the cache is full (the engine grows it up to its maximum) one install in
``FP_ADMIT`` (the engine's ``fast_path_admit``, 100 as OVS's emc-insert-inv-prob) replaces
an entry (:func:`_evict`), the others are skipped: an entry is only ever a shortcut, so
which one goes changes costs, never answers.

Invariants: an entry never outlives the rules it was built from (the engine flushes the
cache on a rule change); a connection deleted or re-created changes its generation, which
every hit checks.
"""

from __future__ import annotations

import numpy as np

from ctaccel.conntrack.icmp import be16
from ctaccel.conntrack.layout import C_EXT, C_PROTO
from ctaccel.datapath.entries import (
    alloc_full,
    alloc_row,
    alloc_slim,
    fp_find,
    free_row,
    release,
    row_available,
    slim_available,
    slim_fits,
    template_find,
    template_hash,
)
from ctaccel.datapath.exact import ES_COUNT, ES_LIMIT, em_add, em_remove, em_take_next
from ctaccel.datapath.fastpath import _translated
from ctaccel.datapath.layout import (
    EM_WIDTH,
    EMK_HASH,
    FC_GEN,
    FC_HEAD,
    FC_LABEL,
    FC_OUT,
    FC_REFS,
    FC_RULES,
    FC_SLOT,
    FC_STEP,
    FC_WIDTH,
    FI_CT_STATE,
    FI_DROP,
    FI_NAT,
    FI_NOUT,
    FI_NRULES,
    FI_NSTEPS,
    FI_RECIRCS,
    FI_STEPS,
    FI_VLAN,
    FI_VLAN_SET,
    FK_KEY,
    FN_NAT,
    FP_ADMIT,
    FP_CAP,
    FP_HAND,
    KS_FP_FULL,
    KS_FP_INSTALLS,
    KS_FP_REPLACED,
    M31,
    M32,
    MAX_FP_OUT,
    MAX_FP_RULES,
    MAX_STEPS,
    N_WIDTH,
    NAT_BITS,
    RING_MASK,
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
    TRACE_WIDTH,
    TUPLE6,
    VM_ELIGIBLE,
    VM_LAST_CT,
    VM_MATCHED,
    VM_NOUT,
    VM_NRULES,
    VM_NSTEPS,
    VM_OUT_BASE,
    VM_RECIRCS,
    pack31,
    pack32,
    pack_head,
    pack_step,
)
from ctaccel.datapath.vm import drop_code
from ctaccel.jit import linked_separately, njit
from ctaccel.packet.key import (
    CS_ESTABLISHED,
    CS_INVALID,
    CS_NEW,
    CS_RELATED,
    ETH_TYPE_VLAN,
    IPPROTO_TCP,
    IPPROTO_UDP,
    VLAN_TCI,
)
from ctaccel.packet.rewrite import set_vlan


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
        state = trace_steps[0, S_STATE] & ~(NAT_BITS | CS_RELATED)  # (_install_wanted)
        if not (0 <= proto <= 0xFF and 0 <= state <= 0xFF and trace_steps[0, S_SLOT] >= 0):
            return False
        fp_rows[e, FC_GEN] = trace_steps[0, S_GEN]
        fp_rows[e, FC_STEP] = pack_step(trace_steps[0, S_REPLY], trace_steps[0, S_UPDATE], proto,
                                        state)  # fmt: skip
        fp_rows[e, FC_LABEL] = pack32(lab[0], lab[1])
        fp_rows[e, FC_LABEL + 1] = pack32(lab[2], lab[3])
    fp_rows[e, FC_OUT] = pack31(port if nout == 1 else 0, mark)
    if nrules > 0:
        fp_rows[e, FC_RULES] = pack31(trace_rules[0], trace_rules[1] if nrules > 1 else 0)
    fp_rows[e, FC_HEAD] = pack_head(nsteps, nout, nrules, drop, recircs, ct_state)
    return True


@njit(forceinline=True)
def _evict(fp):
    """Take an entry out of a full cache and give back what it held. The victim is the next
    entry of the exact-match index after the last one taken, in slot order (a clock hand over
    the slots): the order of hashes, so random with respect to traffic, and without a word
    written per hit (OVS's EMC too replaces without knowing which entries are used)."""
    e, hand = em_take_next(fp.em_index, fp.em_state, fp.state[FP_HAND])
    fp.state[FP_HAND] = hand
    release(fp, e)


@njit(forceinline=True)
def _room(fp, want_slim):
    """Whether an install fits now: a place in the index and under the cache's size, a row
    (a classic entry's, or a slim one's template candidate) and, if ``want_slim``, a slim
    row."""
    em_state, fp_state = fp.em_state, fp.state
    count = em_state[ES_COUNT]
    if count >= em_state[ES_LIMIT] or count >= fp_state[FP_CAP] or not row_available(fp_state):
        return False
    return slim_available(fp_state) or not want_slim


@njit
def _outputs_match(frame, flen, key, vm, trace_steps, out, wframe):
    """Whether every output of the packet carried one frame: the one its steps' cached
    translations make of the received frame, with its outer VLAN tag as the first output's
    (the fast path emits that one frame on every port). Returns the entry's FI_VLAN (0: the
    tag as received), or -1 when they do not all match. ``wframe`` has room for a push."""
    out_fofs, out_fbuf, out_flen = out.out_fofs, out.out_fbuf, out.out_flen
    base = vm[VM_OUT_BASE]
    _translated(trace_steps.reshape(trace_steps.size), 0, TRACE_WIDTH, S_WIDTH, TRACE_WIDTH,
                vm[VM_NSTEPS], key, frame, flen, wframe[:flen])  # fmt: skip
    tci = key[VLAN_TCI]
    vlan = 0
    n = flen
    fo = out_fofs[base]
    if vm[VM_NOUT] > 0 and fo >= 0:  # the first output's tag, if it differs
        ln = out_flen[base]
        new = tci
        tpid = ETH_TYPE_VLAN
        if ln == flen - 4 and tci != 0:
            new = 0
        elif ln == flen + 4 and tci == 0 and flen >= 14:
            new = np.int64(be16(out_fbuf, fo + 14)) | 0x1000
            tpid = np.int64(be16(out_fbuf, fo + 12))
        elif ln == flen and tci != 0 and flen >= 18:
            new = np.int64(be16(out_fbuf, fo + 14)) | 0x1000
        if new != tci:
            n = set_vlan(wframe, flen, tci, new, tpid)
            vlan = FI_VLAN_SET | tpid << 16 | new
    for o in range(vm[VM_NOUT]):
        fo = out_fofs[base + o]
        if (out_flen[base + o] if fo >= 0 else flen) != n:
            return -1
        for b in range(n):
            got = frame[b] if fo < 0 else out_fbuf[fo + b]
            if got != wframe[b]:
                return -1
    return vlan


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
        # +est+rel is a data connection an ALG expected: related for the connection's whole
        # life, so the entry keeps the bit out of what its re-check compares (ICMP errors,
        # the other +rel, are never +est)
        if not (st & CS_ESTABLISHED) or (st & (CS_NEW | CS_INVALID)):
            return False
        proto = conns[slot, C_PROTO]
        if proto != IPPROTO_TCP and proto != IPPROTO_UDP:
            return False
    return True


@njit
def _install(r, frame, flen, conns, fp, out, st):
    """Record a fast-path entry for a packet whose full processing qualified (the caller
    checked _install_wanted): a slim entry where it can be one (entries.py), else a classic
    one. An entry the packet's key already had is replaced."""
    em_key, em_hash = st.emk[r, :EM_WIDTH], st.emk[r, EMK_HASH]
    vm, trace_steps, trace_rules, key = st.vm, st.trace_steps, st.trace_rules, st.keys[r]
    wframe = st.frames_w[st.frames_w.shape[0] - 1]  # the last row is scratch
    lines, fp_rows, fp_state = fp.rows, fp.full, fp.state
    em_index, em_state = fp.em_index, fp.em_state
    out_ports, out_fofs, kstats = out.out_ports, out.out_fofs, out.kstats
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
    vlan = 0
    if any_nat != 0:
        vlan = _outputs_match(frame, flen, key, vm, trace_steps, out, wframe)
        if vlan < 0:
            return
    # KS_FP_INSTALLS counts installs and is the epoch of the lookahead's hints: it moves
    # before the cache changes (a hint may name an entry this removes)
    old = fp_find(em_index, lines, fp.slim, conns, em_key, em_hash)
    if old >= 0:  # the key's entry (its connection's state moved on...): replaced
        kstats[KS_FP_INSTALLS] += 1
        em_remove(em_index, em_state, old, em_hash)
        release(fp, old)
    slot = trace_steps[0, S_SLOT] if nsteps == 1 else -1
    want_slim = (any_nat == 0 and slot >= 0 and conns[slot, C_EXT] == 0
                 and slim_fits(conns, slot, trace_steps[0, S_REPLY], em_key))  # fmt: skip
    if not _room(fp, want_slim):
        # full (the engine grows the cache up to its maximum): replace an entry, for one
        # install in FP_ADMIT: when the connections outnumber the entries, every install
        # would evict one that a later packet misses (OVS's EMC inserts with probability
        # 1/emc-insert-inv-prob for this); by count, so runs repeat exactly
        kstats[KS_FP_FULL] += 1
        if fp_state[FP_ADMIT] > 1 and kstats[KS_FP_FULL] % fp_state[FP_ADMIT] != 1:
            return
        kstats[KS_FP_REPLACED] += 1
        if old < 0:
            kstats[KS_FP_INSTALLS] += 1
        for _ in range(8):  # an entry of the other kind may not free what this one needs
            if em_state[ES_COUNT] == 0 or _room(fp, want_slim):
                break
            _evict(fp)
        if not _room(fp, False):
            return
        want_slim = want_slim and slim_available(fp_state)
    elif old < 0:
        kstats[KS_FP_INSTALLS] += 1
    ct_state = vm[VM_LAST_CT] if vm[VM_MATCHED] else -1
    drop = drop_code(vm)
    port = out_ports[vm[VM_OUT_BASE]] if nout > 0 else 0
    e = alloc_row(lines, fp_state)
    compact = _compact_line(e, lines, nsteps, nout, nrules, any_nat, ct_state, drop,
                            vm[VM_RECIRCS], trace_steps, trace_rules, port)  # fmt: skip
    for c in range(EM_WIDTH):
        lines[e, FK_KEY + c] = em_key[c]
    if compact and want_slim and _install_slim(e, fp, em_hash):
        return
    f = -1  # the full layout's row (none: a compact entry, or no room for one)
    if not compact:
        f = alloc_full(fp_rows, fp_state)
        lines[e, FC_OUT] = f  # (-1: no room, a safeguard: its hits punt as misses)
    em_add(em_index, em_state, e, em_hash)
    if f < 0:
        return
    e = f
    fp_rows[e, FI_NSTEPS] = nsteps
    fp_rows[e, FI_NOUT] = nout
    fp_rows[e, FI_NRULES] = nrules
    fp_rows[e, FI_CT_STATE] = ct_state
    fp_rows[e, FI_RECIRCS] = vm[VM_RECIRCS]
    fp_rows[e, FI_DROP] = drop
    fp_rows[e, FI_NAT] = 1 if any_nat == 1 else 0
    fp_rows[e, FI_VLAN] = vlan
    for s in range(nsteps):
        for c in range(S_WIDTH):
            fp_rows[e, FI_STEPS + s * S_WIDTH + c] = trace_steps[s, c]
        fp_rows[e, FI_STEPS + s * S_WIDTH + S_STATE] &= ~CS_RELATED  # (_install_wanted)
        if trace_steps[s, S_NAT] != 0:  # read only for a translating step
            for c in range(N_WIDTH):
                fp_rows[e, FN_NAT + s * N_WIDTH + c] = trace_steps[s, S_WIDTH + c]

    outs = FI_STEPS + nsteps * S_WIDTH
    for o in range(nout):
        fp_rows[e, outs + o] = out_ports[vm[VM_OUT_BASE] + o]
    for r in range(nrules):
        fp_rows[e, outs + nout + r] = trace_rules[r]


@njit(forceinline=True)
def _install_slim(e, fp, em_hash):
    """Make the compact entry just written in row ``e`` (line and key) a slim one: its tuple
    out of the key, the row becomes its template or goes back when an equal template exists.
    False (row ``e`` untouched as a classic entry) when the templates' index is full."""
    lines, fp_state = fp.rows, fp.state
    slot, gen = lines[e, FC_SLOT], lines[e, FC_GEN]
    lines[e, FC_SLOT] = 0
    lines[e, FC_REFS] = 0
    k2, k6 = lines[e, FK_KEY + 2], lines[e, FK_KEY + 6]
    lines[e, FK_KEY + 2] = 0
    lines[e, FK_KEY + 6] = k6 & ~TUPLE6
    th = template_hash(lines, e)
    t = template_find(fp.tpl_index, lines, e, th)
    if t < 0:
        if fp.tpl_state[ES_COUNT] >= fp.tpl_state[ES_LIMIT]:
            lines[e, FC_SLOT], lines[e, FC_GEN] = slot, gen
            lines[e, FK_KEY + 2], lines[e, FK_KEY + 6] = k2, k6
            return False
        em_add(fp.tpl_index, fp.tpl_state, e, th)
        t = e
    else:
        free_row(lines, fp_state, e)
    lines[t, FC_REFS] += 1
    s = alloc_slim(fp.slim, fp_state)
    fp.slim[s, SL_CONN] = slot | (gen << 32)
    fp.slim[s, SL_TPL] = t
    em_add(fp.em_index, fp.em_state, s + SLIM_TAG, em_hash)
    return True


# called through its own machine code: an install runs once per new fast-path entry
_install_apart = linked_separately(_install)


@njit(forceinline=True)
def maybe_install(i, frame, flen, ct, fp, out, st):
    """Install an entry for packet ``i``, just completed by full processing, if it qualifies
    (see the module docstring)."""
    if st.vm[VM_ELIGIBLE] == 1 and _install_wanted(st.vm, st.trace_steps, ct.conns):
        _install_apart(i & RING_MASK, frame, flen, ct.conns, fp, out, st)
