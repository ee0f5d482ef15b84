"""Revocations outlive the revocation store: the database is the record."""

from __future__ import annotations

from pathlib import Path

import httpx

from bastion.app import create_app
from bastion.storage.migrate import upgrade_to_head
from tests.conftest import FAST_HASHING, make_settings
from tests.identity.helpers import bearer, login, me, register


async def _run(data_dir: Path, database_url: str | None, steps: str) -> dict[str, str]:
    """Starts an app over the same database, runs ``steps``, and stops it (a restart)."""
    app = create_app(make_settings(data_dir, database_url=database_url, **FAST_HASHING))
    await upgrade_to_head(app.state.bastion.database.engine)
    transport = httpx.ASGITransport(app=app)
    results: dict[str, str] = {}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as client,
    ):
        if steps == "revoke":
            await register(client)
            revoked = await login(client)
            logged_out = await login(client)
            await client.post("/auth/revoke", data={"token": revoked["access_token"]})
            await client.post("/auth/logout", headers=bearer(logged_out["access_token"]))
            assert (await me(client, revoked["access_token"])).status_code == 401
            assert (await me(client, logged_out["access_token"])).status_code == 401
            results = {"revoked": revoked["access_token"], "logged_out": logged_out["access_token"]}
        else:
            for token in steps.split():
                results[token] = str((await me(client, token)).status_code)
    return results


async def test_revoked_and_logged_out_tokens_stay_dead_after_a_restart(
    tmp_path: Path, database_url: str | None
) -> None:
    tokens = await _run(tmp_path / "data", database_url, "revoke")
    statuses = await _run(
        tmp_path / "data", database_url, f"{tokens['revoked']} {tokens['logged_out']}"
    )
    assert statuses == {tokens["revoked"]: "401", tokens["logged_out"]: "401"}
