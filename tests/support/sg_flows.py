"""Flow files of the security-group tests as comparable data, and the cases on disk.

What: ``canonical(text)`` reads an ovs-ofctl flow file into {(table, priority, match):
actions} with values in one form (numbers as ints, prefixes as networks, conjunction lists
sorted), a later line with the same identity replacing an earlier one (as ``add-flows``);
``cases()`` lists tests/data/sg/*/ (groups.json, ports.json, neutron.flows and, for rule
changes, groups-v2.json and neutron-v2.flows).

Design: plain text handling, independent of ctaccel's rule parser, so that the compiler's
output can be compared with Neutron's flows even where the parser lacks an action.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "data" / "sg"
_INFO = {"hard_timeout", "idle_timeout", "cookie"}
_ADDRESS = {"nw_src", "nw_dst", "ipv6_src", "ipv6_dst", "arp_spa", "arp_tpa", "nd_target"}


def split_top(text: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
            continue
        depth += ch == "("
        depth -= ch == ")"
        cur += ch
    if cur:
        out.append(cur)
    return [t.strip() for t in out if t.strip()]


def _value(key: str, value: str):
    if key in _ADDRESS:
        return str(ipaddress.ip_network(value, strict=False))
    if key in ("dl_src", "dl_dst"):
        return value.lower()
    if key == "ct_state":
        return value
    parts = value.split("/")
    try:
        return tuple(int(p, 0) for p in parts)
    except ValueError:
        return value


def canonical(text: str) -> dict:
    flows: dict = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        head, _, actions = line.partition("actions=")
        match, table, priority = {}, 0, 32768
        for token in split_top(head):
            key, _, value = token.partition("=")
            if key in _INFO:
                continue
            if key == "table":
                table = int(value)
            elif key == "priority":
                priority = int(value)
            else:
                match[key] = _value(key, value)
        acts = split_top(actions)
        if acts and all(a.startswith("conjunction(") for a in acts):
            acts = sorted(acts)
        flows[table, priority, frozenset(match.items())] = tuple(acts)
    return flows


def differences(expected: dict, got: dict, limit: int = 8) -> list[str]:
    out = []
    for key in expected.keys() | got.keys():
        if expected.get(key) != got.get(key):
            table, prio, match = key
            m = ",".join(f"{k}={v}" for k, v in sorted(match))
            out.append(
                f"table={table},priority={prio},{m}: neutron={expected.get(key)} "
                f"compiled={got.get(key)}"
            )
    return sorted(out)[:limit]


def cases() -> list[Path]:
    return sorted(p for p in DATA.iterdir() if (p / "groups.json").exists())
