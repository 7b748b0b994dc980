"""The offload model: established connections' fast path on a NIC, host CPU what is left.

What: :class:`OffloadParams` (the device: flow-table capacity, insert and remove rates, the
statistics sync interval; the defaults and their sources in ``SOURCES``), :func:`reference`
(one untimed run of the traffic in assume-established mode: which packets the fast path
took, and for which entry), :func:`plan` (what an Agilio-class device would have done with
them: which entries it accepted, when, which packets it consumed, what the host pushes and
syncs), :class:`DeviceStub` (the host's side of that device, run for real: pushes and
statistics syncs) and :func:`model_cpu` (the modelled host CPU from a software run's
measurements).

Design:
- An entry is the fast path's: one per connection direction (the packet's 5-tuple and input
  port). The host asks the device to install an entry when its own fast path installs it
  (the packet before the entry's first hit) and to remove it when the connection's teardown
  starts (the entry's first packet in the teardown phase). The device accepts installs in
  request order at no more than ``insert_rate`` per second and holds at most ``capacity``
  entries; an entry it refused, or one not yet accepted, leaves its hits to the host's own
  fast path (counted as ``host_kept_hits``). In the traffic modelled here every install
  precedes every removal, so capacity is the first ``capacity`` accepted entries.
- A packet is the device's when the reference run's fast path took it and its entry is on
  the device (accepted, teardown not yet requested). The host never sees it: the device
  consumes it at no host cost. The host keeps what a device cannot do: set-up, every punt,
  teardown, expiry, plus the driver's work: pushes and, every ``stats_interval_s``, a
  statistics sync that reads the resident entries' packet and byte counts and applies them
  as the revalidator does: to the flows' counters, to the rules' counters and to each
  connection's timer.
- :func:`model_cpu` computes the host's CPU from a software run: the assume-established
  run's CPU per phase, less the device's packets at the per-hit cost measured in the same
  run, plus the pushes and syncs at the costs :meth:`DeviceStub.calibrate` measured. The
  device stub's own run (the host fed only its packets, the stub doing its work) is the
  real run the model is checked against.

Invariants: the device never takes a packet the software fast path did not take, so results
are those of the software run; after the final sync the rule counters equal the software
run's (checked by the CPU experiment).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from ctaccel.conntrack import layout as CL
from ctaccel.datapath import layout as L

SOURCES = {
    "capacity": "Linux nfp driver, drivers/net/ethernet/netronome/nfp/flower/main.c "
    "(nfp_flower_init): the host context count the firmware announces, 2^17 = 131,072 "
    "flows when it announces none; one flow per connection direction",
    "insert_rate": "no public figure found for Agilio; an assumption, set with "
    "--offload-insert-rate (DPDK's flow-perf measures this on real cards)",
    "remove_rate": "as insert_rate (an assumption)",
    "stats_interval_s": "Open vSwitch revalidators dump the datapath flows and their "
    "statistics every other_config:max-revalidator ms, 500 by default (vswitchd/bridge.c)",
}


@dataclass(frozen=True)
class OffloadParams:
    """The device of the model (defaults: ``SOURCES``)."""

    capacity: int = 131_072  # entries (connection directions)
    insert_rate: float = 100_000.0  # entries/s the device accepts
    remove_rate: float = 100_000.0
    stats_interval_s: float = 0.5

    def to_json(self) -> dict:
        return {**asdict(self), "sources": SOURCES}


@dataclass
class Reference:
    """One assume-established run of the traffic: per packet, whether the fast path took it,
    its entry; per entry, the connection's row; the rules a fast-path hit counts."""

    hit: np.ndarray  # bool per packet
    entry: np.ndarray  # int64 per packet
    entry_slot: np.ndarray  # int64 per entry: the connection's conntrack row
    hit_rules: np.ndarray  # rule ids a fast-path hit adds to
    frame_bytes: int
    rule_stats: np.ndarray  # the run's rule counters at its end


def entry_ids(buf: np.ndarray, frame_len: int, n: int, in_port: int) -> tuple:
    """Per packet, its fast-path entry (IPv4 5-tuple + input port; fixed-length untagged
    frames, as the workloads'): dense ids in order of first appearance; and per entry its
    key: 14 bytes, the addresses and ports as in the frame (12), protocol, input port."""
    frames = buf[: n * frame_len].reshape(n, frame_len)
    key = np.zeros((n, 14), np.uint8)
    key[:, :12] = frames[:, 26:38]  # addresses and ports
    key[:, 12] = frames[:, 23]  # protocol
    key[:, 13] = in_port & 0xFF
    _u, first, inverse = np.unique(key.view("V14").ravel(), return_index=True,
                                   return_inverse=True)  # fmt: skip
    by_rank = np.argsort(first, kind="stable")
    rank = np.empty(len(first), np.int64)
    rank[by_rank] = np.arange(len(first))
    return rank[inverse.ravel()], key[first[by_rank]]


def reference(engine, buf, frame_len: int, n: int, in_port: int, now_ms) -> Reference:
    """``n`` frames through ``engine`` (assume-established, fresh) in batches, untimed."""
    offsets = np.arange(n, dtype=np.int64) * frame_len
    lengths = np.full(n, frame_len, np.int64)
    ports = np.full(n, in_port, np.int64)
    hit = np.zeros(n, bool)
    hit_rules = None
    lo = 0
    while lo < n:  # small batches until one of hits alone shows the rules a hit counts
        hi = min(n, lo + (1024 if hit_rules is not None else 32))
        before = engine.rule_stats[:, 0].copy()
        br = engine.run(buf, offsets[lo:hi], lengths[lo:hi], ports[lo:hi], now_ms[lo:hi])
        hit[lo:hi] = br.res[:, L.R_PATH] == L.PATH_FAST
        if hit_rules is None and hit[lo:hi].all():
            hit_rules = np.flatnonzero(engine.rule_stats[:, 0] - before == hi - lo)
        lo = hi
    entry, keys = entry_ids(buf, frame_len, n, in_port)
    return Reference(hit=hit, entry=entry, entry_slot=_entry_slots(engine, keys),
                     hit_rules=np.zeros(0, np.int64) if hit_rules is None else hit_rules,
                     frame_bytes=frame_len, rule_stats=engine.rule_stats.copy())  # fmt: skip


def _entry_slots(engine, keys: np.ndarray) -> np.ndarray:
    """Per entry (``keys``: entry_ids'), the conntrack row of its connection (either
    direction), -1 if none: the tuples as 12 big-endian bytes, the table's and the entries'
    (reversed for an entry of the reply direction), matched by a sorted search."""
    conns = engine.conntrack.conns
    live = np.flatnonzero(conns[:, CL.C_USED] == CL.ROW_CONN)
    rows = conns[live].astype(np.int64)
    cols = (CL.C_SRC4, CL.C_DST4, CL.C_SPORT, CL.C_DPORT)
    conn = np.zeros((len(live), 12), np.uint8)
    for at, col, width in zip((0, 4, 8, 10), cols, (4, 4, 2, 2), strict=True):
        be = rows[:, col].astype(">u8").view(np.uint8).reshape(-1, 8)
        conn[:, at : at + width] = be[:, 8 - width :]
    conn_key = conn.view("S12").ravel()
    fwd = np.ascontiguousarray(keys[:, :12])
    rev = np.concatenate([fwd[:, 4:8], fwd[:, 0:4], fwd[:, 10:12], fwd[:, 8:10]], axis=1)
    order = np.argsort(conn_key)
    sorted_keys = conn_key[order]
    out = np.full(len(keys), -1, np.int64)
    if not len(sorted_keys):
        return out
    for tup in (rev, fwd):  # a reply-direction entry, then an original-direction one
        key = tup.view("S12").ravel()
        at = np.minimum(np.searchsorted(sorted_keys, key), len(sorted_keys) - 1)
        found = sorted_keys[at] == key
        out[found] = live[order[at[found]]]
    return out


@dataclass
class DevicePlan:
    """What the device did with one offered traffic (see the module docstring)."""

    consumed: np.ndarray  # bool per packet: the device's
    push: np.ndarray  # int8 per packet: 1 the host pushes an install here, 2 a removal
    admitted: np.ndarray  # bool per entry
    admit_s: np.ndarray  # when the device accepted it (inf: never)
    sync_t: np.ndarray  # traffic time of each sync (the last one: the end of the traffic)
    sync_ids: list = field(default_factory=list)  # per sync: resident entries
    sync_pk: list = field(default_factory=list)  # their packets since the last sync
    sync_last_ms: list = field(default_factory=list)  # their last packet's time (ms)
    summary: dict = field(default_factory=dict)


def _admit(req_s: np.ndarray, rate: float, capacity: int) -> tuple[np.ndarray, np.ndarray]:
    """Entries requested at ``req_s`` (inf: never): when the device accepts each (inf:
    refused), at most ``rate`` per second in request order, the first ``capacity`` only."""
    order = np.argsort(req_s, kind="stable")
    r = req_s[order]
    asked = np.isfinite(r)
    k = np.arange(len(r), dtype=np.float64) / rate
    at = k + np.maximum.accumulate(np.where(asked, r - k, -np.inf)) if len(r) else r
    ok = asked & (np.arange(len(r)) < capacity)
    admit = np.full(len(req_s), np.inf)
    admit[order[ok]] = at[ok]
    return admit, order[asked & ~ok]


def plan(ref: Reference, arrival_s: np.ndarray, teardown_start: int, params: OffloadParams,
         base_ms: int) -> DevicePlan:  # fmt: skip
    """The device's view of the traffic whose packets arrive at ``arrival_s``."""
    n = len(arrival_s)
    hit, entry = ref.hit[:n], ref.entry[:n]
    n_entries = int(entry.max()) + 1 if n else 0
    idx = np.arange(n)
    # install request: the packet before the entry's first hit (it installed the entry)
    first_hit = np.full(n_entries, n, np.int64)
    np.minimum.at(first_hit, entry[hit], idx[hit])
    order = np.lexsort((idx, entry))  # packets by entry, then arrival
    pos = np.empty(n, np.int64)
    pos[order] = np.arange(n)
    has = first_hit < n
    install_pkt = np.full(n_entries, -1, np.int64)
    install_pkt[has] = order[pos[first_hit[has]] - 1]
    req = np.where(has, arrival_s[np.maximum(install_pkt, 0)], np.inf)
    admit_s, refused = _admit(req, params.insert_rate, params.capacity)
    admitted = np.isfinite(admit_s)
    # removal request: the entry's first packet of the teardown phase
    remove_pkt = np.full(n_entries, n, np.int64)
    late = idx >= teardown_start
    np.minimum.at(remove_pkt, entry[late], idx[late])
    remove_s = np.where(remove_pkt < n, arrival_s[np.minimum(remove_pkt, n - 1)], np.inf)
    e_ok = admitted[entry] & (arrival_s >= admit_s[entry]) & (arrival_s < remove_s[entry])
    consumed = hit & e_ok
    push = np.zeros(n, np.int8)
    push[install_pkt[admitted]] = 1
    gone = admitted & (remove_pkt < n)
    push[remove_pkt[gone]] = 2
    total_s = float(arrival_s[-1]) if n else 0.0
    out = DevicePlan(consumed=consumed, push=push, admitted=admitted, admit_s=admit_s,
                     sync_t=_sync_times(total_s, params.stats_interval_s))  # fmt: skip
    _fill_syncs(out, entry, arrival_s, base_ms)
    removals = int(gone.sum())
    out.summary = {
        "entries": n_entries,
        "install_requests": int(has.sum()),
        "installed": int(admitted.sum()),
        "refused_capacity": len(refused),
        "removals": removals,
        "device_packets": int(consumed.sum()),
        "host_kept_hits": int(hit.sum() - consumed.sum()),
        "last_install_s": float(admit_s[admitted].max()) if admitted.any() else 0.0,
        "removals_drain_s": removals / params.remove_rate,
        "syncs": len(out.sync_t),
    }
    return out


def _sync_times(total_s: float, interval: float) -> np.ndarray:
    t = np.arange(interval, total_s, interval) if interval > 0 else np.zeros(0)
    return np.concatenate([t, [total_s]])


def _fill_syncs(out: DevicePlan, entry, arrival_s, base_ms: int) -> None:
    """Per sync: the entries with device packets since the last sync, their packet counts
    and last packet's time (ms)."""
    dev = np.flatnonzero(out.consumed)
    k = np.searchsorted(out.sync_t, arrival_s[dev], "left")  # the sync that reports each
    for j in range(len(out.sync_t)):
        sel = dev[k == j]
        ids, inv = np.unique(entry[sel], return_inverse=True)
        last = np.zeros(len(ids))
        np.maximum.at(last, inv, arrival_s[sel])
        out.sync_ids.append(ids)
        out.sync_pk.append(np.bincount(inv, minlength=len(ids)).astype(np.int64))
        out.sync_last_ms.append(base_ms + (last * 1000.0).astype(np.int64))


class DeviceStub:
    """The host's side of the device, run for real against a live engine: install and
    removal pushes (the entries' keys into the device's table, as a driver builds its
    messages) and the statistics syncs."""

    def __init__(self, engine, ref: Reference, dplan: DevicePlan, host_push: np.ndarray):
        self.engine = engine
        self.ref, self.plan = ref, dplan
        self.host_push = host_push  # int8 per host packet (the plan's push, host's packets)
        self._cum = np.concatenate([[0], np.cumsum(host_push != 0)])
        self.host_entry = None  # per host packet: its entry (set by the experiment)
        n_entries = len(dplan.admitted)
        # written now, so their pages exist before the run (as a driver's tables would)
        self.table = np.full(n_entries, 0, np.int8)  # 1: installed on the device
        self.flow_stats = np.full((n_entries, 2), 0, np.int64)  # what the revalidator read
        self.pushed = 0
        self.synced_packets = 0

    def on_batch(self, lo: int, hi: int) -> None:
        if self._cum[hi] == self._cum[lo]:
            return
        sel = lo + np.flatnonzero(self.host_push[lo:hi])
        ids = self.host_entry[sel]
        self.table[ids] = np.where(self.host_push[sel] == 1, 1, 0)
        self.pushed += len(ids)

    def sync(self, k: int) -> None:
        """Statistics sync ``k`` (1-based): the resident entries' counts since the last one
        into the flows' and rules' counters and the connections' timers."""
        j = min(k, len(self.plan.sync_t)) - 1
        ids, pk, last_ms = self.plan.sync_ids[j], self.plan.sync_pk[j], self.plan.sync_last_ms[j]
        self.apply(ids, pk, last_ms)

    def apply(self, ids, pk, last_ms) -> None:
        nbytes = pk * self.ref.frame_bytes
        self.flow_stats[ids, 0] += pk
        self.flow_stats[ids, 1] += nbytes
        total = int(pk.sum())
        rs = self.engine.rule_stats
        rs[self.ref.hit_rules, 0] += total
        rs[self.ref.hit_rules, 1] += int(nbytes.sum())
        slots = self.ref.entry_slot[ids]
        known = slots >= 0
        slots = slots[known]
        ct = self.engine.conntrack
        conns = ct.conns
        cls = conns[slots, CL.C_TIMEOUT_CLASS].astype(np.int64)
        old = conns[slots, CL.C_EXPIRATION].astype(np.int64) | (
            conns[slots, CL.C_EXPIRATION_HI].astype(np.int64) << 32)  # fmt: skip
        new = np.maximum(old, last_ms[known] + ct.timeouts[cls])
        conns[slots, CL.C_EXPIRATION] = new & 0xFFFFFFFF
        conns[slots, CL.C_EXPIRATION_HI] = new >> 32
        self.synced_packets += total

    def calibrate(self, idle_s: float, repeats: int = 3) -> dict:
        """The host costs :func:`model_cpu` needs, measured here as the run meets them: a
        statistics sync of every installed entry and one of a single entry (its fixed
        part), each ``repeats`` times in the paced loop itself (bench/paced.py) with nothing
        else to do, ``idle_s`` apart, so that each carries what a sync carries in the run:
        the wake-up from a statistics interval asleep and the loop's own turn; a push, per
        entry, amid other work."""
        from ctaccel.bench import paced as P

        ids = np.flatnonzero(self.plan.admitted)
        if not len(ids):
            return {"sync_s_per_entry": 0.0, "sync_s_fixed": 0.0, "push_s_per_entry": 0.0}
        zero = np.zeros(len(ids), np.int64)
        saved = self.engine.rule_stats.copy(), self.engine.conntrack.conns.copy()
        idle = np.zeros(0, np.int64)
        span = np.array([0.0, 0.0, repeats * idle_s, 0.0])
        stream = P.HostStream(buf=np.zeros(64, np.uint8), offsets=idle, lengths=idle,
                              in_ports=idle, arrival_s=np.zeros(0), phase_ends=np.zeros(4, int),
                              phase_span_s=span)  # fmt: skip
        at = idle_s * np.arange(1, repeats + 1)

        def in_loop(few: int) -> float:
            work = P.HostWork(sync=lambda _k: self.apply(ids[:few], zero[:few], zero[:few]),
                              sync_at=at)  # fmt: skip
            return P.paced_run(self.engine, stream, work)[P.EST].cpu_s / repeats

        t_all, t_one = in_loop(len(ids)), in_loop(1)
        self.engine.rule_stats[:] = saved[0]
        self.engine.conntrack.conns[:] = saved[1]
        self.synced_packets = 0
        chunk = 64
        push = np.ones(chunk, np.int8)
        runs = []
        for _ in range(repeats):
            c0 = time.thread_time()
            for lo in range(0, len(ids), chunk):
                sel = ids[lo : lo + chunk]
                self.table[sel] = np.where(push[: len(sel)] == 1, 1, 0)
            runs.append((time.thread_time() - c0) / len(ids))
        self.table[:] = 0
        per = max(t_all - t_one, 0.0) / max(len(ids) - 1, 1)
        return {"sync_s_per_entry": per, "sync_s_fixed": t_one,
                "push_s_per_entry": float(np.median(runs))}  # fmt: skip


def model_cpu(ae_phases: list[dict], recirc_phases: list[dict], dev: dict, cal: dict,
              sync_entries: list[int], est: int = 2) -> list[float]:  # fmt: skip
    """Modelled host CPU seconds per phase with the device: what the host keeps of the
    assume-established run (``ae_phases``, PhaseCPU JSON) plus pushes and syncs at
    ``cal``'s costs (each sync's with its wake-up and the loop's turn). What the host keeps
    of a phase: its packets off the fast path, the fast-path hits the device did not take
    and the wake-ups it still takes, each at its cost in the assume-established run: the
    per-wake cost measured by ``cal["wake_s"]`` (a wake-up is a batch after a sleep; a
    host that is behind takes its batches without one); the per-packet cost off the fast
    path, the recirc run's established phase net of its wakes; the per-hit cost, the
    assume-established run's established phase net of its wakes and its other packets. A
    phase the host keeps whole (no device packets, no wake less) is the run's own CPU.
    ``dev``: per phase ``device_packets``, ``pushes``, ``syncs`` and ``host_wakes``;
    ``sync_entries``: entries synced per phase; ``est``: paced.EST."""
    wake = cal.get("wake_s", 0.0)
    a, r = ae_phases[est], recirc_phases[est]
    hits = a["stats"]["fast_path_hits"]
    others = a["packets"] - hits
    per_other = max(r["cpu_s"] - r["wakes"] * wake, 0.0) / max(r["packets"], 1)
    per_hit = max(a["cpu_s"] - a["wakes"] * wake - others * per_other, 0.0) / max(hits, 1)
    out = []
    for p, ph in enumerate(ae_phases):
        kept_wakes = min(dev["host_wakes"][p], ph["wakes"])
        if dev["device_packets"][p] == 0 and kept_wakes == ph["wakes"]:
            cpu = ph["cpu_s"]
        else:
            ph_hits = ph["stats"].get("fast_path_hits", 0)
            rest = max(ph["cpu_s"] - ph["wakes"] * wake - ph_hits * per_hit, 0.0)
            kept_hits = max(ph_hits - dev["device_packets"][p], 0)
            cpu = kept_wakes * wake + kept_hits * per_hit + rest
        cpu += dev["pushes"][p] * cal["push_s_per_entry"]
        cpu += dev["syncs"][p] * cal["sync_s_fixed"] + sync_entries[p] * cal["sync_s_per_entry"]
        out.append(max(cpu, 0.0))
    return out
