"""The service's own sender: built from the settings, running from start to stop, and
delivering what a request queued as soon as it is woken."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI

from bastion.app import create_app
from bastion.clock import utc_now
from bastion.config import Settings
from bastion.mail.message import parse
from bastion.mail.outbox import enqueue_mail
from bastion.mail.transport import FileTransport, SmtpTransport
from bastion.services import services_of
from bastion.storage.migrate import upgrade_to_head
from tests.conftest import make_settings
from tests.mail.conftest import RECIPIENT
from tests.servers.smtp import SmtpServer


async def _queue_and_wake(app: FastAPI) -> str:
    services = services_of(app)
    async with services.database.transaction() as session:
        message_id = await enqueue_mail(
            session,
            keys=services.encryption,
            sender=services.settings.mail_from,
            recipient=RECIPIENT,
            subject="Hello",
            text="A mail queued by a request.\n",
            now=utc_now(),
        )
    services.mail.wake()
    return message_id


async def _eventually(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("not within the time")


async def test_without_smtp_the_app_writes_eml_files_to_the_data_dir(
    app: FastAPI, settings: Settings
) -> None:
    services = services_of(app)
    assert isinstance(services.mail.transport, FileTransport)
    assert services.mail.running
    message_id = await _queue_and_wake(app)
    outbox = settings.data_dir / "outbox"
    # Only the renamed file counts: a temporary one may be there for a moment first.
    await _eventually(lambda: outbox.is_dir() and any(outbox.glob("*.eml")))
    [path] = outbox.glob("*.eml")
    assert parse(path.read_bytes())["Message-ID"] == message_id
    assert parse(path.read_bytes())["From"] == settings.mail_from


async def test_with_smtp_the_app_sends_through_the_server_and_stops_its_sender(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    settings = make_settings(
        tmp_path / "data", smtp_url=smtp_server.url, mail_from="bastion@example.org"
    )
    app = create_app(settings)
    services = services_of(app)
    assert isinstance(services.mail.transport, SmtpTransport)
    assert not services.mail.running
    await upgrade_to_head(services.database.engine)
    async with app.router.lifespan_context(app):
        assert services.mail.running
        message_id = await _queue_and_wake(app)
        await _eventually(lambda: bool(smtp_server.messages))
    assert not services.mail.running
    [data] = smtp_server.messages
    assert parse(data)["Message-ID"] == message_id
    assert message_id.endswith("@example.org>")
