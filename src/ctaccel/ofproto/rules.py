"""Rule files (``ovs-ofctl add-flows`` syntax) -> validated :class:`Rule` objects.

What: parses a flow file line by line into rules the classifier and the engine use: table,
priority, cookie, the match as ``(key column, value, mask)`` triples, action objects, and
the canonical match text OVS would print. Validation follows ovs-ofctl: unknown fields and
actions, values too wide for their field, masks on unmaskable fields, prerequisites, ``ct``
outside ip/ipv6, ``goto_table`` backwards, tables out of range, writes to read-only fields,
``ct(exec)`` of anything but ct_mark/ct_label. The first bad line rejects the whole file
(``RuleError("file:line: reason")``); nothing is applied.

Design: a line is split into top-level tokens (commas and/or blanks, parentheses kept
together); the tokens up to ``actions=`` are info keys (table, priority, cookie, timeouts,
here) and match fields (rule_match.py: per storage slot, prerequisites, OVS's text), the rest
is the action list (rule_actions.py: split with ``ovs.flow``'s KV parser, decoded as
ovs-ofctl does).

Prerequisites are checked per storage, as OVS normalizes a match: ``tcp,udp_dst=53`` is
``tcp,tp_dst=53`` and ``dl_type=0x86dd,nw_proto=58,icmp_type=135`` is ``icmp6,icmp_type=135``
(rule_match.py). Deviation from ovs-ofctl: a field whose storage means nothing for the
match (``tp_src`` without tcp/udp/sctp/icmp, ``nw_src`` without ip or arp) is *rejected*.
ovs-ofctl (OpenFlow 1.0 normalisation) silently drops such a field with an INFO log, which
makes the rule match far more than it says; over OpenFlow 1.3 it rejects it too.
Header-rewriting ``set_field``/``load`` targets (eth/ip/ports) are refused as unsupported
(the actions ``mod_dl_src``/``mod_dl_dst``, ``mod_nw_tos`` and ``dec_ttl`` are implemented).
``ct(...,nat(...))`` is parsed and checked as ovs-ofctl does (str_to_nat_range, parse_NAT,
check_NAT).

Invariants: every Rule's match values are already masked; ``Rule.order`` is the rule's
position in the file (the classifier's tie-break among equal priorities).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from ctaccel.errors import InputError, RuleError
from ctaccel.ofproto import fields as F
from ctaccel.ofproto.actions import Conjunction, format_actions
from ctaccel.ofproto.rule_actions import MAX_TABLE, parse_actions, parse_table
from ctaccel.ofproto.rule_match import MatchBuilder

DEFAULT_PRIORITY = 32768


@dataclass
class Rule:
    """One OpenFlow rule as loaded from a file."""

    table: int
    priority: int
    cookie: int
    match: list[tuple[int, int, int]]  # (key column, value & mask, mask)
    actions: list
    match_text: str  # canonical match, as OVS prints it (without priority)
    filename: str = "<rules>"
    line: int = 0
    order: int = 0  # position in the file: earlier wins among equal priorities
    idle_timeout: int = 0
    hard_timeout: int = 0

    def format_match(self) -> str:
        """``priority=N,`` (omitted at the default 32768) followed by the match, as OVS."""
        parts = []
        if self.priority != DEFAULT_PRIORITY:
            parts.append(f"priority={self.priority}")
        if self.match_text:
            parts.append(self.match_text)
        return ",".join(parts)

    def format_actions(self) -> str:
        return format_actions(self.actions)

    @property
    def conjunctions(self) -> tuple[tuple[int, int, int], ...]:
        """(id, k, n) of each ``conjunction`` action: such a rule is one dimension of a
        conjunctive flow and is never executed itself (classifier.py)."""
        return tuple((a.id, a.clause, a.n_clauses) for a in self.actions
                     if isinstance(a, Conjunction))  # fmt: skip

    def matches(self, key) -> bool:
        """True if ``key`` (an int64 flow key) satisfies every (col, value, mask)."""
        return all((int(key[c]) & m) == v for c, v, m in self.match)


# --- tokenizing -------------------------------------------------------------------------------


def _split_top(text: str) -> list[str]:
    """Split at commas/blanks outside parentheses and brackets; empty pieces dropped."""
    out, depth, cur = [], 0, []
    for ch in text:
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        if depth <= 0 and (ch == "," or ch.isspace()):
            if cur:
                out.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    if cur:
        out.append("".join(cur))
    return out


_ACTIONS_RE = re.compile(r"(?:^|[\s,])(actions?)\s*=")


def _split_line(text: str) -> tuple[list[str], str]:
    """(match/info tokens, action text) of one rule line."""
    m = _ACTIONS_RE.search(text)
    if not m:
        raise ValueError("must specify an action")
    return _split_top(text[: m.start(1)]), text[m.end() :].strip()


# --- lines and files ------------------------------------------------------------------------------


def parse_rule(
    text: str, filename: str = "<rules>", line: int = 0, order: int = 0, allow_nat: bool = False
) -> Rule:
    """Parse one add-flows line (no comment, not blank). Raises ValueError with the reason."""
    tokens, action_text = _split_line(text)
    table, priority, cookie, idle, hard = 0, DEFAULT_PRIORITY, 0, 0, 0
    match = MatchBuilder()
    for tok in tokens:
        name, eq, value = tok.partition("=")
        name = name.strip()
        if not eq:
            value = None
        if name == "table":
            table = parse_table(value or "")
            if table > MAX_TABLE:
                raise ValueError(f"table {table} is outside 0..{MAX_TABLE}")
        elif name == "priority":
            if not value or not value.isdigit() or int(value) > 0xFFFF:
                raise ValueError(f'invalid priority "{value}"')
            priority = int(value)
        elif name == "cookie":
            if value and "/" in value:
                raise ValueError("flow additions cannot use a cookie mask")
            cookie = F.parse_int(value or "")
            if cookie >> 64:
                raise ValueError(f"{value}: cookie too large")
        elif name in ("idle_timeout", "hard_timeout"):
            t = F.parse_int(value or "")
            if t > 0xFFFF:
                raise ValueError(f"{name}={value}: out of range")
            idle, hard = (t, hard) if name == "idle_timeout" else (idle, t)
        else:
            match.add_token(name, value)
    match.check_prerequisites()
    actions = parse_actions(action_text, table, match, allow_nat)
    return Rule(
        table=table,
        priority=priority,
        cookie=cookie,
        match=match.columns(),
        actions=actions,
        match_text=match.format(),
        filename=filename,
        line=line,
        order=order,
        idle_timeout=idle,
        hard_timeout=hard,
    )


def parse_flows(text: str, filename: str = "<rules>", allow_nat: bool = False) -> list[Rule]:
    """Parse a whole add-flows file; the first bad line raises RuleError(reason, file, line).

    ``#`` starts a comment (to the end of the line); blank lines are skipped. A rule with the
    same table, priority and match as an earlier one replaces it, as in OVS. ``allow_nat``
    lets ``ct(nat)`` through (for tests of the parser; the engine does not implement NAT).
    """
    rules: list[Rule] = []
    # OVS: adding a flow with the same table, priority and match replaces the existing one
    # (a modify); the replacement keeps the earlier rule's place in the file order.
    index: dict[tuple, int] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        body = raw.split("#", 1)[0].strip()
        if not body:
            continue
        try:
            rule = parse_rule(body, filename, lineno, len(rules), allow_nat)
        except ValueError as exc:
            raise RuleError(str(exc), filename, lineno) from None
        identity = (rule.table, rule.priority, tuple(rule.match))
        if identity in index:
            rule.order = index[identity]
            rules[rule.order] = rule
        else:
            index[identity] = len(rules)
            rules.append(rule)
    return rules


def merge_rules(existing: list[Rule], added: list[Rule]) -> list[Rule]:
    """``ovs-ofctl add-flows`` onto a rule set: each added rule replaces the rule with the same
    table, priority and match (keeping its place), or comes after the others."""
    import dataclasses

    rules = list(existing)
    index = {(r.table, r.priority, tuple(r.match)): i for i, r in enumerate(rules)}
    for rule in added:
        identity = (rule.table, rule.priority, tuple(rule.match))
        if identity in index:
            rules[index[identity]] = rule
        else:
            index[identity] = len(rules)
            rules.append(rule)
    return [dataclasses.replace(r, order=i) for i, r in enumerate(rules)]


def carried_counters(old_rules: list[Rule], old_stats, new_rules: list[Rule]):
    """The new rule set's (n_packets, n_bytes) rows: a rule identical to an old one (table,
    priority, match and actions) keeps the old one's counters, as ``ovs-ofctl replace-flows``
    leaves unchanged flows alone; every other rule starts at zero."""
    import numpy as np

    def identity(r):
        return (r.table, r.priority, tuple(r.match), r.format_actions())

    old = {identity(r): i for i, r in enumerate(old_rules)}
    out = np.zeros((max(len(new_rules), 1), 2), np.int64)
    for i, r in enumerate(new_rules):
        j = old.get(identity(r))
        if j is not None and j < len(old_stats):
            out[i] = old_stats[j]
    return out


def load_flows(path: str | os.PathLike, allow_nat: bool = False) -> list[Rule]:
    """Read and parse a flow file; a missing or unreadable file is an InputError."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read rule file: {exc}") from None
    return parse_flows(text, str(path), allow_nat)


__all__ = [
    "Rule",
    "parse_flows",
    "load_flows",
    "merge_rules",
    "carried_counters",
    "parse_rule",
    "DEFAULT_PRIORITY",
]
