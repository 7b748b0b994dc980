"""The house rules of src/ctaccel, checked: sizes a newcomer can read and arrows that run down.

- No function over MAX_FUNCTION_LINES lines, no module over MAX_MODULE_LINES, no parameter
  list over MAX_PARAMETERS (``self`` counted): the compiled kernels take named
  bundles (layout.py NamedTuples), not dozens of arrays.
- Imports run down the layers only (LAYERS, lowest first): a package may import its own
  layer and those below it, never one above. The compiled kernels (datapath's kernel, vm,
  fastpath, install, layout) read ofproto only for the program encoding it produces
  (ofproto/program.py); the rest of ofproto reaches the datapath through the upcall
  (engine.py calls xlate.translate).
- Every module opens with a docstring.
"""

from __future__ import annotations

import ast
from pathlib import Path

import ctaccel

SRC = Path(ctaccel.__file__).resolve().parent
MAX_FUNCTION_LINES = 120
MAX_MODULE_LINES = 600
MAX_PARAMETERS = 12

# lowest first; modules at the top of the package are named by their file stem
LAYERS = [
    {"errors", "jit", "lazy_codegen", "arrays", "hashtable", "progress"},
    {"packet"},
    {"io", "conntrack", "sg"},
    {"ofproto"},
    {"datapath"},
    {
        "replay",
        "replay_batches",
        "replay_emit",
        "trace",
        "demo",
        "bench",
        "live",
        "control",
        "kernel_sync",
        "fuzz",
        "workers",
        "cluster",
    },
    {"cli", "live_cli", "__main__", "__init__"},
]
KERNEL_MODULES = {"kernel", "vm", "fastpath", "install", "layout", "entries"}


def _modules():
    for path in sorted(SRC.rglob("*.py")):
        yield path.relative_to(SRC), ast.parse(path.read_text(), str(path))


def _unit(rel: Path) -> str:
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _rank(unit: str) -> int:
    for i, layer in enumerate(LAYERS):
        if unit in layer:
            return i
    raise AssertionError(f"{unit}: not placed in a layer (add it to LAYERS in {__file__})")


def _imports(tree):
    """(target unit, dotted module) of every ctaccel import, lazy ones included."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
            if node.module == "ctaccel":
                names = [f"ctaccel.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "ctaccel" and len(parts) > 1:
                yield parts[1], name


def test_functions_modules_and_parameter_lists_stay_small():
    too_big = []
    for rel, tree in _modules():
        n = len((SRC / rel).read_text().splitlines())
        if n > MAX_MODULE_LINES:
            too_big.append(f"{rel}: {n} lines")
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            lines = node.end_lineno - node.lineno + 1
            if lines > MAX_FUNCTION_LINES:
                too_big.append(f"{rel}:{node.name}: {lines} lines")
            a = node.args
            params = [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg]
            params = [p for p in params if p is not None]
            if len(params) > MAX_PARAMETERS:
                too_big.append(f"{rel}:{node.name}: {len(params)} parameters")
    assert not too_big, "\n".join(too_big)


def test_imports_run_down_the_layers():
    upward = []
    for rel, tree in _modules():
        unit = _unit(rel)
        for target, name in _imports(tree):
            if target != unit and _rank(target) > _rank(unit):
                upward.append(f"{rel} imports {name} ({target} is above {unit})")
    assert not upward, "\n".join(upward)


def test_compiled_kernels_read_only_the_program_encoding_of_ofproto():
    reads = []
    for rel, tree in _modules():
        if rel.parts[0] != "datapath" or rel.stem not in KERNEL_MODULES:
            continue
        for target, name in _imports(tree):
            if target == "ofproto" and name != "ctaccel.ofproto.program":
                reads.append(f"{rel} imports {name}")
    assert not reads, "\n".join(reads)


def test_every_module_says_what_it_is():
    silent = [
        str(rel)
        for rel, tree in _modules()
        if rel.name != "__main__.py" and not ast.get_docstring(tree)
    ]
    assert not silent, silent
