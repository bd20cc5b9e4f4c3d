"""Regressions of the native core on malformed arrays: two out-of-bounds reads the
core fuzzer (tests/fuzz/test_core_automaton.py) found, each run in a child process so
that a crash is a failure, not a lost test session."""

from __future__ import annotations

import subprocess
import sys

import pytest

_CORE_CRASH_SNIPPETS = {
    # child_off not monotone, first slice larger than `child` (empty)
    "automaton_child_off": (
        "from pyfuse import _core\n"
        "try:\n"
        "    _core.Automaton([0, 0], [0, 0], [0, 0], [0, 5, 0], [], [], [], 0)\n"
        "    print('constructed')\n"
        "except ValueError as e:\n"
        "    print('ValueError', e)\n"
    ),
    # arg_off not monotone, first slice larger than `arg` (empty)
    "match_arg_off": (
        "from pyfuse import _core\n"
        "a = _core.Automaton([1], [0], [0], [0, 0], [], [0], [0], 1)\n"
        "r = a.match(_core.FlatGraph([0, 0], [0, 0], [0, 5, 0], []))\n"
        "assert r.error, 'malformed graph accepted'\n"
        "print('error:', r.error)\n"
    ),
}


@pytest.mark.parametrize("case", sorted(_CORE_CRASH_SNIPPETS))
def test_core_regression_nonmonotone_offsets(case):
    p = subprocess.run(
        [sys.executable, "-c", _CORE_CRASH_SNIPPETS[case]],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, (
        f"exit code {p.returncode} (-11 = SIGSEGV)\n{_CORE_CRASH_SNIPPETS[case]}\n{p.stderr[-2000:]}"
    )
    assert "constructed" not in p.stdout  # the documented contract: ValueError
