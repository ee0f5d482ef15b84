"""Which scanner tests a run selects, and the one line per scan target it ends with.

``make test`` runs the quick schemathesis runs; ``make scan`` sets ``SCAN_DEPTH=deep`` and runs
the tests marked ``deep_scan`` instead (the deep schemathesis runs and sqlmap), which take
minutes. Deselected tests are reported as deselected, never skipped. The variable is not a
``BASTION_*`` one: tests/conftest.py removes those before xdist's workers start.

Each scan test records a one-line summary (``target.SUMMARY_PROPERTY``); the terminal summary
lists them, from every xdist worker, so a scan ends with what was scanned and what was found.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.scanners.target import DEEP_MARKER, SUMMARY_PROPERTY

DEEP = os.environ.get("SCAN_DEPTH", "").lower() == "deep"
HERE = Path(__file__).resolve().parent


def _deselected_here(item: pytest.Item) -> bool:
    deep = item.get_closest_marker(DEEP_MARKER) is not None
    if DEEP:
        return not deep and HERE in Path(item.path).resolve().parents
    return deep


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    kept: list[pytest.Item] = []
    deselected: list[pytest.Item] = []
    for item in items:
        (deselected if _deselected_here(item) else kept).append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    # dict.fromkeys: in order, and once even if a report is listed under two categories.
    lines = dict.fromkeys(
        str(value)
        for reports in terminalreporter.stats.values()
        for report in reports
        if getattr(report, "when", None) == "call"
        for name, value in getattr(report, "user_properties", ())
        if name == SUMMARY_PROPERTY
    )
    if lines:
        terminalreporter.write_sep("=", "scanners")
        for line in lines:
            terminalreporter.write_line(line)
