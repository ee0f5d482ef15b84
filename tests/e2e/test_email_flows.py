"""Email verification and password reset through ``bastion serve`` and a real SMTP server.

Each flow runs as a user lives it: the request, the mail as the SMTP server (aiosmtpd)
received it, the link in it, and the answer to opening that link. Then what the outbox is
for: a mail server that is down when the request comes makes no difference to the request
(202 at once), and the mail arrives once the server is back. Last, forgot-password's
timing: a known and an unknown address cost the same, within a factor of two, measured on
the live server (the in-process suite checks the work each path does).
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from bastion.mail.message import parse
from tests.e2e.api import FAST_HASHING_ENV, ROOMY_LOGIN_LIMIT, Api, connected
from tests.e2e.conftest import assert_problem, deployed
from tests.identity.helpers import NEW_PASSWORD, PASSWORD, bearer
from tests.servers.smtp import SmtpServer

PUBLIC_URL = "https://bastion.example.org"
VERIFY_LINK = re.compile(re.escape(PUBLIC_URL) + r"/app/#/verify-email\?token=([A-Za-z0-9_-]+)")
RESET_LINK = re.compile(re.escape(PUBLIC_URL) + r"/app/#/reset-password\?token=([A-Za-z0-9_-]+)")
MAIL_TIMEOUT = 10.0
# The sender retries 5 s after a failure and pauses up to a minute while the server is down.
RECOVERY_TIMEOUT = 90.0
# The request must not wait for the mail server: well under one SMTP connect timeout.
FAST_ANSWER_SECONDS = 2.0
TIMING_TRIES = 20
TIMING_BOUNDS = (0.5, 2.0)


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer().start()
    try:
        yield server
    finally:
        server.destroy()


def mail_env(smtp: SmtpServer, **extra: str) -> dict[str, str]:
    return {
        "smtp_url": smtp.url,
        "public_url": PUBLIC_URL,
        "mail_from": "bastion@example.org",
        "rate_limit_login": ROOMY_LOGIN_LIMIT,
        **FAST_HASHING_ENV,
        **extra,
    }


def wait_for_mail(smtp: SmtpServer, count: int, timeout: float = MAIL_TIMEOUT) -> EmailMessage:
    """The ``count``-th message the server received (1-based), once it has arrived."""
    deadline = time.monotonic() + timeout
    while len(smtp.messages) < count:
        assert time.monotonic() < deadline, f"mail {count} did not arrive in {timeout} s"
        time.sleep(0.05)
    return parse(smtp.messages[count - 1])


def token_in(mail: EmailMessage, link: re.Pattern[str]) -> str:
    assert mail.get_content_type() == "text/plain"
    content: str = mail.get_content()
    found = link.search(content)
    assert found is not None, content
    return found.group(1)


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_verification_and_reset_from_the_received_links(
    request: pytest.FixtureRequest, tmp_path: Path, smtp: SmtpServer, backend: str
) -> None:
    postgres = request.getfixturevalue("postgres_server") if backend == "postgresql" else None
    with deployed(tmp_path, backend, postgres, **mail_env(smtp)) as deployment:
        with connected(deployment.server) as api:
            user = api.register("alice")
            first = api.login("alice")
            second = api.login("alice")

            requested = api.request(
                "POST", "/auth/email/verification", headers=bearer(first["access_token"])
            )
            assert (requested.status_code, requested.content) == (202, b"")
            mail = wait_for_mail(smtp, 1)
            assert smtp.received[0].recipients == ("alice@example.com",)
            assert (mail["From"], mail["Subject"]) == (
                "bastion@example.org", "Confirm your email address"
            )
            token = token_in(mail, VERIFY_LINK)
            api.secrets.add(token)
            verified = api.request("POST", "/auth/email/verify", json={"token": token})
            assert verified.status_code == 204
            assert api.me(first["access_token"]).json()["email_verified"] is True
            assert_problem(
                api.request("POST", "/auth/email/verify", json={"token": token}), 400, token
            )

            forgot = api.request(
                "POST", "/auth/password/forgot", json={"email": "alice@example.com"}
            )
            assert (forgot.status_code, forgot.content) == (202, b"")
            reset_mail = wait_for_mail(smtp, 2)
            assert reset_mail["Subject"] == "Reset your password"
            reset_token = token_in(reset_mail, RESET_LINK)
            api.secrets.update((reset_token, NEW_PASSWORD))
            body = {"token": reset_token, "new_password": NEW_PASSWORD}
            assert api.request("POST", "/auth/password/reset", json=body).status_code == 204
            api.assert_dead(first)
            api.assert_dead(second)
            assert api.password_grant("alice", PASSWORD).status_code == 400
            assert api.login("alice", NEW_PASSWORD)["scope"]
            again = api.request("POST", "/auth/password/reset", json=body)
            assert_problem(again, 400, reset_token, NEW_PASSWORD)
            assert user["email"] == "alice@example.com"
            api.assert_auth_responses_not_cached()
            # The links were in the mails only: never in the server's log.
            api.assert_log_holds_no_secret()


def test_a_mail_server_outage_delays_the_mail_not_the_request(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    smtp.stop()
    with deployed(tmp_path, "sqlite", None, **mail_env(smtp)) as deployment:
        with connected(deployment.server) as api:
            api.register("alice")
            started = time.monotonic()
            forgot = api.request(
                "POST", "/auth/password/forgot", json={"email": "alice@example.com"}
            )
            elapsed = time.monotonic() - started
            assert forgot.status_code == 202
            assert elapsed < FAST_ANSWER_SECONDS, elapsed
            time.sleep(1.0)  # the sender tries, and fails
            assert smtp.messages == []
            smtp.start()  # the same port
            mail = wait_for_mail(smtp, 1, timeout=RECOVERY_TIMEOUT)
            token = token_in(mail, RESET_LINK)
            body = {"token": token, "new_password": NEW_PASSWORD}
            assert api.request("POST", "/auth/password/reset", json=body).status_code == 204
            api.login("alice", NEW_PASSWORD)


def _forgot_seconds(api: Api, email: str) -> float:
    started = time.perf_counter()
    response = api.request("POST", "/auth/password/forgot", json={"email": email})
    elapsed = time.perf_counter() - started
    assert response.status_code == 202, response.text
    return elapsed


def test_forgot_password_takes_as_long_for_a_known_address_as_for_an_unknown_one(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    """Distinct addresses on both sides, so every known one takes the mailing path (none is
    throttled); pairs in alternating order (ABBA), so drift and going first cost both alike.
    The quotas are off: 40 requests from one address are what this test sends."""
    env = mail_env(smtp, rate_limits_enabled="false")
    with deployed(tmp_path, "sqlite", None, **env) as deployment:
        with connected(deployment.server) as api:
            for index in range(TIMING_TRIES):
                api.register(f"known{index}")
            _forgot_seconds(api, "warm-up@example.com")  # first-request costs, on neither side
            known: list[float] = []
            unknown: list[float] = []
            for index in range(TIMING_TRIES):
                pair = [
                    (known, f"known{index}@example.com"),
                    (unknown, f"unknown{index}@example.com"),
                ]
                for samples, email in pair if index % 2 == 0 else reversed(pair):
                    samples.append(_forgot_seconds(api, email))
            ratio = statistics.median(known) / statistics.median(unknown)
            assert TIMING_BOUNDS[0] <= ratio <= TIMING_BOUNDS[1], (
                ratio, statistics.median(known), statistics.median(unknown)
            )
            wait_for_mail(smtp, TIMING_TRIES)  # every known address got its mail
            assert all(
                received.recipients[0].startswith("known") for received in smtp.received
            )
