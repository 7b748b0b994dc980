"""The rule sets the equivalence and fast-path tests run, loaded by name.

What: ``load(name)`` reads ``support/rules/<name>.flows`` (ovs-ofctl add-flows syntax, one
file per rule set, its purpose in the ``#`` lines at its top); ``RULE_SETS`` maps every name
the equivalence tests run to its text: the data files, the demo's two firewalls (from
``ctaccel.demo``, the product's own text), and ``zones_by_port_v2`` (zones_by_port with a
second output on one rule: derived, so the difference is the point). ``REPLACEMENTS`` pairs
rule sets for replacement mid-stream.

Design: rule sets are data, not Python strings; the ``#`` comment lines are dropped on load,
so a rule's position (its id, its counter) is the same as the text the tests always ran.

Invariants:
- The port plan is support/hosts.py's: inside 1 <-> outside 2, inside 3 <-> outside 4.
- ``RULE_SETS[name]`` is the file's text without its comment lines, ending in a newline.
"""

from __future__ import annotations

from pathlib import Path

from ctaccel import demo

RULES_DIR = Path(__file__).with_name("rules")


def load(name: str) -> str:
    """Rule set ``name`` from support/rules/<name>.flows, its comment lines dropped."""
    text = (RULES_DIR / f"{name}.flows").read_text(encoding="utf-8")
    return "".join(line for line in text.splitlines(True) if not line.startswith("#"))


RULE_SETS = {name: load(name) for name in sorted(p.stem for p in RULES_DIR.glob("*.flows"))}
RULE_SETS["demo_tcp_firewall"] = demo.TCP_FLOWS
RULE_SETS["talk_zone5_udp"] = demo.UDP_FLOWS
RULE_SETS["zones_by_port_v2"] = RULE_SETS["zones_by_port"].replace(
    "ct_state=+trk+est,in_port=2,actions=output:1",
    "ct_state=+trk+est,in_port=2,actions=output:1,output:8",
)
NAT_KEEP = RULE_SETS["nat_keep"]

# Pairs for rule replacement mid-stream: (before, after).
REPLACEMENTS = (
    ("zones_by_port", "mark_label"),
    ("stateless", "zones_by_port"),
    ("zones_by_port", "zones_by_port_v2"),
    ("two_zone_pipeline", "demo_tcp_firewall"),
    ("nat_keep", "nat_two_zones"),
)
