"""Email verification and password reset, attacked rule by rule, on SQLite and PostgreSQL.

Mails are read as a user would get them: the outbox is delivered (``deliver_due``) by the
development transport, which writes each message as an ``.eml`` file, and the link is taken
from the message's text. The rules under attack (docs/security-model.md, "Email verification
and password reset"): a token opens one thing once, for its purpose and its address, before
it expires, and only the latest works; it is stored only as a hash; a reset ends every
session and leaves the lockout and MFA alone; forgot-password tells nobody which addresses
exist; nothing mails one mailbox faster than once a minute.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event, select, text, update

from bastion.audit.service import StoredAuditEvent, list_events
from bastion.clock import utc_now
from bastion.config import Settings
from bastion.identity.email_flows import MAIL_INTERVAL
from bastion.mail.message import parse
from bastion.mail.outbox import pending_count
from bastion.middleware.body_limit import SMALL_BODY_BYTES
from bastion.storage.tables import EmailToken, LoginSession, User
from tests.conftest import FAST_HASHING, TEST_ENCRYPTION_KEY, make_settings
from tests.identity.cookie_helpers import browser_for, csrf_headers
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

PUBLIC_URL = "https://id.example.org"
VERIFY_LINK = re.compile(re.escape(PUBLIC_URL) + r"/app/#/verify-email\?token=([A-Za-z0-9_-]+)")
RESET_LINK = re.compile(re.escape(PUBLIC_URL) + r"/app/#/reset-password\?token=([A-Za-z0-9_-]+)")
# Differ per response by design; everything else must be byte-identical. RateLimit counts
# down with every request, whichever address it named.
VARYING_HEADERS = {"x-request-id", "date", "ratelimit"}
WRONG_PASSWORD = "wrong but long enough password"
RACERS = 8
DELIVERY_TIMEOUT = 10.0


@pytest.fixture
def settings(tmp_path: Path, database_url: str | None) -> Settings:
    """A public URL unlike the test client's Host (``testserver``): links must use it."""
    return make_settings(
        tmp_path / "data",
        database_url=database_url,
        public_url=PUBLIC_URL,
        encryption_key=TEST_ENCRYPTION_KEY,
        **FAST_HASHING,
    )


def _client_at(app: FastAPI, address: str) -> httpx.AsyncClient:
    """A client at an address of its own: the mail quota counts per address."""
    transport = httpx.ASGITransport(app=app, client=(address, 50123))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


class Mailbox:
    """What the development transport delivered: ``<data dir>/outbox/*.eml``."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.folder: Path = app.state.bastion.settings.data_dir / "outbox"
        self.seen: set[Path] = set()

    async def new_mails(self) -> list[EmailMessage]:
        """The mails delivered since the last call, oldest first. The app's own sender may
        be delivering one at this moment: wait until nothing is pending."""
        services = self.app.state.bastion
        deadline = time.monotonic() + DELIVERY_TIMEOUT
        while True:
            await services.mail.deliver_due()
            async with services.database.read() as session:
                if await pending_count(session) == 0:
                    break
            assert time.monotonic() < deadline, "the outbox was not delivered"
            await asyncio.sleep(0.02)
        files = sorted(
            (path for path in self.folder.glob("*.eml") if path not in self.seen),
            key=lambda path: path.stat().st_mtime_ns,
        )
        self.seen.update(files)
        return [parse(path.read_bytes()) for path in files]

    async def one_mail(self) -> EmailMessage:
        mails = await self.new_mails()
        assert len(mails) == 1, [str(mail["Subject"]) for mail in mails]
        return mails[0]


@pytest.fixture
def mailbox(app: FastAPI) -> Mailbox:
    return Mailbox(app)


def body_of(mail: EmailMessage) -> str:
    assert mail.get_content_type() == "text/plain"  # plain text only, no HTML part
    assert not mail.is_multipart()
    content: str = mail.get_content()
    return content


def token_in(mail: EmailMessage, link: re.Pattern[str]) -> str:
    found = link.search(body_of(mail))
    assert found is not None, body_of(mail)
    return found.group(1)


async def events_of(app: FastAPI, type: str) -> list[StoredAuditEvent]:
    """Events of ``type``, oldest first."""
    async with app.state.bastion.database.read() as session:
        events = await list_events(session, limit=200)
    return [event for event in reversed(events) if event.type == type]


async def signed_in(client: httpx.AsyncClient, username: str = "alice") -> str:
    await register(client, username)
    access: str = (await login(client, username))["access_token"]
    return access


async def request_verification(client: httpx.AsyncClient, access: str) -> httpx.Response:
    return await client.post("/auth/email/verification", headers=bearer(access))


async def forgot(client: httpx.AsyncClient, email: str) -> httpx.Response:
    return await client.post("/auth/password/forgot", json={"email": email})


async def reset(
    client: httpx.AsyncClient, token: str, password: str = NEW_PASSWORD
) -> httpx.Response:
    return await client.post(
        "/auth/password/reset", json={"token": token, "new_password": password}
    )


async def verify(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post("/auth/email/verify", json={"token": token})


def assert_bad_link(response: httpx.Response) -> None:
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert "not valid" in response.json()["detail"]


async def age_tokens(app: FastAPI, by: timedelta) -> None:
    """Moves every token's creation back: the mail throttle no longer applies."""
    async with app.state.bastion.database.transaction() as session:
        for token in await session.scalars(select(EmailToken)):
            token.created_at -= by


async def reset_mail_token(
    app: FastAPI, client: httpx.AsyncClient, mailbox: Mailbox, email: str = "alice@example.com"
) -> str:
    response = await forgot(client, email)
    assert response.status_code == 202, response.text
    mail = await mailbox.one_mail()
    assert mail["To"] == email
    return token_in(mail, RESET_LINK)


# -- email verification -------------------------------------------------------------------


async def test_verification_mail_verifies_the_address_once(
    app: FastAPI, client: httpx.AsyncClient, mailbox: Mailbox
) -> None:
    access = await signed_in(client)
    assert (await me(client, access)).json()["email_verified"] is False

    requested = await request_verification(client, access)
    assert requested.status_code == 202
    assert requested.content == b""
    mail = await mailbox.one_mail()
    assert (mail["To"], mail["From"]) == ("alice@example.com", "bastion@localhost")
    assert mail["Subject"] == "Confirm your email address"
    content = body_of(mail)
    assert "24 hours" in content
    assert "If this was not you, ignore this mail" in content
    assert "testserver" not in content  # the link is the public URL's, not the Host's
    token = token_in(mail, VERIFY_LINK)
    assert len(token) >= 22  # at least 128 bits of base64url

    assert (await verify(client, token)).status_code == 204
    assert (await me(client, access)).json()["email_verified"] is True
    assert_bad_link(await verify(client, token))  # single use

    [requested_event] = await events_of(app, "email_verification_requested")
    assert requested_event.outcome == "success"
    verified = await events_of(app, "email_verified")
    assert [(event.outcome, event.details.get("reason")) for event in verified] == [
        ("success", None),
        ("failure", "used"),
    ]
    assert verified[0].subject_id == (await me(client, access)).json()["id"]


async def test_a_browser_session_requests_verification_with_its_csrf_token(
    app: FastAPI, client: httpx.AsyncClient, mailbox: Mailbox
) -> None:
    await register(client, "alice")
    browser = await browser_for(client, "alice")
    try:
        refused = await browser.post("/auth/email/verification")  # no CSRF token
        assert refused.status_code == 403
        accepted = await browser.post("/auth/email/verification", headers=csrf_headers(browser))
        assert accepted.status_code == 202
    finally:
        await browser.aclose()
    assert (await mailbox.one_mail())["To"] == "alice@example.com"


async def test_verification_needs_a_signed_in_user(client: httpx.AsyncClient) -> None:
    response = await client.post("/auth/email/verification")
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"


async def test_a_verified_address_is_not_mailed_again(
    app: FastAPI, client: httpx.AsyncClient, mailbox: Mailbox
) -> None:
    access = await signed_in(client)
    await request_verification(client, access)
    await verify(client, token_in(await mailbox.one_mail(), VERIFY_LINK))
    await age_tokens(app, MAIL_INTERVAL)
    assert (await request_verification(client, access)).status_code == 202
    assert await mailbox.new_mails() == []
    last = (await events_of(app, "email_verification_requested"))[-1]
    assert (last.outcome, last.details["reason"]) == ("failure", "already_verified")


async def test_a_verification_token_proves_only_the_address_it_was_sent_to(
    app: FastAPI, client: httpx.AsyncClient, mailbox: Mailbox
) -> None:
    access = await signed_in(client)
    await request_verification(client, access)
    token = token_in(await mailbox.one_mail(), VERIFY_LINK)
    async with app.state.bastion.database.transaction() as session:
        await session.execute(
            update(User).where(User.username == "alice").values(email="alice@example.net")
        )
    assert_bad_link(await verify(client, token))
    assert (await me(client, access)).json()["email_verified"] is False
    assert (await events_of(app, "email_verified"))[-1].details["reason"] == "email_changed"


async def test_expired_wrong_and_other_purpose_tokens_open_nothing(
    app: FastAPI, client: httpx.AsyncClient, mailbox: Mailbox
) -> None:
    access = await signed_in(client)
    await request_verification(client, access)
    verify_token = token_in(await mailbox.one_mail(), VERIFY_LINK)
    reset_token = await reset_mail_token(app, client, mailbox)

    # A token of the other purpose opens nothing here, and is not spent by trying.
    assert_bad_link(await verify(client, reset_token))
    assert_bad_link(await reset(client, verify_token))
    for wrong in ("x", verify_token[:-1], verify_token + "A", "A" * 43, "é" * 20):
        assert_bad_link(await verify(client, wrong))
        assert_bad_link(await reset(client, wrong))

    async with app.state.bastion.database.transaction() as session:
        await session.execute(
            update(EmailToken).values(expires_at=utc_now() - timedelta(seconds=1))
        )
    assert_bad_link(await verify(client, verify_token))
    assert_bad_link(await reset(client, reset_token))
    assert (await me(client, access)).json()["email_verified"] is False
    await login(client, "alice", PASSWORD)  # the password did not change

    reasons = {
        event.details["reason"]
        for type in ("email_verified", "password_reset_completed")
        for event in await events_of(app, type)
    }
    assert reasons == {"unknown_token", "expired"}
    for type in ("email_verified", "password_reset_completed"):
        refused = await events_of(app, type)
        assert {event.outcome for event in refused} == {"failure"}
        # Whoever presents a refused token proved nothing: never recorded as the account.
        assert {event.actor_id for event in refused} == {None}


async def test_a_newer_token_replaces_the_older_one(
    app: FastAPI, client: httpx.AsyncClient, mailbox: Mailbox
) -> None:
    access = await signed_in(client)
    await request_verification(client, access)
    older_verify = token_in(await mailbox.one_mail(), VERIFY_LINK)
    older_reset = await reset_mail_token(app, client, mailbox)
    await age_tokens(app, MAIL_INTERVAL)
    await request_verification(client, access)
    newer_verify = token_in(await mailbox.one_mail(), VERIFY_LINK)
    newer_reset = await reset_mail_token(app, client, mailbox)

    async with app.state.bastion.database.read() as session:
        purposes = sorted(await session.scalars(select(EmailToken.purpose)))
    assert purposes == ["reset", "verify"]  # the older rows are gone
    assert_bad_link(await verify(client, older_verify))
    assert_bad_link(await reset(client, older_reset))
    assert (await verify(client, newer_verify)).status_code == 204
    assert (await reset(client, newer_reset)).status_code == 204


async def test_tokens_are_stored_only_as_hashes(
    app: FastAPI, client: httpx.AsyncClient, mailbox: Mailbox
) -> None:
    access = await signed_in(client)
    await request_verification(client, access)
    await forgot(client, "alice@example.com")
    # Before delivery: the queued mails hold the links, and must not show them either.
    dump = await _database_text(app)
    mails = {str(mail["Subject"]): mail for mail in await mailbox.new_mails()}
    tokens = [
        token_in(mails["Confirm your email address"], VERIFY_LINK),
        token_in(mails["Reset your password"], RESET_LINK),
    ]
    dump += await _database_text(app)
    async with app.state.bastion.database.read() as session:
        stored = set(await session.scalars(select(EmailToken.token_hash)))
    assert stored == {hashlib.sha256(token.encode()).hexdigest() for token in tokens}
    for token in tokens:
        assert token not in dump


async def _database_text(app: FastAPI) -> str:
    """Every value of the tables a token could be written to, as text."""
    found: list[Any] = []
    async with app.state.bastion.database.read() as session:
        for table in ("email_tokens", "mail_outbox", "audit_events", "users"):
            found.extend((await session.execute(text(f"SELECT * FROM {table}"))).all())  # noqa: S608
    return repr(found)


async def test_verification_is_throttled_per_account(
    app: FastAPI, client: httpx.AsyncClient, mailbox: Mailbox
) -> None:
    access = await signed_in(client)
    assert (await request_verification(client, access)).status_code == 202
    assert (await request_verification(client, access)).status_code == 202
    assert len(await mailbox.new_mails()) == 1
    events = await events_of(app, "email_verification_requested")
    assert [(event.outcome, event.details.get("reason")) for event in events] == [
        ("success", None),
        ("denied", "throttled"),
    ]


async def test_verification_requests_are_limited_per_user(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    access = await signed_in(client)
    answers = [(await request_verification(client, access)).status_code for _ in range(11)]
    assert answers == [202] * 10 + [429]


# -- password reset -----------------------------------------------------------------------


async def test_reset_sets_the_password_and_ends_every_session(
    app: FastAPI, client: httpx.AsyncClient, mailbox: Mailbox
) -> None:
    await register(client, "alice")
    first = await login(client, "alice")
    second = await login(client, "alice")
    browser = await browser_for(client, "alice")
    token = await reset_mail_token(app, client, mailbox)

    response = await reset(client, token)
    assert response.status_code == 204
    assert response.content == b""
    assert "set-cookie" not in response.headers  # nobody is signed in by a reset

    for tokens in (first, second):
        assert (await me(client, tokens["access_token"])).status_code == 401
        refused = await refresh(client, tokens["refresh_token"])
        assert (refused.status_code, refused.json()["error"]) == (400, "invalid_grant")
    try:
        assert (await browser.get("/auth/me")).status_code == 401
    finally:
        await browser.aclose()
    assert (await password_grant(client, "alice", PASSWORD)).status_code == 400
    await login(client, "alice", NEW_PASSWORD)
    assert_bad_link(await reset(client, token, "yet another long passphrase 2026"))
    await login(client, "alice", NEW_PASSWORD)  # the spent token changed nothing

    async with app.state.bastion.database.read() as session:
        reasons = set(
            await session.scalars(
                select(LoginSession.revoked_reason).where(LoginSession.revoked_at.is_not(None))
            )
        )
    assert reasons == {"password_reset"}
    completed = await events_of(app, "password_reset_completed")
    assert [(event.outcome, event.details.get("reason")) for event in completed] == [
        ("success", None),
        ("failure", "used"),
    ]
    assert completed[0].subject_id == completed[0].actor_id


async def test_the_reset_mail_says_what_it_is(
    app: FastAPI, client: httpx.AsyncClient, mailbox: Mailbox
) -> None:
    await register(client, "alice")
    assert (await forgot(client, "ALICE@example.com")).status_code == 202  # case folded
    mail = await mailbox.one_mail()
    assert (mail["To"], mail["Subject"]) == ("alice@example.com", "Reset your password")
    content = body_of(mail)
    assert "30 minutes" in content
    assert "If this was not you, ignore this mail" in content
    assert content.count(PUBLIC_URL) == 1
    assert "testserver" not in content


async def test_reset_keeps_the_lockout_and_mfa(
    app: FastAPI, client: httpx.AsyncClient, mailbox: Mailbox
) -> None:
    await register(client, "alice")
    threshold: int = app.state.bastion.settings.lockout_threshold
    for _ in range(threshold):
        await password_grant(client, "alice", WRONG_PASSWORD)
    async with app.state.bastion.database.transaction() as session:
        await session.execute(update(User).values(mfa_enabled=True))
        before = (
            await session.execute(select(User.locked_until, User.lockouts, User.failed_logins))
        ).one()
    assert before.locked_until is not None

    assert (await reset(client, await reset_mail_token(app, client, mailbox))).status_code == 204
    async with app.state.bastion.database.read() as session:
        after = (
            await session.execute(
                select(User.locked_until, User.lockouts, User.failed_logins, User.mfa_enabled)
            )
        ).one()
    assert (after.locked_until, after.lockouts, after.failed_logins) == tuple(before)
    assert after.mfa_enabled is True
    # Still locked: the new password does not sign in before the lock ends.
    assert (await password_grant(client, "alice", NEW_PASSWORD)).status_code == 400


async def test_reset_applies_the_password_policy_and_keeps_the_token(
    app: FastAPI, client: httpx.AsyncClient, mailbox: Mailbox
) -> None:
    await register(client, "alice")
    token = await reset_mail_token(app, client, mailbox)
    for weak in ("short", "alice@example.com and more", "qwertyuiop12345"):
        response = await reset(client, token, weak)
        assert response.status_code == 422, (weak, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert {tuple(error["loc"]) for error in response.json()["errors"]} == {
            ("body", "new_password")
        }
    assert (await reset(client, token)).status_code == 204


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/auth/email/verify", {"token": "x", "email_verified": True}),
        ("/auth/password/forgot", {"email": "alice@example.com", "username": "alice"}),
        ("/auth/password/reset", {"token": "x", "new_password": NEW_PASSWORD, "user_id": "1"}),
        ("/auth/password/reset", {"token": "x"}),
        ("/auth/password/forgot", {"email": "not an address"}),
    ],
)
async def test_bodies_other_than_the_schema_are_422(
    client: httpx.AsyncClient, path: str, body: dict[str, Any]
) -> None:
    response = await client.post(path, json=body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"


async def test_a_disabled_account_gets_no_mail_and_its_link_opens_nothing(
    app: FastAPI, client: httpx.AsyncClient, mailbox: Mailbox
) -> None:
    await register(client, "alice")
    token = await reset_mail_token(app, client, mailbox)
    async with app.state.bastion.database.transaction() as session:
        await session.execute(update(User).values(disabled=True))
    assert_bad_link(await reset(client, token))
    await age_tokens(app, MAIL_INTERVAL)
    assert (await forgot(client, "alice@example.com")).status_code == 202
    assert await mailbox.new_mails() == []
    requested = (await events_of(app, "password_reset_requested"))[-1]
    assert (requested.outcome, requested.details["reason"]) == ("failure", "disabled")
    failed = (await events_of(app, "password_reset_completed"))[-1]
    assert (failed.outcome, failed.details["reason"]) == ("failure", "disabled")


# -- enumeration and mail bombing -----------------------------------------------------------


def comparable(response: httpx.Response) -> tuple[int, bytes, list[tuple[str, str]]]:
    headers = sorted(
        (name.lower(), value)
        for name, value in response.headers.multi_items()
        if name.lower() not in VARYING_HEADERS
    )
    return response.status_code, response.content, headers


async def test_forgot_password_looks_the_same_for_any_address(
    app: FastAPI, client: httpx.AsyncClient, mailbox: Mailbox
) -> None:
    await register(client, "alice")
    await register(client, "bob")
    async with app.state.bastion.database.transaction() as session:
        await session.execute(update(User).where(User.username == "bob").values(disabled=True))
    answers = {
        "known": await forgot(client, "alice@example.com"),
        "throttled": await forgot(client, "alice@example.com"),
        "disabled": await forgot(client, "bob@example.com"),
        "unknown": await forgot(client, "nobody@example.com"),
    }
    reference = comparable(answers["unknown"])
    assert reference[0] == 202
    for case, response in answers.items():
        assert comparable(response) == reference, case

    mails = await mailbox.new_mails()
    assert [mail["To"] for mail in mails] == ["alice@example.com"]  # never an unknown one
    events = await events_of(app, "password_reset_requested")
    assert [(event.outcome, event.details.get("reason")) for event in events] == [
        ("success", None),
        ("denied", "throttled"),
        ("failure", "disabled"),
        ("failure", "unknown_address"),
    ]
    unknown = events[-1]
    assert unknown.subject_id is None
    assert "nobody" not in repr(unknown)


async def test_forgot_password_is_limited_per_address(app: FastAPI) -> None:
    async with _client_at(app, "198.51.100.1") as first, _client_at(app, "198.51.100.2") as second:
        answers = [(await forgot(first, f"u{n}@example.com")).status_code for n in range(11)]
        assert answers == [202] * 10 + [429]
        assert (await forgot(second, "u@example.com")).status_code == 202


async def test_forgot_password_does_the_same_work_for_any_address(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """Not the e2e timing test (tests/e2e/test_email_flows.py): the statements each path
    runs, so a path that skips the transaction (an early return) is caught on both backends."""
    await register(client, "alice")
    statements: list[str] = []
    engine = app.state.bastion.database.engine.sync_engine

    def collect(*args: Any) -> None:
        statements.append(str(args[2]).split()[0].upper())

    event.listen(engine, "before_cursor_execute", collect)
    try:
        await forgot(client, "nobody@example.com")
        unknown = list(statements)
        statements.clear()
        await forgot(client, "alice@example.com")
        known = list(statements)
    finally:
        event.remove(engine, "before_cursor_execute", collect)
    # The same reads, the same DELETE (of no row: the decoy's) and the audit append; only
    # the known path stores its token and outbox rows.
    for verb in ("SELECT", "DELETE", "UPDATE"):
        assert unknown.count(verb) == known.count(verb), verb
    assert unknown.count("DELETE") == 1
    assert known.count("INSERT") - unknown.count("INSERT") == 2


# -- the race -----------------------------------------------------------------------------


async def test_concurrent_resets_with_one_token_succeed_once(
    app: FastAPI, client: httpx.AsyncClient, mailbox: Mailbox
) -> None:
    await register(client, "alice")
    token = await reset_mail_token(app, client, mailbox)
    passwords = [f"racing passphrase number {index:02d}" for index in range(RACERS)]
    started = time.monotonic()
    answers = await asyncio.gather(*(reset(client, token, password) for password in passwords))
    statuses = sorted(response.status_code for response in answers)
    assert statuses == [204] + [400] * (RACERS - 1), (statuses, time.monotonic() - started)
    [winner] = [
        password
        for password, response in zip(passwords, answers, strict=True)
        if response.status_code == 204
    ]
    await login(client, "alice", winner)
    for loser in passwords:
        if loser != winner:
            assert (await password_grant(client, "alice", loser)).status_code == 400
    completed = await events_of(app, "password_reset_completed")
    assert sorted(event.outcome for event in completed) == ["failure"] * (RACERS - 1) + ["success"]


async def test_concurrent_verifications_with_one_token_succeed_once(
    app: FastAPI, client: httpx.AsyncClient, mailbox: Mailbox
) -> None:
    access = await signed_in(client)
    await request_verification(client, access)
    token = token_in(await mailbox.one_mail(), VERIFY_LINK)
    answers = await asyncio.gather(*(verify(client, token) for _ in range(RACERS)))
    assert sorted(response.status_code for response in answers) == [204] + [400] * (RACERS - 1)



@pytest.mark.parametrize(
    "path", ["/auth/email/verify", "/auth/password/forgot", "/auth/password/reset"]
)
async def test_bodies_over_16_kib_are_refused_unread(client: httpx.AsyncClient, path: str) -> None:
    oversized = b'{"token": "' + b"t" * SMALL_BODY_BYTES + b'"}'
    response = await client.post(
        path, content=oversized, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
