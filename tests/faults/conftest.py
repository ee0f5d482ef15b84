"""The fault suite: faults injected into a real server, checked against docs/operations.md.

``make test`` runs the reduced suite: every test not marked ``full_faults``. ``make faults``
sets ``BASTION_FAULTS=full`` and runs all of them (the longer loads, both backends, more
workers), three times in a row. Deselected tests are reported as deselected, never skipped.
"""

from __future__ import annotations

import os

import pytest

FULL = os.environ.get("BASTION_FAULTS", "").lower() == "full"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if FULL:
        return
    kept: list[pytest.Item] = []
    deselected: list[pytest.Item] = []
    for item in items:
        (deselected if item.get_closest_marker("full_faults") else kept).append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept
