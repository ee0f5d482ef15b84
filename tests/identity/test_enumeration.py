"""No user enumeration through the token endpoint: not by status, body, headers or timing.

An unknown user, a wrong password, a disabled user and a locked account must look the same
from outside (CONTRACT "Accounts and tokens"). The body comparison runs on SQLite and
PostgreSQL; the timing comparison uses real Argon2id parameters on SQLite only.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import update

from bastion.app import create_app
from bastion.config import OWASP_ARGON2_MEMORY_KIB, OWASP_ARGON2_TIME_COST
from bastion.storage.migrate import upgrade_to_head
from bastion.storage.tables import User
from tests.conftest import make_settings
from tests.identity.helpers import PASSWORD, login, password_grant, register

WRONG_PASSWORD = "wrong but long enough password"
INVALID_GRANT = {
    "error": "invalid_grant",
    "error_description": "The credentials or the grant are not valid.",
}
# Differ per response by design; everything else must be byte-identical.
# RateLimit counts down with every request, whichever case it is.
VARYING_HEADERS = {"x-request-id", "date", "ratelimit"}
TIMING_SAMPLES = 12
TIMING_ROUNDS = 5


def comparable(response: httpx.Response) -> tuple[int, bytes, list[tuple[str, str]]]:
    headers = sorted(
        (name.lower(), value)
        for name, value in response.headers.multi_items()
        if name.lower() not in VARYING_HEADERS
    )
    return response.status_code, response.content, headers


async def test_unknown_wrong_disabled_and_locked_look_identical(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await register(client, "alice")
    await register(client, "bob")
    await register(client, "carol")
    async with app.state.bastion.database.transaction() as session:
        await session.execute(update(User).where(User.username == "bob").values(disabled=True))
    threshold: int = app.state.bastion.settings.lockout_threshold
    for _ in range(threshold):
        await password_grant(client, "carol", WRONG_PASSWORD)

    answers = {
        "unknown user": await password_grant(client, "nobody", PASSWORD),
        "wrong password": await password_grant(client, "alice", WRONG_PASSWORD),
        "disabled, right password": await password_grant(client, "bob", PASSWORD),
        "locked, right password": await password_grant(client, "carol", PASSWORD),
    }

    reference = comparable(answers["unknown user"])
    assert reference[0] == 400
    assert answers["unknown user"].json() == INVALID_GRANT
    for case, response in answers.items():
        assert comparable(response) == reference, case
    # And the accounts themselves are fine: the difference is invisible, not absent.
    await login(client, "alice")


async def measure_round(client: httpx.AsyncClient) -> tuple[float, float]:
    """Medians (seconds) of unknown-user and wrong-password logins, sampled in pairs whose
    order alternates (ABBA), so drifting load and going first or second cost both alike."""
    samples: dict[str, list[float]] = {"nobody": [], "alice": []}
    for index in range(TIMING_SAMPLES):
        order = ("nobody", "alice") if index % 2 == 0 else ("alice", "nobody")
        for username in order:
            started = time.perf_counter()
            response = await password_grant(client, username, WRONG_PASSWORD)
            samples[username].append(time.perf_counter() - started)
            assert response.status_code == 400
            assert response.json() == INVALID_GRANT
    return statistics.median(samples["nobody"]), statistics.median(samples["alice"])


async def test_unknown_user_and_wrong_password_take_the_same_time(
    tmp_path: Path,
) -> None:
    """With OWASP's Argon2id parameters: a missing dummy verification would make the
    unknown-user answer many times faster than the wrong-password one.

    The machine may be busy with other tests, so a round whose medians differ by more than
    a third is measured again, up to TIMING_ROUNDS times. A real difference (no dummy
    verification: a ratio far below 0.75) fails every round.
    """
    settings = make_settings(tmp_path / "data", rate_limits_enabled=False, lockout_threshold=1000)
    assert settings.password_hash_memory_kib == OWASP_ARGON2_MEMORY_KIB
    assert settings.password_hash_time_cost == OWASP_ARGON2_TIME_COST
    application = create_app(settings)
    await upgrade_to_head(application.state.bastion.database.engine)
    rounds: list[str] = []
    async with (
        application.router.lifespan_context(application),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=application), base_url="http://testserver"
        ) as client,
    ):
        await register(client, "alice")
        # Warm-up: the first unknown-user login builds the dummy hash; the first of each
        # kind also warms caches and connections.
        for username in ("nobody", "alice"):
            await password_grant(client, username, WRONG_PASSWORD)

        for _ in range(TIMING_ROUNDS):
            unknown, wrong = await measure_round(client)
            rounds.append(
                f"unknown user {unknown * 1000:.1f} ms, wrong password {wrong * 1000:.1f} ms"
            )
            # Both pay for a real Argon2id verification (~25-40 ms here), never a shortcut.
            assert unknown >= 0.010, rounds
            assert wrong >= 0.010, rounds
            if 0.75 <= unknown / wrong <= 1.33:
                return
    pytest.fail(f"unknown-user and wrong-password logins differ in time: {rounds}")
