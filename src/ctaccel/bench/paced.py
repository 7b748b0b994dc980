"""Paced replay: packets offered at a fixed rate, the host's CPU time per second of traffic.

What: :func:`paced_run` feeds a datapath engine the packets of a :class:`HostStream` as they
*arrive* at an offered rate (packet ``k`` of the traffic at ``k / rate`` seconds after the
start), and measures the CPU time the process's datapath thread spends with
``time.thread_time`` (CLOCK_THREAD_CPUTIME_ID: CPU time, not wall time; a sleeping thread
spends none), phase by phase (``PHASES``). :func:`expiry_cpu` times the sweep that frees the
closed connections afterwards. The CPU experiment (bench/cpu.py) builds its figures from
these.

Design:
- The host sleeps until something is due, as an interrupt-driven receive path does: when
  it has caught up it wakes at the next packet's arrival, but no sooner than ``poll_s``
  after its last wake (interrupt coalescing); awake, it processes everything that has
  arrived in batches of at most ``max_batch``. At rates the engine cannot sustain it never
  sleeps: the phase then takes longer than its traffic, and the CPU share is CPU time over
  the longer of the two (at most one core), the achieved rate packets over wall time.
- A host stream may be a subset of the traffic (a device consumed the rest: bench/offload.py);
  its packets keep their arrival times, so the host wakes only for the packets it gets.
- Hooks (``host_work``) run host-side work that is not a packet's: ``on_batch(lo, hi)`` after
  each batch (an offload driver pushing entries) and ``sync(k)`` at the ``k``-th of the
  traffic times ``sync_at`` (a statistics sync), also while no packet arrives; their CPU
  is the phase's, and the syncs' is also reported on its own.
- Each unit of work (a batch, a sync) is charged to the phase it belongs to, with the loop's
  own overhead since the previous unit (the sleeps' system calls included).

Invariants: the engine sees the stream's packets in order, each batch within one phase;
nothing here allocates per packet (per batch: views of the stream's arrays).
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field

import numpy as np

# set-up: handshakes and first packets; installing: established traffic while an offload
# device still accepts entries (bench/offload.py; for a software host simply the first part
# of the established traffic); established: the rest, the steady state; teardown: FINs.
PHASES = ("set-up", "installing", "established", "teardown")
EST = PHASES.index("established")
POLL_S = 0.001  # wake at most once a millisecond while packets trickle in
MAX_BATCH = 1024


@dataclass
class HostStream:
    """The packets the host receives, in order: views into one frame buffer, each with its
    arrival time (seconds from the start) and its phase (index into PHASES)."""

    buf: np.ndarray  # uint8, the frames back to back
    offsets: np.ndarray  # int64 per host packet
    lengths: np.ndarray
    in_ports: np.ndarray
    arrival_s: np.ndarray  # float64, non-decreasing
    phase_ends: np.ndarray  # host packet index where each phase ends (len(PHASES))
    phase_span_s: np.ndarray  # each phase's traffic time: its offered packets / rate
    base_ms: int = 1_700_000_000_000

    @property
    def packets(self) -> int:
        return int(self.offsets.shape[0])

    def now_ms(self) -> np.ndarray:
        return self.base_ms + (self.arrival_s * 1000.0).astype(np.int64)


def offered_stream(buf, frame_len: int, n: int, phase_ends, rate: float, in_port: int,
                   keep=None) -> HostStream:  # fmt: skip
    """The first ``n`` frames of ``buf`` (fixed length ``frame_len``) offered at ``rate``
    packets/s, phases ending at the packet indices ``phase_ends``; ``keep`` (bool per
    packet) selects the packets the host receives (None: all)."""
    idx = np.arange(n, dtype=np.int64)
    ends = np.asarray(phase_ends, np.int64)
    span = np.diff(np.concatenate([[0], ends])) / float(rate)
    if keep is not None:
        idx = idx[np.asarray(keep, bool)[:n]]
    host_ends = np.searchsorted(idx, ends)
    return HostStream(buf=buf, offsets=idx * frame_len, lengths=np.full(len(idx), frame_len),
                      in_ports=np.full(len(idx), in_port, np.int64),
                      arrival_s=idx / float(rate), phase_ends=host_ends,
                      phase_span_s=span)  # fmt: skip


@dataclass
class PhaseCPU:
    """One phase of a paced run: CPU seconds of the datapath thread, traffic and wall
    seconds, the host's packets, the engine's counters' change, Python (slow-path) seconds,
    the statistics syncs' CPU."""

    phase: str
    cpu_s: float = 0.0
    traffic_s: float = 0.0
    wall_s: float = 0.0
    packets: int = 0
    batches: int = 0
    wakes: int = 0  # batches taken right after a sleep: the wake-ups the phase paid for
    python_s: float = 0.0
    sync_cpu_s: float = 0.0
    syncs: int = 0
    stats: dict = field(default_factory=dict)

    @property
    def cpu_share(self) -> float:
        """Host CPU as a share of one core: CPU time over the longer of traffic and wall."""
        return self.cpu_s / max(self.traffic_s, self.wall_s, 1e-9)

    def to_json(self) -> dict:
        return {"phase": self.phase, "cpu_s": self.cpu_s, "traffic_s": self.traffic_s,
                "wall_s": self.wall_s, "cpu_share": self.cpu_share, "packets": self.packets,
                "batches": self.batches, "wakes": self.wakes, "python_s": self.python_s,
                "sync_cpu_s": self.sync_cpu_s, "syncs": self.syncs,
                "stats": self.stats}  # fmt: skip


@dataclass
class HostWork:
    """Host-side work that is not a packet's (an offload driver): ``on_batch(lo, hi)`` after
    each batch of host packets ``lo..hi``; ``sync(k)`` (1-based) at traffic time
    ``sync_at[k - 1]`` (seconds, increasing)."""

    on_batch: object = None
    sync: object = None
    sync_at: np.ndarray | None = None


_COUNTERS = ("fast_path_hits", "megaflow_hits", "upcalls", "slow_path_packets",
             "recirculations", "fast_path_installs", "ct_executions")  # fmt: skip


def _counters(engine) -> dict:
    s = engine.stats
    out = {k: s[k] for k in _COUNTERS}
    out["connections_created"] = int(engine.conntrack.counters["created"])
    return out


def paced_run(engine, stream: HostStream, host_work: HostWork | None = None,
              poll_s: float = POLL_S, max_batch: int = MAX_BATCH) -> list[PhaseCPU]:  # fmt: skip
    """``stream`` through ``engine`` at its arrival times; one :class:`PhaseCPU` per phase."""
    return list(paced_phases(engine, stream, host_work, poll_s, max_batch))


def interleaved(runs: list, before_turn=None) -> list[list[PhaseCPU]]:
    """Several paced runs (``paced_phases`` generators) phase by phase in turn: every run's
    set-up, then every run's next phase, and so on, so that the runs compared phase by
    phase meet the machine in the same moment; per run its phases. ``before_turn()`` runs
    before each turn (outside every phase's CPU)."""
    out = [[] for _ in runs]
    for _ in PHASES:
        for k, run in enumerate(runs):
            if before_turn is not None:
                before_turn()
            out[k].append(next(run))
    return out


def evict_caches(scratch: np.ndarray) -> None:
    """Write ``scratch`` (larger than the machine's caches) through: the next work meets
    cold caches and TLBs, whichever run's data they held."""
    np.add(scratch, 1, out=scratch)


def paced_phases(engine, stream: HostStream, host_work: HostWork | None = None,
                 poll_s: float = POLL_S, max_batch: int = MAX_BATCH):  # fmt: skip
    """:func:`paced_run` one phase at a time: yields each phase's :class:`PhaseCPU` when the
    phase ends. While suspended the run's clock stops: the next phase starts when it is
    resumed, its packets' arrival times counted from then (the thread's CPU while suspended
    is no phase's)."""
    work = host_work or HostWork()
    now_ms = stream.now_ms()
    arrival = stream.arrival_s
    ends = stream.phase_ends
    bounds = np.cumsum(stream.phase_span_s)  # traffic time at which each phase ends
    phases = [
        PhaseCPU(name, traffic_s=float(s))
        for name, s in zip(PHASES, stream.phase_span_s, strict=True)
    ]
    sync_at = np.asarray(work.sync_at if work.sync else [], np.float64)
    sync_at = np.append(sync_at, np.inf)
    sync_k = 0
    next_sync = sync_at[0]
    before = _counters(engine)
    gc.collect()
    done, p = 0, 0
    t0 = time.perf_counter()
    last_wake = -poll_s
    phase_start = 0.0
    py0 = engine.slow_path_seconds
    slept = True  # the run starts as from a sleep
    c_prev = time.thread_time()
    while p < len(phases):
        now = time.perf_counter() - t0
        if next_sync <= now:  # a statistics sync is due
            c0 = time.thread_time()
            sync_k += 1
            work.sync(sync_k)
            slept = False  # the sync took this wake-up (its cost is the sync's)
            c1 = time.thread_time()
            q = min(int(np.searchsorted(bounds, next_sync, "left")), len(phases) - 1)
            phases[q].cpu_s += c1 - c_prev
            phases[q].sync_cpu_s += c1 - c0
            phases[q].syncs += 1
            c_prev = c1
            next_sync = sync_at[sync_k]
            continue
        if done < ends[p]:
            arrived = int(np.searchsorted(arrival, now, "right"))
            # awake: at the poll interval, or at once when a full batch is waiting
            if arrived > done and (now >= last_wake + poll_s or arrived - done >= max_batch):
                hi = min(arrived, done + max_batch, int(ends[p]))
                if now >= last_wake + poll_s:
                    last_wake = now
                engine.run(stream.buf, stream.offsets[done:hi], stream.lengths[done:hi],
                           stream.in_ports[done:hi], now_ms[done:hi])  # fmt: skip
                if work.on_batch is not None:
                    work.on_batch(done, hi)
                c1 = time.thread_time()
                phases[p].cpu_s += c1 - c_prev
                phases[p].packets += hi - done
                phases[p].batches += 1
                phases[p].wakes += slept
                slept = False
                c_prev = c1
                done = hi
                continue
            wake = max(float(arrival[done]), last_wake + poll_s)
        elif next_sync > bounds[p]:  # packets done, no sync left in the phase's time
            ph = phases[p]
            ph.cpu_s += time.thread_time() - c_prev
            now = max(now, float(bounds[p]))  # (not waking for the boundary: an idle host
            ph.wall_s = now - phase_start  # would not)
            ph.python_s = engine.slow_path_seconds - py0
            py0 = engine.slow_path_seconds
            after = _counters(engine)  # reading the counters is the measurement's, no phase's
            ph.stats = {key: after[key] - before[key] for key in before}
            before = after
            p += 1
            yield ph
            t0 = time.perf_counter() - now  # resumed: the clock goes on from the boundary
            c_prev = time.thread_time()
            phase_start = now
            continue
        else:
            wake = float(bounds[p])
        wake = min(wake, next_sync)
        if wake > now:
            time.sleep(wake - now)
            slept = True


def expiry_cpu(engine, at_ms: int) -> tuple[float, int]:
    """CPU seconds of the sweep that frees every connection expired at ``at_ms``, and how
    many it freed."""
    c0 = time.thread_time()
    freed = engine.conntrack.sweep(int(at_ms))
    return time.thread_time() - c0, int(freed)


def wake_cost(engine, repeats: int = 30, nap_s: float = POLL_S) -> float:
    """CPU seconds of one wake of the receive loop with nothing to do but the engine call:
    a short sleep and an ``engine.run`` of no packets (median of ``repeats``): the cost a
    batch carries besides its packets, for the offload model."""
    empty = np.zeros(0, np.int64)
    buf = np.zeros(64, np.uint8)
    runs = []
    for _ in range(repeats):
        c0 = time.thread_time()
        time.sleep(nap_s)
        engine.run(buf, empty, empty, empty, empty)
        runs.append(time.thread_time() - c0)
    return float(np.median(runs))


def predicted_wakes(arrival_s: np.ndarray, poll_s: float = POLL_S) -> int:
    """The wake-ups :func:`paced_run` takes for packets arriving at ``arrival_s`` when it
    keeps up: one per poll interval that received packets."""
    return int(len(np.unique((arrival_s // poll_s).astype(np.int64)))) if len(arrival_s) else 0
