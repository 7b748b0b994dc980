"""Start-up times: ``warm_up()`` in a fresh process, with an empty kernel cache or this one's.

What: :func:`startup` runs ``ctaccel.datapath.warmup.warm_up`` in a fresh interpreter and
reports the import, warm-up and whole-process seconds (a :class:`~ctaccel.bench.report.Startup`):
cold with an empty ``NUMBA_CACHE_DIR`` under a temporary directory (every kernel compiled),
warm with this process's cache (every kernel loaded). :func:`cold_startup` is the cold
figure the bench reports, measured at most once per build of the kernels.

Design: the child process prints one JSON line; its failure or a timeout becomes a Startup
with ``error``. Compiling everything takes minutes, so the cold figure is recorded in the
kernel cache directory of this build (``jit.CACHE_DIR``, which changes with the sources) and
reused until the sources change; a process that compiled from an empty cache itself reports
its own warm-up instead.

Invariants: nothing is written outside a temporary directory but the record in the cache
directory; a failed measurement is never recorded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from ctaccel.bench.report import Startup

STARTUP_TIMEOUT_S = 900

_STARTUP_CODE = """\
import json, time
t0 = time.perf_counter()
from ctaccel.datapath.warmup import warm_up
t1 = time.perf_counter()
w = warm_up()
print(json.dumps({"import_seconds": t1 - t0, "warm_up_seconds": w,
                  "total_seconds": time.perf_counter() - t0}))
"""


def startup(cold: bool, timeout: float = STARTUP_TIMEOUT_S) -> Startup:
    """``warm_up()`` in a fresh interpreter: cold = empty numba cache, warm = this one's."""
    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="ctaccel-cold-cache-") as tmp:
        if cold:
            env["NUMBA_CACHE_DIR"] = tmp
        t0 = time.perf_counter()
        try:
            done = subprocess.run([sys.executable, "-c", _STARTUP_CODE], env=env, text=True,
                                  capture_output=True, timeout=timeout)  # fmt: skip
        except subprocess.TimeoutExpired:
            return Startup(cold, error=f"timed out after {timeout:.0f} s")
        wall = time.perf_counter() - t0
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or [f"exit {done.returncode}"]
        return Startup(cold, error=tail[0])
    out = json.loads(done.stdout.strip().splitlines()[-1])
    return Startup.from_json(out | {"cold": cold, "process_seconds": wall})


COLD_START_RECORD = "cold-start.json"  # in the kernel cache directory of this source build


def cache_is_empty() -> bool:
    """No compiled kernel is cached yet for this build of the sources (jit.CACHE_DIR)."""
    from ctaccel import jit

    return jit.CACHE_DIR is None or not any(Path(jit.CACHE_DIR).rglob("*.nbi"))


def cold_startup(how: str = "auto", own_cold_warm_up: float | None = None) -> Startup:
    """The cold start-up figure: compiling every kernel from an empty cache.

    ``how="measure"``: :func:`startup` in a fresh process with an empty cache (minutes). "auto":
    ``own_cold_warm_up`` when given (this process compiled from an empty cache: the same
    work, imports aside), else the figure recorded in the cache directory when this build of
    the kernels was measured, else a measurement. Measured figures are recorded there, so a
    changed source (a new cache directory) is measured again."""
    from ctaccel import jit

    if how not in ("auto", "measure"):
        raise ValueError(f"cold_start must be 'auto' or 'measure', not {how!r}")
    record = Path(jit.CACHE_DIR) / COLD_START_RECORD if jit.CACHE_DIR else None
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    out = None
    if how == "auto" and own_cold_warm_up is not None:
        out = Startup(True, warm_up_seconds=own_cold_warm_up,
                      how="this process's own warm-up: its kernel cache was empty",
                      measured_at=stamp, known_unknown=("total_seconds",))  # fmt: skip
    elif how == "auto" and record is not None and record.is_file():
        try:
            recorded = Startup.from_json(json.loads(record.read_text(encoding="utf-8")))
            if recorded.measured_at is None:
                raise KeyError("measured_at")
            recorded.how = (f"recorded when this build of the kernels was measured "
                            f"({recorded.measured_at})")  # fmt: skip
            return recorded
        except (OSError, ValueError, KeyError, TypeError):
            pass  # unreadable: measure again
    if out is None:
        out = startup(cold=True)
    out.how = out.how or "a fresh process with an empty cache"
    out.measured_at = out.measured_at or stamp
    if record is not None and out.error is None:
        try:
            record.write_text(json.dumps(out.to_json()) + "\n", encoding="utf-8")
        except OSError:
            pass  # a read-only cache: the figure is still reported
    return out
