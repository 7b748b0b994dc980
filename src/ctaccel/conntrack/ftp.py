"""FTP and TFTP helpers: commands read from TCP payloads, rewritten under NAT, seq adjusted.

What: OVS 3.1's userspace ALG (lib/conntrack.c ``handle_ftp_ctl``, ``process_ftp_ctl_v4/v6``,
``repl_ftp_v4/v6_addr``, ``handle_tftp_ctl``) as numba kernels. A packet of a control
connection whose payload begins with ``PORT`` or ``227`` (IPv4), ``EPRT`` or mentions
``EXTENDED PASSIVE`` (IPv6; any case) announces a data connection: an expectation is made
(alg.py); under NAT the announced IPv4 address (or the EPRT address) is replaced by the one
the other side must use, the packet grows or shrinks, and the TCP sequence numbers of the rest
of the control connection move by the difference (``X_SEQ_SKEW``). A command OVS cannot read
(no space, bad address, a number over 255 or 65535, an address that is neither endpoint's)
makes the packet ``+inv``.

Design:
- The command is read as OVS reads it: at most the first 127 bytes of the payload, up to the
  first NUL (``ovs_strlcpy`` of min(payload, 128)); numbers as ``terminate_number_str`` and
  ``str_to_int`` cut them (the first port byte at most 4 digits, an EPSV/EPRT port 6);
  addresses as glibc's ``inet_pton`` reads them and written back as its ``inet_ntop`` writes
  them (lower-case hex, the longest zero run as ``::``, ``::a.b.c.d`` forms), all on the
  frame's bytes with bounds, never a copy of the text.
- One skew per connection and one direction, as OVS: a second rewrite in the other direction
  adds to the same number and takes the direction over (OVS's own limitation, kept).
- The frame grows in place into the room the caller gives (``buf`` past ``flen``); with no
  room the rewrite is skipped (OVS: "Unsupported effective MTU") and counted.

Invariants: nothing outside ``buf`` is read or written; without NAT the frame is never
written (OVS only recomputes a checksum that is already right then).
"""

from __future__ import annotations

import numpy as np

from ctaccel.conntrack.alg import exp_create
from ctaccel.conntrack.layout import (
    ALG_SKEW_REPLY,
    C_SPORT,
    X_ALG,
    X_DST,
    X_R_DST,
    X_R_SRC,
    X_SEQ_SKEW,
    X_SRC,
    addr_word,
    ext_get,
    ext_set,
    seq_skew,
)
from ctaccel.conntrack.table import ST_ALG_INVALID, ST_ALG_NO_ROOM, ST_ALG_REWRITES
from ctaccel.jit import njit
from ctaccel.packet.checksum import ones_fold, ones_sum, pseudo_sum_v4, pseudo_sum_v6, recalc16
from ctaccel.packet.key import L3_OFS, L4_LEN, L4_OFS

MSG_MAX = 128  # OVS LARGEST_FTP_MSG_OF_INTEREST
MAX_GROWTH = 48  # the most one rewrite adds (an IPv6 text of 45 bytes for "::")

# what a command is (OVS enum ftp_ctl_pkt)
FTP_OTHER = 0
FTP_INTEREST = 1
FTP_INVALID = 2

_M32 = 0xFFFFFFFF

# the helper's scratch words (the caller's, table.py CT_SCRATCH_WIDTH - 2 * TUP_WIDTH of them)
S_PLACE = 0  # 3: the address text's offset in the payload, its size, the IPv4 replacement
S_ADDR = 4  # 4: an IPv6 address read from a command
S_WORDS = 8  # 8: 16-bit groups of an IPv6 address being read or written
S_W4 = 16  # 4: the IPv6 replacement
S_TEXT = 24  # 64: the replacement's text, a byte per word


@njit(forceinline=True)
def _lower(b):
    return b | 0x20 if 65 <= b <= 90 else b


@njit(forceinline=True)
def _digit(b):
    return 48 <= b <= 57


@njit(forceinline=True)
def _xdigit(b):
    return _digit(b) or 97 <= _lower(b) <= 102


@njit(forceinline=True)
def _starts(frame, pay, mend, word):
    """Case-insensitive: the message starts with ``word`` (lower-case bytes)."""
    if mend - pay < len(word):
        return False
    for i in range(len(word)):
        if _lower(frame[pay + i]) != word[i]:
            return False
    return True


@njit(forceinline=True)
def _contains(frame, pay, mend, word):
    """Case-insensitive ``strcasestr``: ``word`` anywhere in the message."""
    n = len(word)
    for p in range(pay, mend - n + 1):
        if _starts(frame, p, mend, word):
            return True
    return False


@njit
def message_end(frame, pay, pay_len):
    """End of the text OVS reads: min(payload, 128) - 1 bytes, cut at the first NUL."""
    n = min(pay_len, MSG_MAX) - 1
    end = pay
    while end < pay + n and frame[end] != 0:
        end += 1
    return end


_PORT = np.array([112, 111, 114, 116], np.int64)  # "port"
_227 = np.array([50, 50, 55], np.int64)
_EPRT = np.array([101, 112, 114, 116], np.int64)  # "eprt"
_EPSV = np.array([101, 120, 116, 101, 110, 100, 101, 100, 32, 112, 97, 115, 115, 105, 118, 101],
                 np.int64)  # "extended passive"  # fmt: skip


@njit
def ftp_kind(frame, pay, mend, v6):
    """OVS detect_ftp_ctl_type: FTP_INTEREST for a command that announces a data connection."""
    if v6:
        if _starts(frame, pay, mend, _EPRT) or _contains(frame, pay, mend, _EPSV):
            return FTP_INTEREST
        return FTP_OTHER
    if _starts(frame, pay, mend, _PORT) or _starts(frame, pay, mend, _227):
        return FTP_INTEREST
    return FTP_OTHER


@njit
def parse_v4(frame, start, end):
    """glibc inet_pton(AF_INET) of frame[start:end] with ',' read as '.': the address, or
    -1 (exactly four decimal parts up to 255, no leading zeros, nothing else)."""
    value = 0
    part = 0
    parts = 0
    saw = False
    for p in range(start, end):
        b = np.int64(frame[p])
        if _digit(b):
            if saw and part == 0:
                return -1
            part = part * 10 + (b - 48)
            if part > 255:
                return -1
            if not saw:
                parts += 1
                if parts > 4:
                    return -1
                saw = True
        elif (b == 46 or b == 44) and saw:
            if parts == 4:
                return -1
            value = (value << 8) | part
            part = 0
            saw = False
        else:
            return -1
    if parts < 4 or not saw:
        return -1
    return (value << 8) | part


@njit
def parse_v6(frame, start, end, out, words):
    """glibc inet_pton(AF_INET6) of frame[start:end] into ``out`` (4 words; ``words``: 8 of
    scratch); False if not an address (groups of up to 4 hex digits, one ``::``, an optional
    dotted IPv4 tail)."""
    for i in range(8):
        words[i] = 0
    n = 0  # 16-bit groups written
    colon = -1
    p = start
    if p == end:
        return False
    if frame[p] == 58:
        p += 1
        if p == end or frame[p] != 58:
            return False
    token = p
    seen = 0
    val = 0
    while p < end:
        b = np.int64(frame[p])
        p += 1
        if _xdigit(b):
            if seen == 4:
                return False
            val = (val << 4) | (b - 48 if _digit(b) else _lower(b) - 87)
            seen += 1
            continue
        if b == 58:
            token = p
            if seen == 0:
                if colon >= 0:
                    return False
                colon = n
                continue
            if p == end or n + 1 > 8:
                return False
            words[n] = val
            n += 1
            seen = 0
            val = 0
            continue
        if b == 46 and n + 2 <= 8:
            v4 = parse_v4(frame, token, end)
            if v4 >= 0:
                words[n] = v4 >> 16
                words[n + 1] = v4 & 0xFFFF
                n += 2
                seen = 0
                break
        return False
    if seen > 0:
        if n + 1 > 8:
            return False
        words[n] = val
        n += 1
    if colon >= 0:
        if n == 8:
            return False
        k = n - colon
        for i in range(k):
            words[7 - i] = words[n - 1 - i]
        for i in range(colon, 8 - k):
            words[i] = 0
        n = 8
    if n != 8:
        return False
    for i in range(4):
        out[i] = (words[2 * i] << 16) | words[2 * i + 1]
    return True


@njit(forceinline=True)
def _put_dec(out, n, v):
    if v >= 100:
        out[n] = 48 + v // 100
        n += 1
    if v >= 10:
        out[n] = 48 + (v // 10) % 10
        n += 1
    out[n] = 48 + v % 10
    return n + 1


@njit
def format_v4(addr, sep, out):
    """inet_ntop(AF_INET) with ``sep`` between the parts (',' for PORT/227) into ``out``;
    returns the length."""
    n = 0
    for i in range(4):
        if i:
            out[n] = sep
            n += 1
        n = _put_dec(out, n, (addr >> (24 - 8 * i)) & 0xFF)
    return n


@njit
def format_v6(w4, out, words):
    """glibc inet_ntop(AF_INET6) of 4 words into ``out`` (``words``: 8 of scratch); returns
    the length."""
    for i in range(4):
        words[2 * i] = (w4[i] >> 16) & 0xFFFF
        words[2 * i + 1] = w4[i] & 0xFFFF
    best, best_len, cur, cur_len = -1, 0, -1, 0
    for i in range(8):
        if words[i] == 0:
            if cur < 0:
                cur, cur_len = i, 1
            else:
                cur_len += 1
        elif cur >= 0:
            if best < 0 or cur_len > best_len:
                best, best_len = cur, cur_len
            cur = -1
    if cur >= 0 and (best < 0 or cur_len > best_len):
        best, best_len = cur, cur_len
    if best >= 0 and best_len < 2:
        best = -1
    n = 0
    for i in range(8):
        if best >= 0 and best <= i < best + best_len:
            if i == best:
                out[n] = 58
                n += 1
            continue
        if i != 0:
            out[n] = 58
            n += 1
        if i == 6 and best == 0 and (best_len == 6 or (best_len == 5 and words[5] == 0xFFFF)):
            return n + format_v4(w4[3], 46, out[n:])
        started = False
        for shift in (12, 8, 4, 0):
            d = (words[i] >> shift) & 0xF
            if d or started or shift == 0:
                out[n] = 48 + d if d < 10 else 87 + d
                n += 1
                started = True
    if best >= 0 and best + best_len == 8:
        out[n] = 58
        n += 1
    return n


@njit(forceinline=True)
def _number(frame, p, mend, max_digits):
    """OVS terminate_number_str + str_to_int at ``p``: (value or -1, where the number was cut)."""
    q = p
    v = 0
    while q < mend and _digit(frame[q]) and q - p <= max_digits:
        if v < 1 << 40:  # past any valid value: stays invalid, never overflows
            v = v * 10 + (np.int64(frame[q]) - 48)
        q += 1
    return (v if q > p else -1), q


@njit
def _v4_command(ct, slot, frame, pay, mend, reply, scr):
    """OVS process_ftp_ctl_v4 (the address text's start and size into scratch)."""
    conns = ct.conns
    place = scr[S_PLACE : S_PLACE + 3]
    active = _starts(frame, pay, mend, _PORT)
    p = pay + (4 if active else 3)
    while p < mend and frame[p] != 32:
        p += 1
    while p < mend and not _digit(frame[p]):
        p += 1
    if p >= mend:
        return FTP_INVALID
    start = p
    commas = 0
    while commas < 4 and p < mend:
        if frame[p] == 44:
            commas += 1
        p += 1
    if commas != 4:
        return FTP_INVALID
    addr = parse_v4(frame, start, p - 1)
    if addr < 0:
        return FTP_INVALID
    hi, q = _number(frame, p, mend, 3)
    if hi < 0 or hi > 255:
        return FTP_INVALID
    lo, q2 = _number(frame, q + 1, mend, 1 << 30)
    if lo < 0 or lo > 255:
        return FTP_INVALID
    if active:  # the client's own address, or the one NAT shows the server
        rep, own = addr_word(conns, slot, X_R_DST, 3), addr_word(conns, slot, X_SRC, 3)
    else:
        rep, own = addr_word(conns, slot, X_DST, 3), addr_word(conns, slot, X_R_SRC, 3)
    if addr != own and addr != rep:
        return FTP_INVALID
    exp_create(ct, slot, (hi << 8) | lo, reply)
    place[0] = start - pay
    place[1] = p - 1 - start
    place[2] = rep
    return FTP_INTEREST


@njit
def _v6_command(ct, slot, frame, pay, mend, reply, scr):
    """OVS process_ftp_ctl_v6 (EPRT: the address text's start and size into scratch)."""
    conns = ct.conns
    place = scr[S_PLACE : S_PLACE + 3]
    addr = scr[S_ADDR : S_ADDR + 4]
    if _starts(frame, pay, mend, _EPRT):
        p = pay + 4
        while p < mend and not _digit(frame[p]):
            p += 1
        if p >= mend or frame[p] != 50 or (p + 1 < mend and _digit(frame[p + 1])):
            return FTP_INVALID
        p += 2
        if p >= mend:
            return FTP_INVALID
        start = p
        while p < mend and (_xdigit(frame[p]) or frame[p] == 58 or frame[p] == 46):
            p += 1
        if not parse_v6(frame, start, p, addr, scr[S_WORDS : S_WORDS + 8]):
            return FTP_INVALID
        place[0] = start - pay
        place[1] = p - start
        p += 1
        active = True
    else:
        p = pay
        while p < mend and frame[p] != 40:
            p += 1
        while p < mend and not _digit(frame[p]):
            p += 1
        if p >= mend:
            return FTP_INVALID
        place[0] = 0
        place[1] = -1  # passive: nothing to replace
        active = False
    port, _q = _number(frame, p, mend, 5)
    if port < 0 or port > 0xFFFF:
        return FTP_INVALID
    if active:
        rep_ok = own_ok = True
        for i in range(4):
            rep_ok = rep_ok and addr[i] == addr_word(conns, slot, X_R_DST, i)
            own_ok = own_ok and addr[i] == addr_word(conns, slot, X_SRC, i)
        if not rep_ok and not own_ok:
            return FTP_INVALID
    exp_create(ct, slot, port, reply)
    return FTP_INTEREST


@njit
def _rewrite(ct, slot, buf, flen, key, v6, pay, scr):
    """OVS repl_ftp_v4/v6_addr and the IP length: the announced address replaced by the one
    the other side must use. Returns the change in length (0: nothing done)."""
    place = scr[S_PLACE : S_PLACE + 3]
    text = scr[S_TEXT : S_TEXT + 64]
    if v6:
        if place[1] < 0:
            return 0
        w = scr[S_W4 : S_W4 + 4]
        for i in range(4):
            w[i] = addr_word(ct.conns, slot, X_R_DST, i)  # EPRT: the address NAT shows the server
        n = format_v6(w, text, scr[S_WORDS : S_WORDS + 8])
    else:
        n = format_v4(place[2], 44, text)
    start = pay + place[0]
    old = place[1]
    delta = n - old
    if flen + delta > buf.shape[0]:
        ct.stats[ST_ALG_NO_ROOM] += 1
        return 0
    if delta > 0:
        for b in range(flen - 1, start + old - 1, -1):
            buf[b + delta] = buf[b]
    elif delta < 0:
        for b in range(start + old, flen):
            buf[b + delta] = buf[b]
    for i in range(n):
        buf[start + i] = text[i]
    ct.stats[ST_ALG_REWRITES] += 1
    if delta:
        l3 = key[L3_OFS]
        if v6:
            plen = ((buf[l3 + 4] << 8) | buf[l3 + 5]) + delta
            buf[l3 + 4] = (plen >> 8) & 0xFF
            buf[l3 + 5] = plen & 0xFF
        else:
            old_len = (np.int64(buf[l3 + 2]) << 8) | buf[l3 + 3]
            new_len = (old_len + delta) & 0xFFFF
            csum = (np.int64(buf[l3 + 10]) << 8) | buf[l3 + 11]
            csum = recalc16(csum, old_len, new_len)
            buf[l3 + 2] = new_len >> 8
            buf[l3 + 3] = new_len & 0xFF
            buf[l3 + 10] = csum >> 8
            buf[l3 + 11] = csum & 0xFF
        key[L4_LEN] += delta
    return delta


@njit(forceinline=True)
def _adjust_and_checksum(ct, slot, buf, key, v6, reply):
    """The sequence adjustment of a NATed control connection (the skew so far: reply-side
    acks of a skewed original side go back, its sequence numbers forward) and the TCP checksum
    computed anew, as OVS does after every FTP packet it touches under NAT."""
    conns = ct.conns
    l3, l4 = key[L3_OFS], key[L4_OFS]
    skew = seq_skew(conns, slot)  # (l4 + 18 <= the frame: extract_tuple saw 20 bytes)
    if skew != 0:
        skew_reply = 1 if ext_get(conns, slot, X_ALG) & ALG_SKEW_REPLY else 0
        ofs = l4 + 8 if reply != skew_reply else l4 + 4
        v = ((np.int64(buf[ofs]) << 24) | (np.int64(buf[ofs + 1]) << 16)
             | (np.int64(buf[ofs + 2]) << 8) | np.int64(buf[ofs + 3]))  # fmt: skip
        v = (v - skew if reply != skew_reply else v + skew) & _M32
        for i in range(4):
            buf[ofs + i] = (v >> (24 - 8 * i)) & 0xFF
    size = key[L4_LEN]
    buf[l4 + 16] = 0
    buf[l4 + 17] = 0
    if v6:
        acc = pseudo_sum_v6(buf, l3, 6, size)
    else:
        acc = pseudo_sum_v4(buf, l3, 6, size)
    c = (~ones_fold(acc + ones_sum(buf, l4, size))) & 0xFFFF
    buf[l4 + 16] = c >> 8
    buf[l4 + 17] = c & 0xFF


@njit(forceinline=True)
def _message(buf, flen, key):
    """(payload start, end of the text OVS reads) of a TCP packet."""
    l4 = key[L4_OFS]
    pay = l4 + (buf[l4 + 12] >> 4) * 4
    return pay, message_end(buf, pay, min(l4 + key[L4_LEN], flen) - pay)


@njit
def ftp_other(ct, slot, buf, flen, key, v6, reply, nat):
    """OVS handle_ftp_ctl(CT_FTP_CTL_OTHER) on a control connection's packet that is not a
    command of interest: with NAT and a skew, its sequence numbers moved."""
    if not nat or ext_get(ct.conns, slot, X_SEQ_SKEW) == 0:
        return  # OVS recomputes a checksum that is already right: nothing changes
    pay, mend = _message(buf, flen, key)
    if ftp_kind(buf, pay, mend, v6) != FTP_OTHER:
        return
    _adjust_and_checksum(ct, slot, buf, key, v6, reply)


@njit
def ftp_command(ct, slot, buf, flen, key, v6, reply, rpl_state, nat, scr):
    """OVS handle_ftp_ctl(CT_FTP_CTL_INTEREST) after conntrack: a command announcing a data
    connection makes its expectation and, under NAT, is rewritten. Returns (whether the
    packet becomes +inv, the frame's new length). ``scr``: the helper's scratch (S_*)."""
    pay, mend = _message(buf, flen, key)
    if ftp_kind(buf, pay, mend, v6) != FTP_INTEREST:
        return False, flen
    if v6:
        rc = _v6_command(ct, slot, buf, pay, mend, rpl_state, scr)
    else:
        rc = _v4_command(ct, slot, buf, pay, mend, rpl_state, scr)
    if rc == FTP_INVALID:
        ct.stats[ST_ALG_INVALID] += 1
        return True, flen
    if not nat:
        return False, flen
    delta = _rewrite(ct, slot, buf, flen, key, v6, pay, scr)
    _adjust_and_checksum(ct, slot, buf, key, v6, reply)
    if delta != 0:
        total = seq_skew(ct.conns, slot) + delta
        if total != 0:  # OVS conn_seq_skew_set ignores a skew that comes back to 0
            ext_set(ct.conns, slot, X_SEQ_SKEW, total)  # (two's complement)
            alg = ext_get(ct.conns, slot, X_ALG)
            if reply:
                ext_set(ct.conns, slot, X_ALG, alg | ALG_SKEW_REPLY)
            else:
                ext_set(ct.conns, slot, X_ALG, alg & ~ALG_SKEW_REPLY)
    return False, flen + delta


@njit
def tftp_request(ct, slot, rpl_state):
    """OVS handle_tftp_ctl: the server answers from a port of its own, to the client's port."""
    exp_create(ct, slot, np.int64(ct.conns[slot, C_SPORT]), rpl_state)  # (one specialisation)
