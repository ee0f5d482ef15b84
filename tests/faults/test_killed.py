"""``bastion-killed``: kill -9 of the server in the middle of a load of writes, then a restart.

Nothing of bastion's gets to run at a SIGKILL: what it acknowledged must already be durable
in the database. After the restart every acknowledged note is there as it was acknowledged,
nothing is half-written (every note listed is readable by its owner), the audit chain
verifies and the service works as before.
"""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from bastion.config import SQLITE_FILE_NAME
from tests.e2e.api import connected
from tests.faults.load import Load, verify
from tests.faults.serving import Setup, audit_verifies, fault_env, kill_hard, serving, setups
from tests.faults.table import expected

FAULT = "bastion-killed"
NOTES_BEFORE_THE_KILL = 40
CLIENTS = 6
TRYING_AFTER_THE_KILL_SECONDS = 0.3


@pytest.mark.parametrize(
    "setup",
    setups(
        Setup("sqlite"),
        Setup("postgresql"),
        Setup("sqlite", workers=2),
        Setup("postgresql", workers=2),
    ),
)
def test_every_acknowledged_write_survives_a_kill(
    setup: Setup, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    row = expected(FAULT)
    env = fault_env(tmp_path, setup, request)
    with serving(tmp_path / "first", setup, env) as server:
        load = Load(server.base_url, clients=CLIENTS).start()
        try:
            load.wait_for_notes(NOTES_BEFORE_THE_KILL)
            kill_hard(server)
            killed_at = time.monotonic()
            time.sleep(TRYING_AFTER_THE_KILL_SECONDS)  # the clients keep trying meanwhile
        finally:
            ledger = load.stop()
    assert server.process.returncode == -signal.SIGKILL, server.process.returncode
    ledger.assert_no_server_error()
    # The row: once the process is gone nothing answers (no status, no Retry-After, no
    # readiness, no log line: it cannot write one).
    tried = ledger.sent_between(killed_at)
    assert tried, ledger.summary()
    assert {a.status for a in tried} == {None}, [a for a in tried if a.status is not None]
    assert (row.statuses, row.retry_after, row.log_event, row.readiness) == (
        frozenset(), False, None, None), row

    with serving(tmp_path / "restarted", setup, env) as again:
        found = verify(again.base_url, ledger)
        assert found.acknowledged >= NOTES_BEFORE_THE_KILL, found
        audit_verifies(env, tmp_path)
        if setup.backend == "sqlite":
            assert_sqlite_consistent(again.data_dir / SQLITE_FILE_NAME)
        with connected(again) as api:
            account = api.new_account("after-kill")
            api.ok("POST", "/notes", account, 201, json={"title": "t", "body": "<p>b</p>"})


def assert_sqlite_consistent(database: Path) -> None:
    """SQLite's own checks: the file is sound and no row points at a row that is not there."""
    with contextlib.closing(sqlite3.connect(database)) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert connection.execute("PRAGMA foreign_key_check").fetchall() == []
