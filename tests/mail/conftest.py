"""The mail tests' pieces: a migrated database on each backend (the ``settings`` fixture's),
the test encryption key, a clock the test moves, and real SMTP servers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from bastion.config import Settings
from bastion.mail.outbox import enqueue_mail
from bastion.security.encryption import EncryptionKeys
from bastion.storage.database import Database
from bastion.storage.migrate import upgrade_to_head
from bastion.storage.tables import OutboxMail
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.servers.smtp import SmtpServer, TlsMode

SENDER = "bastion <bastion@example.org>"
RECIPIENT = "ada@example.com"


class MovableClock:
    """``now`` stands still until the test moves it: retries and leases come due on cue."""

    def __init__(self) -> None:
        self.now = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


@pytest.fixture
def keys() -> EncryptionKeys:
    return EncryptionKeys.parse(TEST_ENCRYPTION_KEY)


@pytest.fixture
async def database(settings: Settings) -> AsyncIterator[Database]:
    database = Database.from_settings(settings)
    await upgrade_to_head(database.engine)
    yield database
    await database.dispose()


def _server(tls: TlsMode) -> Iterator[SmtpServer]:
    server = SmtpServer(tls=tls).start()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    yield from _server("plain")


@pytest.fixture
def starttls_server() -> Iterator[SmtpServer]:
    yield from _server("starttls")


@pytest.fixture
def smtps_server() -> Iterator[SmtpServer]:
    yield from _server("smtps")


async def enqueue(
    database: Database,
    keys: EncryptionKeys,
    clock: MovableClock,
    *,
    text: str = "Your link: https://bastion.example/verify?token=abc",
    recipient: str = RECIPIENT,
) -> str:
    """Queues one mail in a transaction of its own; its Message-ID."""
    async with database.transaction() as session:
        return await enqueue_mail(
            session,
            keys=keys,
            sender=SENDER,
            recipient=recipient,
            subject="Verify your address",
            text=text,
            now=clock(),
        )


async def outbox_rows(database: Database) -> list[OutboxMail]:
    async with database.read() as session:
        return list((await session.scalars(select(OutboxMail))).all())
