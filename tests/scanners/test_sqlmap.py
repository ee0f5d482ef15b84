"""sqlmap on every query and path parameter of the live OpenAPI document, on each backend
(``make scan`` only): no injection point, no 5xx, and every run ending with a verdict.

One test per backend, running the targets one after another against one seeded server: what
a target changes (a note deleted, shared or renamed, bob's account updated) is what the
targets after it are given real values for. The terminal summary has a line per target.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jwt
import pytest

from tests.conftest import BACKENDS
from tests.e2e.api import connected
from tests.scanners.sqlmap_runs import (
    PROCESS_TIMEOUT,
    Values,
    identity_for,
    operations,
    run_sqlmap,
    targets,
)
from tests.scanners.target import (
    PEER,
    SUMMARY_PROPERTY,
    USER,
    RecordProperty,
    ScanTarget,
    postgres_for,
    scan_target,
)

# Alice's notes: one for every operation on a note, one for the DELETE, one more so that a
# first page of one note has a next page (a real cursor to start from).
NOTES = 3
# The targets run one after another; most take seconds, none longer than PROCESS_TIMEOUT.
TEST_TIMEOUT = 1500


def seed_values(scan: ScanTarget, document: dict[str, Any]) -> Values:
    """Real values for every path parameter and cursor of the document, made on the server."""
    alice, bob = scan.accounts[USER], scan.accounts[PEER]
    cursors: dict[str, str] = {}
    with connected(scan.server) as api:
        notes = [
            api.ok("POST", "/notes", alice, 201, json={"title": f"note {n}", "body": "sqlmap"})
            for n in range(NOTES)
        ]
        # Another session of alice's (not the one her token belongs to), for the session
        # routes to name; with hers, the session list has a second page.
        spare = api.login(alice.username, alice.password)
        spare_session = jwt.decode(spare["access_token"], options={"verify_signature": False})
        for label, path, operation in operations(document):
            names = {parameter["name"] for parameter in operation.get("parameters") or []}
            if label.startswith("GET ") and "cursor" in names and "{" not in path:
                who = identity_for(operation, scan.accounts)
                page = api.ok("GET", path, who, params={"limit": "1"})
                if page.get("next_cursor"):
                    cursors[path] = page["next_cursor"]
    return Values(
        base_url=scan.base_url,
        path={"note_id": notes[0]["id"], "user_id": bob.id, "session_id": spare_session["sid"]},
        per_operation={"DELETE /notes/{note_id}": {"note_id": notes[1]["id"]}},
        cursors=cursors,
        user_id=alice.id,
    )


@pytest.mark.deep_scan
@pytest.mark.timeout(TEST_TIMEOUT)
@pytest.mark.parametrize("backend", BACKENDS)
def test_sqlmap(
    backend: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    record_property: RecordProperty,
) -> None:
    with scan_target(tmp_path / "server", backend, postgres_for(request, backend)) as scan:
        with scan.server.client() as client:
            document = client.get("/openapi.json").json()
        chosen = list(targets(document, scan.accounts, seed_values(scan, document)))
        assert chosen, "the document has no query or path parameter"
        results = [
            run_sqlmap(target, scan, tmp_path / "sqlmap" / f"{number:02d}")
            for number, target in enumerate(chosen, start=1)
        ]
    for result in results:
        record_property(SUMMARY_PROPERTY, result.summary())
    problems = [problem for result in results if (problem := result.problems())]
    if problems:
        pytest.fail(
            f"sqlmap on {backend}: {len(problems)} of {len(results)} targets failed "
            f"(each run may take up to {PROCESS_TIMEOUT} s)\n" + "\n".join(problems),
            pytrace=False,
        )
