"""Operator safety with real processes: one ``bastion serve`` per data directory without Redis,
the other commands beside it, and misspelt variables in the server's log.

Without Redis a server keeps revocations and rate limits in its own memory, so a second one
on the same data would never see the first one's logouts: it must refuse to start, at once
and saying why, while the first keeps serving. With Redis they share that state and both
start.
"""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.e2e.conftest import (
    LiveServer,
    deployed,
    logger_of,
    run_bastion,
    running,
    serve_command,
    service_env,
    start_server,
    stop_server,
)
from tests.servers.postgres import free_port
from tests.servers.redis import RedisServer

# A refusal needs the imports and the lock, nothing more; generous for a loaded machine.
REFUSED_WITHIN_SECONDS = 20.0
MISSPELT = "BASTION_RATE_LIMIT_DEFALT"
MISSPELT_VALUE = "7/minute"


def second_serve(env: dict[str, str], root: Path) -> tuple[float, str, int]:
    """``bastion serve`` started beside the first: how long it took to exit, its stderr and
    its exit code."""
    started = time.monotonic()
    result = run_bastion("serve", "--port", str(free_port()), env=env, cwd=root)
    return time.monotonic() - started, result.stderr, result.returncode


def assert_warned_of_the_misspelling(server: LiveServer) -> None:
    records = [r for r in server.log_records() if r.get("event") == "unknown_setting"]
    assert len(records) == 1, records
    (record,) = records
    assert record["level"] == "warning"
    assert logger_of(record) == "bastion.config"
    assert record["variable"] == MISSPELT
    assert record["suggestion"] == "BASTION_RATE_LIMIT_DEFAULT"
    assert record["source"] == "environment"
    assert MISSPELT_VALUE not in server.log_text()


def test_one_server_per_data_dir_without_redis(tmp_path: Path) -> None:
    """One scenario, to start few servers: the second is refused at once while the first
    serves on; the other commands run beside it; kill -9 of the first leaves no stale lock."""
    with deployed(tmp_path / "first", "sqlite", rate_limit_defalt=MISSPELT_VALUE) as first:
        server = first.server
        assert_warned_of_the_misspelling(server)

        took, stderr, code = second_serve(first.env, tmp_path)
        assert code == 1, stderr
        assert took < REFUSED_WITHIN_SECONDS, took
        assert stderr.splitlines()[0] == (
            f"bastion: another `bastion serve` (pid {server.process.pid}) is serving from the "
            f"data directory {server.data_dir}; not serving"
        )
        assert "BASTION_REDIS_URL" in stderr
        assert "Traceback" not in stderr
        with server.client() as client:
            assert client.get("/health/ready").status_code == 200

        # The other commands take no lock.
        migrated = first.bastion("migrate")
        assert migrated.returncode == 0, migrated.stderr
        verified = first.bastion("audit", "verify")
        assert verified.returncode == 0, verified.stderr
        first.create_admin("beside", "a passphrase long enough to pass")

        server.process.send_signal(signal.SIGKILL)
        server.process.wait(timeout=10)
        restarted = tmp_path / "restarted"
        with (
            running(serve_command, root=restarted, env=first.env, backend="sqlite") as again,
            again.client() as client,
        ):
            assert client.get("/health/ready").status_code == 200


def test_with_redis_two_servers_share_a_data_dir(tmp_path: Path, redis_server: RedisServer) -> None:
    env = service_env(tmp_path / "data", redis_url=redis_server.url)

    def start(name: str) -> LiveServer:
        return start_server(serve_command, root=tmp_path / name, env=env, backend="sqlite")

    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(start, name) for name in ("one", "two")]
    servers = [future.result() for future in futures if future.exception() is None]
    try:
        for future in futures:
            future.result()  # re-raises a failed start, after the other one is stopped below
        for server in servers:
            with server.client() as client:
                assert client.get("/health/ready").status_code == 200
        assert not (tmp_path / "data" / "serve.lock").exists()  # nothing was locked
    finally:
        for server in servers:
            stop_server(server)
