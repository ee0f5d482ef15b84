"""The background loop of a process that moves mail from the outbox to the mail server.

Every process (every uvicorn worker, on every host) runs one; they share the outbox through
leases (``bastion.mail.outbox``), so each mail is held by one sender at a time. A pass
claims what is due, one mail at a time, and talks to the mail server outside any database
transaction (SQLite's write lock is never held across the network). Delivery is at least
once: a sender that dies after the server took a mail but before recording it leaves a
lease that expires, and the mail is sent again, with the same ``Message-ID``.

Nothing here lets a request wait or fail: requests only queue (``enqueue_mail``) and call
``wake()``. A failed mail is retried with exponential back-off (5 s doubling to 15 min,
jittered) for as long as it takes; a server that is down stops the pass, and the loop waits
before the next; a database that does not answer is waited out. The loop never ends on an
error, only on ``stop()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import socket
import time
from datetime import datetime, timedelta

from bastion.clock import Clock, utc_now
from bastion.logs import get_logger
from bastion.mail.message import mail_from_stored
from bastion.mail.outbox import (
    Claim,
    claim_mail,
    content_context,
    due_mail_ids,
    mark_failed,
    mark_sent,
    purge_sent,
)
from bastion.mail.transport import DeliveryError, Transport, failure_reason
from bastion.security.encryption import DecryptionFailed, EncryptionKeys
from bastion.storage.database import Database, StorageUnavailable

log = get_logger("bastion.mail")

FIRST_RETRY_SECONDS = 5.0
MAX_RETRY_SECONDS = 15 * 60.0
# From this many failed attempts on, each further failure is logged as an error: someone
# should look (about 40 minutes of retries at the back-off above).
STILL_FAILING_AFTER = 10
# Longer than a delivery can take (the transport's bound), so a live sender never loses
# its lease mid-delivery; short enough that a crashed sender's mail leaves soon after.
LEASE = timedelta(minutes=5)
POLL_SECONDS = 1.0
# The first pass waits this long after start (or until a wake): the process's start-up
# work and first requests come first, and a restart of every worker does not send them all
# to the database and the mail server in the same instant.
START_DELAY_SECONDS = 5.0
BATCH = 20
KEEP_SENT = timedelta(days=7)
PURGE_EVERY_SECONDS = 3600.0
# While the mail server or the database is down, passes are this far apart (doubling).
OUTAGE_PAUSE_SECONDS = (1.0, 60.0)

_jitter = random.Random()  # noqa: S311 (spreads retries; nothing secret depends on it)


def retry_delay(attempts: int) -> timedelta:
    """How long after the ``attempts``-th failure the mail is tried again: 5 s doubling,
    at most 15 minutes, less up to a fifth at random so that mails failed together (an
    outage) do not all come back in the same second."""
    exponent = min(max(attempts - 1, 0), 20)
    delay = min(MAX_RETRY_SECONDS, FIRST_RETRY_SECONDS * 2**exponent)
    return timedelta(seconds=delay * _jitter.uniform(0.8, 1.0))


def _lease_token() -> str:
    """Who holds a mail (host and pid, for whoever reads the table) and which claim: fresh
    for every claim, so a sender's stale claim can never confirm a later one."""
    return f"{socket.gethostname()[:32]}/{os.getpid()}/{secrets.token_hex(8)}"


class MailSender:
    """One per process: ``start()`` at start-up, ``stop()`` at shut-down, ``wake()`` after a
    request queued a mail. ``deliver_due()`` is one pass, for tests and the loop."""

    def __init__(
        self,
        *,
        database: Database,
        keys: EncryptionKeys,
        transport: Transport,
        clock: Clock = utc_now,
        lease: timedelta = LEASE,
        poll_seconds: float = POLL_SECONDS,
        start_delay: float = START_DELAY_SECONDS,
        batch: int = BATCH,
    ) -> None:
        self.database = database
        self.keys = keys
        self.transport = transport
        self.clock = clock
        self.lease = lease
        self.poll_seconds = poll_seconds
        self.start_delay = start_delay
        self.batch = batch
        self._task: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Event | None = None
        self._server_down = False
        self._last_purge = float("-inf")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def wake(self) -> None:
        """A request just queued a mail: look now (no-op if not running)."""
        if self._wakeup is not None and self.running:
            self._wakeup.set()

    async def start(self) -> None:
        """Starts the background loop (one asyncio task); a second call does nothing."""
        if self.running:
            return
        self._wakeup = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="bastion-mail-sender")
        log.info("mail_sender_started", transport=self.transport.kind)

    async def stop(self) -> None:
        """Cancels the loop and waits for it. A mail being sent at that moment keeps its
        lease until it expires, and is then sent again (at least once)."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _run(self) -> None:
        await self._idle(self.start_delay)
        pauses = 0
        while True:
            try:
                delivered = await self.deliver_due()
                await self._purge_now_and_then()
            except StorageUnavailable as unavailable:
                outage = unavailable.outage
                log.warning(
                    "mail_sender_database_unavailable",
                    dependency=outage.dependency, error=outage.error, code=outage.code,
                )
                pauses += 1
                await asyncio.sleep(self._outage_pause(pauses))
                continue
            except Exception:  # the loop must outlive any bug: log it and carry on
                log.exception("mail_sender_pass_failed")
                pauses += 1
                await asyncio.sleep(self._outage_pause(pauses))
                continue
            if self._server_down:
                pauses += 1
                await asyncio.sleep(self._outage_pause(pauses))
                continue
            pauses = 0
            if delivered < self.batch:
                await self._idle(self.poll_seconds)

    def _outage_pause(self, pauses: int) -> float:
        first, longest = OUTAGE_PAUSE_SECONDS
        return float(min(longest, first * 2 ** min(pauses - 1, 10)))

    async def _idle(self, seconds: float) -> None:
        """Waits ``seconds``, or less if ``wake()`` is called."""
        wakeup = self._wakeup
        assert wakeup is not None  # noqa: S101 (set by start)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await wakeup.wait()
        wakeup.clear()

    async def _purge_now_and_then(self) -> None:
        if time.monotonic() - self._last_purge < PURGE_EVERY_SECONDS:
            return
        self._last_purge = time.monotonic()
        await self.purge_delivered()

    async def purge_delivered(self) -> int:
        """Deletes the rows of mails delivered more than 7 days ago; how many."""
        async with self.database.transaction() as session:
            purged = await purge_sent(session, before=self.clock() - KEEP_SENT)
        if purged:
            log.info("mail_outbox_purged", rows=purged)
        return purged

    async def deliver_due(self) -> int:
        """One pass: claim and deliver what is due; returns how many were delivered.

        Stops early when the server is down (the other mails would fail the same way and
        keep their place). ``StorageUnavailable`` propagates: the loop waits it out."""
        async with self.database.read() as session:
            candidates = await due_mail_ids(session, now=self.clock(), limit=self.batch)
        delivered = 0
        self._server_down = False
        for row_id in candidates:
            async with self.database.transaction() as session:
                claim = await claim_mail(
                    session, row_id, lease=_lease_token(), now=self.clock(), duration=self.lease
                )
            if claim is None:
                continue  # another sender has it, or sent it
            try:
                await self._deliver(claim)
            except DeliveryError as failure:
                await self._failed(claim, failure.reason)
                if failure.server_down:
                    self._server_down = True
                    break
                continue
            except Exception as error:  # a bug: count the attempt rather than hold the lease
                # No traceback: its text may quote the message or the address.
                log.error(  # noqa: TRY400
                    "mail_delivery_error",
                    message_id=claim.message_id, error=failure_reason(error),
                )
                await self._failed(claim, failure_reason(error))
                continue
            if await self._confirm(claim):
                delivered += 1
        return delivered

    async def _deliver(self, claim: Claim) -> None:
        if claim.content is None:  # cannot happen while sent_at is NULL; say so if it does
            raise DeliveryError("ContentMissing", server_down=False)
        try:
            content = self.keys.decrypt(claim.content, context=content_context(claim.message_id))
        except DecryptionFailed:
            # The key that encrypted it is no longer configured: it may come back.
            raise DeliveryError("DecryptionFailed", server_down=False) from None
        mail = mail_from_stored(
            content, message_id=claim.message_id, recipient=claim.recipient
        )
        await self.transport.deliver(mail)

    async def _confirm(self, claim: Claim) -> bool:
        now = self.clock()
        async with self.database.transaction() as session:
            confirmed = await mark_sent(session, claim, now=now)
        if confirmed:
            log.info("mail_delivered", message_id=claim.message_id, attempts=claim.attempts + 1)
        else:
            log.warning("mail_lease_lost", message_id=claim.message_id)
        return confirmed

    async def _failed(self, claim: Claim, reason: str) -> None:
        attempts = claim.attempts + 1
        next_attempt_at: datetime = self.clock() + retry_delay(attempts)
        async with self.database.transaction() as session:
            await mark_failed(session, claim, error=reason, next_attempt_at=next_attempt_at)
        # The message id, never the address: the address is personal data.
        fields = {
            "message_id": claim.message_id,
            "attempts": attempts,
            "error": reason,
            "next_attempt_at": next_attempt_at.isoformat(),
        }
        if attempts >= STILL_FAILING_AFTER:
            log.error("mail_delivery_still_failing", **fields)
        else:
            log.warning("mail_delivery_failed", **fields)
