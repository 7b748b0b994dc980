"""Re-checking an established connection for the assume-established fast path.

What: the one conntrack question the fast path asks per ct step of a cached packet: "if
full processing ran ct() on this packet now, would it find connection (slot, generation)
alive, in this direction, and would the tracker's update leave it established without any
protocol state change?" If yes the update is applied (windows, timers) exactly as
``ct_execute`` would have applied it and the resulting ct_state is returned; if no, the row
is left exactly as it was and -1 is returned (RECHECK_*), so full processing sees the connection as if
the fast path had never looked.

Design: it calls the very same tracker update as ``core.ct_execute`` (``core._l4_update``),
on the live row, after saving its hot columns (layout.HOT_WIDTH: the only ones an update
writes); "no protocol state change" is checked by comparing the
state columns (TCP: both peers' states and window-scale flags; others: the tracker state) and
anything but CT_UPDATE_VALID restores the saved row. The expiry test is the one lookups use
(dead at ``now >= expiration``).

Invariants: never creates, deletes or re-indexes a connection; on -1 the row is bit-for-bit
what it was.
"""

from __future__ import annotations

from ctaccel.conntrack.core import _l4_update
from ctaccel.conntrack.layout import (
    C_EXPIRATION,
    C_GENERATION,
    C_L4_STATE,
    C_TCP,
    C_USED,
    HOT_WIDTH,
    P_STATE,
    P_WSCALE,
    TCP_PEER_WIDTH,
)
from ctaccel.conntrack.timeouts import CT_UPDATE_VALID
from ctaccel.jit import njit
from ctaccel.packet.key import CS_ESTABLISHED, CS_REPLY_DIR, CS_TRACKED, IPPROTO_TCP

RECHECK_GONE = -2  # freed, re-used for another connection, or expired
RECHECK_STATE = -1  # the tracker would reject the packet or move to another state


@njit(inline="always")
def ct_recheck(conns, slot, generation, reply, proto, frame, l4_ofs, l4_len, now_ms, timeouts,
               saved):  # fmt: skip
    """Apply the tracker update for a fast-path packet, or say why not.

    ``saved`` is scratch space (int64[>= HOT_WIDTH]). Returns the ct_state full processing
    would give (est|trk, plus rpl for the reply direction), ``RECHECK_GONE`` when the
    connection is not there any more (freed, replaced or expired), or ``RECHECK_STATE`` when
    the tracker would reject the packet or change state; in both cases the row is untouched."""
    if slot < 0 or slot >= conns.shape[0]:
        return RECHECK_GONE
    if conns[slot, C_USED] == 0 or conns[slot, C_GENERATION] != generation:
        return RECHECK_GONE
    if now_ms >= conns[slot, C_EXPIRATION]:
        return RECHECK_GONE
    for c in range(HOT_WIDTH):  # a tracker update only writes hot columns (a loop: a slice
        saved[c] = conns[slot, c]  # copy may allocate a temporary)
    result = _l4_update(conns, slot, reply, proto, frame, l4_ofs, l4_len, now_ms, timeouts)
    same = result == CT_UPDATE_VALID
    if same:
        if proto == IPPROTO_TCP:
            for peer in range(2):
                base = C_TCP + peer * TCP_PEER_WIDTH
                if conns[slot, base + P_STATE] != saved[base + P_STATE]:
                    same = False
                if conns[slot, base + P_WSCALE] != saved[base + P_WSCALE]:
                    same = False
        elif conns[slot, C_L4_STATE] != saved[C_L4_STATE]:
            same = False
    if not same:
        for c in range(HOT_WIDTH):
            conns[slot, c] = saved[c]
        return RECHECK_STATE
    state = CS_TRACKED | CS_ESTABLISHED
    if reply:
        state |= CS_REPLY_DIR
    return state
