"""The ct action kernel: one packet through OVS's userspace connection tracker.

What: :func:`ct_execute` does for one packet what OVS 3.1's ``conntrack_execute`` /
``process_one`` (lib/conntrack.c) do: take the cached-connection shortcut when it applies,
extract the connection key from the frame (marking the packet invalid when OVS would), look
the key up (an expired connection is removed and treated as absent), let the L4 tracker
judge the packet, create a connection on commit, set ct_mark/ct_label, and write the
conntrack metadata into the flow key (``CT_STATE`` ... ``CT_TP_DST``). It returns the
packet's connection handle ``slot * 2 + reply`` (or -1), OVS's ``pkt->md.conn``.

Design: every table is a numpy array passed in (table.py has the layouts): ``conns``,
``index``, ``free_slots``, ``stats`` (counters, limits), ``zone_limits[3, 65537]`` (row
``ZL_LIMIT``: limit or -1 when the zone has no entry, ``ZL_COUNT``: connections admitted
under the entry, ``ZL_SEQ``: the entry's creation number; column 65536 is the default
entry). L4 trackers are picked by IP protocol as OVS's ``l4_protos[]``: TCP (tcp.py), ICMP
and ICMPv6 (icmp.py, chosen by protocol number alone), everything else other.py.
Zone limits follow OVS 3.1 exactly: a zone with its own entry counts its own connections; all
zones without one share the default entry's single count (OVS fixed that only in 3.5). A
connection remembers the entry that admitted it (``C_ADMIT``) and gives its count back when it
goes, unless that entry was deleted or re-created meanwhile.

Invariants:
- The kernel never raises on packet content and never allocates rows: when no row is free a
  commit is refused and counted (the Python wrapper grows the tables before that happens).
- After ``ct_execute`` the key's ``CT_STATE`` includes ``CS_TRACKED``.
- Result codes use this project's names (timeouts.py): ``CT_UPDATE_STILL_NEW`` = still new,
  ``CT_UPDATE_RESTART`` = end this connection and start a new one (OVS: CT_UPDATE_NEW).
"""

from __future__ import annotations

from ctaccel.conntrack.icmp import (
    ICMP_KEY_INVALID,
    ICMP_KEY_RELATED,
    be16,
    icmp_conn_update,
    icmp_extract,
    icmp_new_conn,
    icmp_valid_new,
)
from ctaccel.conntrack.layout import (
    C_ADMIT,
    C_CREATED_MS,
    C_DL_TYPE,
    C_DPORT,
    C_DST,
    C_EXPIRATION,
    C_ICMP_CODE,
    C_ICMP_TYPE,
    C_LABEL,
    C_MARK,
    C_NAT_FLAGS,
    C_PROTO,
    C_SEQ,
    C_SPORT,
    C_SRC,
    C_USED,
    C_ZONE,
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
    nat_packet,
    next_random,
    pick_addr,
    range_hash,
)
from ctaccel.conntrack.other import other_conn_update, other_new_conn
from ctaccel.conntrack.table import (
    ETH_IP,
    ETH_IPV6,
    ST_CACHED_HITS,
    ST_CREATED,
    ST_EXPIRED_AT_LOOKUP,
    ST_FORCE_DELETED,
    ST_INVALID_KEY,
    ST_INVALID_NEW,
    ST_INVALID_PREMARKED,
    ST_INVALID_UPDATE,
    ST_LAST_CONN,
    ST_LIMIT_SWEEP_MS,
    ST_MAX_CONNS,
    ST_N_CONNS,
    ST_NAT_EXHAUSTED,
    ST_NEXT_SEQ,
    ST_REFUSED_MAX_CONNS,
    ST_REFUSED_NO_ROOM,
    ST_REFUSED_ZONE_LIMIT,
    ST_RELATED_UNMATCHED,
    ST_REPLACED,
    ST_SWEPT,
    T_DL_TYPE,
    T_DST,
    T_DWORD,
    T_PROTO,
    T_SRC,
    T_SWORD,
    T_ZONE,
    TUP_WIDTH,
    conn_alloc_reply,
    conn_release,
    index_lookup,
    is_icmp_key,
    reverse_into,
    row_tuple,
    tuple_hash,
)
from ctaccel.conntrack.tcp import tcp_conn_update, tcp_new_conn, tcp_valid_new
from ctaccel.conntrack.timeouts import (
    CT_UPDATE_INVALID,
    CT_UPDATE_RESTART,
    CT_UPDATE_STILL_NEW,
    CT_UPDATE_VALID,
)
from ctaccel.jit import njit
from ctaccel.packet.key import (
    CS_DST_NAT,
    CS_ESTABLISHED,
    CS_INVALID,
    CS_NEW,
    CS_RELATED,
    CS_REPLY_DIR,
    CS_SRC_NAT,
    CS_TRACKED,
    CT_LABEL,
    CT_MARK,
    CT_NW_DST,
    CT_NW_PROTO,
    CT_NW_SRC,
    CT_STATE,
    CT_TP_DST,
    CT_TP_SRC,
    CT_ZONE,
    DL_TYPE,
    FRAG_ANY,
    L3_OFS,
    L4_LEN,
    L4_OFS,
    NW_DST,
    NW_FRAG,
    NW_PROTO,
    NW_SRC,
    PARSE_FLAGS,
    PF_L2_TRUNC,
    PF_L3_BAD,
    PF_L3_BAD_CSUM,
    PF_L3_TRUNC,
    PF_L4_BAD_CSUM,
)

# zone_limits rows and the default entry's column
ZL_LIMIT = 0
ZL_COUNT = 1
ZL_SEQ = 2
ZL_DEFAULT = 65536
ZL_COLUMNS = 65537

# The admitting zone-limit entry of a connection: 0 = none, else (column + 1) | seq << 17.
_ADMIT_COLUMN_BITS = 17

_NAT_BITS = CS_SRC_NAT | CS_DST_NAT
_L3_UNUSABLE = PF_L2_TRUNC | PF_L3_TRUNC | PF_L3_BAD | PF_L3_BAD_CSUM
_M32 = 0xFFFFFFFF

# extract_tuple results
KEY_INVALID = -1
KEY_PLAIN = 0
KEY_RELATED = 1


@njit
def extract_tuple(frame, key, zone, tup):
    """Fill ``tup`` with the packet's connection key; KEY_PLAIN, KEY_RELATED or KEY_INVALID.

    The invalid cases are OVS's conn_key_extract: not IP; IP header truncated, malformed or
    with a bad checksum; any fragment; TCP header shorter than 20 bytes or its data offset
    outside the segment; UDP length field outside [8, payload]; a bad TCP/UDP/ICMP checksum
    (a zero UDP-over-IPv4 checksum means none); port 0; ICMP rules in icmp.py.
    """
    dl_type = key[DL_TYPE]
    if dl_type != ETH_IP and dl_type != ETH_IPV6:
        return KEY_INVALID
    flags = key[PARSE_FLAGS]
    if flags & _L3_UNUSABLE or key[NW_FRAG] & FRAG_ANY:
        return KEY_INVALID
    l4_ofs = key[L4_OFS]
    if key[L3_OFS] < 0 or l4_ofs < 0:
        return KEY_INVALID
    l4_len = min(key[L4_LEN], frame.shape[0] - l4_ofs)
    if l4_len < 0:
        return KEY_INVALID
    proto = key[NW_PROTO]
    tup[T_ZONE] = zone
    tup[T_DL_TYPE] = dl_type
    tup[T_PROTO] = proto
    for i in range(4):
        tup[T_SRC + i] = key[NW_SRC + i]
        tup[T_DST + i] = key[NW_DST + i]
    tup[T_SWORD] = 0
    tup[T_DWORD] = 0
    if proto == 6:
        if l4_len < 20:
            return KEY_INVALID
        header_len = (int(frame[l4_ofs + 12]) >> 4) * 4
        if header_len < 20 or header_len > l4_len or flags & PF_L4_BAD_CSUM:
            return KEY_INVALID
    elif proto == 17:
        if l4_len < 8:
            return KEY_INVALID
        udp_len = be16(frame, l4_ofs + 4)
        if udp_len < 8 or udp_len > l4_len:
            return KEY_INVALID
        no_checksum = dl_type == ETH_IP and be16(frame, l4_ofs + 6) == 0
        if flags & PF_L4_BAD_CSUM and not no_checksum:
            return KEY_INVALID
    elif is_icmp_key(dl_type, proto):
        if flags & PF_L4_BAD_CSUM:
            return KEY_INVALID
        kind = icmp_extract(dl_type, frame, l4_ofs, l4_len, tup)
        if kind == ICMP_KEY_INVALID:
            return KEY_INVALID
        if kind == ICMP_KEY_RELATED:
            return KEY_RELATED
        return KEY_PLAIN
    else:
        return KEY_PLAIN  # other protocols: no ports, tracked by addresses alone
    sport = be16(frame, l4_ofs)
    dport = be16(frame, l4_ofs + 2)
    if sport == 0 or dport == 0:
        return KEY_INVALID
    tup[T_SWORD] = sport
    tup[T_DWORD] = dport
    return KEY_PLAIN


@njit
def delete_conn(conns, index, free_slots, stats, zone_limits, slot):
    """Remove a connection: give back its zone-limit count, unindex it, free its row."""
    admit = conns[slot, C_ADMIT]
    if admit != 0:
        column = (admit & ((1 << _ADMIT_COLUMN_BITS) - 1)) - 1
        seq = admit >> _ADMIT_COLUMN_BITS
        if zone_limits[ZL_LIMIT, column] >= 0 and zone_limits[ZL_SEQ, column] == seq:
            zone_limits[ZL_COUNT, column] -= 1
    conn_release(conns, index, free_slots, stats, slot)


@njit(forceinline=True)
def lookup_live(conns, index, free_slots, stats, zone_limits, tup, now_ms):
    """Handle of the live connection for ``tup`` or -1; an expired one is removed first."""
    handle = index_lookup(conns, index, tup, tuple_hash(tup))
    if handle < 0:
        return -1
    slot = handle >> 1
    if now_ms >= conns[slot, C_EXPIRATION]:
        delete_conn(conns, index, free_slots, stats, zone_limits, slot)
        stats[ST_EXPIRED_AT_LOOKUP] += 1
        return -1
    return handle


@njit(forceinline=True)
def _l4_valid_new(proto, frame, l4_ofs, l4_len):
    if proto == 6:
        return tcp_valid_new(frame, l4_ofs, l4_len)
    if proto == 1 or proto == 58:
        return icmp_valid_new(proto, frame, l4_ofs, l4_len)
    return True


@njit(forceinline=True)
def _l4_new_conn(conns, slot, proto, frame, l4_ofs, l4_len, now_ms, timeouts):
    if proto == 6:
        tcp_new_conn(conns, slot, frame, l4_ofs, l4_len, now_ms, timeouts)
    elif proto == 1 or proto == 58:
        icmp_new_conn(conns, slot, now_ms, timeouts)
    else:
        other_new_conn(conns, slot, now_ms, timeouts)


@njit(forceinline=True)
def _l4_update(conns, slot, reply, proto, frame, l4_ofs, l4_len, now_ms, timeouts):
    if proto == 6:
        return tcp_conn_update(conns, slot, reply, frame, l4_ofs, l4_len, now_ms, timeouts)
    if proto == 1 or proto == 58:
        return icmp_conn_update(conns, slot, reply, now_ms, timeouts)
    return other_conn_update(conns, slot, reply, now_ms, timeouts)


@njit(forceinline=True)
def _taken(conns, index, free_slots, stats, zone_limits, tup, now_ms):
    """True when a live connection has ``tup`` as either of its tuples (an expired one found
    on the way is removed, as OVS's lookups skip it)."""
    return lookup_live(conns, index, free_slots, stats, zone_limits, tup, now_ms) >= 0


@njit
def _unique_port(conns, index, free_slots, stats, zone_limits, rtup, col, curr, lo, hi, h,
                 now_ms):  # fmt: skip
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
            if not _taken(conns, index, free_slots, stats, zone_limits, rtup, now_ms):
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
def nat_choose(conns, index, free_slots, stats, zone_limits, tup, spec, now_ms, rtup):
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
        return not _taken(conns, index, free_slots, stats, zone_limits, rtup, now_ms)
    found = False
    if action & NAT_DST_PORT:
        found = _unique_port(conns, index, free_slots, stats, zone_limits, rtup, T_SWORD,
                             curr_d, lo_d, hi_d, h, now_ms)  # fmt: skip
    if not found:
        found = _unique_port(conns, index, free_slots, stats, zone_limits, rtup, T_DWORD,
                             curr_s, lo_s, hi_s, h, now_ms)  # fmt: skip
    return found


@njit
def commit_conn(
    conns, index, free_slots, stats, zone_limits, tup, frame, l4_ofs, l4_len, now_ms, timeouts,
    nat, rtup,
):  # fmt: skip
    """Create the connection for ``tup`` if the limits allow; its slot or -1 (counted).
    ``rtup`` is scratch for the reply tuple: the reversed ``tup``, or with a NAT spec
    (``nat[NS_ACTION] >= 0``) the one NAT chooses; when none is free no connection is
    created (counted as nat_exhausted)."""
    zone = tup[T_ZONE]
    column = -1
    if zone_limits[ZL_LIMIT, zone] >= 0:
        column = zone
    elif zone_limits[ZL_LIMIT, ZL_DEFAULT] >= 0:
        column = ZL_DEFAULT
    at_limit = column >= 0 and zone_limits[ZL_COUNT, column] >= zone_limits[ZL_LIMIT, column]
    if (at_limit or stats[ST_N_CONNS] >= stats[ST_MAX_CONNS]) and (
        stats[ST_LIMIT_SWEEP_MS] != now_ms + 1
    ):
        # Expired connections must not hold a place. OVS frees them from a timer-driven
        # sweeper, so when they stop counting depends on wall-clock luck; we free them here,
        # so the answer depends only on packet times (and not on when sweep() last ran).
        stats[ST_LIMIT_SWEEP_MS] = now_ms + 1
        stats[ST_SWEPT] += sweep_expired(conns, index, free_slots, stats, zone_limits, now_ms)
        at_limit = column >= 0 and zone_limits[ZL_COUNT, column] >= zone_limits[ZL_LIMIT, column]
    if at_limit:
        stats[ST_REFUSED_ZONE_LIMIT] += 1
        return -1
    if stats[ST_N_CONNS] >= stats[ST_MAX_CONNS]:
        stats[ST_REFUSED_MAX_CONNS] += 1
        return -1
    if nat[NS_ACTION] < 0:
        reverse_into(tup, rtup)
    elif not nat_choose(conns, index, free_slots, stats, zone_limits, tup, nat, now_ms, rtup):
        stats[ST_NAT_EXHAUSTED] += 1
        return -1
    slot = conn_alloc_reply(conns, index, free_slots, stats, tup, rtup, now_ms)
    if slot < 0:
        stats[ST_REFUSED_NO_ROOM] += 1
        return -1
    if nat[NS_ACTION] >= 0:
        conns[slot, C_NAT_FLAGS] = nat[NS_ACTION]
    _l4_new_conn(conns, slot, tup[T_PROTO], frame, l4_ofs, l4_len, now_ms, timeouts)
    conns[slot, C_CREATED_MS] = now_ms
    conns[slot, C_SEQ] = stats[ST_NEXT_SEQ]
    stats[ST_NEXT_SEQ] += 1
    if column >= 0:
        conns[slot, C_ADMIT] = (column + 1) | (zone_limits[ZL_SEQ, column] << _ADMIT_COLUMN_BITS)
        zone_limits[ZL_COUNT, column] += 1
    stats[ST_CREATED] += 1
    return slot


@njit(forceinline=True)
def _write_md_none(key, zone):
    """OVS write_ct_md without a connection or key: tracked, zeros everywhere else."""
    key[CT_STATE] |= CS_TRACKED
    key[CT_ZONE] = zone
    key[CT_MARK] = 0
    for i in range(4):
        key[CT_LABEL + i] = 0
        key[CT_NW_SRC + i] = 0
        key[CT_NW_DST + i] = 0
    key[CT_NW_PROTO] = 0
    key[CT_TP_SRC] = 0
    key[CT_TP_DST] = 0


@njit(forceinline=True)
def _write_md(key, zone, conns, slot, tup):
    """OVS write_ct_md: mark/label of the connection, original tuple of it (or of tup)."""
    key[CT_STATE] |= CS_TRACKED
    key[CT_ZONE] = zone
    if slot >= 0:
        key[CT_MARK] = conns[slot, C_MARK]
        for i in range(4):
            key[CT_LABEL + i] = conns[slot, C_LABEL + i]
            key[CT_NW_SRC + i] = conns[slot, C_SRC + i]
            key[CT_NW_DST + i] = conns[slot, C_DST + i]
        key[CT_NW_PROTO] = conns[slot, C_PROTO]
        if is_icmp_key(conns[slot, C_DL_TYPE], conns[slot, C_PROTO]):
            key[CT_TP_SRC] = conns[slot, C_ICMP_TYPE]
            key[CT_TP_DST] = conns[slot, C_ICMP_CODE]
        else:
            key[CT_TP_SRC] = conns[slot, C_SPORT]
            key[CT_TP_DST] = conns[slot, C_DPORT]
        return
    key[CT_MARK] = 0
    for i in range(4):
        key[CT_LABEL + i] = 0
        key[CT_NW_SRC + i] = tup[T_SRC + i]
        key[CT_NW_DST + i] = tup[T_DST + i]
    key[CT_NW_PROTO] = tup[T_PROTO]
    if is_icmp_key(tup[T_DL_TYPE], tup[T_PROTO]):
        key[CT_TP_SRC] = (tup[T_SWORD] >> 8) & 0xFF
        key[CT_TP_DST] = tup[T_SWORD] & 0xFF
    else:
        key[CT_TP_SRC] = tup[T_SWORD]
        key[CT_TP_DST] = tup[T_DWORD]


@njit(forceinline=True)
def _apply_mark_label(key, conns, slot, set_mark, mark, mark_mask, set_label, label4, label_mask4):
    """OVS set_mark/set_label: new = value | (current & ~mask), stored in conn and packet."""
    if set_mark:
        m = mark_mask & _M32
        value = (mark & m) | (conns[slot, C_MARK] & (~m & _M32))
        conns[slot, C_MARK] = value
        key[CT_MARK] = value
    if set_label:
        for i in range(4):
            m = label_mask4[i] & _M32
            value = (label4[i] & m) | (conns[slot, C_LABEL + i] & (~m & _M32))
            conns[slot, C_LABEL + i] = value
            key[CT_LABEL + i] = value


@njit(forceinline=True)
def _handle_nat(conns, slot, zone, reply, related, frame, key, state):
    """OVS handle_nat: translate by the connection unless this zone already did."""
    if conns[slot, C_NAT_FLAGS] != 0 and (not (state & _NAT_BITS) or key[CT_ZONE] != zone):
        state = nat_packet(conns, slot, reply, related, frame, key, state & ~_NAT_BITS)
    return state


@njit
def ct_execute(
    conns,
    index,
    free_slots,
    stats,
    zone_limits,
    frame,
    key,
    zone,
    commit,
    force,
    set_mark,
    mark,
    mark_mask,
    set_label,
    label4,
    label_mask4,
    now_ms,
    timeouts,
    cached_conn,
    nat,
    tups,
):
    """Run ``ct(zone, [commit], [force], [exec(set ct_mark/ct_label)], [nat])`` on one packet.

    ``key`` is the packet's flow key as parse_frame left it plus its current ct fields;
    ``cached_conn`` is the handle a previous ct() of this packet returned (-1 if none);
    ``nat`` a NAT spec row (nat.py; ``NS_ACTION`` -1: no nat). With nat the frame and the
    key's addresses and ports may be rewritten in place. ``tups`` is scratch of
    ``2 * TUP_WIDTH`` words (the packet's tuple, then a reply tuple): kernels never allocate.
    Returns the handle to keep with the packet: -1 after a ct(nat) (OVS forgets it, as any
    header rewrite does) and for ICMP errors (a later ct finds the same answer by lookup).
    """
    has_nat = nat[NS_ACTION] >= 0
    if key[CT_STATE] == CS_INVALID:
        # Marked invalid before conntrack (fragment reassembly): OVS only writes metadata.
        stats[ST_INVALID_PREMARKED] += 1
        stats[ST_LAST_CONN] = -1
        _write_md_none(key, zone)
        return cached_conn
    if cached_conn >= 0 and not force:
        slot = cached_conn >> 1
        if slot < conns.shape[0] and conns[slot, C_USED] != 0 and conns[slot, C_ZONE] == zone:
            # OVS process_one_fast: same zone, the packet already knows its connection.
            stats[ST_CACHED_HITS] += 1
            if has_nat:
                key[CT_STATE] = _handle_nat(
                    conns, slot, zone, cached_conn & 1, False, frame, key, key[CT_STATE]
                )
            key[CT_ZONE] = zone
            key[CT_MARK] = conns[slot, C_MARK]
            for i in range(4):
                key[CT_LABEL + i] = conns[slot, C_LABEL + i]
            _apply_mark_label(
                key, conns, slot, set_mark, mark, mark_mask, set_label, label4, label_mask4
            )
            stats[ST_LAST_CONN] = cached_conn
            return -1 if has_nat else cached_conn
    tup = tups[:TUP_WIDTH]
    kind = extract_tuple(frame, key, zone, tup)
    if kind == KEY_INVALID:
        stats[ST_INVALID_KEY] += 1
        stats[ST_LAST_CONN] = -1
        key[CT_STATE] = CS_INVALID
        _write_md_none(key, zone)
        return cached_conn

    l4_ofs = key[L4_OFS]
    l4_len = min(key[L4_LEN], frame.shape[0] - l4_ofs)
    state = key[CT_STATE]
    if state != 0 and key[CT_ZONE] != zone:
        state = 0  # entering another zone: forget what the previous zone said
    related = kind == KEY_RELATED

    if state & _NAT_BITS:
        # Already translated by a ct(nat) of this zone: the packet now reads as the other
        # side's tuple; look that up and take the direction the other way round.
        rtup = tups[TUP_WIDTH:]
        reverse_into(tup, rtup)
        handle = lookup_live(conns, index, free_slots, stats, zone_limits, rtup, now_ms)
        if handle >= 0:
            handle ^= 1
            row_tuple(conns, handle >> 1, handle & 1, tup)
    else:
        handle = lookup_live(conns, index, free_slots, stats, zone_limits, tup, now_ms)
    slot = -1
    reply = 0
    if handle >= 0:
        slot = handle >> 1
        reply = handle & 1
    if force and reply == 1 and slot >= 0:
        # ct(force): a connection seen from the wrong side is ended; this packet may
        # start it anew in its own direction.
        delete_conn(conns, index, free_slots, stats, zone_limits, slot)
        stats[ST_FORCE_DELETED] += 1
        slot = -1

    create_new = False
    if slot >= 0:
        if related:
            state |= CS_RELATED
            if reply:
                state |= CS_REPLY_DIR
        else:
            result = _l4_update(
                conns, slot, reply, tup[T_PROTO], frame, l4_ofs, l4_len, now_ms, timeouts
            )
            if result == CT_UPDATE_VALID:
                state = (state | CS_ESTABLISHED) & ~CS_NEW
                if reply:
                    state |= CS_REPLY_DIR
            elif result == CT_UPDATE_INVALID:
                state = CS_INVALID
                stats[ST_INVALID_UPDATE] += 1
            elif result == CT_UPDATE_RESTART:
                delete_conn(conns, index, free_slots, stats, zone_limits, slot)
                stats[ST_REPLACED] += 1
                slot = -1
                create_new = True
            elif result == CT_UPDATE_STILL_NEW:
                state |= CS_NEW
        if has_nat and slot >= 0:
            state = _handle_nat(conns, slot, zone, reply, related, frame, key, state)
    elif related:
        state = CS_INVALID  # an ICMP error must belong to a connection
        stats[ST_RELATED_UNMATCHED] += 1
    else:
        create_new = True

    if create_new:
        reply = 0
        if not _l4_valid_new(tup[T_PROTO], frame, l4_ofs, l4_len):
            state = CS_INVALID
            stats[ST_INVALID_NEW] += 1
        else:
            state = CS_NEW
            if commit:
                slot = commit_conn(
                    conns,
                    index,
                    free_slots,
                    stats,
                    zone_limits,
                    tup,
                    frame,
                    l4_ofs,
                    l4_len,
                    now_ms,
                    timeouts,
                    nat,
                    tups[TUP_WIDTH:],
                )
                if slot >= 0 and has_nat:
                    state = nat_packet(conns, slot, 0, False, frame, key, state)

    key[CT_STATE] = state
    _write_md(key, zone, conns, slot, tup)
    if slot < 0:
        stats[ST_LAST_CONN] = -1
        return -1
    stats[ST_LAST_CONN] = slot * 2 + reply
    _apply_mark_label(key, conns, slot, set_mark, mark, mark_mask, set_label, label4, label_mask4)
    if has_nat or related:
        return -1
    return slot * 2 + reply


@njit
def sweep_expired(conns, index, free_slots, stats, zone_limits, now_ms):
    """Remove every connection expired at ``now_ms``; returns how many."""
    removed = 0
    for slot in range(conns.shape[0]):
        if conns[slot, C_USED] != 0 and now_ms >= conns[slot, C_EXPIRATION]:
            delete_conn(conns, index, free_slots, stats, zone_limits, slot)
            removed += 1
    return removed


@njit
def flush_zone(conns, index, free_slots, stats, zone_limits, zone):
    """Remove every connection of ``zone`` (all zones when zone < 0); returns how many."""
    removed = 0
    for slot in range(conns.shape[0]):
        if conns[slot, C_USED] != 0 and (zone < 0 or conns[slot, C_ZONE] == zone):
            delete_conn(conns, index, free_slots, stats, zone_limits, slot)
            removed += 1
    return removed
