"""The project's one ``njit`` alias, and where compiled kernels are cached.

What: every compiled kernel is decorated with :func:`njit` from here, so the flags (cache,
nogil) are set in one place.

Design: numba's on-disk cache is invalidated only when the *file of the decorated function*
changes; a kernel that inlines helpers from other modules (conntrack's kernel calls the TCP
tracker, the table code, the parser...) would silently keep stale machine code after those
modules change. So the cache lives in a directory named after a hash of every source file of
the package: any change to any module gives a fresh directory. The base is
``NUMBA_CACHE_DIR`` when set, else ``$XDG_CACHE_HOME/ctaccel/numba`` (``~/.cache/...``), else a
temp dir: the first writable one wins, so a read-only install still imports (numba would
otherwise fail at decoration time). ``NUMBA_DISABLE_JIT=1`` runs every kernel as plain
Python (coverage, kernel-vs-reference tests).

Compile time: helpers the hot path needs inlined are ``njit(forceinline=True)``: each is
compiled once on its own and LLVM inlines its machine-independent code into every caller
(the ``alwaysinline`` attribute). numba's own ``inline="always"`` inlines numba IR instead and
re-runs type inference on every inlined copy at every call site, recursively: with it the
first compile took 6-7 minutes on a 2-core machine, with ``forceinline`` about one, for the
same speed (paired runs on workload A: 0.99x). :func:`njit` refuses ``inline="always"``.
Importing this module installs ctaccel.lazy_codegen: a kernel compiled inside another's
compile gets machine code (and a cache entry) only when something calls it from Python.
"""

from __future__ import annotations

import hashlib
import os
import tempfile

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _writable(path: str) -> bool:
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".write-test-{os.getpid()}")
        with open(probe, "w"):
            pass
        os.unlink(probe)
        return True
    except OSError:
        return False


# The packages whose modules hold compiled kernels (or constants they read), and single files
# elsewhere that kernels read constants from. Editing anything else (rules, CLI, benchmarks)
# must not throw the compiled cache away.
KERNEL_PACKAGES = ("io", "packet", "conntrack", "datapath")
KERNEL_FILES = ("ofproto/program.py", "hashtable.py", "lazy_codegen.py")


def source_digest() -> str:
    """A short hash of the sources kernels can depend on: jit.py, KERNEL_FILES and every .py
    file of KERNEL_PACKAGES (names and contents)."""
    h = hashlib.sha256()
    with open(os.path.abspath(__file__), "rb") as f:
        h.update(f.read())
    for rel in KERNEL_FILES:
        h.update(rel.encode())
        with open(os.path.join(_PACKAGE_DIR, rel), "rb") as f:
            h.update(f.read())
    for root, dirs, files in os.walk(_PACKAGE_DIR):
        if root == _PACKAGE_DIR:
            dirs[:] = sorted(d for d in dirs if d in KERNEL_PACKAGES)
            continue
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(root, name)
                h.update(os.path.relpath(path, _PACKAGE_DIR).encode())
                with open(path, "rb") as f:
                    h.update(f.read())
    return h.hexdigest()[:16]


def _choose_cache_dir() -> str | None:
    sub = f"ctaccel-{source_digest()}"
    bases = []
    if os.environ.get("NUMBA_CACHE_DIR"):
        bases.append(os.environ["NUMBA_CACHE_DIR"])
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    bases.append(os.path.join(xdg, "ctaccel", "numba"))
    bases.append(os.path.join(tempfile.gettempdir(), f"ctaccel-numba-{os.getuid()}"))
    for base in bases:
        # a child process inherits the directory chosen by its parent: keep it as it is
        cand = base if os.path.basename(os.path.normpath(base)) == sub else os.path.join(base, sub)
        if _writable(cand):
            return cand
    return None


CACHE_DIR = _choose_cache_dir()
if CACHE_DIR:
    os.environ["NUMBA_CACHE_DIR"] = CACHE_DIR

import numba  # noqa: E402  (must come after the cache dir is chosen)

if CACHE_DIR:
    numba.config.CACHE_DIR = CACHE_DIR

JIT_DISABLED = bool(numba.config.DISABLE_JIT)
if not JIT_DISABLED:
    from ctaccel import lazy_codegen  # noqa: E402  (callees: IR only, machine code on demand)

    lazy_codegen.install()


def njit(*args, **kwargs):
    """``numba.njit`` with the project's flags: cached (when a cache dir exists), nogil, and
    without numba's runtime (``_nrt=False``: no reference counting of array views) unless a
    kernel asks for it (one that allocates arrays: ``njit(_nrt=True)``).

    Why no runtime by default: numba's cache does not record the flags a kernel was compiled
    with, and a kernel compiled inside another inherits the caller's ``nrt`` flag unless it
    sets its own. The datapath (kernel.run_batch) runs without the runtime; a part of it that
    a command or test first ran from Python (compiled at top level, with the runtime) was
    linked into it, and into conntrack's ct_execute, with its reference counting, and cached
    that way for good: recirc 1.4-2x slower from such a cache (measured). With the flag set
    on every kernel, a part compiles the same wherever it is reached first."""
    kwargs.setdefault("cache", CACHE_DIR is not None)
    kwargs.setdefault("nogil", True)
    kwargs.setdefault("_nrt", False)
    if kwargs.get("inline", "never") != "never":
        raise TypeError("use njit(forceinline=True): numba-level inlining costs minutes of compile")
    if len(args) == 1 and callable(args[0]):
        return _one_specialisation(numba.njit(**kwargs)(args[0]))
    if args:  # explicit signatures
        return numba.njit(*args, **kwargs)
    return lambda fn: _one_specialisation(numba.njit(**kwargs)(fn))


def _one_specialisation(dispatcher):
    """Make a compiled caller type its calls of ``dispatcher`` with plain argument types: a
    constant argument (``f(x, 0)``) would otherwise compile a version of ``f`` for that
    literal value, and another for each other value or call site. (The helpers are inlined by
    LLVM, which folds the constants all the same.)"""
    if JIT_DISABLED:
        return dispatcher
    from numba.core.types import unliteral

    typed_call = dispatcher.get_call_template

    def get_call_template(args, kws):
        return typed_call(tuple(unliteral(a) for a in args),
                          {k: unliteral(v) for k, v in kws.items()})  # fmt: skip

    dispatcher.get_call_template = get_call_template
    _keep_reload_hooks(dispatcher)
    return dispatcher


def _keep_reload_hooks(dispatcher):
    """numba runs a cached kernel's reload hooks when it loads it, but leaves them off the
    loaded library, so a kernel compiled later that links this one would not inherit them
    (and would call a ``linked_separately`` symbol nobody registered): put them back."""
    cache = getattr(dispatcher, "_cache", None)
    load = getattr(cache, "load_overload", None)
    if load is None:
        return

    def load_overload(sig, target_context):
        cres = load(sig, target_context)
        if cres is not None and cres.reload_init:
            cres.library._reload_init.update(cres.reload_init)
        return cres

    cache.load_overload = load_overload


# --- software prefetch ------------------------------------------------------------------------
# ``prefetch(a, i)`` / ``prefetch2(a, i, j)`` ask the CPU to bring the cache line holding
# ``a[i]`` / ``a[i, j]`` closer (LLVM's llvm.prefetch: read, high locality, data cache). A hint:
# no load, no fault, no effect on results; kernels use it to overlap the cache misses of packets
# a few places ahead. As plain Python (NUMBA_DISABLE_JIT=1) they do nothing. ``copy_bytes``
# (a memcpy between uint8 arrays) lives here too: another intrinsic.
if JIT_DISABLED:

    def prefetch(arr, i):  # noqa: ARG001
        return None

    def prefetch2(arr, i, j):  # noqa: ARG001
        return None

    def prefetch2_write(arr, i, j):  # noqa: ARG001
        return None

    def copy_bytes(dst, dst_pos, src, src_pos, n):
        dst[dst_pos : dst_pos + n] = src[src_pos : src_pos + n]

else:
    from llvmlite import ir as _ir
    from numba.core import cgutils as _cgutils
    from numba.core import types as _types
    from numba.extending import intrinsic as _intrinsic

    def _prefetch_codegen(rw):
        """llvm.prefetch of the element the index arguments name; ``rw`` 1 asks for writing."""

        def codegen(context, builder, signature, args):
            aryty = signature.args[0]
            ary = context.make_array(aryty)(context, builder, args[0])
            idx = [context.cast(builder, v, t, _types.intp)
                   for v, t in zip(args[1:], signature.args[1:], strict=True)]  # fmt: skip
            ptr = _cgutils.get_item_pointer(context, builder, aryty, ary, idx, wraparound=False)
            i8p = builder.bitcast(ptr, _ir.IntType(8).as_pointer())
            i32 = _ir.IntType(32)
            fnty = _ir.FunctionType(_ir.VoidType(), [i8p.type, i32, i32, i32])
            fn = _cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
            builder.call(fn, [i8p, i32(rw), i32(3), i32(1)])
            return context.get_dummy_value()

        return codegen

    @_intrinsic
    def _prefetch1(typingctx, arr, i):
        if not (isinstance(arr, _types.Array) and arr.ndim == 1
                and isinstance(i, _types.Integer)):  # fmt: skip
            return None
        return _types.void(arr, i), _prefetch_codegen(0)

    def _prefetch2_intrinsic(rw):
        def typer(typingctx, arr, i, j):
            if not (isinstance(arr, _types.Array) and arr.ndim == 2
                    and isinstance(i, _types.Integer) and isinstance(j, _types.Integer)):  # fmt: skip
                return None
            return _types.void(arr, i, j), _prefetch_codegen(rw)

        typer.__name__ = typer.__qualname__ = f"_prefetch2_rw{rw}"
        return _intrinsic(typer)

    _prefetch2 = _prefetch2_intrinsic(0)
    _prefetch2_write = _prefetch2_intrinsic(1)

    # compiled functions (not bare intrinsics), so that a kernel's .py_func can call them too
    @njit(forceinline=True)
    def prefetch(arr, i):
        _prefetch1(arr, i)

    @njit(forceinline=True)
    def prefetch2(arr, i, j):
        _prefetch2(arr, i, j)

    @njit(forceinline=True)
    def prefetch2_write(arr, i, j):
        _prefetch2_write(arr, i, j)

    @_intrinsic
    def _memcpy(typingctx, dst, dst_pos, src, src_pos, n):
        ok = all(isinstance(a, _types.Array) and a.ndim == 1 and a.dtype == _types.uint8
                 and a.layout == "C" for a in (dst, src))  # fmt: skip
        if not (ok and all(isinstance(i, _types.Integer) for i in (dst_pos, src_pos, n))):
            return None

        def codegen(context, builder, signature, args):
            d_ary = context.make_array(signature.args[0])(context, builder, args[0])
            s_ary = context.make_array(signature.args[2])(context, builder, args[2])
            d_at, s_at, count = (context.cast(builder, args[i], signature.args[i], _types.intp)
                                 for i in (1, 3, 4))  # fmt: skip
            _cgutils.raw_memcpy(builder, builder.gep(d_ary.data, [d_at]),
                                builder.gep(s_ary.data, [s_at]), count, 1)  # fmt: skip
            return context.get_dummy_value()

        return _types.void(dst, dst_pos, src, src_pos, n), codegen

    @njit(forceinline=True)
    def copy_bytes(dst, dst_pos, src, src_pos, n):
        """``dst[dst_pos:+n] = src[src_pos:+n]`` as one memcpy (C-contiguous uint8 arrays, the
        ranges inside them and apart): no array views, so no reference counting, and no
        byte loop the compiler cannot widen (it cannot tell the arrays apart)."""
        _memcpy(dst, dst_pos, src, src_pos, n)


# --- kernels linked apart ---------------------------------------------------------------------
# numba links a callee's whole compiled module into each caller and optimises and emits the
# result again, at every level of a call chain: a large callee under four levels of helpers
# is compiled five times over. ``linked_separately(kernel)`` gives a stub that compiled code
# calls instead: it calls the kernel's own machine code through a symbol (``ctaccel_ext_*``,
# registered with LLVM when the kernel is compiled or loaded), so callers carry one call
# instruction, not the kernel. For large kernels called once per packet at most (conntrack's
# ct action, the fast path's install), where inlining buys nothing. The caller's cache entry
# re-registers the symbol before it is loaded (numba's reload_init hooks), so a cached caller
# works in a new process.
_linked: dict[str, object] = {}
# Kernels a helper process is compiling into the shared cache (datapath/warmup.py): (module,
# qualname) -> a function that returns once the helper has saved it (or gave up). The first
# caller that links the kernel waits for it, then loads it instead of compiling it again.
_from_helper: dict[tuple[str, str], object] = {}


def compiled_elsewhere(module: str, qualname: str, wait) -> None:
    """Say that another process is compiling the ``linked_separately`` kernel ``qualname`` of
    ``module`` into the cache: linking it calls ``wait()`` first, then loads it from there (a
    helper that failed leaves nothing there, and it is compiled here as usual)."""
    _from_helper[(module, qualname)] = wait


def forget_elsewhere(module: str, qualname: str) -> None:
    """Undo :func:`compiled_elsewhere` (the other process is gone)."""
    _from_helper.pop((module, qualname), None)


def _linked_symbol(module: str, qualname: str, argtypes) -> str:
    key = f"{module}.{qualname}({', '.join(map(str, argtypes))})"
    return "ctaccel_ext_" + hashlib.sha256(key.encode()).hexdigest()[:24]


def _ensure_linked(module: str, qualname: str, argtypes):
    """Compile (or load) the kernel for ``argtypes`` and register its symbol; returns the
    symbol and the kernel's return type."""
    import importlib

    from llvmlite import binding

    name = _linked_symbol(module, qualname, argtypes)
    if name not in _linked:
        kernel = getattr(importlib.import_module(module), qualname)
        wait = _from_helper.pop((module, qualname), None)
        if wait is not None:
            wait()
        kernel.compile(argtypes)
        lazy_codegen.materialise(kernel, argtypes)  # its own machine code, cached
        cres = kernel.overloads[argtypes]
        binding.add_symbol(name, cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name))
        _linked[name] = cres.signature.return_type
    return name, _linked[name]


class _LinkedResolver:
    """A cached caller's reload hook: register the symbol it calls before it is loaded."""

    def __init__(self, module: str, qualname: str, argtypes):
        self.module, self.qualname, self.argtypes = module, qualname, tuple(argtypes)

    def _key(self):
        return self.module, self.qualname, str(self.argtypes)

    def __eq__(self, other):
        return isinstance(other, _LinkedResolver) and other._key() == self._key()

    def __hash__(self):
        return hash(self._key())

    def __call__(self):
        _ensure_linked(self.module, self.qualname, self.argtypes)


def linked_separately(kernel):
    """A compiled stub that calls ``kernel`` (a module-level njit function, positional
    arguments only) through its own machine code instead of linking it into the caller (see
    above). As plain Python (NUMBA_DISABLE_JIT=1) it is the kernel itself."""
    if JIT_DISABLED:
        return kernel
    from numba.core import cgutils
    from numba.core import types as nbtypes
    from numba.extending import intrinsic

    module, qualname = kernel.py_func.__module__, kernel.py_func.__qualname__

    @intrinsic
    def call(typingctx, args):
        argtypes = tuple(nbtypes.unliteral(t) for t in args.types)
        name, restype = _ensure_linked(module, qualname, argtypes)

        def codegen(context, builder, signature, llargs):
            values = [builder.extract_value(llargs[0], i) for i in range(len(argtypes))]
            fnty = context.call_conv.get_function_type(restype, argtypes)
            fn = cgutils.get_or_insert_function(builder.module, fnty, name)
            status, result = context.call_conv.call_function(builder, fn, restype, argtypes,
                                                             values)  # fmt: skip
            with cgutils.if_unlikely(builder, status.is_error):
                context.call_conv.return_status_propagate(builder, status)
            context.active_code_library._reload_init.add(
                _LinkedResolver(module, qualname, argtypes)
            )
            return result

        return restype(args), codegen

    params = ", ".join(f"a{i}" for i in range(kernel.py_func.__code__.co_argcount))
    namespace = {"call": call}
    exec(f"def {kernel.py_func.__name__}({params}):\n    return call(({params},))\n", namespace)
    return numba.njit(forceinline=True, nogil=True)(namespace[kernel.py_func.__name__])
