"""lazy_codegen: a callee compiled inside another kernel's compile gets machine code (and a
cache entry) only when something calls it from Python; results never change."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ctaccel import jit

needs_jit = pytest.mark.skipif(jit.JIT_DISABLED, reason="nothing is compiled without the JIT")

_PKG = {
    "__init__.py": "",
    "kernels.py": (
        "from ctaccel.jit import njit\n"
        "@njit(forceinline=True)\n"
        "def inner(x):\n"
        "    return x * 3 + 1\n"
        "@njit\n"
        "def middle(x):\n"
        "    return inner(x) + inner(x + 1)\n"
        "@njit\n"
        "def outer(x):\n"
        "    return middle(x) * 2\n"
    ),
}

_FIRST = """
import os, sys
from numba.core import codegen
from ctaccel import lazy_codegen
made = []
emit = codegen.CPUCodeLibrary._finalize_final_module
def spy(self):
    made.append(self.name)
    return emit(self)
codegen.CPUCodeLibrary._finalize_final_module = spy
from lazypkg.kernels import inner, middle, outer
assert outer(5) == 2 * ((5 * 3 + 1) + (6 * 3 + 1))
# only the kernel called from Python was made into machine code; its callees are pending
assert "outer" in made and "middle" not in made and "inner" not in made, made
for k in (middle, inner):
    (cres,) = k.overloads.values()
    assert lazy_codegen.is_pending(cres.entry_point)
cached = lambda: sorted(n for _r, _d, fs in os.walk(os.environ["NUMBA_CACHE_DIR"])
                        for n in fs if n.endswith(".nbi"))
assert [n for n in cached() if "middle" in n or "inner" in n] == [], cached()
# called from Python: made now, right, and cached
assert middle(5) == (5 * 3 + 1) + (6 * 3 + 1) and inner(7) == 22
assert "middle" in made and "inner" in made
assert not any(lazy_codegen.is_pending(c.entry_point)
               for k in (middle, inner) for c in k.overloads.values())
assert any("middle" in n for n in cached()) and any("inner" in n for n in cached())
print("ok")
"""

_SECOND = """
from lazypkg.kernels import inner, middle, outer
assert outer(5) == 2 * ((5 * 3 + 1) + (6 * 3 + 1)) and middle(5) == 35 and inner(7) == 22
assert all(k._cache_hits and not k._cache_misses for k in (outer, middle, inner)), [
    (k._cache_hits, k._cache_misses) for k in (outer, middle, inner)]
print("ok")
"""


@needs_jit
def test_callees_get_machine_code_only_when_called_and_are_cached_then(tmp_path):
    pkg = tmp_path / "lazypkg"
    pkg.mkdir()
    for name, text in _PKG.items():
        (pkg / name).write_text(text)
    env_cache = str(tmp_path / "cache")
    for script in (_FIRST, _SECOND):  # the second process loads all three from the cache
        run = subprocess.run(
            [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
            timeout=300,
            env={**os.environ, "NUMBA_CACHE_DIR": env_cache,
                 "PYTHONPATH": f"{tmp_path}:{os.environ.get('PYTHONPATH', '')}"},
        )  # fmt: skip
        assert run.returncode == 0 and run.stdout.strip().endswith("ok"), run.stderr[-3000:]
