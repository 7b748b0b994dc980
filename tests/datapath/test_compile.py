"""Compile-time behaviour: one specialisation per kernel, the compile notice, the warm-up
record, a first run's batch kernel free of reference counting, kernels linked apart."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from ctaccel import jit
from ctaccel.datapath import warmup
from ctaccel.progress import NOTICE, compile_progress

needs_jit = pytest.mark.skipif(jit.JIT_DISABLED, reason="nothing is compiled without the JIT")


def test_numba_level_inlining_is_refused():
    with pytest.raises(TypeError, match="forceinline"):
        jit.njit(inline="always")


@needs_jit
def test_constant_arguments_share_one_specialisation():
    @jit.njit(cache=False)
    def add(a, b):
        return a + b

    @jit.njit(cache=False)
    def caller(x):
        return add(x, 1) + add(x, 2) + add(3, x)

    assert caller(np.int64(5)) == 6 + 7 + 8
    assert len(add.signatures) == 1, add.signatures


@needs_jit
def test_compile_progress_reports_a_compile_and_is_silent_without_one():
    @jit.njit(cache=False)
    def fresh(x):
        return x * 3

    out = io.StringIO()
    with compile_progress(out) as report:
        assert fresh(np.int64(2)) == 6
    text = out.getvalue()
    assert text.startswith(NOTICE + "\n"), text
    assert "compiled the datapath in" in text and report.kernels >= 1

    out = io.StringIO()
    with compile_progress(out):
        assert fresh(np.int64(3)) == 9  # already compiled: nothing to say
    assert out.getvalue() == ""


def test_warm_up_leaves_its_record(tmp_path, monkeypatch):
    monkeypatch.setattr(jit, "CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(jit, "JIT_DISABLED", False)
    assert not warmup.is_compiled()
    seconds = warmup.warm_up()
    assert seconds > 0 and warmup.is_compiled()
    assert (tmp_path / warmup.RECORD).exists()


_FIRST_RUN = """
import importlib, os
import numpy as np
from ctaccel import jit
from ctaccel.datapath import kernel, warmup
from ctaccel.packet import build, key as K
from ctaccel.packet.parse import parse_frame
assert not warmup.is_compiled()
# a small kernel run from Python first (as trace and the reference engine do), compiled at
# top level and saved to the cache before the datapath reaches it
frame = np.frombuffer(build.udp_frame("02:00:00:00:00:01", "02:00:00:00:00:02", "10.0.0.1",
                                      "10.0.0.2", 1, 2, b"x"), np.uint8).copy()
parse_frame(frame, np.int64(1), np.zeros(K.KEY_WIDTH, np.int64))
warmup.warm_up()
for root, _dirs, files in os.walk(jit.CACHE_DIR):
    for name in files:
        if name.endswith(".nbc") and any(k in name for k in ("run_batch", "ct_execute", "_install")):
            with open(os.path.join(root, name), "rb") as f:
                assert b"NRT_incref" not in f.read(), name
linked = warmup.linked_argtypes()
for (module, name), argtypes in linked.items():
    k = getattr(importlib.import_module(module), name)
    assert k.signatures == [argtypes], (name, k.signatures, argtypes)
    if len(os.sched_getaffinity(0)) > 1:  # the helper compiled it: this process loaded it
        assert k._cache_hits[argtypes] == 1 and not k._cache_misses, (name, k._cache_misses)
print(sum(c.library.get_llvm_str().count("NRT_incref") for c in kernel.run_batch.overloads.values()),
      len(kernel.run_batch.overloads))
"""


def _cache_is_empty(path) -> bool:
    """True when no file lies under ``path`` (or it does not exist)."""
    if path is None:
        return False
    return not any(files for _root, _dirs, files in os.walk(path))


@needs_jit
def test_a_first_run_compiles_the_batch_kernel_without_reference_counting(tmp_path):
    """run_batch runs without numba's runtime: its parts must not count references to array
    views. A part compiled on its own first (warm-up once did, to compile in two processes;
    a command or test that calls a small kernel from Python before the datapath compiles
    still does) used to be linked in with its reference counting: 255 atomic increments in
    run_batch, the fast path 4.5x slower, and ct_execute 13 increments, recirc 1.4-2x
    slower, for every run that loaded that cache. jit.njit now compiles every kernel without
    numba's runtime unless it says otherwise, so it cannot matter who compiles a part first:
    here a small kernel is run from Python before the warm-up, and the three kernels the
    datapath runs must come out of the cache without a reference count.
    The compile helper process compiles only the two kernels linked apart, for exactly the
    types run_batch calls them with, and this process loads them (cache hits) instead of
    compiling them.

    When this session's own cache is still empty (a fresh CI machine: conftest.py runs this
    test first), the first run compiles into it, and every later test loads what it left
    instead of compiling the datapath again."""
    env = dict(os.environ)
    if not _cache_is_empty(jit.CACHE_DIR):
        env["NUMBA_CACHE_DIR"] = str(tmp_path / "cache")
    run = subprocess.run([sys.executable, "-c", _FIRST_RUN], env=env, capture_output=True,
                         text=True, timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    increfs, overloads = map(int, run.stdout.split()[-2:])
    assert overloads == 1 and increfs == 0


@needs_jit
def test_a_kernel_linked_apart_works_from_the_cache_in_new_processes(tmp_path):
    """The path that once crashed: a kernel calling the stub (``middle``) compiled and
    cached in one process; a kernel calling it (``top``) compiled in a second, ``middle``
    loaded from the cache; ``top`` loaded from the cache in a third, which must register the
    callee's symbol before running it."""
    pkg = tmp_path / "linkedpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "callee.py").write_text(
        "from ctaccel.jit import linked_separately, njit\n"
        "@njit\n"
        "def scaled_sum(a, k, flag):\n"
        "    s = 0\n"
        "    for i in range(a.shape[0]):\n"
        "        s += a[i] * k if flag else a[i]\n"
        "    a[0] = s\n"
        "    return s\n"
        "scaled_sum_apart = linked_separately(scaled_sum)\n"
    )
    (pkg / "middle.py").write_text(
        "from ctaccel.jit import njit\n"
        "from linkedpkg.callee import scaled_sum_apart\n"
        "@njit\n"
        "def middle(a):\n"
        "    return scaled_sum_apart(a, 3, True) + scaled_sum_apart(a, 2, False)\n"
    )
    (pkg / "top.py").write_text(
        "from ctaccel.jit import njit\n"
        "from linkedpkg.middle import middle\n"
        "@njit\n"
        "def top(a):\n"
        "    return middle(a) + 1\n"
    )
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               NUMBA_CACHE_DIR=str(tmp_path / "cache"))  # fmt: skip
    run_top = "import numpy as np; from linkedpkg.top import top; print(top(np.arange(5)))"
    steps = [
        "import numpy as np; from linkedpkg.middle import middle; print(middle(np.arange(5)))",
        run_top,
        run_top,
    ]
    # arange(5): 30 (sum * 3, written to a[0]), then 30+1+2+3+4 = 40: middle returns 70
    want = ["70", "71", "71"]
    for code, expected in zip(steps, want, strict=True):
        run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, timeout=300)  # fmt: skip
        assert run.returncode == 0, run.stderr[-2000:]
        assert run.stdout.split()[-1] == expected


def test_a_helper_that_ends_without_the_kernel_costs_no_more_than_its_life(monkeypatch):
    """The wait for the helper returns when the helper says the kernel's name, or ends
    without saying it (a failed helper: the kernel is then compiled here), never later."""
    monkeypatch.setattr(jit, "CACHE_DIR", jit.CACHE_DIR or "/nonexistent")
    monkeypatch.setattr(jit, "JIT_DISABLED", False)
    monkeypatch.setattr(warmup.os, "sched_getaffinity", lambda _pid: {0, 1})
    first, second = (f"{m}.{q}" for m, q in warmup.HELPER_KERNELS)
    says_first = f"import time; print({first!r}, flush=True); time.sleep(0.3)"
    proc = warmup._start_helper([sys.executable, "-c", says_first])
    try:
        waits = [jit._from_helper[k] for k in warmup.HELPER_KERNELS]
        waits[0]()
        assert proc.poll() is None  # it said the first name: no need to wait for its end
        t0 = time.monotonic()
        waits[1]()  # never said: returns when the helper ends (its output closes)
        assert time.monotonic() - t0 < warmup.HELPER_WAIT_S / 10
        assert proc.stdout.read() == ""  # at the end of its output (the process may still
        #                                  be exiting: poll() can say None a moment longer)
    finally:
        warmup._stop_helper(proc)
    assert not any(k in jit._from_helper for k in warmup.HELPER_KERNELS)
    monkeypatch.setenv(warmup.HELPER_ENV, "0")
    assert warmup._start_helper() is None
