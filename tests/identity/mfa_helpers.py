"""Second-factor steps shared by the in-process and live-server tests: enrol, compute codes.

Codes are computed with pyotp, independently of bastion's own TOTP code. A code is accepted
once per 30 s time step and only within one step of now, so a test that signs in several
times uses the codes of the current step and the next one, then recovery codes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx
import pyotp

from tests.identity.helpers import PASSWORD

MFA_GRANT = "urn:bastion:params:oauth:grant-type:mfa"


def code_at(secret: str, offset_steps: int = 0) -> str:
    """The code of the time step ``offset_steps`` away from now."""
    return pyotp.TOTP(secret).at(time.time() + 30 * offset_steps)


def wrong_code(secret: str) -> str:
    """A six-digit code that is none of the three steps' codes."""
    valid = {code_at(secret, step) for step in (-1, 0, 1)}
    return next(f"{n:06d}" for n in range(1_000_000) if f"{n:06d}" not in valid)


@dataclass
class Enrolled:
    secret: str
    recovery_codes: list[str]
    setup: dict[str, Any]


async def enrol(
    client: httpx.AsyncClient, headers: dict[str, str], password: str = PASSWORD
) -> Enrolled:
    """Set up and confirm TOTP; the confirmation spends the current step's code."""
    setup = await client.post("/auth/mfa/totp", json={"password": password}, headers=headers)
    assert setup.status_code == 200, setup.text
    secret = setup.json()["secret"]
    confirmed = await client.post(
        "/auth/mfa/totp/confirm", json={"otp": code_at(secret)}, headers=headers
    )
    assert confirmed.status_code == 200, confirmed.text
    return Enrolled(secret, confirmed.json()["recovery_codes"], setup.json())


def mfa_form(mfa_token: str, **code: str) -> dict[str, str]:
    return {"grant_type": MFA_GRANT, "mfa_token": mfa_token, **code}


async def mfa_token_for(
    client: httpx.AsyncClient, username: str, password: str = PASSWORD, **extra: str
) -> str:
    """The password grant's ``mfa_required`` answer for an account with MFA on."""
    response = await client.post(
        "/auth/token",
        data={"grant_type": "password", "username": username, "password": password, **extra},
    )
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "mfa_required", body
    token: str = body["mfa_token"]
    return token
