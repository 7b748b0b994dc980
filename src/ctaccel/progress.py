"""Showing a person that the datapath is being compiled (first run only).

What: ``with compile_progress():`` around any work that may compile kernels. When numba
starts compiling (a cold cache), one line goes to stderr, "compiling the datapath (first run
only) ...", and on a terminal a spinner follows with the kernel being compiled, how many are
done and the time so far; when the work ends, one closing line says how long it took. With
a warm cache nothing is printed at all.

Design: numba announces every real compile (not cache loads) as a ``numba:compile`` event;
a listener counts them, nested ones included (a kernel compiles what it calls). numba is
imported when the block is entered (about half a second), so only the commands that run the
datapath (decorated with :func:`shows_compiles`) pay for it.

Invariants: output goes to stderr only, never to stdout (commands print results there); the
spinner is shown only when stderr is a terminal and CI is not set.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from contextlib import contextmanager

NOTICE = "compiling the datapath (first run only) …"


class _CompileReport:
    """Counts numba compiles and shows them (see the module docstring)."""

    def __init__(self, stream, live: bool):
        self._stream = stream
        self._live = live
        self._depth = 0
        self.kernels = 0
        self.started_at: float | None = None
        self._progress = None
        self._task = None

    def on_start(self, ev) -> None:
        if self.started_at is None:
            self._begin()
        self._depth += 1
        if self._progress is not None:
            disp = ev.data.get("dispatcher")
            name = getattr(getattr(disp, "py_func", None), "__qualname__", "?")
            self._progress.update(self._task, kernel=name)

    def on_end(self, ev) -> None:  # noqa: ARG002
        self._depth -= 1
        self.kernels += 1
        if self._progress is not None:
            self._progress.update(self._task, done=self.kernels)

    def _begin(self) -> None:
        self.started_at = time.perf_counter()
        if not self._live:
            print(NOTICE, file=self._stream, flush=True)
            return
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        console = Console(file=self._stream)
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn(NOTICE),
            TimeElapsedColumn(),
            TextColumn("{task.fields[done]} kernels · {task.fields[kernel]}"),
            console=console,
            transient=True,
        )
        console.print(NOTICE, markup=False, highlight=False)
        self._progress.start()
        self._task = self._progress.add_task("compile", total=None, done=0, kernel="")

    def close(self) -> None:
        if self.started_at is None:
            return
        if self._progress is not None:
            self._progress.stop()
        seconds = time.perf_counter() - self.started_at
        print(f"compiled the datapath in {seconds:.1f} s ({self.kernels} kernels, cached for "
              "later runs)", file=self._stream, flush=True)  # fmt: skip


def _is_live(stream) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and not os.environ.get("CI")


@contextmanager
def compile_progress(stream=None):
    """Report numba compiles that happen inside the block (see the module docstring)."""
    from numba.core import event

    class Listener(_CompileReport, event.Listener):
        pass

    stream = stream if stream is not None else sys.stderr
    listener = Listener(stream, _is_live(stream))
    event.register("numba:compile", listener)
    try:
        yield listener
    finally:
        event.unregister("numba:compile", listener)
        listener.close()


def shows_compiles(command):
    """Decorator for a command's function: its work runs inside :func:`compile_progress`.
    Put it under the click decorators (it keeps their options)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        with compile_progress():
            return command(*args, **kwargs)

    return wrapper
