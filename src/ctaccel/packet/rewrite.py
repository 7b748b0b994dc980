"""Header rewrites of the frame-changing actions, as OVS's packet_set_* apply them (numba).

What: :func:`set_eth` (mod_dl_src, mod_dl_dst) and :func:`set_ip_tos_ttl` (mod_nw_tos,
dec_ttl) rewrite a frame in place. Both engines call them: the reference engine on copies of
its frames, the compiled VM on the packet's rewritten copy (datapath/vm.py).

Design: the IPv4 header checksum is updated incrementally (:func:`recalc16`, OVS's
recalc_csum16), field by field in OVS's order (ToS, then TTL), so a checksum that was wrong
stays as wrong, byte for byte; IPv6's traffic class and hop limit carry none.

Invariants: nothing is written at or past ``flen``; a frame whose IP header is not all there
is left as it is.
"""

from __future__ import annotations

import numpy as np

from ctaccel.jit import njit
from ctaccel.packet.checksum import recalc16

ETH_TYPE_IPV4 = 0x0800
# At most this many bytes of VLAN tags are pushed onto a received frame (8 tags): a push
# beyond it changes the flow but not the frame, in both engines (the compiled path's frame
# buffers have this much room past the longest frame of a batch).
MAX_TAG_BYTES = 32


@njit(forceinline=True)
def set_eth(frame, dst, mac):
    """The Ethernet destination (``dst``) or source address := ``mac`` (48-bit int)."""
    at = 0 if dst else 6
    for b in range(6):
        frame[at + b] = (mac >> (40 - 8 * b)) & 0xFF


@njit(forceinline=True)
def set_ip_tos_ttl(frame, flen, l3, dl_type, tos, ttl_down):
    """The DSCP bits := ``tos`` (when >= 0; the ECN bits stay) and/or the TTL / hop limit
    one lower (``ttl_down``) of the IP header at ``l3``; IPv4's header checksum updated."""
    if l3 < 0:
        return
    if dl_type == ETH_TYPE_IPV4:
        if l3 + 20 > flen:
            return
        csum = (np.int64(frame[l3 + 10]) << 8) | np.int64(frame[l3 + 11])
        if tos >= 0:
            old = np.int64(frame[l3 + 1])
            new = (old & 0x03) | tos
            csum = recalc16(csum, old, new)
            frame[l3 + 1] = new
        if ttl_down:
            ttl = np.int64(frame[l3 + 8])
            csum = recalc16(csum, ttl << 8, ((ttl - 1) & 0xFF) << 8)
            frame[l3 + 8] = (ttl - 1) & 0xFF
        frame[l3 + 10] = csum >> 8
        frame[l3 + 11] = csum & 0xFF
    elif l3 + 40 <= flen:  # IPv6: traffic class across bytes 0-1, hop limit at 7
        if tos >= 0:
            b0, b1 = np.int64(frame[l3]), np.int64(frame[l3 + 1])
            tc = (((b0 & 0x0F) << 4) | (b1 >> 4)) & 0x03 | tos
            frame[l3] = (b0 & 0xF0) | (tc >> 4)
            frame[l3 + 1] = ((tc & 0x0F) << 4) | (b1 & 0x0F)
        if ttl_down:
            frame[l3 + 7] = (np.int64(frame[l3 + 7]) - 1) & 0xFF


@njit(forceinline=True)
def set_vlan(frame, flen, old_tci, new_tci, tpid):
    """The frame's outer 802.1Q tag made to say ``new_tci`` (0: no tag), in place; the frame
    carries ``old_tci`` now (0: untagged, as the flow key says; an inner tag the key does not
    show stays). A push (TPID ``tpid``) moves the rest of the frame 4 bytes on, so ``frame``
    must have room for ``flen + 4``; a pop moves it back. Returns the new length. The key's
    CFI bit means "tagged" (OVS's convention): the frame's DEI bit is written as 0, as OVS's
    eth_push_vlan writes it, and an unchanged tag is left alone."""
    if old_tci == new_tci:
        return flen
    if old_tci != 0 and new_tci != 0:  # a tag stays: its TCI changes, its TPID stays
        frame[14] = (new_tci >> 8) & 0xEF
        frame[15] = new_tci & 0xFF
        return flen
    if old_tci != 0:  # pop: bytes 16.. move to 12..
        for b in range(12, flen - 4):
            frame[b] = frame[b + 4]
        return flen - 4
    if new_tci != 0:  # push: bytes 12.. move to 16.., then the tag
        for b in range(flen - 1, 11, -1):
            frame[b + 4] = frame[b]
        frame[12] = (tpid >> 8) & 0xFF
        frame[13] = tpid & 0xFF
        frame[14] = (new_tci >> 8) & 0xEF
        frame[15] = new_tci & 0xFF
        return flen + 4
    return flen
