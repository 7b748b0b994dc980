"""Machine code only for kernels that are called: a callee's compile stops at optimised IR.

What: :func:`install` (ctaccel.jit calls it once) changes how numba finishes a kernel that
is compiled *inside another kernel's compile* (a callee that type inference reached): its
library is optimised and kept as IR for its callers to link and inline, and no machine code
is made for it on its own, nor is it saved to the cache, until something needs it: a call
from Python (the dispatcher's ``_compile_for_args``), :func:`materialise` (jit's kernels
linked apart), or a caller that is itself compiled at top level (whose machine code holds
the callee inlined).

Why: numba makes machine code for every kernel it compiles, callees included, and saves
each to the cache; the datapath's callees (~190 of them in each half of a first run) are
only ever inlined into run_batch or conntrack's ct action, so that code was made to be
thrown away: ~40% of a first run's compile time (numba's ``finalize`` of each library,
measured: 24.1 of 58.2 s in the helper process, 20.7 of 55.3 s in this one).

Design: numba's own objects, patched at class level (numba 0.68):
- ``Dispatcher.compile`` counts how deep compiles nest (per thread);
- ``CPUContext.get_executable`` returns a :class:`_Pending` placeholder for a library lowered
  at depth >= 2 (a callee) instead of asking for its machine code; numba registers the
  placeholder as the callee's implementation key, so callers link its library as before;
- ``Dispatcher.add_overload`` keeps such an overload out of the dispatcher's C table (that
  table calls its entries as C functions), and ``Cache.save_overload`` does not save it;
- a pending library that a caller links (numba's ``add_linking_library`` and
  ``_get_module_for_linking`` finalize it) is only linked and optimised (the first half of
  numba's ``finalize``); the second half (machine code) runs if something asks for its
  functions;
- ``Dispatcher.compile`` at depth 0 (a call from Python) makes the machine code of a
  pending overload (:func:`materialise`): the same entry point numba would have made, then
  registered, put in the C table and saved to the cache as numba would have.
Nothing changes for a kernel compiled at top level, for results, or for what is cached of
the kernels commands run (run_batch, the two kernels linked apart, anything called from
Python).

Invariants: a placeholder is never called (Python calls go through the C table or
``compile``, both of which materialise it first); ``NUMBA_DISABLE_JIT=1`` installs nothing.
"""

from __future__ import annotations

import threading

_state = threading.local()
_installed = False


def _depth() -> int:
    return getattr(_state, "depth", 0)


class _Pending:
    """A callee's entry point before its machine code exists (see the module docstring)."""

    __slots__ = ("context", "library", "fndesc", "env", "__weakref__")

    def __init__(self, context, library, fndesc, env):
        self.context, self.library, self.fndesc, self.env = context, library, fndesc, env

    def __call__(self, *args, **kwargs):
        raise RuntimeError(f"{self.fndesc.qualname}: a pending kernel was called directly")


def is_pending(entry_point) -> bool:
    return isinstance(entry_point, _Pending)


def materialise(dispatcher, args: tuple):
    """Make the machine code of ``dispatcher``'s pending overload for ``args`` (a tuple of
    types), register it as numba would have and save it to the cache; returns the entry
    point (the overload's own when it was not pending)."""
    from numba.core.compiler_lock import global_compiler_lock

    with global_compiler_lock:  # (numba's finalize requires it; it is reentrant)
        cres = dispatcher.overloads[args]
        pending = cres.entry_point
        if not isinstance(pending, _Pending):
            return pending
        entry = _ORIGINAL["get_executable"](pending.context, pending.library, pending.fndesc,
                                            pending.env)  # fmt: skip
        pending.context.insert_user_function(entry, pending.fndesc, [pending.library])
        cres = cres._replace(entry_point=entry)
        _ORIGINAL["add_overload"](dispatcher, cres)
        dispatcher._cache.save_overload(args, cres)
        return entry


_ORIGINAL: dict = {}


def install() -> None:
    """Patch numba as the module docstring says (once)."""
    global _installed
    if _installed:
        return
    _installed = True
    from numba.core import caching, codegen, cpu
    from numba.core.dispatcher import Dispatcher

    needed = ((Dispatcher, "compile"), (Dispatcher, "add_overload"),
              (cpu.CPUContext, "get_executable"), (caching.Cache, "save_overload"),
              (codegen.CPUCodeLibrary, "finalize"), (codegen.CPUCodeLibrary, "_ensure_finalized"),
              (codegen.CPUCodeLibrary, "_get_module_for_linking"),
              (codegen.CPUCodeLibrary, "add_linking_library"),
              (codegen.CPUCodeLibrary, "_finalize_final_module"),
              (codegen.CPUCodeLibrary, "_optimize_final_module"))  # fmt: skip
    if not all(hasattr(owner, name) for owner, name in needed):
        return  # another numba than the one this was written for: numba's own way, unchanged

    _ORIGINAL["get_executable"] = cpu.CPUContext.get_executable
    _ORIGINAL["add_overload"] = Dispatcher.add_overload
    compile_, save = Dispatcher.compile, caching.Cache.save_overload
    finalize, ensure = codegen.CPUCodeLibrary.finalize, codegen.CPUCodeLibrary._ensure_finalized
    for_linking = codegen.CPUCodeLibrary._get_module_for_linking
    add_linking = codegen.CPUCodeLibrary.add_linking_library

    def compile(self, sig):
        _state.depth = _depth() + 1
        try:
            entry = compile_(self, sig)
        finally:
            _state.depth -= 1
        if isinstance(entry, _Pending) and _depth() == 0:
            from numba.core import sigutils

            args, _ret = sigutils.normalize_signature(sig)
            entry = materialise(self, tuple(args))
        return entry

    def get_executable(self, library, fndesc, env):
        if _depth() >= 2 and not library._finalized:  # (a library loaded from the cache is)
            library._ctaccel_pending = True
            return _Pending(self, library, fndesc, env)
        return _ORIGINAL["get_executable"](self, library, fndesc, env)

    def add_overload(self, cres):
        if isinstance(cres.entry_point, _Pending):
            self.overloads[tuple(cres.signature.args)] = cres
            return
        _ORIGINAL["add_overload"](self, cres)

    def save_overload(self, sig, cres):
        if not isinstance(getattr(cres, "entry_point", None), _Pending):
            save(self, sig, cres)

    def linking(method):
        """``method`` run as linking: a pending library it finalizes is only optimised."""

        def run(self, *args):
            _state.linking = getattr(_state, "linking", 0) + 1
            try:
                return method(self, *args)
            finally:
                _state.linking -= 1

        return run

    def ensure_finalized(self):
        if (not self._finalized and getattr(self, "_ctaccel_pending", False)
                and getattr(_state, "linking", 0)):  # fmt: skip
            if not getattr(self, "_ctaccel_optimised", False):
                _link_and_optimise(self)
            return
        ensure(self)

    def finalize_(self):
        if getattr(self, "_ctaccel_optimised", False):  # linked and optimised already
            self._raise_if_finalized()
            self._finalize_final_module()
            return
        finalize(self)

    Dispatcher.compile = compile
    Dispatcher.add_overload = add_overload
    cpu.CPUContext.get_executable = get_executable
    caching.Cache.save_overload = save_overload
    codegen.CPUCodeLibrary._get_module_for_linking = linking(for_linking)
    codegen.CPUCodeLibrary.add_linking_library = linking(add_linking)
    codegen.CPUCodeLibrary._ensure_finalized = ensure_finalized
    codegen.CPUCodeLibrary.finalize = finalize_


def _link_and_optimise(library) -> None:
    """The first half of numba's CPUCodeLibrary.finalize: link the libraries it uses and
    optimise the module (what a caller links in), without making machine code."""
    from numba.core.compiler_lock import require_global_compiler_lock

    require_global_compiler_lock()
    library._codegen._check_llvm_bugs()
    library._raise_if_finalized()
    seen = set()
    for lib in library._linking_libraries:
        if lib not in seen:
            library._reload_init.update(lib._reload_init)
            seen.add(lib)
            library._final_module.link_in(lib._get_module_for_linking(), preserve=True)
    # (measured: callers linking callees optimised with numba's cheap passes only, or not at
    # all, ran recirc 1.09-1.12x slower, paired; fully optimised, 1.03)
    library._optimize_final_module()
    library._final_module.verify()
    library._ctaccel_optimised = True
