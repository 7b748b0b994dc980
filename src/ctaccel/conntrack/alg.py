"""ALG expectations: the data connections an FTP or TFTP control connection announces.

What: OVS 3.1's userspace expectation table (lib/conntrack.c ``expectation_create``,
``expectation_lookup``, ``expectation_clean``) as numba kernels over two arrays of
layout.CtTables: ``exps[cap, E_WIDTH]`` (one row per expectation) and ``exp_index`` (a hash
index over the rows, ctaccel.hashtable's INDEX_LAYOUT). An expectation is a lookup tuple
(table.py ``T_*``) whose source port is a wildcard (0), plus what the data connection takes
from its control connection: mark, label, the control connection's original tuple (shown as
the data connection's ``ct_tuple`` and ``parent=``) and, under NAT, the address its reply
tuple gets and which side it replaces.

Design:
- Created by the control connection's packets (ftp.py, tftp), found by every packet that is
  about to create a connection (core.py), removed when the control connection goes (as OVS,
  expectations have no timer of their own: they live as long as their control connection, and
  match any number of data connections).
- A control connection chains its expectations through ``E_NEXT`` from its ``X_ALG_EXPS``;
  a data connection names its expectation's row in ``X_ALG_PARENT`` and holds a reference
  (``E_REFS``), so the parent's tuple outlives the control connection (OVS copies it into the
  data connection: same answer, no wide column). A row leaves the index when its control
  connection goes (``E_STATE`` DETACHED) and is freed when no data connection refers to it.
- Rows come from a free chain (``ST_EXP_FREE``) or, once, from the never-used tail
  (``ST_EXP_HWM``); growth is Python-side (:func:`grow_exps`, called by Conntrack.reserve):
  the kernels never allocate, a creation without a free row is dropped and counted.

Invariants: ``ST_EXP_LIVE`` rows are in the index, ``ST_EXP_USED`` rows are not free; every
row in a control connection's chain belongs to it; the index keeps at least one empty slot
(two slots per row).
"""

from __future__ import annotations

from ctaccel.arrays import prefaulted_zeros
from ctaccel.conntrack.layout import (
    ALG_RELATED,
    C_DL_TYPE,
    C_DPORT,
    C_LABEL,
    C_MARK,
    C_PROTO,
    C_SPORT,
    C_ZONE,
    X_ALG,
    X_ALG_EXPS,
    X_ALG_PARENT,
    X_DST,
    X_NAT_FLAGS,
    X_R_DST,
    X_R_SRC,
    X_SRC,
    addr_word,
    ext_get,
    ext_row,
    ext_set,
)
from ctaccel.conntrack.nat import NAT_DST, NAT_SRC
from ctaccel.conntrack.table import (
    ST_EXP_CREATED,
    ST_EXP_FREE,
    ST_EXP_HWM,
    ST_EXP_LIVE,
    ST_EXP_REFUSED,
    ST_EXP_USED,
    T_DL_TYPE,
    T_DST,
    T_DWORD,
    T_PROTO,
    T_SRC,
    T_SWORD,
    T_ZONE,
    TUP_WIDTH,
    tuple_hash,
)
from ctaccel.hashtable import index_add, index_remove, slots_for
from ctaccel.jit import njit

# --- expectation row ------------------------------------------------------------------------
# columns 0 .. TUP_WIDTH-1: the expected tuple (table.py T_*), T_SWORD always 0 (any port)
E_STATE = TUP_WIDTH  # EXP_FREE, EXP_LIVE (in the index), EXP_DETACHED (kept for references)
E_REFS = TUP_WIDTH + 1  # data connections naming this row in X_ALG_PARENT
E_NEXT = TUP_WIDTH + 2  # next row + 1 of the same control connection (or of the free chain)
E_MARK = TUP_WIDTH + 3  # the control connection's mark and label when this was created
E_LABEL = TUP_WIDTH + 4  # 4 words
E_NAT_ADDR = TUP_WIDTH + 8  # 4 words: the address a NATed data connection's reply gets
E_NAT_RPL_DST = TUP_WIDTH + 12  # 1: it replaces the reply's destination (SNAT), 0: source
E_P_SRC = TUP_WIDTH + 13  # 4 words: the control connection's original tuple
E_P_DST = TUP_WIDTH + 17  # 4 words
E_P_SPORT = TUP_WIDTH + 21
E_P_DPORT = TUP_WIDTH + 22
E_WIDTH = 40

EXP_FREE = 0
EXP_LIVE = 1
EXP_DETACHED = 2

INDEX_SLOTS_PER_ROW = 2
INITIAL_ROWS = 64


def new_exps(rows: int = INITIAL_ROWS):
    """Empty (exps, exp_index) for ``rows`` expectations."""
    rows = max(int(rows), 1)
    return prefaulted_zeros((rows, E_WIDTH)), prefaulted_zeros(
        (slots_for(rows, INDEX_SLOTS_PER_ROW, 2), 2)
    )


def grow_exps(exps, stats, rows: int):
    """Bigger (exps, exp_index) holding the same rows (row numbers kept), re-indexed."""
    new, index = new_exps(rows)
    new[: exps.shape[0]] = exps
    _reindex(new, index, int(stats[ST_EXP_HWM]))
    return new, index


@njit
def _reindex(exps, index, hwm):
    for row in range(hwm):
        if exps[row, E_STATE] == EXP_LIVE:
            index_add(index, row, tuple_hash(exps[row, :TUP_WIDTH]))


@njit(forceinline=True)
def _same_tuple(exps, row, tup):
    for c in range(TUP_WIDTH):
        if exps[row, c] != tup[c]:
            return False
    return True


@njit(forceinline=True)
def _find(exps, index, tup, h):
    mask = index.shape[0] - 1
    b = h & mask
    while True:
        entry = index[b, 0]
        if entry == 0:
            return -1
        if index[b, 1] == h and _same_tuple(exps, entry - 1, tup):
            return entry - 1
        b = (b + 1) & mask


@njit(forceinline=True)
def exp_lookup(ct, tup):
    """The expectation a new connection with tuple ``tup`` fulfils (its row), or -1 (OVS
    expectation_lookup: the source port is not compared). ``tup`` is left as it was."""
    if ct.stats[ST_EXP_LIVE] == 0:
        return -1
    sword = tup[T_SWORD]
    tup[T_SWORD] = 0
    row = _find(ct.exps, ct.exp_index, tup, tuple_hash(tup))
    tup[T_SWORD] = sword
    return row


@njit(forceinline=True)
def _alloc(ct):
    stats, exps = ct.stats, ct.exps
    head = stats[ST_EXP_FREE]
    if head != 0:
        row = head - 1
        stats[ST_EXP_FREE] = exps[row, E_NEXT]
    elif stats[ST_EXP_HWM] < exps.shape[0]:
        row = stats[ST_EXP_HWM]
        stats[ST_EXP_HWM] += 1
    else:
        return -1
    for c in range(E_WIDTH):
        exps[row, c] = 0
    stats[ST_EXP_USED] += 1
    return row


@njit(forceinline=True)
def _free(ct, row):
    exps = ct.exps
    exps[row, E_STATE] = EXP_FREE
    exps[row, E_NEXT] = ct.stats[ST_EXP_FREE]
    ct.stats[ST_EXP_FREE] = row + 1
    ct.stats[ST_EXP_USED] -= 1


@njit(forceinline=True)
def _copy4(dst, dcol, src, scol):
    for i in range(4):
        dst[dcol + i] = src[scol + i]


@njit(forceinline=True)
def _copy_addr(dst, dcol, conns, slot, xcol):
    """dst[dcol:dcol + 4] := the connection's address ``xcol`` (layout.addr_word)."""
    for i in range(4):
        dst[dcol + i] = addr_word(conns, slot, xcol, i)


@njit
def exp_create(ct, slot, dport, reply):
    """OVS expectation_create(ct, dst_port, parent, reply, src_ip_wc=false, skip_nat=false):
    expect a connection to ``dport`` between the control connection's two addresses, from
    the side the command did not come from; nothing when the same expectation exists."""
    conns, exps = ct.conns, ct.exps
    row = _alloc(ct)
    if row < 0:
        ct.stats[ST_EXP_REFUSED] += 1
        return
    e = exps[row]
    dnat = (ext_get(conns, slot, X_NAT_FLAGS) & NAT_DST) != 0
    if reply:  # the command came from the reply side: the original side connects
        _copy_addr(e, T_SRC, conns, slot, X_SRC)
        _copy_addr(e, T_DST, conns, slot, X_DST)
        e[E_NAT_RPL_DST] = 0 if dnat else 1
        _copy_addr(e, E_NAT_ADDR, conns, slot, X_R_SRC if dnat else X_R_DST)
    else:
        _copy_addr(e, T_SRC, conns, slot, X_R_SRC)
        _copy_addr(e, T_DST, conns, slot, X_R_DST)
        e[E_NAT_RPL_DST] = 1 if dnat else 0
        _copy_addr(e, E_NAT_ADDR, conns, slot, X_DST if dnat else X_SRC)
    e[T_ZONE] = conns[slot, C_ZONE]
    e[T_DL_TYPE] = conns[slot, C_DL_TYPE]
    e[T_PROTO] = conns[slot, C_PROTO]
    e[T_SWORD] = 0
    e[T_DWORD] = dport
    h = tuple_hash(e[:TUP_WIDTH])
    if _find(exps, ct.exp_index, e[:TUP_WIDTH], h) >= 0:
        _free(ct, row)
        return
    e[E_MARK] = conns[slot, C_MARK]
    for i in range(4):  # (not _copy4: a uint32 row would compile it once more)
        e[E_LABEL + i] = conns[slot, C_LABEL + i]
    _copy_addr(e, E_P_SRC, conns, slot, X_SRC)
    _copy_addr(e, E_P_DST, conns, slot, X_DST)
    e[E_P_SPORT] = conns[slot, C_SPORT]
    e[E_P_DPORT] = conns[slot, C_DPORT]
    e[E_STATE] = EXP_LIVE
    e[E_NEXT] = ext_get(conns, slot, X_ALG_EXPS)
    ext_set(conns, slot, X_ALG_EXPS, row + 1)
    index_add(ct.exp_index, row, h)
    ct.stats[ST_EXP_LIVE] += 1
    ct.stats[ST_EXP_CREATED] += 1


@njit
def exp_release_conn(ct, slot):
    """A connection is going: its expectations leave the index (OVS expectation_clean; rows
    data connections still name are kept for them) and its own reference is given back."""
    conns, exps = ct.conns, ct.exps
    nxt = ext_get(conns, slot, X_ALG_EXPS)
    while nxt != 0:
        row = nxt - 1
        nxt = exps[row, E_NEXT]
        index_remove(ct.exp_index, row, tuple_hash(exps[row, :TUP_WIDTH]))
        ct.stats[ST_EXP_LIVE] -= 1
        exps[row, E_NEXT] = 0
        if exps[row, E_REFS] == 0:
            _free(ct, row)
        else:
            exps[row, E_STATE] = EXP_DETACHED
    if ext_row(conns, slot) < 0:
        return
    ext_set(conns, slot, X_ALG_EXPS, 0)
    parent = ext_get(conns, slot, X_ALG_PARENT)
    if parent != 0:
        row = parent - 1
        exps[row, E_REFS] -= 1
        if exps[row, E_REFS] == 0 and exps[row, E_STATE] == EXP_DETACHED:
            _free(ct, row)
        ext_set(conns, slot, X_ALG_PARENT, 0)


@njit(forceinline=True)
def exp_adopt(ct, slot, row):
    """The new connection ``slot`` fulfils expectation ``row`` (OVS conn_not_found with an
    alg_exp): related for life, the parent's mark and label."""
    conns, exps = ct.conns, ct.exps
    ext_set(conns, slot, X_ALG, ext_get(conns, slot, X_ALG) | ALG_RELATED)
    ext_set(conns, slot, X_ALG_PARENT, row + 1)
    exps[row, E_REFS] += 1
    conns[slot, C_MARK] = exps[row, E_MARK]
    for i in range(4):
        conns[slot, C_LABEL + i] = exps[row, E_LABEL + i]


@njit(forceinline=True)
def exp_nat_reply(exps, row, rtup):
    """The reply tuple of a NATed data connection (``rtup``, the reversed original on entry):
    one address replaced as the expectation says. Returns the connection's NAT kind."""
    if exps[row, E_NAT_RPL_DST]:
        _copy4(rtup, T_DST, exps[row], E_NAT_ADDR)
        return NAT_SRC
    _copy4(rtup, T_SRC, exps[row], E_NAT_ADDR)
    return NAT_DST


def parent_tuple(exps, row: int) -> tuple:
    """(src words, dst words, sport, dport) of the control connection behind ``row``."""
    e = exps[row]
    return (tuple(int(v) for v in e[E_P_SRC : E_P_SRC + 4]),
            tuple(int(v) for v in e[E_P_DST : E_P_DST + 4]), int(e[E_P_SPORT]),
            int(e[E_P_DPORT]))  # fmt: skip
