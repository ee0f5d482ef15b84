"""The whole account life cycle, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

import httpx
import jwt
import pytest
from fastapi import FastAPI

from tests.identity.helpers import (
    NEW_PASSWORD,
    PASSWORD,
    bearer,
    login,
    me,
    password_grant,
    refresh,
    register,
)

INVALID_GRANT = {
    "error": "invalid_grant",
    "error_description": "The credentials or the grant are not valid.",
}


async def test_an_age_may_be_written_as_an_integral_number(client: httpx.AsyncClient) -> None:
    """JSON Schema's integer takes 40.0; the schema says integer, so the server does too."""
    response = await client.post(
        "/auth/register",
        json={"username": "alice", "email": "alice@example.com", "password": PASSWORD,
              "age": 40.0},
    )
    assert response.status_code == 201, response.text
    assert response.json()["age"] == 40


async def test_register_returns_the_public_user_only(client: httpx.AsyncClient) -> None:
    user = await register(client, "Alice")
    assert set(user) == {
        "id", "username", "email", "age", "roles", "created_at", "email_verified", "mfa_enabled",
    }
    assert user["username"] == "alice"
    assert user["roles"] == ["user"]


@pytest.mark.parametrize(
    ("username", "email"),
    [("ALICE", "other@example.com"), ("other", "Alice@EXAMPLE.com")],
)
async def test_a_taken_username_or_email_is_409(
    client: httpx.AsyncClient, username: str, email: str
) -> None:
    await register(client, "alice", email="alice@example.com")
    response = await client.post(
        "/auth/register",
        json={"username": username, "email": email, "password": PASSWORD, "age": 30},
    )
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"


async def test_concurrent_registrations_of_one_name_give_one_201(
    client: httpx.AsyncClient,
) -> None:
    async def attempt(index: int) -> int:
        response = await client.post(
            "/auth/register",
            json={
                "username": "racer",
                "email": f"racer{index}@example.com",
                "password": PASSWORD,
                "age": 30,
            },
        )
        return response.status_code

    statuses = await asyncio.gather(*(attempt(index) for index in range(8)))
    assert sorted(statuses) == [201] + [409] * 7


@pytest.mark.parametrize(
    ("change", "loc"),
    [
        ({"password": "short"}, ["body", "password"]),
        ({"password": "passwordpassword"}, ["body", "password"]),
        ({"password": "alice-has-a-long-password"}, ["body", "password"]),
        ({"age": True}, ["body", "age"]),
        ({"age": 12}, ["body", "age"]),
        ({"age": 131}, ["body", "age"]),
        ({"age": "30"}, ["body", "age"]),
        ({"username": "al"}, ["body", "username"]),
        ({"username": "a" * 33}, ["body", "username"]),
        ({"username": "alice smith"}, ["body", "username"]),
        ({"username": "ålice"}, ["body", "username"]),
        ({"email": "not-an-email"}, ["body", "email"]),
        ({"email": "\u00e4lice@example.com"}, ["body", "email"]),  # ASCII only: no look-alikes
        ({"email": '"alice smith"@example.com'}, ["body", "email"]),
        ({"email": "alice@localhost"}, ["body", "email"]),
        ({"email": "a" * 65 + "@example.com"}, ["body", "email"]),  # RFC 5321: local ≤ 64
        ({"roles": ["admin"]}, ["body"]),  # unknown: at the body, without its name
        ({"id": "00000000-0000-0000-0000-000000000000"}, ["body"]),
    ],
)
async def test_invalid_registrations_are_422_without_echo(
    client: httpx.AsyncClient, change: dict[str, object], loc: list[str]
) -> None:
    body = {"username": "alice", "email": "alice@example.com", "password": PASSWORD, "age": 30}
    body.update(change)
    response = await client.post("/auth/register", json=body)
    assert response.status_code == 422
    problem = response.json()
    assert loc in [error["loc"] for error in problem["errors"]]
    assert str(body["password"]) not in response.text


async def test_login_me_refresh_rotation_and_reuse_detection(
    client: httpx.AsyncClient,
) -> None:
    user = await register(client)
    tokens = await login(client)
    assert tokens["token_type"] == "bearer"
    assert tokens["expires_in"] == 900
    assert set(tokens["scope"].split()) == {"notes:read", "notes:write"}

    response = await me(client, tokens["access_token"])
    assert response.status_code == 200
    assert response.json()["id"] == user["id"]

    rotated = await refresh(client, tokens["refresh_token"])
    assert rotated.status_code == 200
    second = rotated.json()
    assert second["refresh_token"] != tokens["refresh_token"]
    assert (await me(client, second["access_token"])).status_code == 200

    # The first refresh token comes back: reuse. The whole session dies with it.
    replay = await refresh(client, tokens["refresh_token"])
    assert replay.status_code == 400
    assert replay.json() == INVALID_GRANT
    assert (await me(client, second["access_token"])).status_code == 401
    assert (await me(client, tokens["access_token"])).status_code == 401
    assert (await refresh(client, second["refresh_token"])).status_code == 400


async def test_token_responses_are_not_cached(client: httpx.AsyncClient) -> None:
    await register(client)
    response = await password_grant(client)
    assert response.headers["cache-control"] == "no-store"
    failed = await password_grant(client, password="wrong but long enough password")
    assert failed.headers["cache-control"] == "no-store"


async def test_concurrent_use_of_one_refresh_token_succeeds_at_most_once(
    client: httpx.AsyncClient,
) -> None:
    await register(client)
    tokens = await login(client)
    results = await asyncio.gather(*(refresh(client, tokens["refresh_token"]) for _ in range(6)))
    assert sum(result.status_code == 200 for result in results) <= 1


async def test_logout_ends_exactly_its_own_session(client: httpx.AsyncClient) -> None:
    await register(client)
    first = await login(client)
    second = await login(client)
    response = await client.post("/auth/logout", headers=bearer(first["access_token"]))
    assert response.status_code == 204
    assert (await me(client, first["access_token"])).status_code == 401
    assert (await refresh(client, first["refresh_token"])).status_code == 400
    assert (await me(client, second["access_token"])).status_code == 200
    assert (await refresh(client, second["refresh_token"])).status_code == 200


async def test_revoking_a_refresh_token_ends_its_session(client: httpx.AsyncClient) -> None:
    await register(client)
    tokens = await login(client)
    response = await client.post("/auth/revoke", data={"token": tokens["refresh_token"]})
    assert response.status_code == 200
    assert (await me(client, tokens["access_token"])).status_code == 401
    assert (await refresh(client, tokens["refresh_token"])).status_code == 400


async def test_revoking_an_access_token_ends_only_that_token(client: httpx.AsyncClient) -> None:
    await register(client)
    tokens = await login(client)
    rotated = (await refresh(client, tokens["refresh_token"])).json()
    response = await client.post(
        "/auth/revoke",
        data={"token": tokens["access_token"], "token_type_hint": "access_token"},
    )
    assert response.status_code == 200
    assert (await me(client, tokens["access_token"])).status_code == 401
    assert (await me(client, rotated["access_token"])).status_code == 200


@pytest.mark.parametrize("token", ["garbage", "x" * 5000])
async def test_revoke_answers_200_for_anything(client: httpx.AsyncClient, token: str) -> None:
    response = await client.post("/auth/revoke", data={"token": token})
    assert response.status_code == 200
    assert response.content == b""


@pytest.mark.parametrize(
    "form",
    [{"token": ""}, {"token_type_hint": ""}, {"token_type_hint": "access_token"}],
)
async def test_revoke_without_a_token_is_an_invalid_request(
    client: httpx.AsyncClient, form: dict[str, str]
) -> None:
    """RFC 7009 §2.1 requires ``token``, and RFC 6749 §3.2 reads one without a value as not
    sent; it was a 200 that revoked nothing."""
    response = await client.post("/auth/revoke", data=form)
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_request", "error_description": "token is required."
    }


async def test_unknown_form_parameters_are_ignored_but_known_ones_count_once(
    client: httpx.AsyncClient,
) -> None:
    """RFC 6749 §3.2: unrecognised parameters are ignored (even repeated); a recognised one
    may not be repeated."""
    ignored = await client.post(
        "/auth/revoke", content=b"x=1&x=2&extra=3&token=garbage",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert ignored.status_code == 200, ignored.text
    repeated = await client.post(
        "/auth/revoke", content=b"token=a&token=b",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert repeated.status_code == 400
    assert repeated.json()["error"] == "invalid_request"


async def test_password_change_revokes_every_other_session(client: httpx.AsyncClient) -> None:
    await register(client)
    current = await login(client)
    other = await login(client)
    response = await client.post(
        "/auth/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=bearer(current["access_token"]),
    )
    assert response.status_code == 204
    assert (await me(client, current["access_token"])).status_code == 200
    assert (await me(client, other["access_token"])).status_code == 401
    assert (await refresh(client, other["refresh_token"])).status_code == 400
    assert (await password_grant(client)).status_code == 400
    assert (await password_grant(client, password=NEW_PASSWORD)).status_code == 200


async def test_password_change_needs_the_current_password_and_the_policy(
    client: httpx.AsyncClient,
) -> None:
    await register(client)
    tokens = await login(client)
    wrong = await client.post(
        "/auth/password",
        json={"current_password": "not the password at all", "new_password": NEW_PASSWORD},
        headers=bearer(tokens["access_token"]),
    )
    assert wrong.status_code == 400
    weak = await client.post(
        "/auth/password",
        json={"current_password": PASSWORD, "new_password": "passwordpassword"},
        headers=bearer(tokens["access_token"]),
    )
    assert weak.status_code == 422
    assert weak.json()["errors"][0]["loc"] == ["body", "new_password"]
    assert "passwordpassword" not in weak.text


async def test_the_jwt_verifies_with_the_published_jwks(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await register(client)
    tokens = await login(client)
    jwks = (await client.get("/.well-known/jwks.json")).json()
    header = jwt.get_unverified_header(tokens["access_token"])
    assert header["typ"] == "at+jwt"
    assert header["alg"] == "EdDSA"
    (published,) = [key for key in jwks["keys"] if key["kid"] == header["kid"]]
    public_key = jwt.PyJWK(published).key
    claims = jwt.decode(
        tokens["access_token"],
        public_key,
        algorithms=["EdDSA"],
        audience="bastion",
        issuer="http://127.0.0.1:8000",
    )
    assert set(claims) == {
        "iss", "aud", "sub", "exp", "iat", "nbf", "jti", "sid", "scope", "amr"
    }
    assert claims["amr"] == ["pwd"]  # RFC 8176: a password, no second factor
    assert all("d" not in key for key in jwks["keys"])  # never a private part


async def test_scope_is_requested_intersected_with_granted(client: httpx.AsyncClient) -> None:
    await register(client)
    narrow = await login(client, scope="notes:read")
    assert narrow["scope"] == "notes:read"
    beyond = await login(client, scope="notes:read users:write")
    assert beyond["scope"] == "notes:read"
    unknown = await password_grant(client, scope="notes:read everything:all")
    assert unknown.status_code == 400
    assert unknown.json()["error"] == "invalid_scope"
    wider = await refresh(client, narrow["refresh_token"], scope="notes:read notes:write")
    assert wider.status_code == 400
    assert wider.json()["error"] == "invalid_scope"


async def test_tokens_are_issued_when_the_key_ring_is_due_for_a_reload(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """The reload runs inside the request's transaction: on SQLite a second transaction
    would wait for the lock the request holds, until the busy timeout (a 503)."""
    await register(client)
    app.state.bastion.keys._loaded_at = float("-inf")  # as if the interval had passed
    started = asyncio.get_running_loop().time()
    response = await password_grant(client)
    assert response.status_code == 200
    assert asyncio.get_running_loop().time() - started < 2


async def test_a_refused_wider_scope_does_not_spend_the_refresh_token(
    client: httpx.AsyncClient,
) -> None:
    await register(client)
    narrow = await login(client, scope="notes:read")
    wider = await refresh(client, narrow["refresh_token"], scope="notes:read notes:write")
    assert wider.json()["error"] == "invalid_scope"
    retry = await refresh(client, narrow["refresh_token"])
    assert retry.status_code == 200  # not treated as a replay
    assert retry.json()["scope"] == "notes:read"


async def test_logout_answers_204_without_a_body(client: httpx.AsyncClient) -> None:
    await register(client)
    tokens = await login(client)
    response = await client.post("/auth/logout", headers=bearer(tokens["access_token"]))
    assert response.status_code == 204
    assert response.content == b""
    assert "content-type" not in response.headers
