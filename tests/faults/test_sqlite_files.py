"""``sqlite-disk-full`` and ``sqlite-read-only``: the SQLite file stops taking writes under a
load of writes and reads, then takes them again, without a restart.

- Disk full: the data dir is a small tmpfs of its own, filled to the last byte by a ballast
  file; deleting the ballast frees the space. Mounting needs root (CAP_SYS_ADMIN); where the
  mount is refused the read-only fault runs in its place (the issue's fallback), checked
  against its own row, and the test says so in its ``injection`` property.
- Read-only: the database file and its WAL made immutable (``chattr +i``) under the running
  server, which refuses writes even through the descriptors already open, as a file system
  remounted read-only after an error does; ``chattr -i`` makes them writable again. (Mode
  bits would not do: they are checked when a file is opened, and the server's connections
  are open already; root ignores them anyway.) The shared-memory index (``-wal``'s ``-shm``)
  stays writable: it is mapped into memory, and a write to an immutable mapping is a SIGBUS.

While the fault lasts writes answer 503 with ``Retry-After``, reads 200, readiness what the
row says, and the log has one ``storage_unavailable`` warning (per ``REPORT_INTERVAL``) with
the SQLite code and no statement. Nothing refused is stored; every acknowledged note is.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bastion.config import SQLITE_FILE_NAME
from bastion.storage.outages import REPORT_INTERVAL
from tests.e2e.conftest import LiveServer
from tests.faults.checks import (
    assert_answer,
    assert_no_statement_logged,
    assert_readiness,
    logged,
    row_names,
)
from tests.faults.load import Answer, Load, verify
from tests.faults.serving import Setup, fault_env, serving
from tests.faults.table import FaultRow, expected

CLIENTS = 3
NOTES_BEFORE_THE_FAULT = 15
# Seen during the fault before it is lifted: refused writes, and reads answered meanwhile.
REFUSED_WRITES = 5
READS_DURING = 5
WITHIN_SECONDS = 15.0
TMPFS_SIZE = "32m"
FULL_CODE = "SQLITE_FULL"
READ_ONLY_CODE = "SQLITE_IOERR_WRITE"
SQLITE = Setup("sqlite")


def _writes(answers: list[Answer]) -> list[Answer]:
    return [a for a in answers if a.method == "POST" and a.route == "/notes"]


def _reads(answers: list[Answer]) -> list[Answer]:
    return [a for a in answers if a.method == "GET"]


def _wait(condition: Callable[[], bool], what: str, load: Load) -> None:
    deadline = time.monotonic() + WITHIN_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"{what} not seen: {load.ledger.summary()}"
        time.sleep(0.05)


def storage_fault(
    server: LiveServer, row: FaultRow, code: str, inject: Callable[[], None],
    lift: Callable[[], None], *, some_writes_fit: bool = False,
) -> None:
    """``inject`` under a load of writes and reads, the row's checks, ``lift``, recovery.
    With ``some_writes_fit`` a write may still succeed during the fault (a full disk: the
    frames a refused write had appended to the WAL are space it may use); acknowledged, it
    must be there afterwards like any other."""
    load = Load(server.base_url, clients=CLIENTS, reads=True).start()
    try:
        load.wait_for_notes(NOTES_BEFORE_THE_FAULT, every_client=True)
        injected = time.monotonic()
        inject()
        ledger = load.ledger

        def refused() -> list[Answer]:
            return [a for a in _writes(ledger.sent_between(injected)) if a.status == 503]

        _wait(lambda: len(refused()) >= REFUSED_WRITES, "refused writes", load)
        first_refusal = refused()[0].sent
        _wait(lambda: len(_reads(ledger.sent_between(first_refusal))) >= READS_DURING,
              "reads during the fault", load)
        with server.client() as client:
            assert_readiness(row, client.get("/health/ready"))
        lifted = time.monotonic()
        lift()
        _wait(lambda: any(a.status == 201 for a in _writes(ledger.sent_between(lifted))),
              "a write after the fault", load)
    finally:
        ledger = load.stop()

    ledger.assert_no_server_error()
    # Sent once the fault had struck, answered before it was lifted.
    during = [a for a in ledger.sent_between(first_refusal) if a.at < lifted]
    fitted = {201} if some_writes_fit else set()
    for answer in during:
        assert answer.response is not None, answer  # the server never stopped answering
        if answer.status not in fitted:
            assert_answer(row, answer.response)
    assert {a.status for a in _writes(during)} - fitted == {503}, ledger.summary()
    assert {a.status for a in _reads(during)} == {200}, ledger.summary()

    reports = logged(row, server.log_records())
    assert {(r.get("dependency"), r.get("code")) for r in reports} == {("database", code)}
    assert row_names(row, code), f"the {row.fault} row does not name {code}"
    assert len(reports) <= 1 + (lifted - injected) / REPORT_INTERVAL, reports
    assert_no_statement_logged(server.log_text(), ledger)

    found = verify(server.base_url, ledger)
    assert found.unacknowledged == [], found  # a refused write left nothing behind


# -- disk full -----------------------------------------------------------------------------


@contextlib.contextmanager
def small_tmpfs(directory: Path) -> Iterator[bool]:
    """``directory`` as a tmpfs of ``TMPFS_SIZE``, unmounted at the end; False (and nothing
    mounted) where this host refuses the mount."""
    directory.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0700", "tmpfs", str(directory)],
        capture_output=True, check=False,
    )
    if mounted.returncode != 0:
        yield False
        return
    try:
        yield True
    finally:
        subprocess.run(["umount", "--lazy", str(directory)], check=True)


def fill(ballast: Path) -> None:
    """Writes ``ballast`` until its file system has not one byte left."""
    descriptor = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        for size in (1 << 20, 4096, 1):
            chunk = bytes(size)
            while True:
                try:
                    os.write(descriptor, chunk)
                except OSError as error:
                    assert error.errno == errno.ENOSPC, error
                    break
    finally:
        os.close(descriptor)


def test_a_full_disk_refuses_writes_serves_reads_and_recovers_alone(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    env = fault_env(tmp_path, SQLITE, request)
    data = Path(env["BASTION_DATA_DIR"])
    with small_tmpfs(data) as mounted:
        if not mounted:
            request.node.user_properties.append(("injection", "read-only file (no tmpfs)"))
            read_only_fault(tmp_path, env)
            return
        request.node.user_properties.append(("injection", f"tmpfs of {TMPFS_SIZE}"))
        ballast = data / "ballast"
        with serving(tmp_path / "server", SQLITE, env) as server:
            storage_fault(server, expected("sqlite-disk-full"), FULL_CODE,
                          inject=lambda: fill(ballast), lift=ballast.unlink,
                          some_writes_fit=True)


# -- read-only -----------------------------------------------------------------------------


def set_immutable(files: list[Path], immutable: bool) -> None:
    flag = "+i" if immutable else "-i"
    result = subprocess.run(["chattr", flag, *map(str, files)], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, (
        f"chattr {flag} failed (needs root, CAP_LINUX_IMMUTABLE and a file system with the "
        f"flag, e.g. ext4): {result.stderr}"
    )
    if immutable:  # the flag must refuse writes, root's included
        with pytest.raises(PermissionError):
            os.open(files[0], os.O_WRONLY)


def read_only_fault(root: Path, env: dict[str, str]) -> None:
    with serving(root / "server", SQLITE, env) as server:
        database = server.data_dir / SQLITE_FILE_NAME
        files = [database, database.with_name(f"{database.name}-wal")]
        try:
            storage_fault(server, expected("sqlite-read-only"), READ_ONLY_CODE,
                          inject=lambda: set_immutable(files, True),
                          lift=lambda: set_immutable(files, False))
        finally:
            subprocess.run(["chattr", "-i", *map(str, files)], capture_output=True, check=False)


def test_a_read_only_database_refuses_writes_serves_reads_and_recovers_alone(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    read_only_fault(tmp_path, fault_env(tmp_path, SQLITE, request))
