"""The outbox and its sender on SQLite and PostgreSQL with a real SMTP server: queued in the
request's transaction, encrypted at rest, delivered once, retried through outages, shared
safely between senders, and resent with the same Message-ID after a crash."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from bastion.config import Settings
from bastion.mail.message import Mail, parse
from bastion.mail.outbox import Claim, content_context, enqueue_mail, pending_count
from bastion.mail.sender import (
    KEEP_SENT,
    MAX_RETRY_SECONDS,
    STILL_FAILING_AFTER,
    MailSender,
    retry_delay,
)
from bastion.mail.transport import FileTransport, SmtpTransport, Transport
from bastion.security.encryption import EncryptionKeys
from bastion.storage.database import Database
from tests.mail.conftest import RECIPIENT, SENDER, MovableClock, enqueue, outbox_rows
from tests.servers.smtp import SmtpServer

TOKEN = "single-use-token-4f9c2a7e"
TEXT = f"Verify your address: https://bastion.example/verify?token={TOKEN}\n"


def _sender(
    database: Database,
    keys: EncryptionKeys,
    clock: MovableClock,
    transport: Transport,
    **options: object,
) -> MailSender:
    return MailSender(
        database=database, keys=keys, transport=transport, clock=clock, **options  # type: ignore[arg-type]
    )


async def test_a_mail_queued_in_a_transaction_that_rolls_back_is_never_sent(
    database: Database, keys: EncryptionKeys, clock: MovableClock, smtp_server: SmtpServer
) -> None:
    with pytest.raises(RuntimeError):
        async with database.transaction() as session:
            await enqueue_mail(
                session, keys=keys, sender=SENDER, recipient=RECIPIENT,
                subject="Hi", text=TEXT, now=clock(),
            )
            raise RuntimeError("the request failed after queueing")
    sender = _sender(database, keys, clock, SmtpTransport(smtp_server.url))
    assert await sender.deliver_due() == 0
    assert await outbox_rows(database) == []
    assert smtp_server.messages == []


async def test_delivery_through_smtp_with_the_queued_headers(
    database: Database, keys: EncryptionKeys, clock: MovableClock, smtp_server: SmtpServer
) -> None:
    message_id = await enqueue(database, keys, clock, text=TEXT)
    sender = _sender(database, keys, clock, SmtpTransport(smtp_server.url))
    with capture_logs() as logs:
        assert await sender.deliver_due() == 1
    [received] = smtp_server.received
    assert received.sender == "bastion@example.org"
    assert received.recipients == (RECIPIENT,)
    message = parse(received.data)
    assert message["Message-ID"] == message_id
    assert message["From"] == SENDER
    assert message["To"] == RECIPIENT
    assert message["Subject"] == "Verify your address"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["Date"] == "Wed, 02 Dec 2026 12:00:00 +0000"
    assert TOKEN in message.get_content()
    [row] = await outbox_rows(database)
    assert row.sent_at == clock()
    assert row.content is None
    assert row.lease_owner is None and row.lease_expires_at is None
    assert [entry["event"] for entry in logs] == ["mail_delivered"]
    assert RECIPIENT not in repr(logs)
    # Nothing more to do: a second pass sends nothing again.
    assert await sender.deliver_due() == 0
    assert len(smtp_server.messages) == 1


@pytest.mark.parametrize("tls", ["starttls", "smtps"])
async def test_delivery_over_tls(
    database: Database,
    keys: EncryptionKeys,
    clock: MovableClock,
    tls: str,
    request: pytest.FixtureRequest,
) -> None:
    server: SmtpServer = request.getfixturevalue(f"{tls}_server")
    message_id = await enqueue(database, keys, clock)
    transport = SmtpTransport(server.url, tls_context=server.client_tls_context())
    assert await _sender(database, keys, clock, transport).deliver_due() == 1
    [data] = server.messages
    assert parse(data)["Message-ID"] == message_id


async def test_the_queued_message_is_encrypted_at_rest_and_dropped_once_sent(
    database: Database,
    keys: EncryptionKeys,
    clock: MovableClock,
    smtp_server: SmtpServer,
    settings: Settings,
) -> None:
    message_id = await enqueue(database, keys, clock, text=TEXT)
    [row] = await outbox_rows(database)
    assert row.content is not None
    assert TOKEN not in row.content
    assert "verify" not in row.content.lower()
    opened = keys.decrypt(row.content, context=content_context(message_id))
    assert TOKEN in parse(opened.encode()).get_content()
    if database.backend == "sqlite":
        stored = b"".join(
            path.read_bytes()
            for path in settings.data_dir.iterdir()
            if path.name.startswith(settings.sqlite_path.name)
        )
        assert TOKEN.encode() not in stored
        assert message_id.encode() in stored  # the check does look at the right bytes
    await _sender(database, keys, clock, SmtpTransport(smtp_server.url)).deliver_due()
    [row] = await outbox_rows(database)
    assert row.content is None


async def test_a_server_outage_delays_mail_and_loses_none(
    database: Database, keys: EncryptionKeys, clock: MovableClock, smtp_server: SmtpServer
) -> None:
    ids = [await enqueue(database, keys, clock) for _ in range(3)]
    sender = _sender(database, keys, clock, SmtpTransport(smtp_server.url))
    smtp_server.stop()
    started = time.monotonic()
    with capture_logs() as logs:
        assert await sender.deliver_due() == 0
    assert time.monotonic() - started < 3
    rows = await outbox_rows(database)
    tried = [row for row in rows if row.attempts == 1]
    # The server is down: the pass stops at the first failure, the others keep their place.
    assert len(tried) == 1
    [failed] = tried
    assert failed.last_error == "SMTPConnectError"
    assert failed.lease_owner is None
    assert clock() + timedelta(seconds=3.9) <= failed.next_attempt_at
    assert failed.next_attempt_at <= clock() + timedelta(seconds=5)
    [warning] = logs
    assert warning["event"] == "mail_delivery_failed"
    assert warning["message_id"] == failed.message_id
    assert warning["attempts"] == 1
    assert RECIPIENT not in repr(logs)
    # The other two are still due: the next pass tries again (the server is still down).
    assert await sender.deliver_due() == 0
    assert sum(row.attempts for row in await outbox_rows(database)) == 2

    smtp_server.start()
    # Not yet due again: nothing is sent before the back-off ends...
    assert await sender.deliver_due() == 1  # ...but the third, never tried, is due
    clock.advance(timedelta(seconds=6))
    assert await sender.deliver_due() == 2
    assert await sender.deliver_due() == 0
    received = sorted(parse(data)["Message-ID"] for data in smtp_server.messages)
    assert received == sorted(ids)
    async with database.read() as session:
        assert await pending_count(session) == 0


async def test_retries_back_off_to_the_cap_and_never_give_up(
    database: Database, keys: EncryptionKeys, clock: MovableClock, smtp_server: SmtpServer
) -> None:
    assert retry_delay(1) <= timedelta(seconds=5)
    assert retry_delay(2) > timedelta(seconds=7)
    assert retry_delay(50) <= timedelta(seconds=MAX_RETRY_SECONDS)
    assert retry_delay(50) >= timedelta(seconds=0.8 * MAX_RETRY_SECONDS)
    await enqueue(database, keys, clock)
    smtp_server.stop()
    sender = _sender(database, keys, clock, SmtpTransport(smtp_server.url))
    with capture_logs() as logs:
        for _ in range(STILL_FAILING_AFTER + 2):
            assert await sender.deliver_due() == 0
            clock.advance(timedelta(seconds=MAX_RETRY_SECONDS))
    events = [entry["event"] for entry in logs]
    assert events.count("mail_delivery_failed") == STILL_FAILING_AFTER - 1
    assert events.count("mail_delivery_still_failing") == 3
    assert {entry["log_level"] for entry in logs if "still" in entry["event"]} == {"error"}
    smtp_server.start()
    assert await sender.deliver_due() == 1


async def test_two_senders_racing_deliver_each_mail_once(
    database: Database,
    keys: EncryptionKeys,
    clock: MovableClock,
    smtp_server: SmtpServer,
    settings: Settings,
) -> None:
    ids = [await enqueue(database, keys, clock) for _ in range(10)]
    senders = [
        _sender(database, keys, clock, SmtpTransport(smtp_server.url)) for _ in range(2)
    ]
    # A second Database is a second pool: a second process as far as the rows can tell.
    other = Database.from_settings(settings)
    senders.append(_sender(other, keys, clock, SmtpTransport(smtp_server.url)))
    try:
        counts = await asyncio.gather(*(sender.deliver_due() for sender in senders))
        counts.extend(await asyncio.gather(*(sender.deliver_due() for sender in senders)))
    finally:
        await other.dispose()
    assert sum(counts) == 10
    received = sorted(parse(data)["Message-ID"] for data in smtp_server.messages)
    assert received == sorted(ids)


class _CrashAfterSending(MailSender):
    """A sender that dies after the server took the mail, before recording it."""

    async def _confirm(self, _claim: Claim) -> bool:
        raise SystemExit("killed between the server's 250 and the commit")


async def test_a_crash_after_sending_resends_with_the_same_message_id(
    database: Database, keys: EncryptionKeys, clock: MovableClock, smtp_server: SmtpServer
) -> None:
    message_id = await enqueue(database, keys, clock)
    crashing = _CrashAfterSending(
        database=database, keys=keys, transport=SmtpTransport(smtp_server.url), clock=clock
    )
    with pytest.raises(SystemExit):
        await crashing.deliver_due()
    [row] = await outbox_rows(database)
    assert row.sent_at is None and row.lease_owner is not None
    survivor = _sender(database, keys, clock, SmtpTransport(smtp_server.url))
    # While the dead sender's lease runs, nobody else takes the mail...
    assert await survivor.deliver_due() == 0
    # ...once it has expired, the mail is sent again: the same message, the same id.
    clock.advance(timedelta(minutes=6))
    assert await survivor.deliver_due() == 1
    first, second = smtp_server.messages
    assert parse(first)["Message-ID"] == parse(second)["Message-ID"] == message_id
    assert first == second
    [row] = await outbox_rows(database)
    assert row.sent_at is not None and row.content is None
    assert await survivor.deliver_due() == 0
    assert len(smtp_server.messages) == 2


async def test_a_sender_whose_lease_was_taken_over_does_not_confirm(
    database: Database, keys: EncryptionKeys, clock: MovableClock, smtp_server: SmtpServer
) -> None:
    """A sender so slow its lease expired: the one that took over records the delivery."""
    await enqueue(database, keys, clock)
    survivor = _sender(database, keys, clock, SmtpTransport(smtp_server.url))

    class _Slow(MailSender):
        async def _deliver(self, claim: Claim) -> None:
            await super()._deliver(claim)
            clock.advance(timedelta(minutes=6))
            assert await survivor.deliver_due() == 1

    slow = _Slow(
        database=database, keys=keys, transport=SmtpTransport(smtp_server.url), clock=clock
    )
    with capture_logs() as logs:
        assert await slow.deliver_due() == 0
    assert "mail_lease_lost" in [entry["event"] for entry in logs]
    assert len(smtp_server.messages) == 2
    [row] = await outbox_rows(database)
    assert row.sent_at is not None


async def test_the_loop_sends_when_woken_and_stops_cleanly(
    database: Database, keys: EncryptionKeys, clock: MovableClock, smtp_server: SmtpServer
) -> None:
    sender = _sender(
        database, keys, clock, SmtpTransport(smtp_server.url), poll_seconds=60.0
    )
    sender.wake()  # not running: nothing happens
    await sender.start()
    await sender.start()  # once is enough
    try:
        await asyncio.sleep(0.05)
        await enqueue(database, keys, clock)
        sender.wake()
        for _ in range(200):
            if smtp_server.messages:
                break
            await asyncio.sleep(0.01)
        assert len(smtp_server.messages) == 1
    finally:
        await sender.stop()
    assert not sender.running
    await sender.stop()  # twice is harmless


async def test_the_loop_outlives_a_database_outage(
    tmp_path: Path, keys: EncryptionKeys, clock: MovableClock, smtp_server: SmtpServer
) -> None:
    """No tables at all (every statement fails): the loop logs and carries on."""
    from tests.conftest import make_settings

    database = Database.from_settings(make_settings(tmp_path / "empty"))
    sender = _sender(
        database, keys, clock, SmtpTransport(smtp_server.url), poll_seconds=0.01, start_delay=0
    )
    try:
        with capture_logs() as logs:
            await sender.start()
            await asyncio.sleep(0.2)
            assert sender.running
        events = {entry["event"] for entry in logs}
        assert events & {"mail_sender_pass_failed", "mail_sender_database_unavailable"}
    finally:
        await sender.stop()
        await database.dispose()


async def test_delivered_rows_are_purged_after_a_week(
    database: Database, keys: EncryptionKeys, clock: MovableClock, tmp_path: Path
) -> None:
    await enqueue(database, keys, clock)
    sender = _sender(database, keys, clock, FileTransport(tmp_path / "outbox"))
    assert await sender.deliver_due() == 1
    await enqueue(database, keys, clock)  # not sent: never purged
    clock.advance(KEEP_SENT - timedelta(minutes=1))
    assert await sender.purge_delivered() == 0
    clock.advance(timedelta(minutes=2))
    assert await sender.purge_delivered() == 1
    [left] = await outbox_rows(database)
    assert left.sent_at is None


async def test_the_file_transport_through_the_outbox(
    database: Database, keys: EncryptionKeys, clock: MovableClock, tmp_path: Path
) -> None:
    message_id = await enqueue(database, keys, clock, text=TEXT)
    directory = tmp_path / "data" / "outbox"
    assert await _sender(database, keys, clock, FileTransport(directory)).deliver_due() == 1
    [path] = directory.iterdir()
    assert path.name == message_id.strip("<>") + ".eml"
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)
    assert oct(directory.stat().st_mode & 0o777) == oct(0o700)
    assert TOKEN in parse(path.read_bytes()).get_content()


class _BrokenTransport:
    """A transport with a bug: an exception no transport should raise."""

    kind = "broken"

    async def deliver(self, mail: Mail) -> None:
        raise KeyError(mail.recipient)


async def test_an_unexpected_error_counts_as_a_failed_attempt(
    database: Database, keys: EncryptionKeys, clock: MovableClock
) -> None:
    await enqueue(database, keys, clock)
    with capture_logs() as logs:
        assert await _sender(database, keys, clock, _BrokenTransport()).deliver_due() == 0
    [row] = await outbox_rows(database)
    assert (row.attempts, row.last_error, row.lease_owner) == (1, "KeyError", None)
    assert [entry["event"] for entry in logs] == ["mail_delivery_error", "mail_delivery_failed"]
    assert RECIPIENT not in repr(logs)
