"""Flow tables: priority lookup of a flow key, with megaflow wildcard tracking.

What: :class:`FlowTables` holds the rules of every table in lookup order (priority
descending; among equal priorities the rule that came first in the file) and finds the rule
a flow key hits. When asked, it also reports which key bits the decision depended on (``wc``),
so the datapath can install a megaflow that is valid for every packet agreeing on those bits.

Design: two lookups that must agree (OVS's test-classifier idea):
- :meth:`FlowTables.lookup_linear` walks the table in order and ORs into ``wc`` the masks of
  every rule it examined, up to and including the hit: the obvious, trusted reference.
- :meth:`FlowTables.lookup` first narrows the table with an index on the exact ``dl_type`` a
  rule matches (rules that leave dl_type wildcarded are in every bucket), then walks only that
  bucket. Skipping rules because of their dl_type makes the result depend on dl_type, so when
  the bucket skipped anything, the full dl_type mask goes into ``wc``.
Both return the same rule for every key; their ``wc`` may differ but each is sound: any key
that agrees with the looked-up key on the ``wc`` bits gets the same rule (tests check this).
This is the slow path (plain Python, once per megaflow miss), so clarity beats speed here.
- Conjunctive matches (ovs-fields(7), "Conjunctive match fields"): a rule with
  ``conjunction(id,k/n)`` actions is never the answer. A lookup finds the first matching rule
  without them (the "hard" match) and, on the way, the matching conjunction rules of higher
  priority; a conjunctive flow (id, priority) is met when every one of its n dimensions has
  a matching rule. For each met one, highest priority first (then lowest id; OVS leaves
  overlapping conjunctive flows of one priority undefined), a second lookup with
  ``conj_id=id`` in the key that ignores conjunction rules gives the answer; if it finds
  nothing the conjunction counts as not met and the hard match stands. The masks of every
  rule either lookup examined go into ``wc``, but never ``conj_id``'s: packets have 0 there.

Invariants: ``tables[t]`` is sorted by (-priority, order); every rule's match values are
masked (``value & ~mask == 0``), so a hit is ``key[col] & mask == value`` for each triple;
``tables.rule_id(rule)`` is the rule's index in :meth:`FlowTables.all_rules`; the Rule
objects are never written, so one list of rules may back several FlowTables.
"""

from __future__ import annotations

from ctaccel.ofproto.rules import Rule
from ctaccel.packet import key as K

_DL_TYPE_FULL = 0xFFFF
MAX_RESUBMIT_DEPTH = 64  # ofproto-dpif-xlate MAX_DEPTH


def lookup_key(key):
    """The key OpenFlow lookups see: OVS's default fragment handling ("normal") hides the
    transport ports of every IP fragment, the first one included."""
    if key[K.NW_FRAG] & K.FRAG_ANY:
        key = key.copy()
        key[K.TP_SRC] = 0
        key[K.TP_DST] = 0
    return key


def _sort_key(rule: Rule):
    return (-rule.priority, rule.order)


def _exact_dl_type(rule: Rule) -> int | None:
    for col, value, mask in rule.match:
        if col == K.DL_TYPE and mask == _DL_TYPE_FULL:
            return value
    return None


class FlowTables:
    """All OpenFlow tables of one rule set, ready for lookups."""

    def __init__(self, rules: list[Rule]):
        self.tables: dict[int, list[Rule]] = {}
        for rule in rules:
            self.tables.setdefault(rule.table, []).append(rule)
        for table in self.tables.values():
            table.sort(key=_sort_key)
        # Per table: dl_type -> candidate rules in lookup order, plus the wildcard bucket.
        self._by_dl_type: dict[int, dict[int, list[Rule]]] = {}
        self._wild: dict[int, list[Rule]] = {}
        for table_id, table in self.tables.items():
            exact = {r_id: _exact_dl_type(r) for r_id, r in enumerate(table)}
            wild = [r for i, r in enumerate(table) if exact[i] is None]
            buckets: dict[int, list[Rule]] = {}
            for dl_type in {d for d in exact.values() if d is not None}:
                buckets[dl_type] = [
                    r for i, r in enumerate(table) if exact[i] is None or exact[i] == dl_type
                ]
            self._by_dl_type[table_id] = buckets
            self._wild[table_id] = wild
        # A stable integer id per rule (its index in all_rules()): datapath programs name
        # the rules they hit by it (OP_RULE), for counters.
        self._ids = {id(rule): i for i, rule in enumerate(self.all_rules())}
        self._conj = {id(rule): rule.conjunctions for rule in rules}

    def rule_id(self, rule: Rule) -> int:
        """The rule's index in :meth:`all_rules` (the id OP_RULE and the counters use)."""
        return self._ids[id(rule)]

    def all_rules(self) -> list[Rule]:
        """Every rule in dump order: table ascending, then lookup order within a table."""
        return [r for t in sorted(self.tables) for r in self.tables[t]]

    def __len__(self) -> int:
        return sum(len(t) for t in self.tables.values())

    @staticmethod
    def _find(candidates: list[Rule], key_values: list[int], wc, conj: dict, soft: list | None):
        """The first candidate matching ``key_values`` that has no conjunction actions;
        matching conjunction rules met on the way go to ``soft`` (ignored when None). The
        masks of every rule examined go into ``wc``."""
        for rule in candidates:
            hit = True
            for col, value, mask in rule.match:
                if wc is not None:
                    wc[col] |= mask
                if key_values[col] & mask != value:
                    hit = False
                    if wc is None:
                        break
            if hit:
                if not conj[id(rule)]:
                    return rule
                if soft is not None:
                    soft.append(rule)
        return None

    def _resolve(self, candidates_for, key_values: list[int], wc) -> Rule | None:
        """The lookup's answer, conjunctive matches included (see the module docstring);
        ``candidates_for(key_values)`` gives the rules to scan, in lookup order."""
        soft: list[Rule] = []
        hard = self._find(candidates_for(key_values), key_values, wc, self._conj, soft)
        if soft:
            floor = hard.priority if hard is not None else -1
            for conj_id in _met_conjunctions(soft, floor, self._conj):
                again = list(key_values)
                again[K.CONJ_ID] = conj_id
                found = self._find(candidates_for(again), again, wc, self._conj, None)
                if found is not None:
                    hard = found
                    break
        if wc is not None:
            wc[K.CONJ_ID] = 0
        return hard

    def lookup_linear(self, table_id: int, key, wc=None) -> Rule | None:
        """Reference lookup: every rule of the table in order."""
        table = self.tables.get(table_id, [])
        return self._resolve(lambda _kv: table, key.tolist(), wc)

    def lookup(self, table_id: int, key, wc=None) -> Rule | None:
        """The highest-priority rule of ``table_id`` matching ``key`` (None: table miss),
        conjunctive matches resolved.

        ``wc`` (int64 array of KEY_WIDTH), when given, gets the masks of the key bits the
        decision depended on OR-ed in.
        """
        table = self.tables.get(table_id)
        if not table:
            return None
        buckets, wild = self._by_dl_type[table_id], self._wild[table_id]

        def candidates_for(key_values):
            candidates = buckets.get(key_values[K.DL_TYPE], wild)
            if wc is not None and len(candidates) != len(table):
                wc[K.DL_TYPE] |= _DL_TYPE_FULL
            return candidates

        return self._resolve(candidates_for, key.tolist(), wc)


def _met_conjunctions(soft: list[Rule], floor: int, conj: dict) -> list[int]:
    """The ids of the conjunctive flows the ``soft`` matches meet above priority ``floor``:
    highest priority first, then lowest id."""
    seen: dict[tuple[int, int, int], set[int]] = {}
    for rule in soft:
        if rule.priority > floor:
            for cid, k, n in conj[id(rule)]:
                seen.setdefault((rule.priority, cid, n), set()).add(k)
    met = sorted((-prio, cid) for (prio, cid, n), ks in seen.items() if len(ks) == n)
    return [cid for _p, cid in met]
