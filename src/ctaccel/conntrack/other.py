"""UDP and other-protocol connection tracker (OVS conntrack-other.c).

What: the L4 tracker for every IP protocol without a dedicated one (UDP, SCTP, VRRP, ...).
It has no view of the payload: a connection is FIRST after its first packet, MULTIPLE once
more packets went the same way, BIDIR once the reply direction has spoken. Only packets of
a BIDIR connection are established; until the first reply every packet stays ``new``.

Design: the state lives in ``C_L4_STATE``; each state has a timeout class, a row of the
table below with the reason for it. UDP uses the ``udp_*`` timeouts and every other protocol
the ``other_*`` ones (OVS maps both onto its udp_* policy values, so the defaults agree).

Invariants: ``other_conn_update`` never returns CT_UPDATE_INVALID or CT_UPDATE_RESTART;
the expiration is always re-armed from ``now_ms`` with the new state's timeout.
"""

from __future__ import annotations

import numpy as np

from ctaccel.conntrack.layout import C_L4_STATE, C_PROTO
from ctaccel.conntrack.timeouts import (
    CT_UPDATE_STILL_NEW,
    CT_UPDATE_VALID,
    TM_OTHER_BIDIR,
    TM_OTHER_FIRST,
    TM_OTHER_MULTIPLE,
    TM_UDP_FIRST,
    TM_UDP_MULTIPLE,
    TM_UDP_SINGLE,
    arm_timer,
)
from ctaccel.jit import njit

OTHERS_FIRST = 0
OTHERS_MULTIPLE = 1
OTHERS_BIDIR = 2

# (state, name, udp timeout, other timeout, why)
OTHER_STATES = (
    (OTHERS_FIRST, "FIRST", TM_UDP_FIRST, TM_OTHER_FIRST, "one packet seen, no answer yet"),
    (
        OTHERS_MULTIPLE,
        "MULTIPLE",
        TM_UDP_SINGLE,
        TM_OTHER_MULTIPLE,
        "more packets from the originator only",
    ),
    (OTHERS_BIDIR, "BIDIR", TM_UDP_MULTIPLE, TM_OTHER_BIDIR, "the reply direction has spoken"),
)

IPPROTO_UDP = 17


@njit(forceinline=True)
def other_timeout_class(proto, state):
    """TM_* index for an other-tracker state (UDP and non-UDP differ only by name)."""
    if proto == IPPROTO_UDP:
        if state == OTHERS_FIRST:
            return TM_UDP_FIRST
        if state == OTHERS_MULTIPLE:
            return TM_UDP_SINGLE
        return TM_UDP_MULTIPLE
    if state == OTHERS_FIRST:
        return TM_OTHER_FIRST
    if state == OTHERS_MULTIPLE:
        return TM_OTHER_MULTIPLE
    return TM_OTHER_BIDIR


@njit(forceinline=True)
def _arm(conns, slot, now_ms, timeouts):
    tm = other_timeout_class(np.int64(conns[slot, C_PROTO]), np.int64(conns[slot, C_L4_STATE]))
    arm_timer(conns, slot, now_ms, timeouts, tm)


@njit(forceinline=True)
def other_valid_new():
    """Any packet may start an other-protocol connection."""
    return True


@njit(forceinline=True)
def other_new_conn(conns, slot, now_ms, timeouts):
    """Initialise a freshly allocated row: state FIRST, first-packet timeout."""
    conns[slot, C_L4_STATE] = OTHERS_FIRST
    _arm(conns, slot, now_ms, timeouts)


@njit(forceinline=True)
def other_conn_update(conns, slot, reply, now_ms, timeouts):
    """Advance the state for one packet; CT_UPDATE_VALID once bidirectional, else NEW."""
    state = np.int64(conns[slot, C_L4_STATE])
    if reply and state != OTHERS_BIDIR:
        state = OTHERS_BIDIR
    elif state == OTHERS_FIRST:
        state = OTHERS_MULTIPLE
    conns[slot, C_L4_STATE] = state
    _arm(conns, slot, now_ms, timeouts)
    if state == OTHERS_BIDIR:
        return CT_UPDATE_VALID
    return CT_UPDATE_STILL_NEW
