"""The compiled batch loop: packets in arrival order through the fast path and the action VM.

What: ``run_batch`` processes packets ``start..n-1`` of a batch in numba and stops only when
Python is needed: a megaflow miss (an upcall: translate, install, resume this very packet
where it stopped), a packet the compiled path does not handle (IP fragments, or a moment
when fragment reassembly has something to release: Python runs that packet through the
reference engine, then calls again from the next one), or output arrays that are full.

Design: this file is the loop only; each concern has its own file:
- layout.py: the VM scalars, result columns, statistics, entry rows, argument bundles;
- fastpath.py: the assume-established lookup pipeline, re-check and apply;
- vm.py: the megaflow passes and action programs (recirc mode's whole path);
- install.py: recording entries after full processing.
Each packet is parsed just ahead of use (``parse_record``; in assume-established mode
PF_KEY_AHEAD packets ahead, for the prefetch pipeline) into a ring of RING keys. The tables
arrive as plain tuples (see layout.py) and are named here. ``mode`` is MODE_RECIRC or
MODE_ASSUME_ESTABLISHED.

Invariants:
- Packets are completed strictly in order; a suspended packet is resumed before any later
  packet runs.
- The fast path never creates or deletes a connection and never changes protocol state.
- Rule counters, outputs, ct_state and drop reason are exactly what the reference engine
  would produce (tests/equivalence/test_equivalence.py).
"""

from __future__ import annotations

from ctaccel.conntrack.ftp import MAX_GROWTH as ALG_MAX_GROWTH
from ctaccel.conntrack.nat import NS_WIDTH
from ctaccel.conntrack.table import CT_SCRATCH_WIDTH
from ctaccel.datapath.fastpath import fast_path
from ctaccel.datapath.install import maybe_install
from ctaccel.datapath.layout import (
    DROP_CODE_RX_INVALID,
    ETH_HEADER_LEN,
    KS_FAST,
    MAX_OUT_PER_PACKET,
    MODE_ASSUME_ESTABLISHED,
    PATH_MEGAFLOW,
    PATH_RX_INVALID,
    PATH_UPCALL,
    PF_FRAME_AHEAD,
    PF_KEY_AHEAD,
    PF_META_AHEAD,
    PUNT_NONE,
    R_CT_STATE,
    R_DROP,
    R_NOUT,
    R_OUT_START,
    R_PATH,
    R_PUNT,
    R_RECIRCS,
    RES_WIDTH,
    RING_MASK,
    SCR_NO_NAT,
    SCR_TUPS,
    ST_DONE,
    ST_FULL,
    ST_MISS,
    ST_SLOW,
    VM_ELIGIBLE,
    VM_PACKET,
    VM_PARSED,
    VM_RESUME,
    VM_STATUS,
    VM_UPCALLED,
    Batch,
    CtTables,
    FastPathTables,
    MegaflowTables,
    Programs,
    Results,
    VmState,
)
from ctaccel.datapath.vm import finish_packet, run_passes, start_packet
from ctaccel.jit import njit, prefetch
from ctaccel.packet.key import DL_TYPE, ETH_TYPE_IP, ETH_TYPE_IPV6, FRAG_ANY, NW_FRAG, PARSE_FLAGS
from ctaccel.packet.parse import parse_record
from ctaccel.packet.rewrite import MAX_TAG_BYTES

_ROOM = MAX_TAG_BYTES + ALG_MAX_GROWTH  # what a packet's frame may grow by (VLAN tags, FTP)

# what _begin_packet decided
BEGIN_RUN = 0  # run the packet through the VM
BEGIN_DONE = 1  # the packet is complete (fast path, or too short to parse)
BEGIN_STOP = 2  # return to Python: vm[VM_STATUS] says why


@njit(forceinline=True)
def _parse_ahead(i, mode, b, vm, keys):
    """Parse the batch's packets up to ``i`` (assume-established: PF_KEY_AHEAD past it, for
    the prefetch pipeline) into the key ring, prefetching the capture further ahead."""
    n = b.offsets.shape[0]
    lim = min(n, i + (PF_KEY_AHEAD if mode == MODE_ASSUME_ESTABLISHED else 1))
    while vm[VM_PARSED] < lim:
        j = vm[VM_PARSED]
        jm = j + PF_META_AHEAD
        if jm < n:
            prefetch(b.offsets, jm)
            prefetch(b.lengths, jm)
            prefetch(b.in_ports, jm)
            prefetch(b.now_ms, jm)
        jf = j + PF_FRAME_AHEAD
        if jf < n:
            prefetch(b.buf, b.offsets[jf])  # a hint: any address is harmless
            prefetch(b.buf, b.offsets[jf] + 63)
        parse_record(b.buf, b.offsets, b.lengths, b.in_ports, j, keys[j & RING_MASK])
        vm[VM_PARSED] = j + 1


@njit(forceinline=True)
def _rx_invalid(i, res, out_n):
    res[i, R_NOUT] = 0
    res[i, R_OUT_START] = out_n[0]
    res[i, R_CT_STATE] = -1
    res[i, R_DROP] = DROP_CODE_RX_INVALID
    res[i, R_PATH] = PATH_RX_INVALID
    res[i, R_RECIRCS] = 0


@njit(forceinline=True)
def _stop(vm, status, i):
    vm[VM_STATUS] = status
    vm[VM_PACKET] = i
    return BEGIN_STOP


@njit(forceinline=True)
def _begin_packet(mode, i, frame, flen, now, ipf_next_flush_ms, em_flags_mask, b, ct, fp, out,
                  st):  # fmt: skip
    """A fresh packet: results cleared, parsed, then the fast path (assume-established) or a
    fresh VM; BEGIN_* says what next."""
    res, out_n, vm = out.res, out.out_n, st.vm
    for c in range(RES_WIDTH):
        res[i, c] = 0  # PUNT_NONE, not rewritten, ...
    if flen < ETH_HEADER_LEN:
        _rx_invalid(i, res, out_n)
        return BEGIN_DONE
    if (
        out_n[0] + MAX_OUT_PER_PACKET > out.out_ports.shape[0]
        or out_n[1] + (MAX_OUT_PER_PACKET + 1) * (flen + _ROOM + 4) > out.out_fbuf.shape[0]
        or flen + _ROOM > st.frames_w.shape[1]
    ):
        return _stop(vm, ST_FULL, i)
    _parse_ahead(i, mode, b, vm, st.keys)
    key = st.keys[i & RING_MASK]
    dl_type = key[DL_TYPE]
    is_ip = dl_type == ETH_TYPE_IP or dl_type == ETH_TYPE_IPV6
    if (is_ip and key[NW_FRAG] & FRAG_ANY) or now >= ipf_next_flush_ms:
        return _stop(vm, ST_SLOW, i)
    vm[VM_ELIGIBLE] = 0
    if mode == MODE_ASSUME_ESTABLISHED:
        n = b.offsets.shape[0]
        punt = fast_path(i, n, frame, flen, now, em_flags_mask, ct, fp, out, st)
        if punt == PUNT_NONE:
            out.kstats[KS_FAST] += 1
            return BEGIN_DONE
        out.kstats[punt] += 1  # KS_PUNT_* == PUNT_* by construction
        res[i, R_PUNT] = punt
        vm[VM_ELIGIBLE] = 1 if key[PARSE_FLAGS] == 0 else 0
    start_packet(key, st, out_n[0])
    return BEGIN_RUN


@njit(_nrt=False)
def run_batch(mode, start, ipf_next_flush_ms, em_flags_mask, batch, ct, mf, progs, fp, out, st):
    """Process packets from ``start``; returns with vm[VM_STATUS] set (see ST_*).

    The bundles (layout.py, as plain tuples): ``batch`` Batch, ``ct`` CtTables, ``mf``
    MegaflowTables, ``progs`` Programs, ``fp`` FastPathTables, ``out`` Results, ``st``
    VmState. Outputs: ``out_ports[k]`` the port of output k, ``out_fofs[k]`` -1 when it
    carried the received frame, else the offset in ``out_fbuf`` of the rewritten copy it
    carried (NAT, header rewrites, VLAN tags; ``out_flen[k]`` its length); ``out_n[0]`` outputs and ``out_n[1]`` bytes of ``out_fbuf`` used.
    ``frames_w`` holds the rewritten frame of each recirculation depth (MAX_TAG_BYTES of room
    for pushed tags), its last row is scratch. ``scratch``: the NAT spec of a ct() without nat (``SCR_NO_NAT``), then
    conntrack's tuple scratch (``SCR_TUPS``); the kernel allocates nothing."""
    b, c, m, p = Batch(*batch), CtTables(*ct), MegaflowTables(*mf), Programs(*progs)
    f, o, s = FastPathTables(*fp), Results(*out), VmState(*st)
    vm = s.vm
    n = b.offsets.shape[0]
    no_nat = s.scratch[SCR_NO_NAT : SCR_NO_NAT + NS_WIDTH]
    ct_tups = s.scratch[SCR_TUPS : SCR_TUPS + CT_SCRATCH_WIDTH]
    for i in range(start, n):
        off = b.offsets[i]
        flen = b.lengths[i]
        frame = b.buf[off : off + flen]
        now = b.now_ms[i]
        if vm[VM_RESUME] == 1 and i == start:
            vm[VM_RESUME] = 0
        else:
            begin = _begin_packet(mode, i, frame, flen, now, ipf_next_flush_ms, em_flags_mask,
                                  b, c, f, o, s)  # fmt: skip
            if begin == BEGIN_DONE:
                continue
            if begin == BEGIN_STOP:
                return
        if not run_passes(i, frame, flen, now, c, m, p, o, s, no_nat, ct_tups):
            vm[VM_STATUS] = ST_MISS
            vm[VM_PACKET] = i
            vm[VM_UPCALLED] = 1
            return
        finish_packet(i, vm, o.res)
        o.res[i, R_PATH] = PATH_UPCALL if vm[VM_UPCALLED] else PATH_MEGAFLOW
        if mode == MODE_ASSUME_ESTABLISHED:
            maybe_install(i, frame, flen, c, f, o, s)
    vm[VM_STATUS] = ST_DONE
    vm[VM_PACKET] = n
