"""Schemathesis against the real server: zero failures and zero unexplained warnings.

``make test`` runs the three runs of ``schemathesis_runs.RUNS`` on SQLite at ``QUICK`` depth
(under a minute in all, on two cores next to the rest of the suite); ``make scan`` runs them
at ``DEEP`` depth on SQLite and on PostgreSQL, two minutes each. A failure lists every failed
check with the request that reproduces it, and where the reports and the output are.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import BACKENDS
from tests.scanners.schemathesis_runs import RUNS, Depth, Report, Run, run_schemathesis
from tests.scanners.target import SUMMARY_PROPERTY, RecordProperty, postgres_for, scan_target
from tests.servers.postgres import PostgresServer

# Examples per operation and phase. Measured inside the whole `pytest -n 2` on two cores: the
# three runs take 21 s, 13 s and 7 s (all three failing, so shrinking included); 30 examples
# took 19, 10 and 8 s. The timeout only ends a hang.
QUICK = Depth("quick", max_examples=50, max_time=None, timeout=150)
# Fuzzing and stateful testing repeat until max_time is spent; six deep runs and sqlmap share
# two cores within ``make scan``'s budget.
DEEP = Depth("deep", max_examples=1000, max_time=120, timeout=300)


def assert_clean(report: Report, record_property: RecordProperty) -> None:
    record_property(SUMMARY_PROPERTY, report.summary())
    problems = report.problems()
    if problems:
        pytest.fail(
            f"{report.summary()}\n" + "\n".join(problems) + f"\nreports: {report.workdir}",
            pytrace=False,
        )


def scan(
    run: Run, depth: Depth, root: Path, backend: str, postgres: PostgresServer | None
) -> Report:
    with scan_target(root, backend, postgres) as target:
        return run_schemathesis(run, depth, target)


@pytest.mark.timeout(QUICK.timeout + 30)
@pytest.mark.parametrize("run", RUNS, ids=lambda run: run.name)
def test_schemathesis(run: Run, tmp_path: Path, record_property: RecordProperty) -> None:
    assert_clean(scan(run, QUICK, tmp_path, "sqlite", None), record_property)


@pytest.mark.deep_scan
@pytest.mark.timeout(DEEP.timeout + 60)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("run", RUNS, ids=lambda run: run.name)
def test_schemathesis_deep(
    run: Run,
    backend: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    record_property: RecordProperty,
) -> None:
    postgres = postgres_for(request, backend)
    assert_clean(scan(run, DEEP, tmp_path, backend, postgres), record_property)
