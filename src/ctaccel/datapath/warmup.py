"""Getting the compiled datapath ready: compile once, load from numba's cache afterwards.

What: :func:`warm_up` compiles (first run) or loads from numba's on-disk cache (later runs)
every kernel the engine runs, by running a few packets of each kind through throwaway
engines of both modes, and returns the seconds it took.

Design:
- The batch kernel (kernel.run_batch) is compiled with everything it calls, in this process,
  as its own type inference reaches each callee. Its parts must be compiled that way: a part
  compiled on its own beforehand (explicitly, or by a helper process into the shared cache)
  is linked into run_batch as a finished library, with numba's reference counting of array
  views in it, instead of being inlined into run_batch's no-runtime code; that made the fast
  path ~4.4x and recirc ~1.6x slower for every later run that loaded it (measured; it was
  how the first run compiled for a while). The two large per-packet kernels that are meant
  to be called, not inlined (conntrack's ct_execute, the fast path's install), are linked
  apart by jit.linked_separately, which keeps the compile short without that cost.
- A first run is recognised by the absence of the record ``compiled.json`` in the cache
  directory (jit.CACHE_DIR is named after a hash of the kernel sources, so a changed kernel
  starts a fresh directory without one); the record is written after a complete warm-up.
- Nothing here prints: ctaccel.progress shows the compile to a person (numba's compile
  events), whatever starts it.

Invariants: warm-up never changes results (throwaway engines, its own rules and packets).
"""

from __future__ import annotations

import json
import os
import time

from ctaccel import jit
from ctaccel.datapath.engine import MODES, DatapathEngine
from ctaccel.ofproto.rules import parse_flows
from ctaccel.packet import build as B

RECORD = "compiled.json"


def _record_path() -> str | None:
    return os.path.join(jit.CACHE_DIR, RECORD) if jit.CACHE_DIR else None


def is_compiled() -> bool:
    """True when this build's kernels are in the on-disk cache (or nothing is compiled at all:
    NUMBA_DISABLE_JIT=1), so a warm-up only loads them."""
    if jit.JIT_DISABLED:
        return True
    path = _record_path()
    return path is not None and os.path.exists(path)


def _run_warm_up_traffic() -> None:
    """A few packets of each kind through throwaway engines of both modes: a TCP handshake
    and data (new, established, the fast path and its install), UDP, and IP fragments (the
    reference engine's path)."""
    rules = (
        "table=0,priority=10,ip,ct_state=-trk,actions=ct(table=1,zone=1)\n"
        "table=1,priority=10,ip,ct_state=+trk+new,actions=ct(commit,zone=1),output:2\n"
        "table=1,priority=10,ip,ct_state=+trk+est,actions=output:2\n"
        "table=0,priority=1,actions=drop\n"
    )
    a, b = "02:00:00:00:00:01", "02:00:00:00:00:02"
    frames = [
        B.tcp_frame(a, b, "10.0.0.1", "10.0.0.2", 1000, 80, "S", 1, 0),
        B.tcp_frame(b, a, "10.0.0.2", "10.0.0.1", 80, 1000, "SA", 9, 2),
        B.tcp_frame(a, b, "10.0.0.1", "10.0.0.2", 1000, 80, "A", 2, 10),
        B.tcp_frame(a, b, "10.0.0.1", "10.0.0.2", 1000, 80, "PA", 2, 10, b"x"),
        B.udp_frame(a, b, "10.0.0.1", "10.0.0.2", 53, 53, b"q"),
        *B.fragment_ipv4(B.udp_frame(a, b, "10.0.0.1", "10.0.0.2", 7, 7, b"f" * 3000), 1400),
    ]
    for mode in MODES:
        eng = DatapathEngine(parse_flows(rules, "<warm-up>"), mode=mode)
        eng.process_batch(frames, [1] * len(frames), list(range(len(frames))))


def warm_up() -> float:
    """Compile (first run) or load every kernel the engine uses; returns the seconds taken.

    First run on a 2-core machine: about half a minute; later runs: loading the cached
    machine code, a fraction of a second."""
    t0 = time.perf_counter()
    first = not is_compiled()
    _run_warm_up_traffic()
    seconds = time.perf_counter() - t0
    path = _record_path()
    if first and path is not None:
        try:
            with open(path, "w") as f:
                json.dump({"seconds": round(seconds, 3)}, f)
        except OSError:
            pass  # a read-only cache: the next run compiles nothing anyway, it just loads
    return seconds
