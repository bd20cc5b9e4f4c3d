"""Test session setup: versions in the report header, the `long` marker.

Tests marked ``long`` (long fuzz runs) are deselected unless ``--long`` is given
(the summary line counts them as deselected).
"""

from __future__ import annotations

import platform
import sys

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true", help="also run tests marked long")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "long: a long run (fuzzing); needs --long")


def pytest_report_header(config: pytest.Config) -> list[str]:  # noqa: ARG001
    import torch

    from pyfuse import _core

    build = getattr(_core, "build_info", None)
    return [
        f"python {platform.python_version()} ({sys.executable}), torch {torch.__version__}",
        f"pyfuse._core {_core.__version__} ({_core.__file__})"
        + (f", {build}" if build else ""),
    ]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--long"):
        return
    long_items = [item for item in items if item.get_closest_marker("long")]
    if long_items:
        config.hook.pytest_deselected(items=long_items)
        items[:] = [item for item in items if not item.get_closest_marker("long")]
