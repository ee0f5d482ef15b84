"""Nothing secret is stored in the clear: not in any column, nor in SQLite's files.

After a whole life cycle (register, login, two refreshes, a password change, a login with the
new password), every value of every table is searched for the plaintext passwords, the
refresh tokens, the access tokens and their signatures. On SQLite every byte of every file in
the data dir (database, write-ahead log, shared memory) is searched too.
"""

from __future__ import annotations

import base64
import hashlib
import re

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from bastion.config import Settings
from bastion.storage.tables import Base, RefreshToken, User
from tests.identity.helpers import NEW_PASSWORD, PASSWORD, bearer, login, refresh, register

SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def signature_of(access_token: str) -> tuple[str, bytes]:
    """The JWS signature, as sent (base64url) and as raw bytes."""
    encoded = access_token.rsplit(".", 1)[1]
    return encoded, base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))


async def every_stored_value(app: FastAPI) -> list[tuple[str, str, str]]:
    """(table, column, str(value)) for every column of every row of every table."""
    found: list[tuple[str, str, str]] = []
    async with app.state.bastion.database.transaction() as session:
        for table in Base.metadata.sorted_tables:
            rows = (await session.execute(select(table))).mappings().all()
            for row in rows:
                found.extend((table.name, column, str(value)) for column, value in row.items())
    return found


async def test_no_password_or_token_is_stored_in_the_clear(
    app: FastAPI, client: httpx.AsyncClient, settings: Settings
) -> None:
    await register(client)
    issued = [await login(client)]
    for _ in range(2):
        response = await refresh(client, issued[-1]["refresh_token"])
        assert response.status_code == 200, response.text
        issued.append(response.json())
    changed = await client.post(
        "/auth/password",
        headers=bearer(issued[-1]["access_token"]),
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
    )
    assert changed.status_code == 204, changed.text
    issued.append(await login(client, password=NEW_PASSWORD))

    refresh_tokens = [tokens["refresh_token"] for tokens in issued]
    access_tokens = [tokens["access_token"] for tokens in issued]
    signatures = [signature_of(token) for token in access_tokens]
    secrets = {
        "old password": PASSWORD,
        "new password": NEW_PASSWORD,
        **{f"refresh token {number}": token for number, token in enumerate(refresh_tokens)},
        **{f"access token {number}": token for number, token in enumerate(access_tokens)},
        **{f"signature {number}": encoded for number, (encoded, _) in enumerate(signatures)},
    }

    stored = await every_stored_value(app)
    assert {table for table, _, _ in stored} >= {"users", "sessions", "refresh_tokens"}
    for table, column, value in stored:
        for name, secret in secrets.items():
            assert secret not in value, f"{name} stored in {table}.{column}"

    async with app.state.bastion.database.transaction() as session:
        password_hashes = list(await session.scalars(select(User.password_hash)))
        token_hashes = set(await session.scalars(select(RefreshToken.token_hash)))
    assert len(password_hashes) == 1
    assert password_hashes[0].startswith("$argon2id$")
    assert all(SHA256_HEX.fullmatch(token_hash) for token_hash in token_hashes)
    assert token_hashes == {hashlib.sha256(token.encode()).hexdigest() for token in refresh_tokens}

    if not settings.uses_embedded_database:
        return
    files = [path for path in settings.data_dir.rglob("*") if path.is_file()]
    assert settings.sqlite_path in files
    contents = {path: path.read_bytes() for path in files}
    # The search is not vacuous: what was stored is in these files (database or WAL).
    assert any(password_hashes[0].encode() in content for content in contents.values())
    for path, content in contents.items():
        for name, secret in secrets.items():
            assert secret.encode() not in content, f"{name} found in {path.name}"
        for number, (_, raw) in enumerate(signatures):
            assert raw not in content, f"raw signature {number} found in {path.name}"
