"""What a fault test checks against its row of docs/operations.md's fault table.

A row (``tests.faults.table.expected``) names the statuses clients see, whether a refusal
carries ``Retry-After``, the log event, and readiness during the fault; these are the
checks of each, one definition for every test that checks a row.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import httpx

from tests.faults.load import Ledger
from tests.faults.table import OPERATIONS, FaultRow
from tests.identity.helpers import PASSWORD

# What a statement, or SQLAlchemy's text of a failed one, looks like in a log.
STATEMENT_MARKERS = ("SELECT ", "INSERT INTO", "UPDATE ", "DELETE FROM", "[SQL:", "[parameters:")


def where(response: httpx.Response) -> str:
    return f"{response.request.method} {response.request.url.path} -> {response.status_code}"


def assert_answer(row: FaultRow, response: httpx.Response) -> None:
    """A status of the row; a refusal (4xx/5xx) with ``Retry-After`` iff the row says so,
    as a number of seconds."""
    assert row.status_cell_allows(response.status_code), (row.fault, where(response))
    if response.status_code < 400:
        return
    retry_after = response.headers.get("retry-after")
    if row.retry_after:
        assert retry_after is not None and retry_after.isdigit(), (where(response), retry_after)
        assert int(retry_after) >= 1, (where(response), retry_after)
    else:
        assert retry_after is None, (row.fault, where(response), retry_after)


def assert_readiness(row: FaultRow, response: httpx.Response) -> None:
    """``/health/ready`` during the fault answers what the row says."""
    assert row.readiness is not None, f"{row.fault}: the row names no readiness"
    assert response.status_code == row.readiness, (row.fault, where(response), response.text)
    if response.status_code == 503:
        assert_answer(row, response)


def logged(row: FaultRow, records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The log records of the row's event; fails when there is none (or the row names none)."""
    assert row.log_event is not None, f"{row.fault}: the row names no log event"
    found = [record for record in records if record.get("event") == row.log_event]
    assert found, f"{row.fault}: no {row.log_event!r} in the log"
    return found


def row_names(row: FaultRow, word: str) -> bool:
    """Whether the row's line in docs/operations.md names ``word`` as a code span (an error
    class, a SQLSTATE): the causes its log cell lists."""
    prefix = f"| `{row.fault}`"
    lines = [line for line in OPERATIONS.read_text(encoding="utf-8").splitlines()
             if line.startswith(prefix)]
    assert len(lines) == 1, (row.fault, lines)
    return f"`{word}`" in lines[0]


def assert_no_statement_logged(log_text: str, ledger: Ledger, *secrets: str) -> None:
    """The log holds no statement and none of the load's parameters: no note it wrote, no
    password, nor any of ``secrets``."""
    for marker in (*STATEMENT_MARKERS, PASSWORD, *secrets):
        assert marker not in log_text, f"{marker!r} in the server log"
    leaked = [note.id for note in ledger.notes if note.body in log_text or note.title in log_text]
    assert not leaked, f"{len(leaked)} notes' text in the server log: {leaked[:3]}"
