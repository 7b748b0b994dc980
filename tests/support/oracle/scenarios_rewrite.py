"""Oracle scenarios for actions that rewrite the frame: ``mod_dl_src``, ``mod_dl_dst``.

What: rewrites before and after outputs (each output carries the frame as it was at that
point), a later lookup that sees the rewritten flow (resubmit), a rewrite in a recirculated
copy after ``ct``, and established connections (where the fast path would be tempted to
replay the received frame).

Design: frames are compared byte for byte with OVS's (the scenarios are deterministic).
Same registry as scenarios.py.

Invariants: as scenarios.py.
"""

from __future__ import annotations

from .frames import MAC, Timeline, udp
from .scenarios import EST_RPL, NEW, Scenario, scenario

UNTRACKED = ""
GW = "02:00:00:00:00:aa"  # a gateway MAC the rules write in

REWRITES = f"""
table=0,priority=10,in_port=1,udp,actions=output:3,mod_dl_src:{GW},resubmit(,1)
table=0,priority=10,in_port=2,udp,actions=ct(table=2)
table=0,priority=1,actions=drop
table=1,priority=10,udp,dl_src={GW},actions=ct(commit),mod_dl_dst:{MAC["B"]},output:2
table=1,priority=1,actions=drop
table=2,priority=10,ct_state=+trk+est,actions=mod_dl_src:{GW},mod_dl_dst:{MAC["A"]},output:1
table=2,priority=10,ct_state=+trk+new,actions=drop
"""


@scenario
def mod_dl_src_and_dst():
    t = Timeline()
    first = t.send("A", udp("A", "B", 6000, 53))
    reply = t.send("B", udp("B", "A", 53, 6000))
    again = t.send("A", udp("A", "B", 6000, 53))
    reply2 = t.send("B", udp("B", "A", 53, 6000))
    unsolicited = t.send("B", udp("B", "A", 53, 6001))
    third = t.send("A", udp("A", "B", 6000, 53, b"x" * 40))
    return Scenario(
        "mod_dl_src_and_dst",
        REWRITES,
        t.packets,
        expect={
            first: (UNTRACKED, [3, 2]),
            reply: (EST_RPL, [1]),
            again: (UNTRACKED, [3, 2]),
            reply2: (EST_RPL, [1]),
            unsolicited: (NEW, []),
            third: (UNTRACKED, [3, 2]),
        },
        expect_conntrack_lines=1,
        about="outputs before and after a rewrite; a lookup and a recirculation after one",
    )
