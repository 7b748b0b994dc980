"""Connection-sharded workers: one datapath engine per shard, the shards run side by side.

What: :func:`shard_of` assigns each packet of a batch to a shard by a symmetric hash of its
connection's address pair; :class:`ShardedEngine` runs ``workers`` DatapathEngines, each
owning its conntrack, megaflow cache and fast path, over one rule set, and offers the
engine interface the replay uses (``run`` -> one BatchResult in input order, ``conntrack``,
``stats``, ``rule_counters``, ``replace_flows``, ...). :func:`sharding_blockers` names what
in a rule set keeps state across connections, which shards do not share yet.

Design:
- The shard key is the connection's two IP addresses, in either order (so both directions
  meet), hashed: a connection's packets, its IP fragments (they carry the addresses, not
  always the ports) and the ICMP errors it causes (hashed by the addresses of the packet
  they quote) land on one shard, and so do an FTP or TFTP control connection and the data
  connections it expects (same hosts). Packets that are not IP (ARP...) go to shard 0. The
  kernel's PACKET_FANOUT_HASH and OVS's conn_key_hash hash ports too; hashing addresses only
  spreads less when many connections share two hosts, and needs nothing crossing shards
  for fragments and helpers.
- A batch is split by shard; the shards' engines run their parts on a thread each (the
  compiled kernel releases the GIL: ctaccel.jit's ``nogil``), the caller's thread taking
  shard 0; the results are put back in input order: per-packet rows, outputs (their start
  indexes shifted), rewritten frames, reference-engine results. A hand-off between threads
  costs as much as hundreds of packets (~95 us measured here), so the batch a caller hands
  over (``batch_size``) holds CHUNK_BATCHES engine batches per worker, and a large one is
  hashed by every thread, a stretch each. Each connection sees its
  packets in the same order as with one engine, so its verdicts are the same; what differs
  is which cache served a packet (each shard upcalls and installs for itself), as in
  OVS-DPDK, whose PMD threads each have their own caches.
- What crosses connections is not sharded yet: zone limits (global counts), NAT port
  allocation, NORMAL's MAC table, imported connections. :func:`sharding_blockers` finds
  them; callers run one worker then (and say why).

Invariants: a packet's shard depends only on its own bytes; ``run`` returns the same
per-packet verdicts, outputs and frames as one engine given the same packets; every
shard's rule counters and connections add up to one engine's.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ctaccel.conntrack.ipf import Ipf
from ctaccel.conntrack.lifecycle import ZL_LIMIT
from ctaccel.datapath import layout as L
from ctaccel.jit import njit

_ETH_IPV4, _ETH_IPV6, _ETH_VLAN, _ETH_QINQ = 0x0800, 0x86DD, 0x8100, 0x88A8
_MIX0, _MIX1 = 0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F  # odd 64-bit multipliers
CHUNK_BATCHES = 8  # engine batches per worker per hand-off (ShardedEngine.batch_size)
HASH_SPLIT_MIN = 8192  # batches at least this large are hashed by every thread


@njit(forceinline=True)
def _read(buf, at, end, width):
    """Big-endian ``width``-byte field at ``at`` (bytes past ``end`` read as 0)."""
    v = np.uint64(0)
    if at + width <= end:
        for k in range(width):
            v = (v << np.uint64(8)) | np.uint64(buf[at + k])
        return v
    for k in range(width):
        b = np.uint64(buf[at + k]) if at + k < end else np.uint64(0)
        v = (v << np.uint64(8)) | b
    return v


@njit(forceinline=True)
def _addr(buf, at, end, v6):
    """An address as one uint64: IPv4's 32 bits, or IPv6's 128 folded."""
    if not v6:
        return _read(buf, at, end, 4)
    return _read(buf, at, end, 8) ^ (_read(buf, at + 8, end, 8) * np.uint64(_MIX0))


@njit
def _shards(buf, offsets, lengths, workers, out, frag):
    """``shard_of``'s loop: one pass over each frame's headers; ``frag[i]`` 1 for an IP
    fragment (IPv4 MF or offset; IPv6 fragment header first or after hop-by-hop)."""
    for i in range(len(offsets)):
        frag[i] = 0
        start = offsets[i]
        end = start + lengths[i]
        l3 = start + 14
        eth = _read(buf, start + 12, end, 2)
        for _tag in range(2):  # up to two VLAN tags
            if eth == _ETH_VLAN or eth == _ETH_QINQ:
                eth = _read(buf, l3 + 2, end, 2)
                l3 += 4
        v6 = eth == _ETH_IPV6
        if not v6 and eth != _ETH_IPV4:
            out[i] = 0  # not IP
            continue
        if v6:
            src, dst, proto, l4 = l3 + 8, l3 + 24, _read(buf, l3 + 6, end, 1), l3 + 40
            nh = proto if proto != 0 else _read(buf, l4, end, 1)  # past a hop-by-hop header
            frag[i] = 1 if nh == 44 else 0
        else:
            ihl = np.int64(_read(buf, l3, end, 1) & np.uint64(0xF)) * 4
            src, dst, proto, l4 = l3 + 12, l3 + 16, _read(buf, l3 + 9, end, 1), l3 + ihl
            frag[i] = 1 if _read(buf, l3 + 6, end, 2) & np.uint64(0x3FFF) else 0
        icmp_type = _read(buf, l4, end, 1)
        if not v6 and proto == 1 and (icmp_type == 3 or icmp_type == 4 or icmp_type == 5
                                      or icmp_type == 11 or icmp_type == 12):  # fmt: skip
            src, dst = l4 + 8 + 12, l4 + 8 + 16  # the quoted IPv4 header's addresses
        elif v6 and proto == 58 and 1 <= icmp_type <= 4:
            src, dst = l4 + 8 + 8, l4 + 8 + 24  # the quoted IPv6 header's
        a, b = _addr(buf, src, end, v6), _addr(buf, dst, end, v6)
        lo, hi = min(a, b), max(a, b)
        h = (lo * np.uint64(_MIX0)) ^ (hi * np.uint64(_MIX1))
        h ^= h >> np.uint64(29)
        out[i] = np.int64(((h >> np.uint64(32)) * np.uint64(workers)) >> np.uint64(32))


@njit
def _group(shard, workers, order, bounds, fill):
    """The packets grouped by shard in input order (``order``, shard s at
    ``order[bounds[s]:bounds[s + 1]]``): a counting sort (``fill``: ``workers`` scratch)."""
    bounds[:] = 0
    for i in range(len(shard)):
        bounds[shard[i] + 1] += 1
    for s in range(workers):
        bounds[s + 1] += bounds[s]
        fill[s] = bounds[s]
    for i in range(len(shard)):
        order[fill[shard[i]]] = i
        fill[shard[i]] += 1


@njit
def _shift(res, part, col, base):
    """``res[part, col] += base``."""
    for k in range(len(part)):
        res[part[k], col] += base


@njit
def _scatter(res, part, rows):
    """``res[part[k]] = rows[k]``."""
    for k in range(len(part)):
        for c in range(res.shape[1]):
            res[part[k], c] = rows[k, c]


def shard_of(buf, offsets, lengths, workers: int) -> np.ndarray:
    """Per packet, its shard in ``0..workers-1`` (see the module docstring)."""
    n = len(offsets)
    out = np.zeros(n, np.int64)
    if workers > 1 and n:
        _shards(np.ascontiguousarray(buf, np.uint8), np.ascontiguousarray(offsets, np.int64),
                np.ascontiguousarray(lengths, np.int64), np.int64(workers), out,
                np.zeros(n, np.int64))  # fmt: skip
    return out


def sharding_blockers(tables, conntrack=None, bridge=None, changes=()) -> list[str]:
    """What keeps state across connections in this configuration (rules ``tables`` and the
    rule sets that replace them later, ``changes``: replay.parse_flows_at's; a conntrack
    with zone limits; a NORMAL bridge), which shards do not share yet."""
    import re

    rules = [*tables.all_rules(), *(r for _ms, t in changes for r in t.all_rules())]
    text = "\n".join(r.format_actions() for r in rules)
    out = []
    if re.search(r"\bnat\b", text):
        out.append("NAT (addresses and ports are allocated across connections)")
    if bridge is not None or re.search(r"\bNORMAL\b", text):
        out.append("NORMAL (one MAC table for all connections)")
    if conntrack is not None and (conntrack.zone_limits[ZL_LIMIT] >= 0).any():
        out.append("zone limits (counted across connections)")
    return out


class SharedIpf(Ipf):
    """One fragment reassembly for every shard (its lists, limits and counters are global,
    as OVS's), its entry points under one lock: the shards' engines call it from their
    threads (only for fragments and flushes, in Python)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._lock = threading.RLock()

    def process(self, *args, **kwargs):
        with self._lock:
            return super().process(*args, **kwargs)

    def flush(self, *args, **kwargs):
        with self._lock:
            return super().flush(*args, **kwargs)

    def expire(self, *args, **kwargs):
        with self._lock:
            return super().expire(*args, **kwargs)


class _ConntrackFacade:
    """The shards' conntracks as one, for the replay: dump, sweep, counters, length."""

    def __init__(self, shards):
        self._cts = [e.conntrack for e in shards]

    def dump(self, now_ms: int) -> list[str]:
        return sorted(line for ct in self._cts for line in ct.dump(now_ms))

    def sweep_some(self, now_ms: int) -> int:
        return sum(ct.sweep_some(now_ms) for ct in self._cts)

    def sweep(self, now_ms: int) -> int:
        return sum(ct.sweep(now_ms) for ct in self._cts)

    @property
    def counters(self) -> dict:
        return _summed(ct.counters for ct in self._cts)

    def __len__(self) -> int:
        return sum(len(ct) for ct in self._cts)


class ShardedEngine:
    """``workers`` DatapathEngines over one rule set, a shard each (module docstring)."""

    def __init__(self, rules, workers: int, mode: str = "assume-established",
                 batch_size: int = 4096, make_conntrack=None):  # fmt: skip
        from ctaccel.ofproto.classifier import FlowTables

        if workers < 1:
            raise ValueError("workers must be >= 1")
        tables = rules if isinstance(rules, FlowTables) else FlowTables(rules)
        self.workers = int(workers)
        self.mode = mode
        self.inner = int(batch_size)  # packets per engine.run: the engines' own batch size
        # what a caller should hand over at once: a hand-off between threads costs as much as
        # some hundreds of packets here, so each worker gets several engine batches per call
        self.batch_size = self.inner * (self.workers * CHUNK_BATCHES if self.workers > 1 else 1)
        self.ipf = SharedIpf()  # one reassembly for all shards, as OVS's ipf is one
        self.shards = [self._shard(tables, make_conntrack) for _ in range(self.workers)]
        self.in_order_batches = 0  # batches run in input order (fragments, pending lists)
        self.tables = tables
        self.conntrack = _ConntrackFacade(self.shards)
        self._pool = ThreadPoolExecutor(self.workers - 1) if self.workers > 1 else None
        self.split_seconds = 0.0  # hashing, splitting and merging (the caller's thread)
        self._fill = np.zeros(self.workers, np.int64)

    def _shard(self, tables, make_conntrack):
        from ctaccel.datapath.engine import DatapathEngine

        ct = make_conntrack() if make_conntrack else None
        return DatapathEngine(tables, mode=self.mode, batch_size=self.inner, ipf=self.ipf,
                              conntrack=ct)  # fmt: skip

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    @property
    def rules(self):
        return self.shards[0].rules

    @property
    def slow_path_seconds(self) -> float:
        return sum(e.slow_path_seconds for e in self.shards)

    def run(self, buf, offsets, lengths, in_ports, now_ms):
        """One batch through the shards; one BatchResult in input order."""
        if self.workers == 1:
            return self.shards[0].run(buf, offsets, lengths, in_ports, now_ms)
        t0 = time.perf_counter()
        n, w = len(offsets), self.workers
        buf = np.ascontiguousarray(buf, np.uint8)
        offsets = np.ascontiguousarray(offsets, np.int64)
        lengths = np.ascontiguousarray(lengths, np.int64)
        shard, frag = np.empty(n, np.int64), np.empty(n, np.int64)
        self._hash(buf, offsets, lengths, shard, frag)
        batch = (buf, offsets, lengths, in_ports, now_ms)
        res = np.empty((n, L.RES_WIDTH), np.int64)
        if frag.any() or len(self.ipf) or self.ipf.next_flush_ms <= int(np.max(now_ms)):
            return self._in_order(shard, batch, res, t0)
        order, bounds = np.empty(n, np.int64), np.empty(w + 1, np.int64)
        _group(shard, np.int64(w), order, bounds, self._fill)
        parts = [order[bounds[s] : bounds[s + 1]] for s in range(w)]
        self.split_seconds += time.perf_counter() - t0
        futures = [self._pool.submit(self._part, s, parts[s], batch, res) if len(parts[s])
                   else None for s in range(1, self.workers)]  # fmt: skip
        results = [self._part(0, parts[0], batch, res) if len(parts[0]) else None]
        results += [f.result() if f is not None else None for f in futures]
        return self._merged(res, results)

    def _merged(self, res, results):
        t1 = time.perf_counter()
        merged = _merge(res, *_flat(results))
        self.split_seconds += time.perf_counter() - t1
        return merged

    def _hash(self, buf, offsets, lengths, shard, frag) -> None:
        """Every packet's shard and fragment flag; a large batch hashed by all the threads,
        a stretch each (the hash is the first read of the frames: memory-bound)."""
        n, w = len(offsets), np.int64(self.workers)
        if n < HASH_SPLIT_MIN:
            _shards(buf, offsets, lengths, w, shard, frag)
            return
        cut = [k * n // self.workers for k in range(self.workers + 1)]
        stretches = zip(cut[1:-1], cut[2:], strict=True)
        jobs = [self._pool.submit(_shards, buf, offsets[a:b], lengths[a:b], w, shard[a:b],
                                  frag[a:b]) for a, b in stretches]  # fmt: skip
        _shards(buf, offsets[: cut[1]], lengths[: cut[1]], w, shard[: cut[1]], frag[: cut[1]])
        for job in jobs:
            job.result()

    def _in_order(self, shard, batch, res, t0):
        """The batch in input order, each stretch of consecutive packets of one shard on that
        shard's engine in turn: the shared fragment reassembly (self.ipf) then sees packets
        in the order one engine would (which packet carries an expired list out, which
        fragment a purge meets). Only for batches with fragments or pending lists: rare."""
        cuts = np.flatnonzero(np.diff(shard)) + 1
        starts = np.concatenate([[0], cuts])
        ends = np.concatenate([cuts, [len(shard)]])
        parts = [np.arange(a, b, dtype=np.int64) for a, b in zip(starts, ends, strict=True)]
        self.split_seconds += time.perf_counter() - t0
        results = [self._part(int(shard[p[0]]), p, batch, res) for p in parts]
        self.in_order_batches += 1
        return self._merged(res, results)

    def _part(self, s: int, part, batch, res) -> list:
        """Shard ``s``'s packets of the batch through its engine, ``self.inner`` at a time,
        their result rows put in their places in ``res`` (on the shard's thread: the copy
        releases the GIL too); [(packets, BatchResult)] per engine batch."""
        buf, offsets, lengths, in_ports, now_ms = batch
        out = []
        for lo in range(0, len(part), self.inner):
            sub = part[lo : lo + self.inner]
            br = self.shards[s].run(buf, offsets[sub], lengths[sub], in_ports[sub], now_ms[sub])
            _scatter(res, sub, br.res)
            out.append((sub, br))
        return out

    def replace_flows(self, rules) -> None:
        for e in self.shards:
            e.replace_flows(rules)
        self.tables = self.shards[0].tables

    def rule_counters(self) -> list[tuple[int, int]]:
        total = np.sum([e.rule_stats[: len(e.rules)] for e in self.shards], axis=0)
        return [(int(p), int(b)) for p, b in total.tolist()]

    @property
    def stats(self) -> dict:
        return _summed(e.stats for e in self.shards) | {"workers": self.workers}

    def memory_bytes(self) -> dict:
        return _summed(e.memory_bytes() for e in self.shards)


def _summed(dicts) -> dict:
    """Per key, the sum over ``dicts`` (the shards' counters, stats, memory)."""
    total: dict = {}
    for d in dicts:
        for k, v in d.items():
            total[k] = total.get(k, 0) + v
    return total


def _flat(results) -> tuple[list, list]:
    """The (packets, BatchResult) pairs of every shard's engine batches, as two lists."""
    pairs = [pair for shard_pairs in results if shard_pairs for pair in shard_pairs]
    return [p for p, _ in pairs], [br for _, br in pairs]


def _merge(res, parts, results):
    """The shards' BatchResults as one, in input order: ``res`` holds every packet's row
    already (``_part``); here the outputs are joined and each row's first output index
    shifted by the outputs of the engine batches before its own."""
    from ctaccel.datapath.engine import BatchResult

    ports, slow, out_base = [], {}, 0
    for p, br in zip(parts, results, strict=True):
        if out_base:
            _shift(res, p, L.R_OUT_START, out_base)
        ports.append(br.out_ports)
        for i, r_slow in br.slow.items():
            slow[int(p[i])] = r_slow
        out_base += len(br.out_ports)
    out_ports = np.concatenate(ports) if ports else np.zeros(0, np.int64)
    if all(br.out_fofs is None for br in results):
        return BatchResult(res, out_ports, slow)
    fofs, fbufs, flens, fbuf_base = [], [], [], 0
    for br in results:
        m = len(br.out_ports)
        if br.out_fofs is None:
            fofs.append(np.full(m, -1, np.int64))
            flens.append(np.zeros(m, np.int64))
            continue
        fofs.append(np.where(br.out_fofs >= 0, br.out_fofs + fbuf_base, -1))
        fbufs.append(br.out_fbuf)
        flens.append(br.out_flen)
        fbuf_base += len(br.out_fbuf)
    cat = np.concatenate
    return BatchResult(res, out_ports, slow, cat(fofs), cat(fbufs), cat(flens))
