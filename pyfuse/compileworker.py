"""CPython's ``compile()`` of generated code written before the pass edits the
graph: at once in this process (:class:`InProcess`), or in a second process
(:class:`Worker`).

Compiled first, the code's ``compile()`` transient (the parser's tokens and
tree, ~6 KB per source line) is freed before the pass allocates its output, and
that output then reuses the memory: compiled last, the transient comes on top of
it. Written early, the FX pass's peak memory fell by a quarter to a half at 10k-35k
nodes (7-18 MiB), for the planning of the edit (~1-3% of the call).

Compiling a large graph's ``forward`` is the largest single step of a pass (about
20 us per node: 0.2 s at 35k nodes) and holds the GIL throughout, so no thread
can share it. A pass that knows its output's source before its other work (the
FX pass emits the text of its planned edit) can hand the source to a worker
process, a bare interpreter (``python -I -S``, the same executable), do the rest
of its work meanwhile on another CPU, and take the code object back (marshal)
when it builds its output. The source, ``compile()`` flags and optimisation
level are the ones FX uses, so the code object is the same; its file name (FX's
``<eval_with_key>.N``, known only when the output is built) is set on the way
back. (Code objects made here from the worker's follow this interpreter's
options, such as ``-X no_debug_ranges``, as they are created.) Any failure of
the worker (it cannot start, exits badly, another Python answers) leaves the
caller to compile in process, as FX does.

Off by default: a worker costs memory. Its peak resident set is ~10 MiB of
interpreter plus ~6 KB per line of source (98 MiB for a 35k-node ResNet-like
graph's forward), where compiling in process, first, adds nothing to the pass's
peak (the output reuses the memory); and a library that starts processes
unasked surprises the programs that host it. Asked for (the FX pass's
``compile_worker=True``, or ``PYFUSE_COMPILE_WORKER=1`` as the process's
default), it runs only where it pays: at least 2 CPUs and graphs of
:data:`MIN_NODES` nodes (a worker's start-up costs a few ms of the other CPU).
``PYFUSE_COMPILE_WORKER=always`` uses it for every graph (the test suite runs
the FX pass's contract tests so too).
"""

from __future__ import annotations

import marshal
import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Literal

__all__ = [
    "ENV",
    "MIN_NODES",
    "PEAK_KIB",
    "Compiler",
    "InProcess",
    "Worker",
    "setting",
    "wanted",
]

#: The environment variable that sets the default: ``1`` on, ``0`` or unset off,
#: ``always`` on for every graph.
ENV = "PYFUSE_COMPILE_WORKER"

#: Graphs below this size compile in process (20 us a node: a worker pays from a
#: few thousand nodes up; below, its start-up is most of the time saved).
MIN_NODES = 4000

#: The resident-set high-water mark of the last worker that finished, in KiB (0
#: where the platform does not say, as without Linux's /proc): for memory
#: figures, which must count it.
PEAK_KIB = [0]

_SCRIPT = """\
import marshal, sys
if sys.hexversion != int(sys.argv[1]):
    sys.exit(3)
src = sys.stdin.buffer.read().decode("utf-8", "surrogatepass")
code = compile(src, "<pyfuse>", "exec", dont_inherit=True, optimize=int(sys.argv[2]))
peak = 0  # VmHWM: ru_maxrss would include the parent's RSS (kept across exec)
try:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                peak = int(line.split()[1])
except Exception:
    pass
sys.stdout.buffer.write(marshal.dumps((code, peak)))
"""


def _cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _interpreter() -> bool:
    """Whether ``sys.executable`` is a Python interpreter to run the worker with
    (not the host program of an embedded or frozen Python)."""
    name = Path(sys.executable).name.lower()
    return not getattr(sys, "frozen", False) and name.startswith(("python", "pypy"))


def setting() -> Literal["off", "on", "always"]:
    """The process default ``PYFUSE_COMPILE_WORKER`` sets: ``1`` on (large
    graphs), ``always`` on for every graph (tests), anything else off."""
    value = os.environ.get(ENV, "")
    return "always" if value == "always" else "on" if value == "1" else "off"


def wanted(n_nodes: int, requested: bool | None = None) -> bool:
    """Whether to compile a graph of `n_nodes` nodes in a worker: if `requested`
    (None: as :func:`setting` says) and it pays here; with the setting
    ``always``, for any graph."""
    default = setting()
    if default == "always":
        return _interpreter()
    if requested is None:
        requested = default == "on"
    return requested and n_nodes >= MIN_NODES and _cpus() >= 2 and _interpreter()


def _renamed(code: types.CodeType, filename: str) -> types.CodeType:
    """`code` and the code objects it holds, with `filename` as their file."""
    consts = tuple(
        _renamed(c, filename) if isinstance(c, types.CodeType) else c
        for c in code.co_consts
    )
    return code.replace(co_filename=filename, co_consts=consts)


class InProcess:
    """One source compiled in this process, at once: :meth:`send` it, then take
    the code object with :meth:`code`."""

    def __init__(self) -> None:
        self._code: types.CodeType | None = None

    def send(self, src: str) -> None:
        """Compile `src` (the whole module text ``exec``'d by FX) now."""
        try:
            self._code = compile(src, "<pyfuse>", "exec", dont_inherit=True)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            # (raised again where FX compiles it, after the edit, as before)
            self._code = None

    def code(self, filename: str) -> types.CodeType | None:
        """The compiled code, named `filename`; None if it did not compile."""
        code, self._code = self._code, None
        return None if code is None else _renamed(code, filename)

    def cancel(self) -> None:
        """Drop the code (the pass failed)."""
        self._code = None


class Worker:
    """One source compiled in a child process: :meth:`send` it, then take the
    code object with :meth:`code` (or :meth:`cancel`)."""

    def __init__(self) -> None:
        try:
            self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                [
                    sys.executable,
                    "-I",
                    "-S",
                    "-c",
                    _SCRIPT,
                    str(sys.hexversion),
                    str(sys.flags.optimize),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
        except OSError:
            self._proc = None

    def send(self, src: str) -> None:
        """Start compiling `src` (the whole module text ``exec``'d by FX)."""
        proc = self._proc
        if proc is None or proc.stdin is None:
            return
        try:
            proc.stdin.write(src.encode("utf-8", "surrogatepass"))
            proc.stdin.close()
        except OSError:  # the worker died (it is waited for in `code`)
            pass

    def code(self, filename: str) -> types.CodeType | None:
        """The compiled code, named `filename`; None if the worker failed (the
        caller compiles in process)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.stdout is None:
            return None
        try:
            out = proc.stdout.read()
        finally:
            proc.stdout.close()
            rc = proc.wait()
        if rc != 0:
            return None
        try:
            code, peak = marshal.loads(out)
        except (EOFError, ValueError, TypeError):
            return None
        if not isinstance(code, types.CodeType):
            return None
        PEAK_KIB[0] = peak if isinstance(peak, int) else 0
        return _renamed(code, filename)

    def cancel(self) -> None:
        """Stop the worker (the pass failed); idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.kill()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()
        proc.wait()


#: Where the early code is compiled.
Compiler = InProcess | Worker
