"""The project's one ``njit`` alias.

What: every compiled kernel is decorated with :func:`njit` from here, so the flags (cache,
error model, no Python objects) are set in one place.

Design: ``cache=True`` needs a writable cache directory. Numba looks next to the source file
and then in a per-user directory; on a read-only install with no writable home both fail at
decoration time, i.e. at import. We therefore honour ``NUMBA_CACHE_DIR`` when it is set, and
otherwise choose a writable fallback (``$XDG_CACHE_HOME/ctaccel/numba`` or a temp dir) *before*
numba reads its configuration. ``NUMBA_DISABLE_JIT=1`` runs every kernel as plain Python
(used for coverage and for the kernel-vs-reference tests).
"""

from __future__ import annotations

import os
import tempfile


def _writable(path: str) -> bool:
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, ".write-test")
        with open(probe, "w"):
            pass
        os.unlink(probe)
        return True
    except OSError:
        return False


def _choose_cache_dir() -> str | None:
    if os.environ.get("NUMBA_CACHE_DIR"):
        return None  # numba honours it itself
    here = os.path.dirname(os.path.abspath(__file__))
    if _writable(os.path.join(here, "__pycache__")):
        return None  # numba's default in-tree location works
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    for cand in (os.path.join(base, "ctaccel", "numba"),
                 os.path.join(tempfile.gettempdir(), f"ctaccel-numba-{os.getuid()}")):
        if _writable(cand):
            return cand
    return None


_fallback = _choose_cache_dir()
if _fallback:
    os.environ["NUMBA_CACHE_DIR"] = _fallback

import numba  # noqa: E402  (must come after the cache dir is chosen)

if _fallback:
    numba.config.CACHE_DIR = _fallback

JIT_DISABLED = bool(numba.config.DISABLE_JIT)


def njit(*args, **kwargs):
    """``numba.njit`` with the project's flags: cached, no Python objects, no fastmath."""
    kwargs.setdefault("cache", True)
    kwargs.setdefault("nogil", True)
    if args and callable(args[0]) and len(args) == 1 and not kwargs.get("_sig"):
        return numba.njit(**kwargs)(args[0])
    return numba.njit(*args, **kwargs)
