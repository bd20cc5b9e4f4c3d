"""Packaging facts kept in one place: the version (pyfuse/_version.py) and the
license (LICENSE, named in pyproject.toml)."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import pyfuse
from pyfuse import _core, _version

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = (ROOT / "pyproject.toml").read_text()


def test_version_is_written_once_and_everyone_reports_it():
    assert pyfuse.__version__ == _version.__version__
    assert _core.__version__ == pyfuse.__version__  # CMake: SKBUILD_PROJECT_VERSION
    assert importlib.metadata.version("pyfuse") == pyfuse.__version__
    # pyproject reads it from pyfuse/_version.py instead of repeating it
    assert re.search(r'^dynamic = \["version"\]', PYPROJECT, re.MULTILINE)
    assert not re.search(r"^version\s*=", PYPROJECT, re.MULTILINE)
    assert 'input = "pyfuse/_version.py"' in PYPROJECT


def test_license_file_matches_pyproject():
    assert re.search(r'^license = "BSD-3-Clause"$', PYPROJECT, re.MULTILINE)
    assert re.search(r'^license-files = \["LICENSE"\]$', PYPROJECT, re.MULTILINE)
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("BSD 3-Clause License\n")
    assert "pyfuse developers" in text
