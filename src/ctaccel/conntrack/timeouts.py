"""Default conntrack timeouts and the tracker result codes.

What: the userspace OVS default timeout for every tracker state, as a table with the reason
for each entry, and the codes an L4 tracker's update returns.

Design: jitted trackers receive the timeouts as an int64 array in milliseconds indexed by the
``TM_*`` constants, so a caller can change them (tests use short ones) without recompiling.

Invariants: every ``TM_*`` index is < ``N_TIMEOUTS``; values are milliseconds.
"""

from __future__ import annotations

import numpy as np

from ctaccel.conntrack.layout import C_TIMEOUT_CLASS, X_TP_BASE, ext_get, set_expiration
from ctaccel.errors import InputError
from ctaccel.jit import njit

# Tracker result codes (OVS enum ct_update_res). OVS names the last two CT_UPDATE_VALID_NEW
# (still new) and CT_UPDATE_NEW (restart) -- confusingly; we name them for what they mean.
CT_UPDATE_INVALID = 0  # the packet does not fit the connection: ct_state inv
CT_UPDATE_VALID = 1  # fits; the connection is (or stays) established
CT_UPDATE_STILL_NEW = 2  # fits, but the connection is still "new" (e.g. a repeated SYN)
CT_UPDATE_RESTART = 3  # the old connection is over; this packet starts a new one (port reuse)

TM_TCP_SYN_SENT = 0
TM_TCP_SYN_RECV = 1
TM_TCP_ESTABLISHED = 2
TM_TCP_FIN_WAIT = 3
TM_TCP_TIME_WAIT = 4
TM_TCP_CLOSE = 5
TM_UDP_FIRST = 6
TM_UDP_SINGLE = 7
TM_UDP_MULTIPLE = 8
TM_ICMP_FIRST = 9
TM_ICMP_REPLY = 10
TM_OTHER_FIRST = 11
TM_OTHER_MULTIPLE = 12
TM_OTHER_BIDIR = 13
N_TIMEOUTS = 14

# (index, name as in `ovs-vsctl add-zone-tp`, seconds, why)
DEFAULT_TIMEOUTS = (
    (TM_TCP_SYN_SENT, "tcp_syn_sent", 30, "SYN seen from one side only"),
    (TM_TCP_SYN_RECV, "tcp_syn_recv", 30, "SYN/ACK seen, handshake not complete"),
    (TM_TCP_ESTABLISHED, "tcp_established", 86400, "both sides established: one day idle"),
    (TM_TCP_FIN_WAIT, "tcp_fin_wait", 900, "a FIN was seen, the other side may still send"),
    (TM_TCP_TIME_WAIT, "tcp_time_wait", 45, "both FINs acknowledged, or after a RST"),
    (TM_TCP_CLOSE, "tcp_close", 30, "closed or half-open states"),
    (TM_UDP_FIRST, "udp_first", 60, "first packet of a flow"),
    (TM_UDP_SINGLE, "udp_single", 60, "more packets, one direction only"),
    (TM_UDP_MULTIPLE, "udp_multiple", 30, "packets seen in both directions"),
    (TM_ICMP_FIRST, "icmp_first", 60, "echo request, no reply yet"),
    (TM_ICMP_REPLY, "icmp_reply", 30, "echo reply seen"),
    (TM_OTHER_FIRST, "other_first", 60, "other protocols: first packet"),
    (TM_OTHER_MULTIPLE, "other_multiple", 60, "other protocols: one direction"),
    (TM_OTHER_BIDIR, "other_bidir", 30, "other protocols: both directions"),
)

TIMEOUT_NAMES = {name: idx for idx, name, _s, _why in DEFAULT_TIMEOUTS}


def default_timeouts_ms() -> np.ndarray:
    """A fresh int64 array of the default timeouts in milliseconds."""
    out = np.zeros(N_TIMEOUTS, np.int64)
    for idx, _name, seconds, _why in DEFAULT_TIMEOUTS:
        out[idx] = seconds * 1000
    return out


# --- zone timeout policies (OVS ``ovs-vsctl add-zone-tp``, lib/conntrack-tp.c) ---------------
# A policy is a row of N_TIMEOUTS values in the flat ``timeouts`` array (row 0: the default
# every zone without a policy uses); a connection keeps where its zone's policy starts at
# commit (X_TP_BASE = row * N_TIMEOUTS, in its extension row), as OVS keeps conn->tp_id.
MAX_POLICIES = 256
# OVS's attribute names -> our classes (OVS times other protocols by the udp_* values)
POLICY_NAMES = {
    "tcp_syn_sent": (TM_TCP_SYN_SENT,),
    "tcp_syn_recv": (TM_TCP_SYN_RECV,),
    "tcp_established": (TM_TCP_ESTABLISHED,),
    "tcp_fin_wait": (TM_TCP_FIN_WAIT,),
    "tcp_time_wait": (TM_TCP_TIME_WAIT,),
    "tcp_close": (TM_TCP_CLOSE,),
    "udp_first": (TM_UDP_FIRST, TM_OTHER_FIRST),
    "udp_single": (TM_UDP_SINGLE, TM_OTHER_MULTIPLE),
    "udp_multiple": (TM_UDP_MULTIPLE, TM_OTHER_BIDIR),
    "icmp_first": (TM_ICMP_FIRST,),
    "icmp_reply": (TM_ICMP_REPLY,),
}


@njit(forceinline=True)
def arm_timer(conns, slot, now_ms, timeouts, tm):
    """Arm the connection's timer for class ``tm`` under the timeout policy it was committed
    with (OVS conn_update_expiration): expiration = now + the policy's value."""
    conns[slot, C_TIMEOUT_CLASS] = tm
    set_expiration(conns, slot, now_ms + timeouts[ext_get(conns, slot, X_TP_BASE) + tm])


def policy_table(base_ms=None) -> np.ndarray:
    """The flat ``timeouts`` array: MAX_POLICIES rows of OVS's defaults, row 0 ``base_ms``."""
    table = np.tile(default_timeouts_ms(), MAX_POLICIES)
    if base_ms is not None:
        table[:N_TIMEOUTS] = base_ms
    return table


def apply_policy(row: np.ndarray, values: dict[str, int]) -> None:
    """Set a policy row's attributes from {OVS name: seconds}."""
    for name, seconds in values.items():
        for tm in POLICY_NAMES[name]:
            row[tm] = int(seconds) * 1000


def parse_timeout_policies(specs) -> dict:
    """``--timeout-policy ZONE:NAME=SECONDS[,NAME=SECONDS...]`` (or ``default:...``, every zone
    without its own) as {zone or "default": {name: seconds}}; later items add to earlier ones
    for the same zone. InputError names the item and what is wrong."""
    out: dict = {}
    for spec in specs or ():
        zone, sep, items = str(spec).partition(":")
        zone = zone.strip()
        if not sep or not items or not (zone == "default" or zone.isdigit()):
            raise InputError(f"--timeout-policy {spec!r}: expected ZONE:NAME=SECONDS[,...] "
                             "or default:NAME=SECONDS[,...]")  # fmt: skip
        key = "default" if zone == "default" else int(zone)
        if key != "default" and key > 0xFFFF:
            raise InputError(f"--timeout-policy {spec!r}: zones are 0-65535")
        for item in items.split(","):
            name, eq, value = item.strip().partition("=")
            if name not in POLICY_NAMES:
                raise InputError(f"--timeout-policy {spec!r}: unknown timeout {name!r} "
                                 f"(known: {', '.join(POLICY_NAMES)})")  # fmt: skip
            if not eq or not value.strip().isdigit() or int(value) > 0xFFFFFFFF:
                raise InputError(f"--timeout-policy {spec!r}: {name} needs whole seconds "
                                 "(0-4294967295)")  # fmt: skip
            out.setdefault(key, {})[name] = int(value)
    return out
