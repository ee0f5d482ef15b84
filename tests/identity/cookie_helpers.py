"""Browser-session steps for the in-process tests: sign in with a form, send the CSRF token.

A browser sends ``Sec-Fetch-Site`` on every request; these helpers send what a same-origin
page of the console would, and each test takes away or changes one part to attack a rule.
"""

from __future__ import annotations

import httpx

from tests.identity.helpers import PASSWORD

SAME_ORIGIN = {"Sec-Fetch-Site": "same-origin"}
SESSION_COOKIE = "bastion_session"
CSRF_COOKIE = "bastion_csrf"


async def sign_in(
    client: httpx.AsyncClient,
    username: str = "alice",
    password: str = PASSWORD,
    *,
    headers: dict[str, str] | None = None,
    **second_factor: str,
) -> httpx.Response:
    """``POST /auth/session`` as the console's sign-in form sends it (with ``otp`` or
    ``recovery_code`` when given)."""
    return await client.post(
        "/auth/session",
        data={"username": username, "password": password, **second_factor},
        headers=SAME_ORIGIN if headers is None else headers,
    )


async def browser_for(app_client: httpx.AsyncClient, username: str = "alice") -> httpx.AsyncClient:
    """A client of its own (its own cookie jar) signed in as ``username``."""
    client = httpx.AsyncClient(transport=app_client._transport, base_url=str(app_client.base_url))
    response = await sign_in(client, username)
    assert response.status_code == 204, response.text
    return client


def csrf_headers(client: httpx.AsyncClient) -> dict[str, str]:
    """What the console sends on an unsafe request: Fetch Metadata and the token."""
    token = client.cookies.get(CSRF_COOKIE)
    assert token, "not signed in: no CSRF cookie"
    return {**SAME_ORIGIN, "X-CSRF-Token": token}
