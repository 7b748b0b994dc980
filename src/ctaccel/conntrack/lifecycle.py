"""Connections come and go: live lookup, commit under the limits, NAT's choice, removal.

What: the parts of the ct action that change which connections exist. :func:`lookup_live`
finds a packet's connection (an expired one is removed on the way, as OVS's lookup skips it);
:func:`commit_conn` creates one when the zone limit, the table limit and, with NAT, a free
reply tuple allow (:func:`nat_choose`: OVS's ``nat_get_unique_tuple``); :func:`delete_conn`,
:func:`sweep_expired` and :func:`flush_zone` remove them, giving back the zone-limit count.

Design: every function takes the tracker's arrays as one :class:`layout.CtTables` bundle
(``ct``) and works on them in place; the tables themselves (index, free slots) are table.py's.
Zone limits follow OVS 3.1 exactly: ``zone_limits[ZL_ROWS, 65537]``, row ``ZL_LIMIT`` the
limit or -1 when the zone has no entry, ``ZL_COUNT`` the connections admitted under the entry,
``ZL_SEQ`` the entry's creation number (row ``ZL_TP`` holds each zone's timeout policy); column 65536 is the default entry, whose single
count all zones without their own entry share (OVS fixed that only in 3.5). A connection
remembers the entry that admitted it (``X_ADMIT``) and gives its count back when it goes,
unless that entry was deleted or re-created meanwhile.

Invariants: never allocates rows beyond the table (a commit with no free row is refused and
counted); a refused commit changes nothing but counters (and may sweep expired connections,
which depends only on packet times).
"""

from __future__ import annotations

import numpy as np

from ctaccel.conntrack.alg import exp_nat_reply, exp_release_conn
from ctaccel.conntrack.layout import (
    C_SEQ,
    C_USED,
    C_ZONE,
    ROW_CONN,
    X_ADMIT,
    X_ALG_EXPS,
    X_ALG_PARENT,
    X_NAT_FLAGS,
    X_TP_BASE,
    expiration,
    ext_get,
    ext_set,
)
from ctaccel.conntrack.nat import (
    EPHEMERAL_MAX,
    EPHEMERAL_MIN,
    MAX_PORT_ATTEMPTS,
    NAT_DST,
    NAT_DST_PORT,
    NAT_SRC,
    NAT_SRC_PORT,
    NS_ACTION,
    NS_MAX_PORT,
    NS_MIN_ADDR,
    NS_MIN_PORT,
    next_random,
    pick_addr,
    range_hash,
)
from ctaccel.conntrack.table import (
    ST_CREATED,
    ST_EXPIRED_AT_LOOKUP,
    ST_MAX_CONNS,
    ST_N_CONNS,
    ST_NAT_EXHAUSTED,
    ST_NEXT_SEQ,
    ST_REFUSED_MAX_CONNS,
    ST_REFUSED_NO_ROOM,
    ST_REFUSED_ZONE_LIMIT,
    ST_SWEEP_AT,
    ST_SWEEP_DUE,
    ST_SWEPT,
    T_DL_TYPE,
    T_DST,
    T_DWORD,
    T_PROTO,
    T_SRC,
    T_SWORD,
    T_ZONE,
    conn_alloc_reply,
    conn_hash,
    conn_release,
    index_lookup,
    reverse_into,
)
from ctaccel.conntrack.timeouts import N_TIMEOUTS
from ctaccel.conntrack.trackers import new_conn
from ctaccel.jit import njit

INT64_MAX = np.iinfo(np.int64).max

# zone_limits rows and the default entry's column
ZL_LIMIT = 0
ZL_COUNT = 1
ZL_SEQ = 2
ZL_TP = 3  # the zone's timeout policy row (timeouts.py; 0: the default), not a limit
ZL_ROWS = 4
ZL_DEFAULT = 65536
ZL_COLUMNS = 65537

# The admitting zone-limit entry of a connection: 0 = none, else (column + 1) | seq << 17.
_ADMIT_COLUMN_BITS = 17
_ADMIT_SEQ_MASK = (1 << (32 - _ADMIT_COLUMN_BITS)) - 1  # the seq's bits that fit the word


@njit
def delete_conn(ct, slot):
    """Remove a connection: give back its zone-limit count, end its expectations (or its
    hold on one), unindex it, free its row."""
    conns, zone_limits = ct.conns, ct.zone_limits
    if ext_get(conns, slot, X_ALG_EXPS) != 0 or ext_get(conns, slot, X_ALG_PARENT) != 0:
        exp_release_conn(ct, slot)
    admit = ext_get(conns, slot, X_ADMIT)
    if admit != 0:
        column = (admit & ((1 << _ADMIT_COLUMN_BITS) - 1)) - 1
        seq = admit >> _ADMIT_COLUMN_BITS
        if (
            zone_limits[ZL_LIMIT, column] >= 0
            and zone_limits[ZL_SEQ, column] & _ADMIT_SEQ_MASK == seq
        ):
            zone_limits[ZL_COUNT, column] -= 1
    conn_release(conns, ct.index, ct.free_slots, ct.stats, slot)


@njit(forceinline=True)
def lookup_live(ct, tup, now_ms):
    """Handle of the live connection for ``tup`` or -1; an expired one is removed first."""
    conns = ct.conns
    handle = index_lookup(conns, ct.index, tup, conn_hash(tup))
    if handle < 0:
        return -1
    slot = handle >> 1
    if now_ms >= expiration(conns, slot):
        delete_conn(ct, slot)
        ct.stats[ST_EXPIRED_AT_LOOKUP] += 1
        return -1
    return handle


@njit(forceinline=True)
def _taken(ct, tup, now_ms):
    """True when a live connection has ``tup`` as either of its tuples (an expired one found
    on the way is removed, as OVS's lookups skip it)."""
    return lookup_live(ct, tup, now_ms) >= 0


@njit
def _unique_port(ct, rtup, col, curr, lo, hi, h, now_ms):
    """OVS nat_get_unique_l4: try ports from ``curr`` upwards through [lo, hi] (wrapping),
    at most 128, then rounds of 64, 32, 16 and 8 from pseudo-random points; ``rtup[col]``
    ends on the free port found, or back on ``curr`` (False)."""
    size = hi - lo + 1
    attempts = min(size, MAX_PORT_ATTEMPTS)
    orig = curr
    round_ = 0
    while True:
        n_iter = size + 1 if (curr < lo or curr > hi) else size
        i = 0
        for _ in range(n_iter):
            if i >= attempts:
                break
            i += 1
            rtup[col] = curr
            if not _taken(ct, rtup, now_ms):
                return True
            curr = lo if (curr < lo or curr > hi or curr == hi) else curr + 1
        if attempts < size and attempts >= 16:
            attempts //= 2
            round_ += 1
            curr = lo + next_random(h, round_) % size
            continue
        rtup[col] = orig
        return False


@njit
def nat_choose(ct, tup, spec, now_ms, rtup):
    """OVS nat_get_unique_tuple: fill ``rtup`` with the reply tuple a new connection ``tup``
    gets under ``spec`` (an address from the range by hash; the source port kept if free,
    else searched in its band or the given range; a destination port from its range).
    False when every candidate is taken (exhaustion)."""
    action = spec[NS_ACTION]
    reverse_into(tup, rtup)
    h = range_hash(spec, tup)
    zero = True
    for i in range(4):
        if spec[NS_MIN_ADDR + i] != 0:
            zero = False
    # The translated address: the reply's destination for SNAT, its source otherwise. With no
    # range, SNAT/DNAT keep the address the reversed tuple already holds; a bare nat leaves
    # the reply's source all zeros (OVS 3.1).
    at = T_DST if action & NAT_SRC else T_SRC
    if not zero:
        pick_addr(spec, h, tup[T_DL_TYPE], rtup[at : at + 4])
    elif not (action & (NAT_SRC | NAT_DST)):
        for i in range(4):
            rtup[T_SRC + i] = 0
    proto = tup[T_PROTO]
    pat = proto == 6 or proto == 17
    sport = tup[T_SWORD]
    if (action & (NAT_SRC | NAT_SRC_PORT)) == NAT_SRC or action & NAT_DST:
        curr_s = sport
        if sport < 512:
            lo_s, hi_s = 1, 511
        elif sport < 1024:
            lo_s, hi_s = 600, 1023
        else:
            lo_s, hi_s = EPHEMERAL_MIN, EPHEMERAL_MAX
    else:
        lo_s = spec[NS_MIN_PORT]
        hi_s = spec[NS_MAX_PORT]
        curr_s = lo_s + h % (hi_s - lo_s + 1)
    if action & NAT_DST_PORT:
        lo_d = spec[NS_MIN_PORT]
        hi_d = spec[NS_MAX_PORT]
        curr_d = lo_d + h % (hi_d - lo_d + 1)
    else:
        curr_d = tup[T_DWORD]
        lo_d = hi_d = curr_d
    if pat:
        rtup[T_SWORD] = curr_d
        rtup[T_DWORD] = curr_s
    if not pat:
        return not _taken(ct, rtup, now_ms)
    found = False
    if action & NAT_DST_PORT:
        found = _unique_port(ct, rtup, T_SWORD, curr_d, lo_d, hi_d, h, now_ms)
    if not found:
        found = _unique_port(ct, rtup, T_DWORD, curr_s, lo_s, hi_s, h, now_ms)
    return found


@njit
def commit_conn(ct, tup, frame, l4_ofs, l4_len, now_ms, nat, rtup, exp, alg):
    """Create the connection for ``tup`` if the limits allow; its slot or -1 (counted).
    ``rtup`` is scratch for the reply tuple: the reversed ``tup``, or with a NAT spec
    (``nat[NS_ACTION] >= 0``) the one NAT chooses (when none is free no connection is
    created, counted as nat_exhausted), or for a data connection an expectation (row ``exp``
    >= 0) awaited, the one the expectation gives (OVS: one address replaced, no search).
    ``alg``: the helper the commit names (ALG_FTP / ALG_TFTP, 0 none), stored by the caller."""
    conns, stats, zone_limits = ct.conns, ct.stats, ct.zone_limits
    zone = tup[T_ZONE]
    column = -1
    if zone_limits[ZL_LIMIT, zone] >= 0:
        column = zone
    elif zone_limits[ZL_LIMIT, ZL_DEFAULT] >= 0:
        column = ZL_DEFAULT
    at_limit = column >= 0 and zone_limits[ZL_COUNT, column] >= zone_limits[ZL_LIMIT, column]
    if (at_limit or stats[ST_N_CONNS] >= stats[ST_MAX_CONNS]) and (
        now_ms >= stats[ST_SWEEP_DUE] or now_ms < stats[ST_SWEEP_AT]
    ):
        # Expired connections must not hold a place. OVS frees them from a timer-driven
        # sweeper, so when they stop counting depends on wall-clock luck; we free them here,
        # so the answer depends only on packet times (and not on when sweep() last ran).
        # The scan runs only when something may have expired since the last one (a flood
        # at a limit would otherwise pay for a scan of the table every millisecond): a
        # connection left expires no earlier than the earliest the scan saw, one armed
        # since, at a packet time >= the scan's, no earlier than that + the shortest timeout
        # (a clock that goes back, an import or a new policy makes the bound unknown).
        swept, earliest = sweep_expired(ct, now_ms)
        stats[ST_SWEPT] += swept
        stats[ST_SWEEP_AT] = now_ms
        shortest = ct.timeouts[0]  # (no .min(): the batch kernel runs without allocation)
        for i in range(1, ct.timeouts.shape[0]):
            shortest = min(shortest, ct.timeouts[i])
        stats[ST_SWEEP_DUE] = min(earliest, now_ms + max(shortest, 1))
        at_limit = column >= 0 and zone_limits[ZL_COUNT, column] >= zone_limits[ZL_LIMIT, column]
    if at_limit:
        stats[ST_REFUSED_ZONE_LIMIT] += 1
        return -1
    if stats[ST_N_CONNS] >= stats[ST_MAX_CONNS]:
        stats[ST_REFUSED_MAX_CONNS] += 1
        return -1
    nat_kind = nat[NS_ACTION]
    if nat_kind < 0:
        reverse_into(tup, rtup)
    elif exp >= 0:
        reverse_into(tup, rtup)
        nat_kind = exp_nat_reply(ct.exps, exp, rtup)
    elif not nat_choose(ct, tup, nat, now_ms, rtup):
        stats[ST_NAT_EXHAUSTED] += 1
        return -1
    # the zone's timeout policy at commit stays the connection's (OVS conn->tp_id)
    tp_base = zone_limits[ZL_TP, zone] * N_TIMEOUTS
    want_ext = nat_kind > 0 or tp_base != 0 or column >= 0 or exp >= 0 or alg != 0
    slot = conn_alloc_reply(conns, ct.index, ct.free_slots, stats, tup, rtup, now_ms, want_ext)
    if slot < 0:
        stats[ST_REFUSED_NO_ROOM] += 1
        return -1
    if nat_kind > 0:
        ext_set(conns, slot, X_NAT_FLAGS, nat_kind)
    if tp_base != 0:
        ext_set(conns, slot, X_TP_BASE, tp_base)
    new_conn(conns, slot, tup[T_PROTO], frame, l4_ofs, l4_len, now_ms, ct.timeouts)
    conns[slot, C_SEQ] = stats[ST_NEXT_SEQ] & 0xFFFFFFFF
    stats[ST_NEXT_SEQ] += 1
    if column >= 0:
        seq_bits = (zone_limits[ZL_SEQ, column] & _ADMIT_SEQ_MASK) << _ADMIT_COLUMN_BITS
        ext_set(conns, slot, X_ADMIT, (column + 1) | seq_bits)
        zone_limits[ZL_COUNT, column] += 1
    stats[ST_CREATED] += 1
    return slot


@njit
def sweep_expired(ct, now_ms):
    """Remove every connection expired at ``now_ms``; returns how many, and the earliest
    expiration among the connections left (INT64 max when none is left)."""
    return sweep_rows(ct, now_ms, 0, ct.conns.shape[0])


@njit
def sweep_rows(ct, now_ms, lo, hi):
    """:func:`sweep_expired` over rows ``lo`` to ``hi - 1`` only (a step of an incremental
    sweep: Conntrack.sweep_some)."""
    conns = ct.conns
    removed = 0
    earliest = INT64_MAX
    for slot in range(lo, min(hi, conns.shape[0])):
        if conns[slot, C_USED] == ROW_CONN:
            when = expiration(conns, slot)
            if now_ms >= when:
                delete_conn(ct, slot)
                removed += 1
            elif when < earliest:
                earliest = when
    return removed, earliest


@njit
def flush_zone(ct, zone):
    """Remove every connection of ``zone`` (all zones when zone < 0); returns how many."""
    conns = ct.conns
    removed = 0
    for slot in range(conns.shape[0]):
        if conns[slot, C_USED] == ROW_CONN and (zone < 0 or conns[slot, C_ZONE] == zone):
            delete_conn(ct, slot)
            removed += 1
    return removed
