"""Getting the compiled datapath ready: compile once, in two processes where that helps.

What: :func:`warm_up` compiles (first run) or loads from numba's on-disk cache (later runs)
every kernel the engine runs, by running a few packets of each kind through throwaway
engines, and returns the seconds it took. ``python -m ctaccel.datapath.warmup vm`` compiles
the batch kernel's action VM with conntrack (the helper process below).

Design:
- The batch kernel (kernel.run_batch) is compiled with everything it calls; numba compiles a
  callee when the caller's type inference reaches it, after checking the on-disk cache. Its
  three big parts take comparable time: the start of a packet (parser and fast path,
  kernel._begin_packet), the action VM with conntrack (vm.run_passes, which calls
  conntrack.core.ct_execute) and the install (install.maybe_install). On a first run a
  helper process compiles the VM part into the shared cache while this process compiles
  the other two explicitly, for the argument types run_batch calls them with
  (:func:`kernel_parts`); run_batch then finds all three compiled and only compiles its own
  loop. A late helper costs nothing but its CPU: this process then compiles the VM part
  itself (same code), and stops the helper at the end.
- A first run is recognised by the absence of the record ``compiled.json`` in the cache
  directory (jit.CACHE_DIR is named after a hash of the kernel sources, so a changed kernel
  starts a fresh directory without one); the record is written after a complete warm-up.
- Nothing here prints: ctaccel.progress shows the compile to a person (numba's compile
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


def _start_helper(part: str) -> subprocess.Popen | None:
    """A process compiling ``part`` of the batch kernel into the shared cache, or None where
    it could not help (no cache directory to share, a single CPU) or could not start."""
    if jit.CACHE_DIR is None or len(os.sched_getaffinity(0)) < 2:
        return None
    env = dict(os.environ, NUMBA_CACHE_DIR=jit.CACHE_DIR)
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "ctaccel.datapath.warmup", part],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
    except OSError:
        return None


def kernel_parts() -> dict:
    """{name: (kernel, argument types)} of the batch kernel's big parts, typed as run_batch
    calls them (the bundles of a throwaway engine, named as run_batch names them)."""
    import numba
    import numpy as np

    from ctaccel.datapath import install, kernel, vm
    from ctaccel.datapath import layout as L

    eng = DatapathEngine(parse_flows("actions=drop\n", "<warm-up>"))
    one = np.zeros(1, np.int64)
    batch = (np.zeros(64, np.uint8), one, one.copy(), one.copy(), one.copy())
    plain = eng.kernel_bundles(batch, np.zeros((1, L.RES_WIDTH), np.int64))
    kinds = (L.Batch, L.CtTables, L.MegaflowTables, L.Programs, L.FastPathTables, L.Results,
             L.VmState)  # fmt: skip
    b, c, m, p, f, o, s = (numba.typeof(kind(*t)) for kind, t in zip(kinds, plain, strict=True))
    i64 = numba.int64
    frame = numba.typeof(batch[0][0:1])  # run_batch's frames: slices of the batch buffer
    scratch = numba.typeof(eng._scratch[0:1])
    return {
        "begin": (kernel._begin_packet, (i64, i64, frame, i64, i64, i64, i64, b, c, f, o, s)),
        "vm": (vm.run_passes, (i64, frame, i64, i64, c, m, p, o, s, scratch, scratch)),
        "install": (install.maybe_install, (i64, frame, i64, c, f, o, s)),
    }


def _compile_part(name: str) -> None:
    fn, types = kernel_parts()[name]
    fn.compile(types)


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
    helper = _start_helper("vm") if first else None
    try:
        if first and not jit.JIT_DISABLED:
            for part in ("begin", "install"):
                _compile_part(part)
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
    parts = ("begin", "vm", "install")
    if len(argv) == 1 and argv[0] in parts:
        _compile_part(argv[0])
        return 0
    print(f"usage: python -m ctaccel.datapath.warmup {{{'|'.join(parts)}}}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
