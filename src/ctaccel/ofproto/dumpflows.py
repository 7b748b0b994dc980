"""``ovs-ofctl dump-flows`` output for our rules and their counters.

What: one line per rule, as ``ovs-ofctl dump-flows br0`` prints it on OVS 3.1, e.g.
`` cookie=0x0, table=0, n_packets=3, n_bytes=180, priority=10,ct_state=-trk,udp
actions=ct(commit,table=0,zone=5)``.

Design: the match and action texts come from the rule (``Rule.format_match``, each action's
``format``), the counters from the caller (an engine's ``rule_counters()``: counters belong to
the engine that ran the packets, not to the rules), so this module only assembles the line. Deliberate differences from OVS, for
deterministic output: no ``duration=`` and no ``idle_age=`` (both are wall-clock ages).
``idle_timeout=``/``hard_timeout=`` are printed when set, where OVS prints them. ``table=0``
is printed like every other table (OVS always prints it in dump-flows).

Order: OVS prints rules in its classifier's iteration order, which depends on hashing (rules
of one table come out grouped by match shape, not by priority). We print table ascending,
then priority descending, then file order -- what ``ovs-ofctl --rsort dump-flows`` gives up
to ties -- so outputs can be compared line by line after sorting either side the same way.

Invariants: one line per rule, no trailing newline on the last line unless asked.
"""

from __future__ import annotations

from ctaccel.ofproto.rules import Rule


def dump_order(rules: list[Rule]) -> list[Rule]:
    """Rules in dump order: table, then priority descending, then file order."""
    return sorted(rules, key=lambda r: (r.table, -r.priority, r.order))


def format_flow(rule: Rule, counters: tuple[int, int] = (0, 0)) -> str:
    """One dump-flows line for ``rule`` with its ``counters`` (n_packets, n_bytes)."""
    n_packets, n_bytes = counters
    info = [
        f" cookie={rule.cookie:#x}",
        f"table={rule.table}",
        f"n_packets={n_packets}",
        f"n_bytes={n_bytes}",
    ]
    if rule.idle_timeout:
        info.append(f"idle_timeout={rule.idle_timeout}")
    if rule.hard_timeout:
        info.append(f"hard_timeout={rule.hard_timeout}")
    match = rule.format_match()
    head = ", ".join(info) + ", " + match if match else ", ".join(info) + ","
    return f"{head} actions={rule.format_actions()}"


def format_dump_flows(rules_in_order: list[Rule], counters=None) -> str:
    """The dump-flows text of ``rules_in_order`` (already in the order to print), one per line,
    with ``counters[i]`` = (n_packets, n_bytes) of ``rules_in_order[i]`` (zeros when None).

    Use :func:`dump_order` (or ``FlowTables.all_rules()``, the order of an engine's
    ``rule_counters()``) to get OVS-like order.
    """
    if counters is None:
        counters = [(0, 0)] * len(rules_in_order)
    if len(counters) != len(rules_in_order):
        raise ValueError(f"{len(counters)} counters for {len(rules_in_order)} rules")
    return "".join(format_flow(r, c) + "\n" for r, c in zip(rules_in_order, counters, strict=True))
