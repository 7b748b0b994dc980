"""Getting the compiled datapath ready: compile once, load from numba's cache afterwards.

What: :func:`warm_up` compiles (first run) or loads from numba's on-disk cache (later runs)
every kernel the engine runs, by running a few packets of each kind through throwaway
engines of both modes, and returns the seconds it took.

Design:
- The batch kernel (kernel.run_batch) is compiled with everything it calls, in this process,
  as its own type inference reaches each callee. Every kernel is compiled without numba's
  runtime (jit.njit's default), so a part compiled on its own beforehand (by a command that
  ran it from Python, or by the helper below) is the same code run_batch would have made of
  it; when parts were compiled with the runtime, a part compiled first at top level brought
  its reference counting of array views into run_batch (the fast path ~4.4x, recirc
  ~1.6x slower for every later run that loaded that cache, measured). The two large
  per-packet kernels that are meant to be called, not inlined (conntrack's ct_execute, the
  fast path's install), are linked apart by jit.linked_separately, which keeps the compile
  short.
- Those two kernels are compiled by a helper process on a first run, while this one compiles
  the rest (the parser, the fast path, the action VM): on two cores the first run takes about
  the time of the longer half instead of the sum (82 s -> ~52 s measured). The helper compiles
  each for exactly the argument types run_batch gives it (:func:`linked_argtypes`, from a
  throwaway engine's arrays) and saves only those two to the shared cache (the small kernels
  it compiles on the way would be loaded here as finished code, object code to call rather
  than inline). When this process reaches a kernel the
  helper is compiling, it waits for the helper's word that it is saved, then loads it; a
  helper that fails or is slow costs the wait only (bounded), and the kernel is compiled here.
  ``CTACCEL_COMPILE_HELPER=0`` compiles everything in this process; so does a machine that
  lets this process use one core only.
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
import select
import subprocess
import sys
import time

import numpy as np

from ctaccel import jit
from ctaccel.datapath.engine import MODES, DatapathEngine
from ctaccel.ofproto.rules import parse_flows
from ctaccel.packet import build as B

RECORD = "compiled.json"
HELPER_ENV = "CTACCEL_COMPILE_HELPER"  # "0": no helper process
HELPER_CODE = "from ctaccel.datapath import warmup; warmup.helper_main()"
HELPER_WAIT_S = 300.0  # the longest this process waits for the helper's word on one kernel
# the linked_separately kernels the helper compiles, in the order run_batch reaches them
HELPER_KERNELS = (("ctaccel.conntrack.core", "ct_execute"),
                  ("ctaccel.datapath.install", "_install"))  # fmt: skip
_WARM_UP_RULES = (
    "table=0,priority=10,ip,ct_state=-trk,actions=ct(table=1,zone=1)\n"
    "table=1,priority=10,ip,ct_state=+trk+new,actions=ct(commit,zone=1),output:2\n"
    "table=1,priority=10,ip,ct_state=+trk+est,actions=output:2\n"
    "table=0,priority=1,actions=drop\n"
)


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
    rules = _WARM_UP_RULES
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


def linked_argtypes() -> dict:
    """The argument types run_batch calls each of HELPER_KERNELS with, from the arrays of a
    throwaway engine (tests check them against what a warm-up compiled)."""
    from numba import typeof, types

    from ctaccel.conntrack.layout import CtTables
    from ctaccel.datapath import layout as L

    eng = DatapathEngine(parse_flows(_WARM_UP_RULES, "<warm-up>"), mode="assume-established")
    zeros = np.zeros(1, np.int64)
    res = np.zeros((1, L.RES_WIDTH), np.int64)
    _batch, ct, _mf, _progs, fp, out, st = eng.kernel_bundles(
        (np.zeros(1, np.uint8), zeros, zeros, zeros, zeros), res
    )
    i64, frame, row = types.int64, types.Array(types.uint8, 1, "C"), typeof(zeros)
    ct_args = (typeof(CtTables(*ct)), frame, i64, row, row, i64, i64, row, row)
    install_args = (i64, frame, i64, typeof(CtTables(*ct).conns), typeof(L.FastPathTables(*fp)),
                    typeof(L.Results(*out)), typeof(L.VmState(*st)))  # fmt: skip
    return {HELPER_KERNELS[0]: ct_args, HELPER_KERNELS[1]: install_args}


def helper_main() -> None:
    """The helper process: compile HELPER_KERNELS into the shared cache, saving nothing else,
    and say each one's name on stdout once it is saved."""
    import importlib

    from numba.core import caching

    keep = {getattr(importlib.import_module(m), q).py_func for m, q in HELPER_KERNELS}
    save = caching.Cache.save_overload

    def save_only_kept(self, sig, data):
        if self._py_func in keep:
            save(self, sig, data)

    caching.Cache.save_overload = save_only_kept
    argtypes = linked_argtypes()
    with _as_inside_run_batch():
        for (module, qualname), types in argtypes.items():
            jit._ensure_linked(module, qualname, types)
            print(f"{module}.{qualname}", flush=True)


def _as_inside_run_batch():
    """A context in which a compile inherits the flags it gets when run_batch's compile
    reaches it (numba passes flags a kernel does not set down to what a compile compiles,
    through its ConfigStack): the ``forceinline`` of the stub that calls it, which makes
    the kernels ct_execute calls inline into it as they do when run_batch's compile reaches
    it."""
    from contextlib import ExitStack

    from numba.core.compiler import Flags
    from numba.core.targetconfig import ConfigStack

    from ctaccel.datapath.kernel import run_batch

    def flags_of(options: dict):
        flags = Flags()
        run_batch.targetdescr.options.parse_as_flags(flags, options)
        return flags

    stack = ExitStack()
    stack.enter_context(ConfigStack().enter(flags_of(run_batch.targetoptions)))
    caller = {k: v for k, v in run_batch.targetoptions.items() if k != "_nrt"}
    stack.enter_context(ConfigStack().enter(flags_of({**caller, "forceinline": True})))
    return stack


def _start_helper(cmd: list[str] | None = None):
    """Start the helper process (``cmd``: another command, for tests) and tell jit to wait
    for it; returns it (None: no helper)."""
    if jit.JIT_DISABLED or not jit.CACHE_DIR or os.environ.get(HELPER_ENV) == "0":
        return None
    if len(os.sched_getaffinity(0)) < 2:
        return None  # one core: the two processes would only take turns
    try:
        cmd = cmd or [sys.executable, "-c", HELPER_CODE]
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, env={**os.environ, "NUMBA_CACHE_DIR": jit.CACHE_DIR},
        )  # fmt: skip
    except OSError:
        return None
    said: set[str] = set()

    def waiter(name: str):
        def wait() -> None:
            deadline = time.monotonic() + HELPER_WAIT_S
            while name not in said:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([proc.stdout], [], [], left)[0]:
                    return
                line = proc.stdout.readline()
                if not line:
                    return  # the helper ended (or failed) without it: compile it here
                said.add(line.strip())

        return wait

    for module, qualname in HELPER_KERNELS:
        jit.compiled_elsewhere(module, qualname, waiter(f"{module}.{qualname}"))
    return proc


def _stop_helper(proc) -> None:
    for module, qualname in HELPER_KERNELS:
        jit.forget_elsewhere(module, qualname)
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    proc.stdout.close()


def warm_up() -> float:
    """Compile (first run) or load every kernel the engine uses; returns the seconds taken.

    First run on a 2-core machine: about a minute (see above); later runs: loading the
    cached machine code, a fraction of a second."""
    t0 = time.perf_counter()
    first = not is_compiled()
    helper = _start_helper() if first else None
    try:
        _run_warm_up_traffic()
    finally:
        if helper is not None:
            _stop_helper(helper)
    seconds = time.perf_counter() - t0
    path = _record_path()
    if first and path is not None:
        try:
            with open(path, "w") as f:
                json.dump({"seconds": round(seconds, 3)}, f)
        except OSError:
            pass  # a read-only cache: the next run compiles nothing anyway, it just loads
    return seconds
