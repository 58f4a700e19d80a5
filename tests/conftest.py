"""Test-suite configuration: where shared data is, and the rule for shared test code.

Layout: ``tests/<subpackage>/test_<module>.py`` mirrors ``python/rrnet/<subpackage>/<module>.py``;
tests of the package's top-level modules (``labels``, ``store``) and of the package as a
whole (``test_layering``, ``test_package``) sit directly in ``tests/``. Modules are imported
with ``--import-mode=importlib`` (pyproject), so two folders may hold same-named files.

The project's shared data (a real LAMOST file, the authors' fixtures, MIST isochrones) is
``../shared`` beside the checkout, or ``$RRNET_SHARED``. It is spelled once, as
``helpers.SHARED``; tests that read it carry ``helpers.needs_shared`` (module-level
``pytestmark`` or a decorator) and are skipped, with the path in the reason, when it is
absent.

Rule for code used by more than one test module:
- fixtures go here, in ``conftest.py`` (pytest finds them; never import from conftest);
- constants and plain functions (paths, marks, oracles, builders of test data) go in
  ``tests/helpers.py``, imported as ``from helpers import ...`` (``tests/`` is on pytest's
  ``pythonpath``);
- test modules never import from each other.
"""

from __future__ import annotations

import os

import pytest

from helpers import SHARED, missing_outside_tools


def pytest_report_header() -> str:
    state = "found" if SHARED.is_dir() else "NOT FOUND, tests that need it are skipped"
    return f"rrnet shared data: {SHARED} ({state}; override with RRNET_SHARED)"


def pytest_sessionstart(session: pytest.Session) -> None:
    """With ``RRNET_REQUIRE_TOOLS=1`` (CI, which installs them) a missing outside program
    stops the run: otherwise its tests would skip and CI would pass without them."""
    missing = missing_outside_tools()
    if os.environ.get("RRNET_REQUIRE_TOOLS") == "1" and missing:
        raise pytest.UsageError(
            f"RRNET_REQUIRE_TOOLS=1 but not installed: {', '.join(missing)} "
            "(their tests would skip; apt-get install them or unset RRNET_REQUIRE_TOOLS)"
        )
