"""The fuzzing campaign: mutated traffic through three engines that must agree.

What: ``run_campaign(frames, seed)`` plays rounds of seed traffic (traffic.py) in which a
share of the packets is mutated (mutate.py), inserted before the packet they came from or in
its place, through the reference engine (one packet at a time: the semantics), and the
compiled datapath in ``recirc`` and ``assume-established`` modes (in batches). For every
packet the three must give the same outputs (ports and frame bytes, in order), ct_state and
drop reason, and every packet must have outputs or a named drop reason; at the end of each
round the conntrack tables and the rule counters must be equal. An exception that escapes
an engine is a crash. The report counts frames per mutation, crashes and divergences, and
keeps the first few of each with the frame in hex and both results.

Design: each round starts fresh engines (a round is an independent trial, and memory stays
bounded however many frames are asked for); rounds are pure functions of (seed, round), so
``--seed S`` with the round number reproduces one. With ``out_dir``, a round that crashed or
diverged is written as one pcap per input port plus the rules, ready for ``ctaccel replay``
and ``ctaccel trace``.
"""

from __future__ import annotations

import os
import random
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field

from ctaccel.fuzz.mutate import mutate
from ctaccel.fuzz.traffic import RULES, seed_traffic

MODES = ("recirc", "assume-established")
KEEP = 10  # crashes and divergences kept in full per report


@dataclass
class Report:
    frames: int = 0  # packets through each engine
    mutated: int = 0
    rounds: int = 0
    by_mutation: Counter = field(default_factory=Counter)  # each mutation applied
    verdicts: Counter = field(default_factory=Counter)  # the reference's, of mutated frames
    crashes: list = field(default_factory=list)
    divergences: list = field(default_factory=list)
    n_crashes: int = 0
    n_divergences: int = 0
    unnamed_drops: int = 0
    seconds: Counter = field(default_factory=Counter)  # per engine
    saved: list = field(default_factory=list)  # rounds written to out_dir

    def as_dict(self) -> dict:
        return {
            "frames": self.frames,
            "mutated_frames": self.mutated,
            "rounds": self.rounds,
            "crashes": self.n_crashes,
            "divergences": self.n_divergences,
            "packets_without_outputs_or_named_drop": self.unnamed_drops,
            "by_mutation": dict(sorted(self.by_mutation.items())),
            "verdicts_of_mutated": dict(self.verdicts.most_common()),
            "seconds_per_engine": {k: round(v, 2) for k, v in self.seconds.items()},
            "first_crashes": self.crashes,
            "first_divergences": self.divergences,
            "saved_rounds": self.saved,
        }


def make_round(seed: int, index: int, size: int, share: float):
    """Round ``index``: (packets, mutation name or '' per packet)."""
    rng = random.Random(f"ctaccel-fuzz:{seed}:{index}")
    base = seed_traffic(rng, size)
    packets, names = [], []
    for port, frame, now in base:
        if rng.random() < share:
            bad, name = mutate(rng, frame)
            packets.append((port if rng.random() < 0.9 else rng.randint(1, 4), bad, now))
            names.append(name)
            if rng.random() < 0.5:
                continue  # in place of the packet it came from
        packets.append((port, frame, now))
        names.append("")
    return packets, names


def _verdict(v) -> str:
    """'ct_state -> forwarded' or 'ct_state -> drop reason' (the reference's)."""
    if v is None:
        return "crashed"
    outs, state, drop = v
    return f"{state or '-'} -> {'forwarded' if outs else drop}"


def _show(v) -> str:
    if v is None:
        return "(crashed)"
    outs, state, drop = v
    return f"out={[(p, len(f)) for p, f in outs]} ct_state={state!r} drop={drop!r}"


def _run_reference(rules, packets, report, where):
    """The reference's views (None from a crash on: its state is no longer the reference)
    and its final table, or None after a crash."""
    from ctaccel.conntrack import Conntrack
    from ctaccel.datapath.reference import ReferenceEngine

    eng = ReferenceEngine(rules, Conntrack())
    views = []
    for i, (port, frame, now) in enumerate(packets):
        try:
            views.append(eng.process(frame, port, now).verdict())
        except Exception:  # noqa: BLE001 - a crash is what the campaign looks for
            _crash(report, "reference", where, i, packets[i])
            return views + [None] * (len(packets) - i), None
    return views, _final(eng, packets)


def _run_compiled(rules, mode, packets, batch, report, where):
    """As _run_reference, for a compiled mode in batches of ``batch``."""
    from ctaccel.conntrack import Conntrack
    from ctaccel.datapath.engine import DatapathEngine

    eng = DatapathEngine(rules, mode=mode, conntrack=Conntrack())
    views: list = []
    for lo in range(0, len(packets), batch):
        chunk = packets[lo : lo + batch]
        try:
            res = eng.process_batch([f for _p, f, _t in chunk], [p for p, _f, _t in chunk],
                                    [t for _p, _f, t in chunk])  # fmt: skip
        except Exception:  # noqa: BLE001
            _crash(report, mode, where, lo, chunk[0], batch=len(chunk))
            return views + [None] * (len(packets) - lo), None
        views.extend(r.verdict() for r in res)
    return views, _final(eng, packets)


def _final(eng, packets):
    last = packets[-1][2] if packets else 0
    return sorted(eng.conntrack.dump(last)), list(eng.rule_counters())


def _crash(report, engine, where, i, packet, batch=1) -> None:
    report.n_crashes += 1
    if len(report.crashes) < KEEP:
        port, frame, now = packet
        report.crashes.append({"engine": engine, **where, "packet": i, "batch": batch,
                               "in_port": port, "now_ms": now, "frame": bytes(frame).hex(),
                               "traceback": traceback.format_exc(limit=8)})  # fmt: skip


def _compare(report, where, packets, names, expected, got, mode) -> bool:
    """Count (and keep the first few) differences of ``got`` against the reference."""
    same = True
    views, final = got
    for i, (e, g) in enumerate(zip(expected[0], views, strict=True)):
        if e is None or g is None or e == g:
            continue
        same = False
        report.n_divergences += 1
        if len(report.divergences) < KEEP:
            port, frame, now = packets[i]
            report.divergences.append({"mode": mode, **where, "packet": i,
                                       "mutation": names[i], "in_port": port, "now_ms": now,
                                       "frame": bytes(frame).hex(),
                                       "reference": _show(e), mode: _show(g)})  # fmt: skip
    if expected[1] is None or final is None:
        return same  # a crash: the tables are no longer comparable
    for what, e, g in (("conntrack", expected[1][0], final[0]),
                       ("counters", expected[1][1], final[1])):  # fmt: skip
        if e != g:
            same = False
            report.n_divergences += 1
            if len(report.divergences) < KEEP:
                diff = sorted(set(map(str, e)) ^ set(map(str, g)))[:6]
                report.divergences.append({"mode": mode, **where, "what": what, "differ": diff})
    return same


def run_campaign(frames: int = 100_000, seed: int = 0, round_size: int = 20_000,
                 share: float = 0.3, batch: int = 1024, rules_text: str | None = None,
                 out_dir: str | None = None, progress=None) -> Report:  # fmt: skip
    """At least ``frames`` packets through the three engines (see the module docstring).
    ``progress(done, total)`` is called after each round."""
    from ctaccel.ofproto.rules import parse_flows

    text = rules_text if rules_text is not None else RULES
    rules = parse_flows(text, "fuzz.flows")
    report = Report()
    index = 0
    while report.frames < frames:
        size = min(round_size, max(1, frames - report.frames))
        packets, names = make_round(seed, index, size, share)
        where = {"seed": seed, "round": index}
        t0 = time.perf_counter()
        expected = _run_reference(rules, packets, report, where)
        report.seconds["reference"] += time.perf_counter() - t0
        report.unnamed_drops += sum(1 for v in expected[0] if v is not None and not v[0]
                                    and not v[2])  # fmt: skip
        crashes_before = report.n_crashes
        agree = True
        for mode in MODES:
            t0 = time.perf_counter()
            got = _run_compiled(rules, mode, packets, batch, report, where)
            report.seconds[mode] += time.perf_counter() - t0
            agree &= _compare(report, where, packets, names, expected, got, mode)
        if out_dir and (not agree or report.n_crashes > crashes_before):
            report.saved.append(_save_round(out_dir, index, text, packets))
        report.frames += len(packets)
        report.mutated += sum(1 for n in names if n)
        report.by_mutation.update(part for n in names if n for part in n.split("+"))
        report.verdicts.update(_verdict(v) for v, n in zip(expected[0], names, strict=True) if n)
        report.rounds += 1
        index += 1
        if progress is not None:
            progress(min(report.frames, frames), frames)
    return report


def _save_round(out_dir: str, index: int, rules_text: str, packets) -> str:
    from ctaccel.io.pcap import write_pcap

    base = os.path.join(out_dir, f"round-{index}")
    os.makedirs(base, exist_ok=True)
    with open(os.path.join(base, "fuzz.flows"), "w") as f:
        f.write(rules_text)
    for port in sorted({p for p, _f, _t in packets}):
        sel = [(f, t) for p, f, t in packets if p == port]
        write_pcap(os.path.join(base, f"port{port}.pcap"), [f for f, _t in sel],
                   [t * 1_000_000 for _f, t in sel])  # fmt: skip
    return base
