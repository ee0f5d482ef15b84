"""The fault table of docs/operations.md, read as the fault suite's expectations.

The table is what operators are told; the suite checks each row against what a real server
did, so the documentation cannot drift from the behaviour.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
HEADING = "## Faults: what operators see"
STATUS = re.compile(r"\b([1-5]\d\d)\b")
CODE_SPAN = re.compile(r"`([^`]+)`")


@dataclass(frozen=True)
class FaultRow:
    fault: str
    statuses: frozenset[int]
    retry_after: bool
    log_event: str | None
    readiness: int | None
    recovery: str

    def status_cell_allows(self, status: int) -> bool:
        return status in self.statuses


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _first_code_span(cell: str) -> str | None:
    match = CODE_SPAN.search(cell)
    return match.group(1) if match else None


@cache
def fault_table() -> dict[str, FaultRow]:
    text = OPERATIONS.read_text(encoding="utf-8")
    start = text.index(HEADING)
    rows: dict[str, FaultRow] = {}
    for line in text[start:].splitlines()[1:]:
        if line.startswith("## "):
            break
        if not line.startswith("| `"):
            continue
        fault, status, retry_after, log_event, readiness, recovery = _cells(line)
        name = _first_code_span(fault)
        assert name is not None, line
        ready = STATUS.search(readiness)
        rows[name] = FaultRow(
            fault=name,
            statuses=frozenset(int(code) for code in STATUS.findall(status)),
            retry_after=retry_after.lower().startswith("yes"),
            log_event=_first_code_span(log_event),
            readiness=int(ready.group(1)) if ready else None,
            recovery=recovery,
        )
    return rows


def expected(fault: str) -> FaultRow:
    """The documented row for ``fault``; a missing row is a failure of the suite."""
    rows = fault_table()
    assert fault in rows, f"docs/operations.md has no fault row {fault!r}: {sorted(rows)}"
    return rows[fault]
