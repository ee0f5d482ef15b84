"""The second factor through the real ``bastion serve``, on SQLite and PostgreSQL.

With ``BASTION_ADMIN_MFA=required`` (production's default): a user enrols (QR code, secret,
recovery codes), signs in with the MFA grant and with a browser session, a replayed code and
a spent recovery code are refused, wrong codes lock the account, an admin without a second
factor is refused ``users:write`` (RFC 9470) until signed in with one, and ``bastion check
--deploy`` names the admin until then. The in-process tests (``tests/identity/test_mfa.py``)
attack each rule one by one.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import jwt
import pytest

from tests.e2e.conftest import Deployment, assert_problem, deployed, postgres_for
from tests.identity.helpers import PASSWORD, account_form, bearer, password_form
from tests.identity.mfa_helpers import MFA_GRANT, code_at, wrong_code

SAME_ORIGIN = {"Sec-Fetch-Site": "same-origin"}
ROOT_PASSWORD = "an operator's long passphrase 2026"
_accounts = iter(range(1, 10_000))


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp(f"mfa-{request.param}")
    with deployed(
        root, request.param, postgres_for(request),
        admin_mfa="required", rate_limit_login="1000/minute",
    ) as running:
        yield running


@pytest.fixture
def api(deployment: Deployment) -> Iterator[httpx.Client]:
    with deployment.server.client() as client:
        yield client


def new_user(api: httpx.Client) -> str:
    username = f"mfa{next(_accounts)}"
    assert api.post("/auth/register", json=account_form(username)).status_code == 201
    return username


def token_for(api: httpx.Client, username: str, password: str = PASSWORD) -> str:
    response = api.post("/auth/token", data=password_form(username, password))
    assert response.status_code == 200, response.text
    access: str = response.json()["access_token"]
    return access


def enrol(
    api: httpx.Client, headers: dict[str, str], password: str = PASSWORD
) -> tuple[str, list[str]]:
    setup = api.post("/auth/mfa/totp", json={"password": password}, headers=headers)
    assert setup.status_code == 200, setup.text
    assert setup.json()["qr_code"].startswith("data:image/svg+xml")
    secret: str = setup.json()["secret"]
    confirmed = api.post("/auth/mfa/totp/confirm", json={"otp": code_at(secret)}, headers=headers)
    assert confirmed.status_code == 200, confirmed.text
    codes: list[str] = confirmed.json()["recovery_codes"]
    return secret, codes


def mfa_token(api: httpx.Client, username: str, password: str = PASSWORD) -> str:
    answer = api.post("/auth/token", data=password_form(username, password))
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "mfa_required"
    token: str = answer.json()["mfa_token"]
    return token


def mfa_grant(api: httpx.Client, token: str, **code: str) -> httpx.Response:
    return api.post("/auth/token", data={"grant_type": MFA_GRANT, "mfa_token": token, **code})


def test_enrol_then_sign_in_with_a_code_a_browser_and_a_recovery_code(api: httpx.Client) -> None:
    username = new_user(api)
    secret, codes = enrol(api, bearer(token_for(api, username)))
    assert len(codes) == 10

    replay = mfa_grant(api, mfa_token(api, username), otp=code_at(secret))
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    issued = mfa_grant(api, mfa_token(api, username), otp=code_at(secret, 1))
    assert issued.status_code == 200, issued.text
    claims = jwt.decode(issued.json()["access_token"], options={"verify_signature": False})
    assert claims["amr"] == ["otp", "pwd"]

    with httpx.Client(base_url=str(api.base_url), timeout=10.0) as browser:
        form = {"username": username, "password": PASSWORD}
        asked = browser.post("/auth/session", data=form, headers=SAME_ORIGIN)
        assert asked.status_code == 401 and asked.json()["error"] == "mfa_required"
        signed_in = browser.post(
            "/auth/session", data={**form, "recovery_code": codes[0]}, headers=SAME_ORIGIN
        )
        assert signed_in.status_code == 204, signed_in.text
        assert browser.get("/auth/me").json()["mfa_enabled"] is True

    spent = mfa_grant(api, mfa_token(api, username), recovery_code=codes[0])
    assert spent.status_code == 400 and spent.json()["error"] == "invalid_grant"
    again = mfa_grant(api, mfa_token(api, username), recovery_code=codes[1])
    assert again.status_code == 200, again.text


def test_wrong_codes_lock_the_account(api: httpx.Client) -> None:
    username = new_user(api)
    secret, _ = enrol(api, bearer(token_for(api, username)))
    token = mfa_token(api, username)
    for _ in range(5):
        assert mfa_grant(api, token, otp=wrong_code(secret)).status_code == 400
    locked = mfa_grant(api, token, otp=code_at(secret, 1))
    assert locked.status_code == 400 and locked.json()["error"] == "invalid_grant"


def test_an_admin_needs_a_second_factor_to_change_users(
    deployment: Deployment, api: httpx.Client
) -> None:
    deployment.create_admin("root", ROOT_PASSWORD)
    target = api.post("/auth/register", json=account_form(f"target{next(_accounts)}"))
    assert target.status_code == 201, target.text
    target_id = target.json()["id"]
    headers = bearer(token_for(api, "root", ROOT_PASSWORD))

    refused = api.patch(f"/admin/users/{target_id}", json={"disabled": True}, headers=headers)
    body = assert_problem(refused, 403)
    assert 'error="insufficient_user_authentication"' in refused.headers["www-authenticate"]
    assert "second factor" in body["detail"]
    assert api.get("/admin/users", headers=headers).status_code == 200

    check = deployment.bastion("check", "--deploy")
    assert "account: admin 'root' has no second factor" in check.stdout, check.stdout

    secret, _ = enrol(api, headers, ROOT_PASSWORD)
    issued = mfa_grant(api, mfa_token(api, "root", ROOT_PASSWORD), otp=code_at(secret, 1))
    assert issued.status_code == 200, issued.text
    stepped_up = bearer(issued.json()["access_token"])
    allowed = api.patch(f"/admin/users/{target_id}", json={"disabled": True}, headers=stepped_up)
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["disabled"] is True

    check = deployment.bastion("check", "--deploy")
    assert "account: admin 'root'" not in check.stdout, check.stdout
