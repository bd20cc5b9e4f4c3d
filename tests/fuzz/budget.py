"""Example budgets of the fuzzers: CI's defaults, or a long run's.

``PYFUSE_PBT_EXAMPLES`` sets the budget of every fuzzer (the long-run mode, selected
with ``-m long`` or by setting the variable; RELIABILITY.md has the commands);
``PYFUSE_PBT_STATS=path.json`` makes the fused-output and matcher fuzzers write their
outcome counts there.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from hypothesis import HealthCheck, settings

#: set for a long run: every fuzzer uses this many examples
LONG_EXAMPLES = int(os.environ.get("PYFUSE_PBT_EXAMPLES", "0"))
STATS_PATH = os.environ.get("PYFUSE_PBT_STATS")

_HEALTH = [
    HealthCheck.too_slow,
    HealthCheck.data_too_large,
    HealthCheck.large_base_example,
    HealthCheck.filter_too_much,
]


def fuzz_settings(default_examples: int) -> settings:
    """Settings of one fuzzer: ``default_examples`` in CI, the long budget if set."""
    return settings(
        deadline=None,
        max_examples=LONG_EXAMPLES or default_examples,
        database=None,  # do not litter the repo with .hypothesis/
        print_blob=True,
        suppress_health_check=_HEALTH,
    )


def write_stats(counts: dict, start: float, final: bool) -> None:
    """Write a long run's outcome counts to ``PYFUSE_PBT_STATS`` (if set)."""
    if not STATS_PATH:
        return
    data = dict(counts)
    data["wall_seconds"] = round(time.time() - start, 1)
    data["finished"] = final
    Path(STATS_PATH).write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
