"""Open-addressing hash index over the connection rows, and the conn slot allocator.

What: the storage half of the connection tracker. ``conns[cap, CONN_WIDTH]`` (uint32 words) holds one row per
connection (layout.py); ``index[nbuckets]`` maps a lookup tuple to a connection *handle*
``slot * 2 + reply``; ``free_slots`` is a stack of free rows; ``stats`` (an int64 vector, the
``ST_*`` columns below) holds the live count, the free-stack top and the named counters, so a
jitted kernel can update everything through plain arrays.

Design:
- A lookup tuple is a small int64 vector ``tup[TUP_WIDTH]``: zone, dl_type, proto, source and
  destination address (4 words each, IPv4 in the last) and two *endpoint words*. For TCP, UDP
  and other protocols the endpoint words are the ports (0 for protocols without ports); for
  ICMP/ICMPv6 they are ``id << 16 | type << 8 | code`` of each endpoint, so one comparison
  covers OVS's ``struct ct_endpoint`` union (port, or id + type + code).
- The index hash (:func:`conn_hash`) is symmetric: a tuple and its reverse hash alike. A
  connection whose reply tuple is its reversed original (one without an extension row:
  IPv4 TCP/UDP/other, no NAT) has one entry, its original tuple's, which finds it from
  either side; one with an extension row has two (original, reply). The lookup tells the
  direction by comparing the row (handle ``slot*2`` original, ``slot*2+1`` reply).
- ctaccel.hashtable's open addressing, packed layout: linear probing; each bucket is one
  int64, ``hash << 32 | ref + 1`` (0 = empty; the hash has 31 bits), eight to a cache
  line, so probing compares hashes before touching the connection row, and deletion can
  shift later entries back without recomputing hashes (backward-shift deletion: no
  tombstones, ever). This module gives it the hash and the comparison of a tuple with a
  connection's row; insertion and deletion are hashtable's, the lookup loop is written out
  here (see :func:`index_lookup`).
- The index has at least two buckets per row (load factor <= 0.5 when every row is in use:
  a row holds one entry's connection, or half of one with two). Growth is Python-side: :func:`grow_tables` gives a longer view of the row store
  (:func:`row_store`: rows never move, untouched ones cost no memory), and a bigger index
  filled from the old one's hashes; the kernels never allocate.

Invariants:
- ``stats[ST_N_CONNS]`` equals the number of rows with ``C_USED == 1`` and
  ``stats[ST_FREE_TOP]`` the number of free rows; ``free_slots[:ST_FREE_TOP]`` lists them.
- A connection has one index entry, two when it has an extension row.
- ``C_GENERATION`` changes on every allocation and every release of a row.
- The number of buckets is a power of two.
"""

from __future__ import annotations

import numpy as np

from ctaccel.arrays import aligned_zeros, prefaulted_zeros
from ctaccel.conntrack.layout import (
    C_DL_TYPE,
    C_DPORT,
    C_DST4,
    C_EXT,
    C_GENERATION,
    C_PROTO,
    C_SPORT,
    C_SRC4,
    C_USED,
    C_ZONE,
    CONN_DTYPE,
    CONN_WIDTH,
    ROW_CONN,
    ROW_EXT,
    ROW_FREE,
    X_DST,
    X_ICMP_CODE,
    X_ICMP_TYPE,
    X_OWNER,
    X_R_DPORT,
    X_R_DST,
    X_R_SPORT,
    X_R_SRC,
    X_SRC,
    addr_word,
    ext_get,
    ext_row,
    port,
)
from ctaccel.hashtable import packed_add, packed_ref, packed_remove, slots_for
from ctaccel.jit import njit

# --- lookup tuple columns -----------------------------------------------------------------
T_ZONE = 0
T_DL_TYPE = 1
T_PROTO = 2
T_SRC = 3  # 4 words
T_DST = 7  # 4 words
T_SWORD = 11  # source endpoint word (port, or ICMP id<<16 | type<<8 | code)
T_DWORD = 12  # destination endpoint word
TUP_WIDTH = 13
# ct_execute's scratch: the packet's tuple, a reply tuple, then the FTP helper's words
# (ftp.py S_*): kernels linked apart allocate nothing
CT_SCRATCH_WIDTH = 2 * TUP_WIDTH + 96

# --- stats vector -------------------------------------------------------------------------
ST_N_CONNS = 0  # rows in use
ST_FREE_TOP = 1  # free rows on the stack
ST_MAX_CONNS = 2  # global connection limit (OVS n_conn_limit)
ST_NEXT_SEQ = 3  # creation sequence number for C_SEQ
# named counters (incremented by the kernels; names in COUNTER_NAMES)
ST_INVALID_KEY = 4  # key extraction failed (bad header, checksum, fragment, port 0, ...)
ST_INVALID_NEW = 5  # no connection and the packet cannot start one (valid_new failed)
ST_INVALID_UPDATE = 6  # the L4 tracker rejected the packet on an existing connection
ST_RELATED_UNMATCHED = 7  # ICMP error whose quoted packet matches no connection
ST_INVALID_PREMARKED = 8  # packet arrived already marked invalid (fragment reassembly)
ST_REFUSED_ZONE_LIMIT = 9  # commit refused: the zone limit is reached
ST_REFUSED_MAX_CONNS = 10  # commit refused: the global maximum is reached
ST_REFUSED_NO_ROOM = 11  # commit refused: no free row (the caller did not grow the table)
ST_CREATED = 12  # connections committed
ST_EXPIRED_AT_LOOKUP = 13  # expired connections removed when a lookup found them
ST_FORCE_DELETED = 14  # connections deleted by ct(force) seen in the reply direction
ST_REPLACED = 15  # connections ended by the tracker to start a new one (port reuse)
ST_CACHED_HITS = 16  # ct() served from the packet's cached connection
ST_SWEPT = 17  # expired connections removed by sweep()
ST_FLUSHED = 18  # connections removed by flush()
ST_SWEEP_DUE = 19  # nothing expires before this packet time (commit_conn sweeps; 0: unknown)
ST_NAT_EXHAUSTED = 20  # commit refused: NAT found no free tuple in its range
ST_LAST_CONN = 21  # the connection handle the last ct_execute resolved to (-1: none), even
#                    when it gives the packet no cached handle (after nat): the fast path's trace
ST_FRAME_LEN = 22  # the frame's length after the last ct_execute (an FTP rewrite changes it)
# ALG expectations (alg.py): rows allocated (in the index or kept for their data
# connections), rows in the index, the free chain's head (row + 1), rows ever used
ST_EXP_USED = 23
ST_EXP_LIVE = 24
ST_EXP_FREE = 25
ST_EXP_HWM = 26
ST_EXP_CREATED = 27  # expectations created (FTP PORT/EPRT/227/229, TFTP requests)
ST_EXP_REFUSED = 28  # an expectation dropped: no free row (the caller did not reserve)
ST_ALG_INVALID = 29  # FTP commands OVS calls malformed (the packet becomes +inv)
ST_ALG_REWRITES = 30  # FTP commands rewritten for NAT
ST_ALG_NO_ROOM = 31  # rewrites skipped: the frame had no room to grow (OVS: MTU)
ST_LAST_ALG = 32  # the helper (layout ALG_FTP/ALG_TFTP) of the last ct_execute's connection
ST_SWEEP_AT = 33  # the packet time of commit_conn's last sweep (ST_SWEEP_DUE holds from it on)
ST_WIDTH = 40

COUNTER_NAMES = (
    (ST_INVALID_KEY, "invalid_key"),
    (ST_INVALID_NEW, "invalid_new"),
    (ST_INVALID_UPDATE, "invalid_update"),
    (ST_RELATED_UNMATCHED, "related_unmatched"),
    (ST_INVALID_PREMARKED, "invalid_premarked"),
    (ST_REFUSED_ZONE_LIMIT, "commit_refused_zone_limit"),
    (ST_REFUSED_MAX_CONNS, "commit_refused_max_conns"),
    (ST_REFUSED_NO_ROOM, "commit_refused_no_room"),
    (ST_CREATED, "created"),
    (ST_EXPIRED_AT_LOOKUP, "expired_at_lookup"),
    (ST_FORCE_DELETED, "force_deleted"),
    (ST_REPLACED, "replaced"),
    (ST_CACHED_HITS, "cached_conn_hits"),
    (ST_SWEPT, "swept"),
    (ST_FLUSHED, "flushed"),
    (ST_NAT_EXHAUSTED, "nat_exhausted"),
    (ST_EXP_CREATED, "alg_expectations"),
    (ST_EXP_REFUSED, "alg_expectations_refused"),
    (ST_ALG_INVALID, "alg_invalid"),
    (ST_ALG_REWRITES, "alg_rewrites"),
    (ST_ALG_NO_ROOM, "alg_rewrite_no_room"),
)

_M32 = 0xFFFFFFFF
# Multiplier below 2**27: a product with a 32-bit value stays below 2**59. Signed overflow
# must never happen: numba emits no-signed-wrap multiplies, and LLVM then drops masks.
_MUL = 0x045D9F3B
BUCKETS_PER_ROW = (
    2  # a row holds a connection (one entry) or half of one with an extension row (two)
)

ETH_IP = 0x0800
ETH_IPV6 = 0x86DD


@njit(forceinline=True)
def is_icmp_key(dl_type, proto):
    """True when the tuple's endpoints are ICMP (id, type, code) rather than ports."""
    return (dl_type == ETH_IP and proto == 1) or (dl_type == ETH_IPV6 and proto == 58)


@njit(forceinline=True)
def reverse_icmp_type(dl_type, icmp_type):
    """The type of the other direction of an ICMP query (echo request <-> reply, ...)."""
    if dl_type == ETH_IPV6:
        if icmp_type == 128:
            return 129
        if icmp_type == 129:
            return 128
        return icmp_type
    if icmp_type == 8:
        return 0
    if icmp_type == 0:
        return 8
    if icmp_type == 13:
        return 14
    if icmp_type == 14:
        return 13
    if icmp_type == 15:
        return 16
    if icmp_type == 16:
        return 15
    return icmp_type


@njit(forceinline=True)
def _mix(h, v):
    """Fold one word (< 2**48) into a 32-bit state without any overflow."""
    v = (v ^ (v >> 32)) & _M32
    h = ((h ^ v) * _MUL) & _M32
    return h ^ (h >> 16)


_TUPLE_SEED = 0x2545F491


@njit(forceinline=True)
def tuple_hash(tup):
    """32-bit hash of a lookup tuple (identical under jit and plain Python)."""
    h = _TUPLE_SEED
    for i in range(TUP_WIDTH):
        h = _mix(h, tup[i])
    return _tuple_finish(h)


@njit(forceinline=True)
def _tuple_finish(h):
    h = ((h ^ (h >> 15)) * _MUL) & _M32
    return (h ^ (h >> 13)) & 0x7FFFFFFF  # 31 bits: the packed index keeps it beside the handle


@njit(forceinline=True)
def row_endpoint_words(conns, slot, reply):
    """(source word, destination word) of a connection's original or reply tuple."""
    dl_type = np.int64(conns[slot, C_DL_TYPE])
    proto = np.int64(conns[slot, C_PROTO])
    sport = port(conns, slot, reply, 0)
    dport = port(conns, slot, reply, 1)
    if not is_icmp_key(dl_type, proto):
        return sport, dport
    t = ext_get(conns, slot, X_ICMP_TYPE)
    code = ext_get(conns, slot, X_ICMP_CODE)
    rt = reverse_icmp_type(dl_type, t)
    if reply == 0:
        return (sport << 16) | (t << 8) | code, (dport << 16) | (rt << 8) | code
    return (sport << 16) | (rt << 8) | code, (dport << 16) | (t << 8) | code


@njit(forceinline=True)
def row_tuple(conns, slot, reply, tup):
    """Fill ``tup`` with a connection's original (reply=0) or reply (reply=1) tuple."""
    tup[T_ZONE] = conns[slot, C_ZONE]
    tup[T_DL_TYPE] = conns[slot, C_DL_TYPE]
    tup[T_PROTO] = conns[slot, C_PROTO]
    src = X_SRC if reply == 0 else X_R_SRC
    dst = X_DST if reply == 0 else X_R_DST
    for i in range(4):
        tup[T_SRC + i] = addr_word(conns, slot, src, i)
        tup[T_DST + i] = addr_word(conns, slot, dst, i)
    sw, dw = row_endpoint_words(conns, slot, reply)
    tup[T_SWORD] = sw
    tup[T_DWORD] = dw


_SIDE_SEED = 0x6C8E9CF5


@njit(forceinline=True)
def _side_hash(a0, a1, a2, a3, word):
    """32-bit hash of one endpoint of a tuple (address words and endpoint word)."""
    h = _mix(_mix(_mix(_mix(_SIDE_SEED, a0), a1), a2), a3)
    return _mix(h, word)


@njit(forceinline=True)
def _conn_finish(zone, dl_type, proto, side_a, side_b):
    h = _mix(_mix(_mix(_TUPLE_SEED, zone), dl_type), proto)
    return _tuple_finish(_mix(h, (side_a + side_b) & _M32))


@njit(forceinline=True)
def conn_hash(tup):
    """The connection index's hash of a lookup tuple: its two endpoints' hashes added, so a
    tuple and its reverse hash alike and one index entry finds a connection whose reply
    tuple is its reversed original from either side (identical under jit and plain Python)."""
    a = _side_hash(tup[T_SRC], tup[T_SRC + 1], tup[T_SRC + 2], tup[T_SRC + 3], tup[T_SWORD])
    b = _side_hash(tup[T_DST], tup[T_DST + 1], tup[T_DST + 2], tup[T_DST + 3], tup[T_DWORD])
    return _conn_finish(tup[T_ZONE], tup[T_DL_TYPE], tup[T_PROTO], a, b)


@njit(forceinline=True)
def row_conn_hash(conns, slot, reply):
    """``conn_hash`` of the connection's original (reply=0) or reply tuple, from its row."""
    src = X_SRC if reply == 0 else X_R_SRC
    dst = X_DST if reply == 0 else X_R_DST
    sw, dw = row_endpoint_words(conns, slot, reply)
    a = _side_hash(addr_word(conns, slot, src, 0), addr_word(conns, slot, src, 1),
                   addr_word(conns, slot, src, 2), addr_word(conns, slot, src, 3), sw)  # fmt: skip
    b = _side_hash(addr_word(conns, slot, dst, 0), addr_word(conns, slot, dst, 1),
                   addr_word(conns, slot, dst, 2), addr_word(conns, slot, dst, 3), dw)  # fmt: skip
    return _conn_finish(np.int64(conns[slot, C_ZONE]), np.int64(conns[slot, C_DL_TYPE]),
                        np.int64(conns[slot, C_PROTO]), a, b)  # fmt: skip


@njit(forceinline=True)
def row_matches(conns, slot, reply, tup):
    """True when the connection's tuple in direction ``reply`` equals ``tup``."""
    if (
        conns[slot, C_ZONE] != tup[T_ZONE]
        or conns[slot, C_PROTO] != tup[T_PROTO]
        or conns[slot, C_DL_TYPE] != tup[T_DL_TYPE]
    ):
        return False
    e = ext_row(conns, slot)
    if e < 0:  # IPv4, the reply tuple the reversed original: the words are in the row
        if tup[T_SRC] != 0 or tup[T_SRC + 1] != 0 or tup[T_SRC + 2] != 0:
            return False
        if tup[T_DST] != 0 or tup[T_DST + 1] != 0 or tup[T_DST + 2] != 0:
            return False
        src4 = conns[slot, C_DST4 if reply else C_SRC4]
        dst4 = conns[slot, C_SRC4 if reply else C_DST4]
        if src4 != tup[T_SRC + 3] or dst4 != tup[T_DST + 3]:
            return False
    else:
        src = X_SRC if reply == 0 else X_R_SRC
        dst = X_DST if reply == 0 else X_R_DST
        for i in range(4):
            if conns[e, src + i] != tup[T_SRC + i] or conns[e, dst + i] != tup[T_DST + i]:
                return False
    sw, dw = row_endpoint_words(conns, slot, reply)
    return sw == tup[T_SWORD] and dw == tup[T_DWORD]


@njit(forceinline=True)
def index_lookup(conns, index, tup, h):
    """Handle (``slot*2 + reply``) of the connection with tuple ``tup`` (``conn_hash`` ``h``),
    or -1.

    An entry's reference is ``slot * 2`` for a connection's original tuple, which for a
    connection without an extension row also stands for its reply tuple (the reversed
    original: the same hash), and ``slot * 2 + 1`` for the reply tuple of one with an
    extension row (NAT, IPv6, ICMP...). Expiry is not checked here: the caller decides what
    an expired connection means. The one probe loop not taken from ctaccel.hashtable: through
    its ``find`` (a matcher reading ``conns`` from the table's arguments) numba kept
    reference counting around the lookup, ~1.5x its time per packet (conntrack's hottest
    loop), so it is written out here, the same probe sequence over the same index layout.
    """
    mask = index.shape[0] - 1
    b = h & mask
    while True:
        word = index[b]
        if word == 0:
            return -1
        if word >> 32 == h:
            ref = packed_ref(word)
            slot = ref >> 1
            # OVS compares the original key first: a connection whose two tuples are equal
            # (src == dst, sport == dport) reports the original direction
            if row_matches(conns, slot, 0, tup):
                return slot * 2
            if (ref & 1 or conns[slot, C_EXT] == 0) and row_matches(conns, slot, 1, tup):
                return slot * 2 + 1
        b = (b + 1) & mask


@njit(forceinline=True)
def reverse_into(tup, rtup):
    """``rtup`` := ``tup`` seen from the other side (addresses and endpoint words swapped)."""
    rtup[T_ZONE] = tup[T_ZONE]
    rtup[T_DL_TYPE] = tup[T_DL_TYPE]
    rtup[T_PROTO] = tup[T_PROTO]
    for i in range(4):
        rtup[T_SRC + i] = tup[T_DST + i]
        rtup[T_DST + i] = tup[T_SRC + i]
    rtup[T_SWORD] = tup[T_DWORD]
    rtup[T_DWORD] = tup[T_SWORD]


@njit(_nrt=True)  # allocates the reply tuple
def conn_alloc(conns, index, free_slots, stats, tup, now_ms):
    """Take a free row, store ``tup`` as its original tuple (reply = reversed) and index both.

    Returns the slot, or -1 when no row is free. Mutable columns are zeroed; the caller's
    tracker initialises state and expiration.
    """
    rtup = np.empty(TUP_WIDTH, np.int64)
    reverse_into(tup, rtup)
    return conn_alloc_reply(conns, index, free_slots, stats, tup, rtup, now_ms, False)


@njit(forceinline=True)
def _take_row(conns, free_slots, stats, kind):
    """Pop a free row, zeroed, marked ``kind``, its generation bumped (the caller checked
    that the stack is not empty)."""
    top = stats[ST_FREE_TOP] - 1
    slot = free_slots[top]
    stats[ST_FREE_TOP] = top
    generation = (np.int64(conns[slot, C_GENERATION]) + 1) & 0xFFFFFFFF
    for c in range(CONN_WIDTH):
        conns[slot, c] = 0
    conns[slot, C_GENERATION] = generation
    conns[slot, C_USED] = kind
    return slot


@njit(forceinline=True)
def _give_row(conns, free_slots, stats, slot):
    conns[slot, C_USED] = ROW_FREE
    conns[slot, C_GENERATION] = (np.int64(conns[slot, C_GENERATION]) + 1) & 0xFFFFFFFF
    free_slots[stats[ST_FREE_TOP]] = slot
    stats[ST_FREE_TOP] += 1


@njit(forceinline=True)
def needs_ext(tup, rtup):
    """True when a connection with these tuples cannot live in a row alone: IPv6, ICMP, or
    a reply tuple that is not the reversed original (NAT)."""
    if tup[T_DL_TYPE] != ETH_IP or is_icmp_key(tup[T_DL_TYPE], tup[T_PROTO]):
        return True
    for i in range(3):
        if tup[T_SRC + i] != 0 or tup[T_DST + i] != 0:
            return True
    return (rtup[T_SRC + 3] != tup[T_DST + 3] or rtup[T_DST + 3] != tup[T_SRC + 3]
            or rtup[T_SWORD] != tup[T_DWORD] or rtup[T_DWORD] != tup[T_SWORD])  # fmt: skip


@njit
def conn_alloc_reply(conns, index, free_slots, stats, tup, rtup, now_ms, want_ext):
    """``conn_alloc`` with the reply tuple given (NAT chose it): both tuples stored, indexed.
    The connection gets an extension row (layout.py) when it needs one or ``want_ext``; -1
    when the rows it needs are not free."""
    ext = want_ext or needs_ext(tup, rtup)
    if stats[ST_FREE_TOP] < (2 if ext else 1):
        return -1
    slot = _take_row(conns, free_slots, stats, ROW_CONN)
    conns[slot, C_ZONE] = tup[T_ZONE]
    conns[slot, C_DL_TYPE] = tup[T_DL_TYPE]
    conns[slot, C_PROTO] = tup[T_PROTO]
    conns[slot, C_SRC4] = tup[T_SRC + 3]
    conns[slot, C_DST4] = tup[T_DST + 3]
    icmp = is_icmp_key(tup[T_DL_TYPE], tup[T_PROTO])
    shift = 16 if icmp else 0
    conns[slot, C_SPORT] = tup[T_SWORD] >> shift
    conns[slot, C_DPORT] = tup[T_DWORD] >> shift
    if ext:
        e = _take_row(conns, free_slots, stats, ROW_EXT)
        conns[slot, C_EXT] = e + 1
        conns[e, X_OWNER] = slot
        for i in range(4):
            conns[e, X_SRC + i] = tup[T_SRC + i]
            conns[e, X_DST + i] = tup[T_DST + i]
            conns[e, X_R_SRC + i] = rtup[T_SRC + i]
            conns[e, X_R_DST + i] = rtup[T_DST + i]
        conns[e, X_R_SPORT] = rtup[T_SWORD] >> shift
        conns[e, X_R_DPORT] = rtup[T_DWORD] >> shift
        if icmp:
            conns[e, X_ICMP_TYPE] = (tup[T_SWORD] >> 8) & 0xFF
            conns[e, X_ICMP_CODE] = tup[T_SWORD] & 0xFF
    packed_add(index, slot * 2, conn_hash(tup))
    if ext:
        packed_add(index, slot * 2 + 1, conn_hash(rtup))
    stats[ST_N_CONNS] += 1
    return slot


@njit
def conn_release(conns, index, free_slots, stats, slot):
    """Remove a connection from the index and return its row to the free stack."""
    e = ext_row(conns, slot)
    packed_remove(index, slot * 2, row_conn_hash(conns, slot, 0))
    if e >= 0:
        packed_remove(index, slot * 2 + 1, row_conn_hash(conns, slot, 1))
        _give_row(conns, free_slots, stats, e)
    _give_row(conns, free_slots, stats, slot)
    stats[ST_N_CONNS] -= 1


@njit
def rebuild_index(conns, index, free_slots, stats):
    """Re-index every connection and rebuild the free stack (after growth or a copy)."""
    index[:] = 0
    n_used = 0
    top = 0
    for slot in range(conns.shape[0] - 1, -1, -1):
        if conns[slot, C_USED] == ROW_CONN:
            n_used += 1
            packed_add(index, slot * 2, row_conn_hash(conns, slot, 0))
            if conns[slot, C_EXT] != 0:
                packed_add(index, slot * 2 + 1, row_conn_hash(conns, slot, 1))
        elif conns[slot, C_USED] == ROW_FREE:
            free_slots[top] = slot
            top += 1
    stats[ST_N_CONNS] = n_used
    stats[ST_FREE_TOP] = top


def index_buckets_for(capacity: int) -> int:
    """Power-of-two bucket count with at least BUCKETS_PER_ROW buckets per row."""
    return slots_for(capacity, BUCKETS_PER_ROW)


# The most rows a row store reserves (address space only: 2 GiB of it at 16M rows); a table
# allowed more connections copies its rows when it grows past them.
MAX_STORE_ROWS = 1 << 24


def row_limit(max_conns: int) -> int:
    """The most rows ``max_conns`` connections can take (each may have an extension row)."""
    return 2 * int(max_conns)


def row_store(max_conns: int, capacity: int) -> np.ndarray | None:
    """Zeroed rows for every connection the table may ever hold (``row_limit(max_conns)``,
    at most MAX_STORE_ROWS), as address space: numpy's zeroed allocation leaves untouched pages
    unmapped, so the store costs memory only for rows in use, and a table that grows takes a
    longer view of it instead of copying its rows. None when the system refuses the
    reservation (the table then copies on growth)."""
    rows = max(int(capacity), min(row_limit(max_conns), MAX_STORE_ROWS), 1)
    try:
        return aligned_zeros((rows, CONN_WIDTH), CONN_DTYPE)
    except MemoryError:
        return None


def new_tables(capacity: int, max_conns: int, rows: np.ndarray | None = None):
    """Fresh (conns, index, free_slots, stats) for ``capacity`` rows (the first rows of the
    store ``rows`` when given, touched now: the hot path fills them)."""
    capacity = max(int(capacity), 1)
    if rows is not None and rows.shape[0] >= capacity:
        conns = rows[:capacity]
        conns.fill(0)
    else:
        conns = prefaulted_zeros((capacity, CONN_WIDTH), CONN_DTYPE)
    index = prefaulted_zeros(index_buckets_for(capacity))
    free_slots = prefaulted_zeros(capacity, np.int32)
    stats = prefaulted_zeros(ST_WIDTH)
    stats[ST_MAX_CONNS] = max_conns
    rebuild_index(conns, index, free_slots, stats)
    return conns, index, free_slots, stats


@njit
def reindex(old_index, index):
    """Put every entry of ``old_index`` into the empty, larger ``index`` (their hashes are
    stored: no row is read)."""
    for b in range(old_index.shape[0]):
        word = old_index[b]
        if word != 0:
            packed_add(index, packed_ref(word), word >> 32)


def grow_tables(conns, index, free_slots, stats, new_capacity: int, rows=None):
    """Bigger (conns, index, free_slots) holding the same connections in the same rows.

    With a row store (``rows``, :func:`row_store`) long enough, the new rows are a longer
    view of it: nothing is copied and their pages are touched as connections take them.
    The index is rebuilt from the old one's stored hashes, and the free stack is what
    :func:`rebuild_index` would make (the new rows, then the old free ones, highest first:
    the lowest free row is taken first). The pause is the new index: ~0.3 s at a million
    connections here, against ~1.4 s when every row was copied into fresh memory."""
    old = conns.shape[0]
    if new_capacity <= old:
        raise ValueError("grow_tables needs a larger capacity")
    if rows is not None and rows.shape[0] >= new_capacity and np.may_share_memory(conns, rows):
        new_conns = rows[:new_capacity]
    else:
        new_conns = prefaulted_zeros((new_capacity, CONN_WIDTH), CONN_DTYPE)
        new_conns[:old] = conns
    new_index = aligned_zeros(index_buckets_for(new_capacity))
    reindex(index, new_index)
    top = int(stats[ST_FREE_TOP])
    old_free = np.sort(free_slots[:top])[::-1]
    new_free = aligned_zeros(new_capacity, np.int32)
    added = new_capacity - old
    new_free[:added] = np.arange(new_capacity - 1, old - 1, -1)
    new_free[added : added + top] = old_free
    stats[ST_FREE_TOP] = added + top
    return new_conns, new_index, new_free
