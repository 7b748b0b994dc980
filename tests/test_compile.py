"""Compile-time behaviour: one specialisation per kernel, the compile notice, the warm-up
record and its helper process."""

from __future__ import annotations

import io
import subprocess
import sys

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
    monkeypatch.setattr(warmup, "_start_helper", lambda: None)
    seconds = warmup.warm_up()
    assert seconds > 0 and warmup.is_compiled()
    assert (tmp_path / warmup.RECORD).exists()


def test_helper_entry_point_rejects_unknown_work():
    run = subprocess.run([sys.executable, "-m", "ctaccel.datapath.warmup", "everything"],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.returncode == 2 and "usage" in run.stderr


@needs_jit
def test_helper_compiles_the_ct_kernel_for_the_datapaths_types():
    from ctaccel.conntrack import Conntrack, core

    Conntrack().compile_execute()
    assert len(core.ct_execute.signatures) >= 1
    # the datapath's own warm-up adds no second specialisation
    warmup.warm_up()
    assert len(core.ct_execute.signatures) == 1, core.ct_execute.signatures
