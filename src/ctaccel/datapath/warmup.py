"""Getting the compiled datapath ready: compile once, in two processes where that helps.

What: :func:`warm_up` compiles (first run) or loads from numba's on-disk cache (later runs)
every kernel the engine runs, by running a few packets of each kind through throwaway
engines, and returns the seconds it took. ``python -m ctaccel.datapath.warmup conntrack``
compiles the ct action's kernel alone (the helper process below).

Design:
- The batch kernel (kernel.run_batch) is compiled with everything it calls; numba compiles a
  callee when the caller's type inference reaches it, after checking the on-disk cache. The
  ct action's kernel (conntrack.core.ct_execute and what it calls: trackers, NAT, table) is
  about a third of the whole and is reached some twenty seconds in, after the parser and the
  fast path. So on a first run a helper process compiles ct_execute at the same time, for the
  argument types the batch kernel calls it with; by the time the batch kernel needs it, it is
  in the cache and is loaded instead of compiled. A late helper costs nothing but its CPU:
  this process then compiles ct_execute itself (same code), and stops the helper at the end.
- A first run is recognised by the absence of the record ``compiled.json`` in the cache
  directory (jit.CACHE_DIR is named after a hash of the kernel sources, so a changed kernel
  starts a fresh directory without one); the record is written after a complete warm-up.
- Nothing here prints: ctaccel.io.progress shows the compile to a person (numba's compile
  events), whatever starts it.

Invariants: warm-up never changes results (throwaway engines, its own rules and packets);
the helper only ever writes numba's cache, whose writes are atomic renames.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from ctaccel import jit

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


def _start_helper() -> subprocess.Popen | None:
    """A process compiling the ct action's kernel into the shared cache, or None where it
    could not help (no cache directory to share, a single CPU) or could not start."""
    if jit.CACHE_DIR is None or len(os.sched_getaffinity(0)) < 2:
        return None
    env = dict(os.environ, NUMBA_CACHE_DIR=jit.CACHE_DIR)
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "ctaccel.datapath.warmup", "conntrack"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
    except OSError:
        return None


def _stop(helper: subprocess.Popen | None) -> None:
    if helper is None:
        return
    if helper.poll() is None:
        helper.terminate()
    try:
        helper.wait(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover - a helper that ignores SIGTERM
        helper.kill()
        helper.wait()


def _run_warm_up_traffic() -> None:
    """A few packets of each kind through throwaway engines of both modes: a TCP handshake
    and data (new, established, the fast path and its install), UDP, and IP fragments (the
    reference engine's path)."""
    from ctaccel.datapath.engine import MODES, DatapathEngine
    from ctaccel.ofproto.rules import parse_flows
    from ctaccel.packet import build as B

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

    First run on a 2-core machine: well under a minute; later runs: loading the cached
    machine code, a fraction of a second."""
    t0 = time.perf_counter()
    first = not is_compiled()
    helper = _start_helper() if first else None
    try:
        _run_warm_up_traffic()
    finally:
        _stop(helper)
    seconds = time.perf_counter() - t0
    path = _record_path()
    if first and path is not None:
        try:
            with open(path, "w") as f:
                json.dump({"seconds": round(seconds, 3), "helper": helper is not None}, f)
        except OSError:
            pass  # a read-only cache: the next run compiles nothing anyway, it just loads
    return seconds


def _main(argv: list[str]) -> int:
    if argv == ["conntrack"]:
        from ctaccel.conntrack import Conntrack

        Conntrack().compile_execute()
        return 0
    print("usage: python -m ctaccel.datapath.warmup conntrack", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
