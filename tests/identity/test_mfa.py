"""The second factor (TOTP, recovery codes, the MFA grant, step-up), on SQLite and PostgreSQL.

Every rule of the contract's "Second factor" section is attacked here in process: replays,
wrong codes toward the lockout, an ``mfa_token`` that a wrong code must not spend and a
success must, recovery codes once, refresh that never upgrades ``amr``, and the RFC 9470
step-up for ``users:write``. The live-server versions are in ``tests/e2e/test_mfa_flow.py``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from fastapi import FastAPI
from sqlalchemy import select, text

from bastion.app import create_app
from bastion.audit.events import AuditEventType
from bastion.config import Settings
from bastion.storage.migrate import upgrade_to_head
from bastion.storage.tables import AuditEvent, MfaChallenge, RecoveryCode, User
from tests.admin import make_admin, patch_user
from tests.conftest import FAST_HASHING, make_settings
from tests.identity.cookie_helpers import sign_in
from tests.identity.helpers import PASSWORD, bearer, login, password_grant, refresh, register
from tests.identity.mfa_helpers import (
    code_at,
    enrol,
    mfa_form,
    mfa_token_for,
    wrong_code,
)

PROBLEM = "application/problem+json"


def methods_of(access_token: str) -> list[str]:
    claims = jwt.decode(access_token, options={"verify_signature": False})
    amr: list[str] = claims["amr"]
    return amr


async def audit_types(app: FastAPI) -> list[str]:
    async with app.state.bastion.database.read() as session:
        return [event.type for event in await session.scalars(select(AuditEvent))]


async def account(app: FastAPI, username: str) -> User:
    async with app.state.bastion.database.read() as session:
        user: User | None = await session.scalar(select(User).where(User.username == username))
    assert user is not None
    return user


async def enrolled_user(
    client: httpx.AsyncClient, username: str = "alice"
) -> tuple[dict[str, Any], Any]:
    await register(client, username)
    tokens = await login(client, username)
    return tokens, await enrol(client, bearer(tokens["access_token"]))


# --- set-up ----------------------------------------------------------------------------------


async def test_set_up_needs_the_password_and_gives_a_secret_uri_and_qr_code(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await register(client, "alice")
    headers = bearer((await login(client, "alice"))["access_token"])
    wrong = await client.post("/auth/mfa/totp", json={"password": "not it at all, sorry"},
                              headers=headers)
    assert wrong.status_code == 400, wrong.text
    assert wrong.headers["content-type"] == PROBLEM
    assert (await account(app, "alice")).failed_logins == 1  # counted, like a login

    setup = await client.post("/auth/mfa/totp", json={"password": PASSWORD}, headers=headers)
    assert setup.status_code == 200, setup.text
    body = setup.json()
    assert set(body) == {"secret", "otpauth_uri", "qr_code"}
    assert body["otpauth_uri"].startswith("otpauth://totp/")
    assert f"secret={body['secret']}" in body["otpauth_uri"]
    assert body["qr_code"].startswith("data:image/svg+xml")
    assert setup.headers["cache-control"] == "no-store"
    # Pending: nothing changes at sign-in until a code confirms it.
    assert (await client.get("/auth/me", headers=headers)).json()["mfa_enabled"] is False
    assert (await password_grant(client, "alice")).status_code == 200

    stored = (await account(app, "alice")).totp_secret
    assert stored is not None and body["secret"] not in stored  # encrypted at rest


async def test_confirming_turns_mfa_on_returns_ten_codes_and_ends_other_sessions(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await register(client, "alice")
    this = await login(client, "alice")
    other = await login(client, "alice")
    headers = bearer(this["access_token"])
    setup = await client.post("/auth/mfa/totp", json={"password": PASSWORD}, headers=headers)
    secret = setup.json()["secret"]

    refused = await client.post("/auth/mfa/totp/confirm", json={"otp": wrong_code(secret)},
                                headers=headers)
    assert refused.status_code == 400, refused.text
    confirmed = await client.post("/auth/mfa/totp/confirm", json={"otp": code_at(secret)},
                                  headers=headers)
    assert confirmed.status_code == 200, confirmed.text
    codes = confirmed.json()["recovery_codes"]
    assert len(codes) == 10 and len(set(codes)) == 10

    me = await client.get("/auth/me", headers=headers)
    assert me.status_code == 200 and me.json()["mfa_enabled"] is True
    # Confirming does not upgrade this session: it signed in with the password alone.
    assert methods_of(this["access_token"]) == ["pwd"]
    renewed = await refresh(client, this["refresh_token"])
    assert renewed.status_code == 200 and methods_of(renewed.json()["access_token"]) == ["pwd"]
    # Every other session ended.
    assert (await client.get("/auth/me", headers=bearer(other["access_token"]))).status_code == 401
    assert (await refresh(client, other["refresh_token"])).status_code == 400

    again = await client.post("/auth/mfa/totp", json={"password": PASSWORD}, headers=headers)
    assert again.status_code == 409
    reconfirm = await client.post("/auth/mfa/totp/confirm", json={"otp": code_at(secret, 1)},
                                  headers=headers)
    assert reconfirm.status_code == 409
    assert "mfa_enabled" in await audit_types(app)

    # Only hashes of the recovery codes are stored.
    async with app.state.bastion.database.read() as session:
        hashes = [row.code_hash for row in await session.scalars(select(RecoveryCode))]
    assert len(hashes) == 10 and not set(hashes) & set(codes)


async def test_confirming_without_a_pending_set_up_is_a_conflict(
    client: httpx.AsyncClient,
) -> None:
    await register(client, "alice")
    headers = bearer((await login(client, "alice"))["access_token"])
    response = await client.post("/auth/mfa/totp/confirm", json={"otp": "123456"},
                                 headers=headers)
    assert response.status_code == 409, response.text


# --- the MFA grant ------------------------------------------------------------------------


async def test_the_password_grant_asks_for_the_second_factor_and_the_mfa_grant_completes_it(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    _, enrolled = await enrolled_user(client)
    answer = await password_grant(client, "alice")
    assert answer.status_code == 400
    body = answer.json()
    assert body["error"] == "mfa_required" and set(body) == {
        "error", "error_description", "mfa_token"
    }
    assert answer.headers["cache-control"] == "no-store"
    assert "access_token" not in body

    # The code of the step the confirmation used is spent: a replay is refused.
    replayed = await client.post("/auth/token", data=mfa_form(body["mfa_token"],
                                                               otp=code_at(enrolled.secret)))
    assert replayed.status_code == 400 and replayed.json()["error"] == "invalid_grant"
    assert (await account(app, "alice")).failed_logins == 1  # a replay counts as wrong
    issued = await client.post("/auth/token", data=mfa_form(body["mfa_token"],
                                                             otp=code_at(enrolled.secret, 1)))
    assert issued.status_code == 200, issued.text
    tokens = issued.json()
    assert methods_of(tokens["access_token"]) == ["otp", "pwd"]
    assert (await client.get("/auth/me", headers=bearer(tokens["access_token"]))).status_code == 200
    # The token is spent by the success; the same code again is a replay anyway.
    spent = await client.post("/auth/token", data=mfa_form(body["mfa_token"],
                                                            otp=code_at(enrolled.secret, 1)))
    assert spent.status_code == 400
    # Refresh keeps the factors the sign-in proved, and never adds any.
    renewed = await refresh(client, tokens["refresh_token"])
    assert renewed.status_code == 200 and methods_of(renewed.json()["access_token"]) == [
        "otp", "pwd"
    ]


async def test_a_wrong_code_does_not_spend_the_mfa_token_and_counts_toward_the_lockout(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    _, enrolled = await enrolled_user(client)
    mfa_token = await mfa_token_for(client, "alice")
    for _ in range(2):
        wrong = await client.post("/auth/token",
                                  data=mfa_form(mfa_token, otp=wrong_code(enrolled.secret)))
        assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    assert (await account(app, "alice")).failed_logins == 2
    # A right password alone clears nothing: the count stands until a full sign-in.
    await mfa_token_for(client, "alice")
    assert (await account(app, "alice")).failed_logins == 2
    assert (await audit_types(app)).count("mfa_challenge") == 2  # each right password
    issued = await client.post("/auth/token",
                               data=mfa_form(mfa_token, otp=code_at(enrolled.secret, 1)))
    assert issued.status_code == 200, issued.text
    assert (await account(app, "alice")).failed_logins == 0
    assert (await audit_types(app)).count("mfa_failure") == 2


async def test_wrong_codes_lock_the_account_and_then_even_a_right_code_is_refused(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    _, enrolled = await enrolled_user(client)
    mfa_token = await mfa_token_for(client, "alice")
    for _ in range(5):  # BASTION_LOCKOUT_THRESHOLD's default
        await client.post("/auth/token", data=mfa_form(mfa_token, otp=wrong_code(enrolled.secret)))
    assert (await account(app, "alice")).locked_until is not None
    right = await client.post("/auth/token",
                              data=mfa_form(mfa_token, otp=code_at(enrolled.secret, 1)))
    assert right.status_code == 400 and right.json()["error"] == "invalid_grant"
    assert "lockout" in await audit_types(app)


async def test_a_recovery_code_signs_in_once(app: FastAPI, client: httpx.AsyncClient) -> None:
    _, enrolled = await enrolled_user(client)
    code = enrolled.recovery_codes[3]
    issued = await client.post("/auth/token",
                               data=mfa_form(await mfa_token_for(client, "alice"),
                                             recovery_code=code.upper()))
    assert issued.status_code == 200, issued.text
    assert methods_of(issued.json()["access_token"]) == ["mfa", "pwd"]
    again = await client.post("/auth/token", data=mfa_form(await mfa_token_for(client, "alice"),
                                                            recovery_code=code))
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    assert "recovery_code_used" in await audit_types(app)


async def test_the_mfa_grant_refuses_malformed_and_foreign_requests(
    client: httpx.AsyncClient,
) -> None:
    _, enrolled = await enrolled_user(client)
    mfa_token = await mfa_token_for(client, "alice")
    code = code_at(enrolled.secret, 1)
    for form, error in [
        ({"grant_type": "urn:bastion:params:oauth:grant-type:mfa", "otp": code},
         "invalid_request"),
        (mfa_form(mfa_token), "invalid_request"),
        (mfa_form(mfa_token, otp=code, recovery_code=enrolled.recovery_codes[0]),
         "invalid_request"),
        (mfa_form("x" * 43, otp=code), "invalid_grant"),
        (mfa_form(mfa_token, otp="12345"), "invalid_grant"),
        (mfa_form(mfa_token, otp="\uff11\uff12\uff13\uff14\uff15\uff16"), "invalid_grant"),
        (mfa_form(mfa_token, recovery_code="' OR 1=1 --"), "invalid_grant"),
    ]:
        response = await client.post("/auth/token", data=form)
        assert response.status_code == 400, (form, response.text)
        assert response.json()["error"] == error, (form, response.json())


async def test_spent_and_expired_challenges_are_deleted_when_a_new_one_is_made(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    _, enrolled = await enrolled_user(client)
    first = await mfa_token_for(client, "alice")
    issued = await client.post("/auth/token", data=mfa_form(first,
                                                             otp=code_at(enrolled.secret, 1)))
    assert issued.status_code == 200, issued.text
    await mfa_token_for(client, "alice")
    async with app.state.bastion.database.read() as session:
        rows = list(await session.scalars(select(MfaChallenge)))
    assert len(rows) == 1 and rows[0].used_at is None  # the spent one is gone


async def test_a_password_change_ends_the_grants_waiting_for_their_second_factor(
    client: httpx.AsyncClient,
) -> None:
    tokens, enrolled = await enrolled_user(client)
    mfa_token = await mfa_token_for(client, "alice")
    changed = await client.post(
        "/auth/password",
        json={"current_password": PASSWORD, "new_password": "another long passphrase here"},
        headers=bearer(tokens["access_token"]),
    )
    assert changed.status_code == 204, changed.text
    late = await client.post("/auth/token", data=mfa_form(mfa_token,
                                                           otp=code_at(enrolled.secret, 1)))
    assert late.status_code == 400 and late.json()["error"] == "invalid_grant"


# --- browser sessions -------------------------------------------------------------------


async def test_a_browser_sign_in_needs_the_code_in_the_same_form(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    _, enrolled = await enrolled_user(client)
    wrong_password = await sign_in(client, "alice", "not the password at all")
    assert wrong_password.status_code == 400  # nothing tells of MFA before the password
    missing = await sign_in(client, "alice")
    assert missing.status_code == 401, missing.text
    assert missing.json()["error"] == "mfa_required"
    assert "mfa_token" not in missing.json()
    assert "mfa_challenge" in await audit_types(app)
    assert "set-cookie" not in missing.headers
    wrong = await sign_in(client, "alice", otp=wrong_code(enrolled.secret))
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    signed_in = await sign_in(client, "alice", otp=code_at(enrolled.secret, 1))
    assert signed_in.status_code == 204, signed_in.text
    assert (await client.get("/auth/me")).status_code == 200
    client.cookies.clear()
    with_code = await sign_in(client, "alice", recovery_code=enrolled.recovery_codes[0])
    assert with_code.status_code == 204, with_code.text


# --- turning off, renewing codes -----------------------------------------------------------


async def test_turning_mfa_off_needs_the_password_and_a_code(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    tokens, enrolled = await enrolled_user(client)
    headers = bearer(tokens["access_token"])
    for body in (
        {"password": PASSWORD, "otp": wrong_code(enrolled.secret)},
        {"password": "not the password, no", "otp": code_at(enrolled.secret, 1)},
    ):
        refused = await client.request("DELETE", "/auth/mfa/totp", json=body, headers=headers)
        assert refused.status_code == 400, refused.text
    assert (await account(app, "alice")).failed_logins == 2
    off = await client.request(
        "DELETE", "/auth/mfa/totp", json={"password": PASSWORD, "otp": code_at(enrolled.secret, 1)},
        headers=headers,
    )
    assert off.status_code == 204, off.text
    user = await account(app, "alice")
    assert not user.mfa_enabled and user.totp_secret is None
    assert (await password_grant(client, "alice")).status_code == 200
    assert "mfa_disabled" in await audit_types(app)
    again = await client.request(
        "DELETE", "/auth/mfa/totp", json={"password": PASSWORD, "otp": "123456"}, headers=headers
    )
    assert again.status_code == 409


async def test_renewed_recovery_codes_replace_the_old_set(client: httpx.AsyncClient) -> None:
    tokens, enrolled = await enrolled_user(client)
    renewed = await client.post(
        "/auth/mfa/recovery-codes",
        json={"password": PASSWORD, "otp": code_at(enrolled.secret, 1)},
        headers=bearer(tokens["access_token"]),
    )
    assert renewed.status_code == 200, renewed.text
    new_codes = renewed.json()["recovery_codes"]
    assert len(new_codes) == 10 and not set(new_codes) & set(enrolled.recovery_codes)
    old = await client.post("/auth/token", data=mfa_form(await mfa_token_for(client, "alice"),
                                                          recovery_code=enrolled.recovery_codes[0]))
    assert old.status_code == 400
    new = await client.post("/auth/token", data=mfa_form(await mfa_token_for(client, "alice"),
                                                          recovery_code=new_codes[0]))
    assert new.status_code == 200, new.text


# --- races ----------------------------------------------------------------------------------


async def test_one_code_sent_twice_at_once_signs_in_once(client: httpx.AsyncClient) -> None:
    _, enrolled = await enrolled_user(client)
    tokens = [await mfa_token_for(client, "alice") for _ in range(4)]
    code = code_at(enrolled.secret, 1)
    answers = await asyncio.gather(
        *(client.post("/auth/token", data=mfa_form(token, otp=code)) for token in tokens)
    )
    assert sorted(answer.status_code for answer in answers) == [200, 400, 400, 400]


async def test_one_recovery_code_used_twice_at_once_signs_in_once(
    client: httpx.AsyncClient,
) -> None:
    _, enrolled = await enrolled_user(client)
    tokens = [await mfa_token_for(client, "alice") for _ in range(4)]
    code = enrolled.recovery_codes[0]
    answers = await asyncio.gather(
        *(client.post("/auth/token", data=mfa_form(token, recovery_code=code)) for token in tokens)
    )
    assert sorted(answer.status_code for answer in answers) == [200, 400, 400, 400]


# --- step-up (RFC 9470) ---------------------------------------------------------------------


@pytest.fixture
def settings(tmp_path: Path, database_url: str | None) -> Settings:
    """Step-up on, as production has it by default."""
    return make_settings(
        tmp_path / "data", database_url=database_url, admin_mfa="required", **FAST_HASHING
    )


async def test_changing_users_needs_a_second_factor_when_required(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    admin_id, headers = await make_admin(app, client)
    target = await register(client, "bob")
    refused = await patch_user(client, headers, target["id"], {"disabled": True})
    assert refused.status_code == 403, refused.text
    assert refused.headers["content-type"] == PROBLEM
    challenge = refused.headers["www-authenticate"]
    assert 'error="insufficient_user_authentication"' in challenge
    unlock = await client.post(f"/admin/users/{target['id']}/unlock", headers=headers)
    assert unlock.status_code == 403
    # Reading is not stepped up.
    assert (await client.get("/admin/users", headers=headers)).status_code == 200
    async with app.state.bastion.database.read() as session:
        denied = list(await session.scalars(
            select(AuditEvent).where(AuditEvent.type == AuditEventType.ACCESS_DENIED.value)
        ))
    assert denied and denied[-1].details["reason"] == "second_factor_required"

    enrolled = await enrol(client, headers)
    # The session that enrolled is still password-only: still refused.
    assert (await patch_user(client, headers, target["id"], {"disabled": True})).status_code == 403
    mfa_token = await mfa_token_for(client, "root")
    issued = await client.post("/auth/token", data=mfa_form(mfa_token,
                                                             otp=code_at(enrolled.secret, 1)))
    stepped_up = bearer(issued.json()["access_token"])
    allowed = await patch_user(client, stepped_up, target["id"], {"disabled": True})
    assert allowed.status_code == 200, allowed.text
    # A browser session signed in with a recovery code holds a second factor too.
    browser = httpx.AsyncClient(transport=client._transport, base_url=str(client.base_url))
    assert (await sign_in(browser, "root",
                          recovery_code=enrolled.recovery_codes[0])).status_code == 204
    from tests.identity.cookie_helpers import csrf_headers

    enabled = await browser.patch(f"/admin/users/{target['id']}", json={"disabled": False},
                                  headers=csrf_headers(browser))
    assert enabled.status_code == 200, enabled.text
    await browser.aclose()
    assert admin_id


async def test_without_the_setting_in_development_no_step_up_is_asked(
    tmp_path: Path,
) -> None:
    app = create_app(make_settings(tmp_path / "data", **FAST_HASHING))
    await upgrade_to_head(app.state.bastion.database.engine)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            _, headers = await make_admin(app, client)
            target = await register(client, "bob")
            allowed = await patch_user(client, headers, target["id"], {"disabled": True})
            assert allowed.status_code == 200, allowed.text


# --- secrets at rest ----------------------------------------------------------------------


async def test_a_secret_under_a_key_no_longer_configured_is_a_503_not_a_wrong_code(
    app: FastAPI, client: httpx.AsyncClient, settings: Settings
) -> None:
    _, enrolled = await enrolled_user(client)
    user = await account(app, "alice")
    database_url = settings.database_url
    other_key = make_settings(  # the same database (or SQLite file), another key
        settings.data_dir,
        database_url=database_url.get_secret_value() if database_url else None,
        encryption_key="YW5vdGhlciBrZXkgZm9yIHRlc3RzLCBub3Qgc2FtZSE",
        **FAST_HASHING,
    )
    second = create_app(other_key)
    async with second.router.lifespan_context(second):
        transport = httpx.ASGITransport(app=second)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as other:
            mfa_token = await mfa_token_for(other, "alice")
            answer = await other.post("/auth/token",
                                      data=mfa_form(mfa_token, otp=code_at(enrolled.secret, 1)))
    assert answer.status_code == 503, answer.text
    assert "retry-after" in answer.headers
    assert (await account(app, "alice")).failed_logins == user.failed_logins  # not counted


async def test_no_secret_or_code_is_stored_in_clear(
    app: FastAPI, client: httpx.AsyncClient, settings: Settings
) -> None:
    _, enrolled = await enrolled_user(client)
    await client.post("/auth/token", data=mfa_form(await mfa_token_for(client, "alice"),
                                                    otp=code_at(enrolled.secret, 1)))
    secrets_sent = [enrolled.secret, *enrolled.recovery_codes,
                    *(code.replace("-", "") for code in enrolled.recovery_codes)]
    async with app.state.bastion.database.read() as session:
        rows = [
            str(row)
            for table in ("users", "recovery_codes", "mfa_challenges")
            for row in (await session.execute(text(f"SELECT * FROM {table}"))).all()  # noqa: S608
        ]
    stored = "\n".join(rows).lower()
    assert not [value for value in secrets_sent if value.lower() in stored]
    if settings.database_url is None:  # and nowhere in the SQLite file or its WAL
        data = b"".join(path.read_bytes() for path in settings.data_dir.glob("bastion.sqlite3*"))
        assert not [value for value in secrets_sent if value.encode() in data]
