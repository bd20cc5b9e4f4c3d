"""Example budgets of the fuzzers: CI's defaults, and the long runs.

Each fuzzer runs its CI budget in the default suite. Its long run is a separate test
marked ``long`` (conftest deselects those unless ``--long`` is given): budget
``PYFUSE_PBT_EXAMPLES`` (default :data:`LONG_DEFAULT`), seed ``--hypothesis-seed``,
and with ``PYFUSE_PBT_STATS=path.json`` its outcome counts, the seed, the budget and
the versions are written there (RELIABILITY.md has the commands and the files).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings

LONG_DEFAULT = 10_000
LONG_EXAMPLES = int(os.environ.get("PYFUSE_PBT_EXAMPLES", str(LONG_DEFAULT)))
STATS_PATH = os.environ.get("PYFUSE_PBT_STATS")

_HEALTH = [
    HealthCheck.too_slow,
    HealthCheck.data_too_large,
    HealthCheck.large_base_example,
    HealthCheck.filter_too_much,
]


def fuzz_settings(examples: int) -> settings:
    """Settings of a fuzzer running ``examples`` examples."""
    return settings(
        deadline=None,
        max_examples=examples,
        database=None,  # do not litter the repo with .hypothesis/
        print_blob=True,
        suppress_health_check=_HEALTH,
    )


def long_settings() -> settings:
    """Settings of a long run (``PYFUSE_PBT_EXAMPLES`` examples)."""
    return fuzz_settings(LONG_EXAMPLES)


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class RunStats:
    """Outcome counts of one long run, written to ``PYFUSE_PBT_STATS`` as it goes
    (every ``every`` examples) and at the end."""

    def __init__(self, test: str, every: int = 250):
        self.counts: dict[str, int] = {}
        self.meta = {
            "test": test,
            "examples_budget": LONG_EXAMPLES,
            "hypothesis_seed": None,
            "commit": _commit(),
            "torch": torch.__version__,
            "python": platform.python_version(),
        }
        self.start = time.time()
        self.every = every

    def add(self, *labels: str) -> None:
        for label in labels:
            self.counts[label] = self.counts.get(label, 0) + 1
        n = self.counts.get("examples", 0)
        if n and n % self.every == 0:
            self.write(final=False)

    def write(self, final: bool) -> None:
        if not STATS_PATH:
            return
        data = {
            **self.meta,
            "finished": final,
            "wall_seconds": round(time.time() - self.start, 1),
            "outcomes": dict(sorted(self.counts.items())),
        }
        Path(STATS_PATH).write_text(json.dumps(data, indent=1) + "\n")


def stats_fixture(stats: RunStats) -> Callable[..., Iterator[None]]:
    """A module-scoped autouse fixture for a fuzzer module's long run: `stats` gets
    the run's ``--hypothesis-seed``, and its final counts are written after the
    module's tests (if the long run counted any). Assign it to a module name."""

    @pytest.fixture(scope="module", autouse=True)
    def write_long_stats(request: pytest.FixtureRequest) -> Iterator[None]:
        stats.meta["hypothesis_seed"] = request.config.getoption("hypothesis_seed")
        yield
        if stats.counts:
            stats.write(final=True)

    return write_long_stats
