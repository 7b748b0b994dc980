"""The ct action kernel: one packet through OVS's userspace connection tracker.

What: :func:`ct_execute` does for one packet what OVS 3.1's ``conntrack_execute`` /
``process_one`` (lib/conntrack.c) do: take the cached-connection shortcut when it applies,
extract the connection key from the frame (marking the packet invalid when OVS would), look
the key up (an expired connection is removed and treated as absent), let the L4 tracker
judge the packet, create a connection on commit, set ct_mark/ct_label, and write the
conntrack metadata into the flow key (``CT_STATE`` ... ``CT_TP_DST``). It returns the
packet's connection handle ``slot * 2 + reply`` (or -1), OVS's ``pkt->md.conn``.

Design: the tracker's arrays come as one bundle (layout.CtTables: rows, index, free slots,
counters, zone limits, timeouts) and the action's parameters as one row (layout ``CA_*``:
zone, flags, mark, label; the program encoding stores OP_CT as exactly that row). The parts:
key extraction here; which connections exist (lookup, commit under limits, NAT's choice,
removal) in lifecycle.py; the L4 trackers, picked by IP protocol as OVS's ``l4_protos[]``, in
trackers.py; the packet's translation in nat.py.

Invariants:
- The kernel never raises on packet content and never allocates rows: when no row is free a
  commit is refused and counted (the Python wrapper grows the tables before that happens).
- After ``ct_execute`` the key's ``CT_STATE`` includes ``CS_TRACKED``.
- Result codes use this project's names (timeouts.py): ``CT_UPDATE_STILL_NEW`` = still new,
  ``CT_UPDATE_RESTART`` = end this connection and start a new one (OVS: CT_UPDATE_NEW).
"""

from __future__ import annotations

import numpy as np

from ctaccel.conntrack.alg import (
    E_LABEL,
    E_MARK,
    E_P_DPORT,
    E_P_DST,
    E_P_SPORT,
    E_P_SRC,
    exp_adopt,
    exp_lookup,
)
from ctaccel.conntrack.ftp import ftp_command, ftp_other, tftp_request
from ctaccel.conntrack.icmp import ICMP_KEY_INVALID, ICMP_KEY_RELATED, be16, icmp_extract
from ctaccel.conntrack.layout import (
    ALG_FTP,
    ALG_KIND,
    ALG_RELATED,
    ALG_SKEW_REPLY,
    ALG_TFTP,
    C_DL_TYPE,
    C_DPORT,
    C_LABEL,
    C_MARK,
    C_PROTO,
    C_SPORT,
    C_USED,
    C_ZONE,
    CA_FLAGS,
    CA_LABEL,
    CA_LABEL_MASK,
    CA_MARK,
    CA_MARK_MASK,
    CA_ZONE,
    CAF_ALG_SHIFT,
    CAF_COMMIT,
    CAF_FORCE,
    CAF_SET_LABEL,
    CAF_SET_MARK,
    ROW_CONN,
    X_ALG,
    X_ALG_PARENT,
    X_DST,
    X_ICMP_CODE,
    X_ICMP_TYPE,
    X_NAT_FLAGS,
    X_SRC,
    addr_word,
    ext_get,
    ext_set,
)
from ctaccel.conntrack.lifecycle import commit_conn, delete_conn, lookup_live
from ctaccel.conntrack.nat import NS_ACTION, nat_packet
from ctaccel.conntrack.table import (
    ETH_IP,
    ETH_IPV6,
    ST_CACHED_HITS,
    ST_FORCE_DELETED,
    ST_FRAME_LEN,
    ST_INVALID_KEY,
    ST_INVALID_NEW,
    ST_INVALID_PREMARKED,
    ST_INVALID_UPDATE,
    ST_LAST_ALG,
    ST_LAST_CONN,
    ST_RELATED_UNMATCHED,
    ST_REPLACED,
    T_DL_TYPE,
    T_DST,
    T_DWORD,
    T_PROTO,
    T_SRC,
    T_SWORD,
    T_ZONE,
    TUP_WIDTH,
    is_icmp_key,
    reverse_into,
    row_tuple,
)
from ctaccel.conntrack.timeouts import (
    CT_UPDATE_INVALID,
    CT_UPDATE_RESTART,
    CT_UPDATE_STILL_NEW,
    CT_UPDATE_VALID,
)
from ctaccel.conntrack.trackers import conn_update, valid_new
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
def _write_parent(key, exps, row):
    """The original tuple a data connection shows: its control connection's (OVS
    write_ct_md with conn->alg_related or an alg_exp)."""
    for i in range(4):
        key[CT_NW_SRC + i] = exps[row, E_P_SRC + i]
        key[CT_NW_DST + i] = exps[row, E_P_DST + i]
    key[CT_TP_SRC] = exps[row, E_P_SPORT]
    key[CT_TP_DST] = exps[row, E_P_DPORT]


@njit(forceinline=True)
def _write_md(key, zone, ct, slot, tup, exp):
    """OVS write_ct_md: mark/label of the connection, original tuple of it (or of tup; of the
    control connection for a data connection, or for a packet an expectation awaits)."""
    conns = ct.conns
    key[CT_STATE] |= CS_TRACKED
    key[CT_ZONE] = zone
    if slot >= 0:
        key[CT_MARK] = conns[slot, C_MARK]
        for i in range(4):
            key[CT_LABEL + i] = conns[slot, C_LABEL + i]
            key[CT_NW_SRC + i] = addr_word(conns, slot, X_SRC, i)
            key[CT_NW_DST + i] = addr_word(conns, slot, X_DST, i)
        key[CT_NW_PROTO] = conns[slot, C_PROTO]
        if is_icmp_key(np.int64(conns[slot, C_DL_TYPE]), np.int64(conns[slot, C_PROTO])):
            key[CT_TP_SRC] = ext_get(conns, slot, X_ICMP_TYPE)
            key[CT_TP_DST] = ext_get(conns, slot, X_ICMP_CODE)
        else:
            key[CT_TP_SRC] = conns[slot, C_SPORT]
            key[CT_TP_DST] = conns[slot, C_DPORT]
        if ext_get(conns, slot, X_ALG) & ALG_RELATED:
            _write_parent(key, ct.exps, ext_get(conns, slot, X_ALG_PARENT) - 1)
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
    if exp >= 0:
        key[CT_MARK] = ct.exps[exp, E_MARK]
        for i in range(4):
            key[CT_LABEL + i] = ct.exps[exp, E_LABEL + i]
        _write_parent(key, ct.exps, exp)


@njit(forceinline=True)
def _apply_mark_label(key, conns, slot, act):
    """OVS set_mark/set_label: new = value | (current & ~mask), stored in conn and packet
    (a data connection keeps its control connection's: the packet shows them)."""
    if ext_get(conns, slot, X_ALG) & ALG_RELATED:
        return
    if act[CA_FLAGS] & CAF_SET_MARK:
        m = act[CA_MARK_MASK] & _M32
        value = (act[CA_MARK] & m) | (conns[slot, C_MARK] & (~m & _M32))
        conns[slot, C_MARK] = value
        key[CT_MARK] = value
    if act[CA_FLAGS] & CAF_SET_LABEL:
        for i in range(4):
            m = act[CA_LABEL_MASK + i] & _M32
            value = (act[CA_LABEL + i] & m) | (conns[slot, C_LABEL + i] & (~m & _M32))
            conns[slot, C_LABEL + i] = value
            key[CT_LABEL + i] = value


@njit(forceinline=True)
def _handle_nat(conns, slot, zone, reply, related, frame, key, state):
    """OVS handle_nat: translate by the connection unless this zone already did."""
    if ext_get(conns, slot, X_NAT_FLAGS) != 0 and (not (state & _NAT_BITS) or key[CT_ZONE] != zone):
        state = nat_packet(conns, slot, reply, related, frame, key, state & ~_NAT_BITS)
    return state


@njit(forceinline=True)
def _cached(ct, frame, key, act, cached_conn, has_nat):
    """OVS process_one_fast: the packet already knows its connection and this ct is in the
    same zone. True when the shortcut was taken (and the key's ct fields written)."""
    conns = ct.conns
    zone = act[CA_ZONE]
    slot = cached_conn >> 1
    if slot >= conns.shape[0] or conns[slot, C_USED] != ROW_CONN or conns[slot, C_ZONE] != zone:
        return False
    ct.stats[ST_CACHED_HITS] += 1
    if has_nat:
        key[CT_STATE] = _handle_nat(conns, slot, zone, cached_conn & 1, False, frame, key,
                                    key[CT_STATE])  # fmt: skip
    key[CT_ZONE] = zone
    key[CT_MARK] = conns[slot, C_MARK]
    for i in range(4):
        key[CT_LABEL + i] = conns[slot, C_LABEL + i]
    _apply_mark_label(key, conns, slot, act)
    ct.stats[ST_LAST_CONN] = cached_conn
    return True


@njit(forceinline=True)
def _find(ct, tups, state, force, now_ms):
    """The handle of the packet's connection (tuple in ``tups[:TUP_WIDTH]``) or -1. A packet
    a ct(nat) of this zone already translated reads as the other side's tuple: that is looked
    up and the direction taken the other way round (the tuple then becomes the connection's).
    With ct(force) a connection seen from the reply side is ended (-1)."""
    tup = tups[:TUP_WIDTH]
    if state & _NAT_BITS:
        rtup = tups[TUP_WIDTH:]
        reverse_into(tup, rtup)
        handle = lookup_live(ct, rtup, now_ms)
        if handle >= 0:
            handle ^= 1
            row_tuple(ct.conns, handle >> 1, handle & 1, tup)
    else:
        handle = lookup_live(ct, tup, now_ms)
    if force and handle >= 0 and handle & 1:
        delete_conn(ct, handle >> 1)
        ct.stats[ST_FORCE_DELETED] += 1
        return -1
    return handle


@njit(forceinline=True)
def _judge(ct, handle, related, frame, key, tup, now_ms, state):
    """A packet of an existing connection: RELATED for ICMP errors, else the L4 tracker's
    verdict. Returns (ct_state, slot or -1 when it ended, whether to start a new one)."""
    slot = handle >> 1
    reply = handle & 1
    if related:
        state |= CS_RELATED
        if reply:
            state |= CS_REPLY_DIR
        return state, slot, False
    if ext_get(ct.conns, slot, X_ALG) & ALG_RELATED:
        state |= CS_RELATED  # a data connection is related for life
    l4_ofs = key[L4_OFS]
    l4_len = min(key[L4_LEN], frame.shape[0] - l4_ofs)
    result = conn_update(ct.conns, slot, reply, tup[T_PROTO], frame, l4_ofs, l4_len, now_ms,
                         ct.timeouts)  # fmt: skip
    if result == CT_UPDATE_VALID:
        state = (state | CS_ESTABLISHED) & ~CS_NEW
        if reply:
            state |= CS_REPLY_DIR
    elif result == CT_UPDATE_INVALID:
        state = CS_INVALID
        ct.stats[ST_INVALID_UPDATE] += 1
    elif result == CT_UPDATE_RESTART:
        delete_conn(ct, slot)
        ct.stats[ST_REPLACED] += 1
        return state, -1, True
    elif result == CT_UPDATE_STILL_NEW:
        state |= CS_NEW
    return state, slot, False


@njit(forceinline=True)
def _ftp_adjust_first(ct, handle):
    """OVS conn_update_state_alg: an FTP control packet's sequence adjustment goes before the
    tracker when it travels against the skew's direction, after it otherwise."""
    skew_reply = 1 if ext_get(ct.conns, handle >> 1, X_ALG) & ALG_SKEW_REPLY else 0
    return (handle & 1) != skew_reply


@njit(forceinline=True)
def _create(ct, frame, key, act, now_ms, nat, tups, exp):
    """A packet that may start a connection: NEW (committed if asked; +rel when an
    expectation awaits it) or INVALID when its L4 header may not start one. Returns
    (ct_state, slot or -1)."""
    tup = tups[:TUP_WIDTH]
    l4_ofs = key[L4_OFS]
    l4_len = min(key[L4_LEN], frame.shape[0] - l4_ofs)
    if not valid_new(tup[T_PROTO], frame, l4_ofs, l4_len):
        ct.stats[ST_INVALID_NEW] += 1
        return CS_INVALID, -1
    state = CS_NEW | CS_RELATED if exp >= 0 else CS_NEW
    if not act[CA_FLAGS] & CAF_COMMIT:
        return state, -1
    alg = (act[CA_FLAGS] >> CAF_ALG_SHIFT) & ALG_KIND
    slot = commit_conn(ct, tup, frame, l4_ofs, l4_len, now_ms, nat, tups[TUP_WIDTH:], exp, alg)
    if slot < 0:
        return state, slot
    if alg != 0:
        ext_set(ct.conns, slot, X_ALG, alg)
    if exp >= 0:
        exp_adopt(ct, slot, exp)
    if nat[NS_ACTION] >= 0:
        return nat_packet(ct.conns, slot, 0, False, frame, key, state), slot
    return state, slot


@njit(forceinline=True)
def alg_ctl(key, frame, helper):
    """OVS get_alg_ctl_type: ALG_FTP for TCP from or to port 21, ALG_TFTP for UDP to port
    69, either for every packet of its protocol through a ct with that helper (dpif-netdev
    passes the flow's own ports as the helper's: OVS takes them from the packet that
    installed the megaflow, a cache artefact ctaccel does not copy); 0 otherwise."""
    proto = key[NW_PROTO]
    l4 = key[L4_OFS]
    if (proto != 6 and proto != 17) or l4 < 0 or l4 + 4 > frame.shape[0]:
        return 0
    if key[DL_TYPE] != ETH_IP and key[DL_TYPE] != ETH_IPV6:
        return 0
    sport = be16(frame, l4)
    dport = be16(frame, l4 + 2)
    if proto == 17:
        return ALG_TFTP if dport == 69 or helper == ALG_TFTP else 0
    return ALG_FTP if sport == 21 or dport == 21 or helper == ALG_FTP else 0


@njit(forceinline=True)
def _handle_alg(ct, slot, reply, ctl, buf, flen, key, nat, scr):
    """OVS handle_alg_ctl: a control connection's command makes its expectation (FTP: and
    under NAT is rewritten). Returns the frame's length."""
    if ctl == 0 or slot < 0 or not ext_get(ct.conns, slot, X_ALG) & ALG_KIND:
        return flen
    rpl_state = 1 if key[CT_STATE] & CS_REPLY_DIR else 0
    if ctl == ALG_TFTP:
        tftp_request(ct, slot, rpl_state)
        return flen
    v6 = key[DL_TYPE] == ETH_IPV6
    invalid, flen = ftp_command(ct, slot, buf, flen, key, v6, reply, rpl_state, nat, scr)
    if invalid:
        key[CT_STATE] |= CS_TRACKED | CS_INVALID
    return flen


@njit
def ct_execute(ct, buf, flen, key, act, now_ms, cached_conn, nat, tups):
    """Run ``ct(zone, [commit], [force], [exec(set ct_mark/ct_label)], [nat], [alg])`` on one
    packet, the frame ``buf[:flen]``.

    ``ct`` the tracker's arrays (layout.CtTables); ``key`` the packet's flow key as parse_frame
    left it plus its current ct fields; ``act`` the action's row (layout ``CA_*``);
    ``cached_conn`` the handle a previous ct() of this packet returned (-1 if none); ``nat`` a
    NAT spec row (nat.py; ``NS_ACTION`` -1: no nat). With nat the frame and the key's
    addresses and ports may be rewritten in place, and an FTP command rewritten for NAT may
    make the frame longer or shorter (into ``buf``'s room past ``flen``): its length after
    the call is ``ct.stats[ST_FRAME_LEN]``. ``tups`` is scratch of ``CT_SCRATCH_WIDTH`` words
    (the packet's tuple, a reply tuple, the FTP helper's words): kernels never allocate.
    Returns the handle to keep with the packet: -1 after a ct(nat) (OVS forgets it, as any
    header rewrite does) and for ICMP errors (a later ct finds the same answer by lookup).
    """
    frame = buf[:flen]
    ct.stats[ST_FRAME_LEN] = flen
    ct.stats[ST_LAST_ALG] = 0
    zone = act[CA_ZONE]
    force = (act[CA_FLAGS] & CAF_FORCE) != 0
    has_nat = nat[NS_ACTION] >= 0
    if key[CT_STATE] == CS_INVALID:
        # Marked invalid before conntrack (fragment reassembly): OVS only writes metadata.
        ct.stats[ST_INVALID_PREMARKED] += 1
        ct.stats[ST_LAST_CONN] = -1
        _write_md_none(key, zone)
        return cached_conn
    ctl = alg_ctl(key, frame, (act[CA_FLAGS] >> CAF_ALG_SHIFT) & ALG_KIND)
    if cached_conn >= 0 and not force and ctl == 0:
        if _cached(ct, frame, key, act, cached_conn, has_nat):
            return -1 if has_nat else cached_conn
    tup = tups[:TUP_WIDTH]
    kind = extract_tuple(frame, key, zone, tup)
    if kind == KEY_INVALID:
        ct.stats[ST_INVALID_KEY] += 1
        ct.stats[ST_LAST_CONN] = -1
        key[CT_STATE] = CS_INVALID
        _write_md_none(key, zone)
        return cached_conn
    state = key[CT_STATE]
    if state != 0 and key[CT_ZONE] != zone:
        state = 0  # entering another zone: forget what the previous zone said
    related = kind == KEY_RELATED
    handle = _find(ct, tups, state, force, now_ms)
    slot = -1
    reply = 0
    exp = -1
    if handle >= 0:
        reply = handle & 1
        # (one inlined _judge: the tracker is the kernel's biggest piece of code)
        ftp_after = False
        if ctl == ALG_FTP:  # TCP: never an ICMP error (related)
            if _ftp_adjust_first(ct, handle):
                ftp_other(ct, handle >> 1, buf, flen, key, key[DL_TYPE] == ETH_IPV6, reply,
                          has_nat)  # fmt: skip
            else:
                ftp_after = True
        state, slot, create_new = _judge(ct, handle, related, frame, key, tup, now_ms, state)
        if ftp_after and not create_new:
            ftp_other(ct, slot, buf, flen, key, key[DL_TYPE] == ETH_IPV6, reply, has_nat)
        if has_nat and slot >= 0 and not create_new:
            state = _handle_nat(ct.conns, slot, zone, reply, related, frame, key, state)
    elif related:
        state = CS_INVALID  # an ICMP error must belong to a connection
        ct.stats[ST_RELATED_UNMATCHED] += 1
        create_new = False
    else:
        create_new = True
    if create_new:
        reply = 0
        exp = exp_lookup(ct, tup)
        state, slot = _create(ct, frame, key, act, now_ms, nat, tups, exp)
    key[CT_STATE] = state
    _write_md(key, zone, ct, slot, tup, exp)
    if slot < 0:
        ct.stats[ST_LAST_CONN] = -1
        return -1
    ct.stats[ST_LAST_CONN] = slot * 2 + reply
    ct.stats[ST_LAST_ALG] = ext_get(ct.conns, slot, X_ALG) & ALG_KIND
    _apply_mark_label(key, ct.conns, slot, act)
    if ctl != 0:
        ct.stats[ST_FRAME_LEN] = _handle_alg(ct, slot, reply, ctl, buf, flen, key, has_nat,
                                             tups[2 * TUP_WIDTH :])  # fmt: skip
    if has_nat or related:
        return -1
    return slot * 2 + reply
