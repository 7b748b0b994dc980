"""Oracle scenarios for conjunctive matches (``conjunction(id,k/n)``, ``conj_id=``), the way
Neutron's OVS firewall uses them for remote security groups: a new connection is allowed
when its source is in a group (one dimension) and its port is allowed (another).

What: a stateful firewall whose new-connection verdicts come from two conjunctive flows of
different priorities (two and three dimensions, a rule shared by both), a higher-priority
ordinary rule that beats a met conjunction, and traffic for every case: met, one dimension
only, both conjunctions met, replies of committed connections.

Design: packets that differ only in a field one dimension looks at follow each other, so a
megaflow that forgot a conjunction rule's mask would show. Same registry as scenarios.py.

Invariants: as scenarios.py; no two conjunctive flows of one priority overlap (OVS leaves
that undefined).
"""

from __future__ import annotations

from .frames import IP4, Timeline, tcp, udp
from .scenarios import EST_RPL, NEW, Scenario, scenario

# A (port 1) and C (port 3) are in the remote group; B and R sit behind port 2.
REMOTE_GROUP = f"""
table=0,priority=100,ip,actions=ct(table=1)
table=0,priority=1,actions=drop
table=1,priority=90,ct_state=+trk+est,in_port=1,actions=output:2
table=1,priority=90,ct_state=+trk+est,in_port=2,ip,nw_dst={IP4["A"]},actions=output:1
table=1,priority=90,ct_state=+trk+est,in_port=2,ip,nw_dst={IP4["C"]},actions=output:3
table=1,priority=90,ct_state=+trk+est,in_port=3,actions=output:2
table=1,priority=80,ct_state=+trk+new,tcp,nw_dst={IP4["R"]},tp_dst=80,actions=drop
table=1,priority=75,ct_state=+trk+new,ip,nw_src={IP4["C"]},actions=conjunction(11,1/3)
table=1,priority=75,ct_state=+trk+new,tcp,tp_dst=22,actions=conjunction(11,2/3)
table=1,priority=75,ct_state=+trk+new,in_port=3,actions=conjunction(11,3/3)
table=1,priority=70,ct_state=+trk+new,ip,nw_src={IP4["A"]},actions=conjunction(10,1/2)
table=1,priority=70,ct_state=+trk+new,ip,nw_src={IP4["C"]},actions=conjunction(10,1/2)
table=1,priority=70,ct_state=+trk+new,udp,tp_dst=53,actions=conjunction(10,2/2)
table=1,priority=70,ct_state=+trk+new,tcp,tp_dst=80,actions=conjunction(10,2/2),note:0a
table=1,priority=60,conj_id=10,ip,actions=ct(commit),output:2
table=1,priority=60,conj_id=11,tcp,actions=ct(commit,exec(set_field:0xb->ct_mark)),output:2
table=1,priority=1,actions=drop
"""


@scenario
def conjunction_remote_group():
    t = Timeline()
    dns = t.send("A", udp("A", "B", 5001, 53))
    dns_reply = t.send("B", udp("B", "A", 53, 5001))
    web = t.send("A", tcp("A", "B", 41000, 80, "S", 100))
    ssh_from_a = t.send("A", tcp("A", "B", 41001, 22, "S", 200))  # port not in conjunction 10
    web_again = t.send("A", tcp("A", "B", 41002, 80, "S", 300))
    ssh_from_c = t.send("C", tcp("C", "B", 42000, 22, "S", 400))  # all three of conjunction 11
    ssh_reply = t.send("B", tcp("B", "C", 22, 42000, "SA", 900, 401))
    web_from_c = t.send("C", tcp("C", "B", 42001, 80, "S", 500))
    web_to_r = t.send("A", tcp("A", "R", 41003, 80, "S", 600))  # the priority-80 rule wins
    outsider = t.send("B", udp("B", "A", 5002, 53))  # B is not in the group
    ntp = t.send("A", udp("A", "B", 5003, 123))
    return Scenario(
        "conjunction_remote_group",
        REMOTE_GROUP,
        t.packets,
        expect={
            dns: (NEW, [2]),
            dns_reply: (EST_RPL, [1]),
            web: (NEW, [2]),
            ssh_from_a: (NEW, []),
            web_again: (NEW, [2]),
            ssh_from_c: (NEW, [2]),
            ssh_reply: (EST_RPL, [3]),
            web_from_c: (NEW, [2]),
            web_to_r: (NEW, []),
            outsider: (NEW, []),
            ntp: (NEW, []),
        },
        expect_conntrack_lines=5,
        about="conjunctive flows of two priorities, a rule in two of them, a higher rule",
    )
