"""The fast path's entries: finding one by key, and the storage behind them.

What: an exact-match entry is *classic* (a row of ``rows``: its line, then its key) or
*slim* (layout.py SL_*: a 16-byte row of ``slim`` naming its connection and a template, a
row of ``rows`` that every entry with the same line and the same key but for the tuple
shares). :func:`fp_find` finds the entry of a packet's key whichever kind it is;
:func:`fp_candidate` is the lookahead's cheap half (the first slot with the key's hash);
the rest takes and gives back rows, templates and slim rows for install.py.

Design:
- A slim entry's key is its template's key with the connection's tuple, in the direction
  of the template's step, put in (:func:`tuple_words`). The tuple of a connection never
  changes while its generation is the same, so the key is fixed for the entry's life; an
  entry whose connection is gone or re-created matches nothing (a stale entry: it waits for
  the clock hand, as a classic entry of a dead connection does). Install makes a slim entry
  only when the packet's own key is that key (:func:`slim_fits`), so a hit means the very
  key a classic entry would have held.
- Templates are found by their line and key (:func:`template_hash`, their own exact-match
  index) and counted (FC_REFS); the last entry to leave gives its template's row back.
- Rows, full layouts and slim rows come from a free chain first, else the next never used
  (counts and chains in ``fp.state``). Nothing here allocates: the engine grows the arrays
  between batches, and install evicts when they are full.

Invariants: every slim entry's template is indexed and counts it; a row or slim row is in
use (indexed) or in its free chain, never both.
"""

from __future__ import annotations

import numpy as np

from ctaccel.conntrack.layout import (
    C_DPORT,
    C_DST4,
    C_GENERATION,
    C_SPORT,
    C_SRC4,
    C_USED,
    ROW_CONN,
)
from ctaccel.datapath.exact import em_hash31, em_remove, key_equals
from ctaccel.datapath.layout import (
    FC_COMPACT,
    FC_HEAD,
    FC_OUT,
    FC_REFS,
    FC_ROW,
    FC_SLOT,
    FC_STEP,
    FK_KEY,
    FP_FULL_CAP,
    FP_FULL_COUNT,
    FP_FULL_FREE,
    FP_ROW_CAP,
    FP_ROW_FREE,
    FP_ROWS,
    FP_SLIM_CAP,
    FP_SLIM_FREE,
    FP_SLIMS,
    M31,
    M32,
    SL_CONN,
    SL_TPL,
    SLIM_TAG,
    TUPLE6,
    step_reply,
)
from ctaccel.hashtable import PACKED_LAYOUT, hash_row, open_addressing, packed_ref
from ctaccel.jit import njit

_GOLDEN = 0x9E3779B97F4A7C15 - (1 << 64)  # as a signed int64


@njit(forceinline=True)
def tuple_words(conns, slot, reply):
    """Key words 2 and 6's tuple bits (layout.TUPLE6) of the connection's IPv4 tuple in the
    direction ``reply``, as fastpath._pack_em_key packs a packet's."""
    src = np.int64(conns[slot, C_SRC4])
    dst = np.int64(conns[slot, C_DST4])
    sport = np.int64(conns[slot, C_SPORT])
    dport = np.int64(conns[slot, C_DPORT])
    if reply:
        src, dst, sport, dport = dst, src, dport, sport
    return src | ((dst & M31) << 32), sport | (dport << 16) | ((dst >> 31) << 52)


@njit(forceinline=True)
def slim_conn(slim, s):
    """The slim entry's connection: (slot, generation)."""
    w = slim[s, SL_CONN]
    return w & M32, (w >> 32) & M32


@njit(forceinline=True)
def slim_matches(rows, slim, conns, s, key):
    """Whether slim entry ``s`` is alive (its connection too) and its key is ``key``."""
    slot, gen = slim_conn(slim, s)
    if slot >= conns.shape[0]:
        return False
    if conns[slot, C_USED] != ROW_CONN or np.int64(conns[slot, C_GENERATION]) != gen:
        return False
    t = slim[s, SL_TPL]
    w2, w6 = tuple_words(conns, slot, step_reply(rows[t, FC_STEP]))
    if key[2] != w2 or key[6] != (rows[t, FK_KEY + 6] | w6):
        return False
    for c in (0, 1, 3, 4, 5, 7):
        if key[c] != rows[t, FK_KEY + c]:
            return False
    return True


@njit(forceinline=True)
def entry_matches(rows, slim, conns, e, key):
    """Whether entry ``e`` (an exact-match value: a row, or a slim row + SLIM_TAG) has
    ``key``."""
    if e >= SLIM_TAG:
        return slim_matches(rows, slim, conns, e - SLIM_TAG, key)
    return key_equals(rows, e, FK_KEY, key)


@njit(forceinline=True)
def _entry_at(t, s, key):
    """Whether slot ``s`` of the exact-match index ``t[0]`` names the entry of ``key``
    (``t``: the index, rows, slim rows, connections)."""
    return entry_matches(t[1], t[2], t[3], packed_ref(t[0][s]), key)


@njit(forceinline=True)
def _any(t, s, key):
    return True


_find_entry = open_addressing(PACKED_LAYOUT, _entry_at).find
_find_hash = open_addressing(PACKED_LAYOUT, _any).find


@njit(forceinline=True)
def fp_find(index, rows, slim, conns, key, h31):
    """The entry whose key is ``key`` (hash ``h31``): a row of ``rows``, or a slim row +
    SLIM_TAG; -1 when there is none."""
    s = _find_entry(key, h31, index, rows, slim, conns)
    return packed_ref(index[s]) if s >= 0 else -1


@njit(forceinline=True)
def fp_candidate(index, h31):
    """The first entry on ``h31``'s probe path with that hash (-1: none, so no entry has the
    key): what the lookahead prefetches before the entry's key can be compared."""
    s = _find_hash(h31, h31, index)
    return packed_ref(index[s]) if s >= 0 else -1


@njit(forceinline=True)
def slim_fits(conns, slot, reply, key):
    """Whether a slim entry on the connection in direction ``reply`` would have ``key``: its
    tuple is the packet's addresses and ports."""
    w2, w6 = tuple_words(conns, slot, reply)
    return key[2] == w2 and (key[6] & TUPLE6) == w6


# --- templates ------------------------------------------------------------------------------
@njit(forceinline=True)
def template_hash(rows, t):
    """The templates' index hash of row ``t``: its line and key but FC_SLOT and FC_REFS."""
    return em_hash31(hash_row(rows[t, FC_STEP:FC_ROW]) ^ (rows[t, FC_HEAD] * _GOLDEN))


@njit(forceinline=True)
def _same_template(rows, t, u):
    if rows[t, FC_HEAD] != rows[u, FC_HEAD]:
        return False
    for c in range(FC_STEP, FC_ROW):
        if rows[t, c] != rows[u, c]:
            return False
    return True


@njit(forceinline=True)
def _template_at(t, s, u):
    return _same_template(t[1], packed_ref(t[0][s]), u)


_find_template = open_addressing(PACKED_LAYOUT, _template_at).find


@njit(forceinline=True)
def template_find(tpl_index, rows, u, h31):
    """The template equal to row ``u`` (its hash ``h31``), or -1."""
    s = _find_template(u, h31, tpl_index, rows)
    return packed_ref(tpl_index[s]) if s >= 0 else -1


# --- storage --------------------------------------------------------------------------------
@njit(forceinline=True)
def row_available(fp_state):
    return fp_state[FP_ROW_FREE] > 0 or fp_state[FP_ROWS] < fp_state[FP_ROW_CAP]


@njit(forceinline=True)
def slim_available(fp_state):
    return fp_state[FP_SLIM_FREE] > 0 or fp_state[FP_SLIMS] < fp_state[FP_SLIM_CAP]


@njit(forceinline=True)
def take(store, link, fp_state, free_at, count_at):
    """A row of ``store``: the first of its free chain (``fp_state[free_at]``, + 1; linked
    through column ``link``), else the next never used (``fp_state[count_at]``; the caller
    checked there is one)."""
    head = fp_state[free_at]
    if head > 0:
        fp_state[free_at] = store[head - 1, link]
        return head - 1
    e = fp_state[count_at]
    fp_state[count_at] = e + 1
    return e


@njit(forceinline=True)
def give(store, link, fp_state, free_at, e):
    """Row ``e`` of ``store`` back to the head of its free chain."""
    store[e, link] = fp_state[free_at]
    fp_state[free_at] = e + 1


@njit(forceinline=True)
def alloc_row(rows, fp_state):
    """A row of ``rows`` (row_available was checked)."""
    return take(rows, FC_SLOT, fp_state, FP_ROW_FREE, FP_ROWS)


@njit(forceinline=True)
def free_row(rows, fp_state, e):
    rows[e, FC_HEAD] = 0
    give(rows, FC_SLOT, fp_state, FP_ROW_FREE, e)


@njit(forceinline=True)
def alloc_slim(slim, fp_state):
    """A row of ``slim`` (slim_available was checked)."""
    return take(slim, SL_CONN, fp_state, FP_SLIM_FREE, FP_SLIMS)


@njit(forceinline=True)
def alloc_full(full, fp_state):
    """A row of ``full`` for an entry's full layout (-1: none free; chained through its
    unused word 0)."""
    if fp_state[FP_FULL_FREE] == 0 and fp_state[FP_FULL_COUNT] >= fp_state[FP_FULL_CAP]:
        return -1
    return take(full, 0, fp_state, FP_FULL_FREE, FP_FULL_COUNT)


@njit(forceinline=True)
def release(fp, e):
    """Give back what entry ``e`` (already out of the exact-match index) held: its row and
    full layout, or its slim row and its count on its template (the template itself when it
    was the last)."""
    rows, fp_state = fp.rows, fp.state
    if e >= SLIM_TAG:
        s = e - SLIM_TAG
        t = fp.slim[s, SL_TPL]
        rows[t, FC_REFS] -= 1
        if rows[t, FC_REFS] <= 0:
            em_remove(fp.tpl_index, fp.tpl_state, t, template_hash(rows, t))
            free_row(rows, fp_state, t)
        give(fp.slim, SL_CONN, fp_state, FP_SLIM_FREE, s)
        return
    if rows[e, FC_HEAD] & FC_COMPACT == 0 and rows[e, FC_OUT] >= 0:
        give(fp.full, 0, fp_state, FP_FULL_FREE, rows[e, FC_OUT])
    free_row(rows, fp_state, e)
