"""The comparison harness of the equivalence and fast-path tests.

What: run the reference engine and a datapath engine over the same packet sequence with the
same batch boundaries and mid-stream operations (rule replacement, conntrack flush), and
report the first diverging packet with both results.

Design: a ``Plan`` fixes the batches and operations, so every engine sees exactly the same
calls; results are compared packet by packet, then the conntrack table and rule counters.
Traffic comes from ``support/random_traffic.py`` and ``support/workloads.py``, rule sets
from ``support/rulesets.py``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from support.hosts import START_MS
from support.random_traffic import TEST_TIMEOUTS_MS, batch_sizes


@dataclass
class Run:
    """What one engine did with a sequence."""

    results: list  # PacketResult per input packet
    dump: list  # conntrack.dump(last now) at the end
    counters: list  # per-rule (n_packets, n_bytes) at the end, all_rules() order
    counters_before_replace: list | None = None
    stats: dict = field(default_factory=dict)
    engine: object = None  # the engine, for its conntrack and stats


@dataclass(frozen=True)
class Plan:
    """Batch boundaries and the operations done between batches (same for every engine)."""

    sizes: tuple  # batch sizes (the reference engine ignores them)
    replace_at: int | None = None  # packet index (a batch boundary) where rules change
    new_rules: str | None = None
    flush_at: int | None = None  # packet index (a batch boundary) of a conntrack flush


def plan_for(packets, seed: int, replace: str | None = None, flush: bool = False) -> Plan:
    """Random batch sizes 1..300; a rule replacement and/or a flush at a random boundary."""
    sizes = tuple(batch_sizes(len(packets), seed))
    bounds = [sum(sizes[:k]) for k in range(1, len(sizes))] or [0]
    rng = random.Random(seed ^ 0x5EED)
    return Plan(
        sizes,
        rng.choice(bounds) if replace is not None else None,
        replace,
        rng.choice(bounds) if flush else None,
    )


def conntrack_for_tests():
    from ctaccel.conntrack import Conntrack

    return Conntrack(timeouts_ms=TEST_TIMEOUTS_MS)


def _bridge(spec: str | None):
    from ctaccel.ofproto.bridge import Bridge

    return Bridge.parse(spec) if spec else None


def run_reference(rules_text: str, packets, plan: Plan, bridge: str | None = None) -> Run:
    """The reference engine, one packet at a time (the semantics). ``bridge``: NORMAL's
    ports (``--bridge`` syntax; None: the engine's default)."""
    from ctaccel.datapath.reference import ReferenceEngine
    from ctaccel.ofproto.rules import parse_flows

    ref = ReferenceEngine(parse_flows(rules_text, "rules"), conntrack_for_tests(),
                          bridge=_bridge(bridge))  # fmt: skip
    results, before = [], None
    for i, (port, frame, now) in enumerate(packets):
        if i == plan.replace_at:
            before = ref.rule_counters()
            ref.replace_flows(parse_flows(plan.new_rules, "new-rules"))
        if i == plan.flush_at:
            ref.conntrack.flush()
        results.append(ref.process(frame, port, now))
    last = packets[-1][2] if packets else START_MS
    counters = ref.rule_counters()
    return Run(results, ref.conntrack.dump(last), counters, before, dict(ref.counters))


def run_engine(engine_class, mode: str, rules_text: str, packets, plan: Plan,
               keep_engine: bool = False, bridge: str | None = None) -> Run:  # fmt: skip
    """A batch engine (``DatapathEngine``'s interface) over the same packets, in the plan's
    batches, with the plan's replacement and flush between two batches. The engine is kept
    in the result only on request (its tables are large; failing examples are retained)."""
    from ctaccel.ofproto.rules import parse_flows

    kwargs = {"bridge": _bridge(bridge)} if bridge else {}
    eng = engine_class(parse_flows(rules_text, "rules"), mode=mode,
                       conntrack=conntrack_for_tests(), **kwargs)  # fmt: skip
    results, before, pos = [], None, 0
    for size in plan.sizes:
        if pos == plan.replace_at:
            before = list(eng.rule_counters())
            eng.replace_flows(parse_flows(plan.new_rules, "new-rules"))
        if pos == plan.flush_at:
            eng.conntrack.flush()
        chunk = packets[pos : pos + size]
        results.extend(eng.process_batch([f for _p, f, _t in chunk], [p for p, _f, _t in chunk],
                                         [t for _p, _f, t in chunk]))  # fmt: skip
        pos += size
    last = packets[-1][2] if packets else START_MS
    return Run(results, eng.conntrack.dump(last), list(eng.rule_counters()), before,
               dict(eng.stats), eng if keep_engine else None)  # fmt: skip


def describe_frame(frame: bytes) -> str:
    try:
        import scapy.layers.inet  # noqa: F401  (registers IP/TCP/UDP/ICMP under Ether)
        import scapy.layers.inet6  # noqa: F401
        from scapy.layers.l2 import Ether

        return Ether(bytes(frame)).summary() + f" ({len(frame)} bytes)"
    except Exception:  # pragma: no cover - scapy can choke on garbage
        return bytes(frame[:64]).hex()


def _describe_result(r) -> str:
    outs = [(p, len(f)) for p, f in r.outputs]
    extra = f" path={getattr(r, 'path', '-')} punt={getattr(r, 'punt', '-')}"
    return (f"outputs(port, len)={outs} ct_state={r.ct_state!r} drop={r.drop_reason!r} "
            f"recircs={r.recirculations}{extra}")  # fmt: skip


def first_divergence(packets, expected: Run, got: Run, label: str, plan: Plan,
                     compare_recirculations: bool = False) -> str | None:  # fmt: skip
    """None when ``got`` matches ``expected``; else a report of the first difference (the
    diverging packet with both results and the packets just before it)."""
    for i, (e, g) in enumerate(zip(expected.results, got.results, strict=True)):
        same = e.verdict() == g.verdict()  # (PacketResult.verdict)
        if same and compare_recirculations:
            same = e.recirculations == g.recirculations
        if same:
            continue
        port, frame, now = packets[i]
        batch_start = 0
        for size in plan.sizes:
            if batch_start + size > i:
                break
            batch_start += size
        lines = [f"{label}: packet #{i} differs (batch starting at #{batch_start}; "
                 f"replace_at={plan.replace_at}, flush_at={plan.flush_at})",
                 f"  in_port={port} now_ms={now} {describe_frame(frame)}",
                 f"  frame={bytes(frame).hex()}",
                 f"  reference: {_describe_result(e)}",
                 f"  {label}: {_describe_result(g)}",
                 "  previous packets:"]  # fmt: skip
        for j in range(max(0, i - 6), i):
            p, f, t = packets[j]
            lines.append(f"    #{j} in_port={p} now={t} {describe_frame(f)} -> "
                         f"{expected.results[j].ct_state!r} {expected.results[j].out_ports}")  # fmt: skip
        return "\n".join(lines)
    if len(expected.results) != len(got.results):
        return f"{label}: {len(got.results)} results for {len(expected.results)} packets"
    if expected.dump != got.dump:
        only_e = sorted(set(expected.dump) - set(got.dump))[:5]
        only_g = sorted(set(got.dump) - set(expected.dump))[:5]
        return f"{label}: conntrack differs\n  reference only: {only_e}\n  {label} only: {only_g}"
    if expected.counters_before_replace != got.counters_before_replace:
        return (f"{label}: rule counters before the replacement differ\n"
                f"  reference: {expected.counters_before_replace}\n"
                f"  {label}: {got.counters_before_replace}")  # fmt: skip
    if expected.counters != got.counters:
        return f"{label}: rule counters differ\n  reference: {expected.counters}\n  {label}: {got.counters}"
    return None


class ReferenceBatchEngine:
    """The reference engine behind ``DatapathEngine``'s batch interface: lets the harness be
    checked on its own (``CTACCEL_EQUIV_ENGINE=reference``)."""

    def __init__(self, rules, mode="recirc", conntrack=None, batch_size=256, bridge=None):
        from ctaccel.datapath.reference import ReferenceEngine

        self.mode = mode
        self._ref = ReferenceEngine(rules, conntrack, bridge=bridge)
        self.conntrack = self._ref.conntrack

    def process_batch(self, frames, in_ports, now_ms):
        out = []
        for frame, port, now in zip(frames, in_ports, now_ms, strict=True):
            r = self._ref.process(frame, port, now)
            r.path, r.punt = "reference", ""
            out.append(r)
        return out

    def replace_flows(self, rules) -> None:
        self._ref.replace_flows(rules)

    def rule_counters(self):
        return self._ref.rule_counters()

    @property
    def stats(self) -> dict:
        return dict(self._ref.counters)
