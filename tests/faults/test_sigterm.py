"""``sigterm``: SIGTERM to ``bastion serve`` under a load of writes, as systemd or docker stop
send it, with 1 worker and with 2.

New connections are refused at once (a client can go to another host); every request the
server had begun gets its normal answer (none reset: a transport error is only ever a request
the server never saw, which the log's access lines tell); the process exits 0 within the
grace period; after a restart every acknowledged write is there, and no write is stored that
was not acknowledged (nothing was done without its answer being sent).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bastion.server import GRACEFUL_SHUTDOWN_SECONDS
from tests.e2e.conftest import logger_of
from tests.e2e.test_shutdown import finish, half_sent_request, wait_until_refused
from tests.faults.checks import logged
from tests.faults.load import Load, verify
from tests.faults.serving import Setup, fault_env, serving, setups
from tests.faults.table import expected

FAULT = "sigterm"
NOTES_BEFORE_THE_SIGNAL = 30
CLIENTS = 6
# Exit within the grace period, plus the time to close the pools and log the last lines.
EXIT_WITHIN_SECONDS = GRACEFUL_SHUTDOWN_SECONDS + 5
# A refused connection is a client's cue to go elsewhere: it must not keep waiting.
REFUSED_WITHIN_SECONDS = 3.0


@pytest.mark.parametrize("setup", setups(Setup("sqlite"), Setup("sqlite", workers=2)))
@pytest.mark.parametrize(
    "keep_alive",
    [
        pytest.param(True, id="keep-alive"),
        pytest.param(False, id="connection-a-request", marks=pytest.mark.full_faults),
    ],
)
def test_a_stopping_server_answers_what_it_began_and_refuses_the_rest(
    setup: Setup, keep_alive: bool, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    row = expected(FAULT)
    env = fault_env(tmp_path, setup, request)
    with serving(tmp_path / "first", setup, env) as server:
        load = Load(server.base_url, clients=CLIENTS, keep_alive=keep_alive).start()
        try:
            load.wait_for_notes(NOTES_BEFORE_THE_SIGNAL)
            in_flight = half_sent_request(server.port)
            time.sleep(0.3)  # its head is read: a request the server has begun
            server.process.terminate()
            signalled = time.monotonic()
            refused_after = wait_until_refused(server.port, REFUSED_WITHIN_SECONDS)
            reply = finish(in_flight)
            exit_code = server.process.wait(timeout=EXIT_WITHIN_SECONDS)
            stopped_after = time.monotonic() - signalled
        finally:
            ledger = load.stop()
        records = server.log_records()
    assert reply.startswith(b"HTTP/1.1 201 "), reply[:200]
    assert exit_code == 0, (exit_code, server.log_tail())
    assert stopped_after < EXIT_WITHIN_SECONDS, stopped_after
    assert refused_after < REFUSED_WITHIN_SECONDS, refused_after
    ledger.assert_no_server_error()
    assert set(ledger.statuses()) >= {201}, ledger.summary()
    logged(row, [r for r in records if logger_of(r) == "uvicorn.error"])

    # A transport error is a request the server never began: no access line has its id.
    handled = {r.get("request_id") for r in records if logger_of(r) == "bastion.access"}
    broken = [a for a in ledger.transport_errors() if a.request_id in handled]
    assert not broken, f"begun, then left unanswered: {broken[:5]}"
    answered = ledger.sent_between(signalled)
    assert all(a.status in (200, 201) or a.status is None for a in answered), answered

    with serving(tmp_path / "restarted", setup, env) as again:
        found = verify(again.base_url, ledger)
    assert found.unacknowledged == [], found
