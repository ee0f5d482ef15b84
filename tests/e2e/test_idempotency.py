"""``Idempotency-Key`` through the real server: a retried create is answered, not repeated.

The second test makes finding 7 of issue 11 happen for real: a TCP proxy between the service
and PostgreSQL lets the transaction that inserts a note commit, then cuts the connection
before the commit's answer reaches the service. The note is stored, the client is told 503.
Without a key its retry writes the note again; with one it gets the first answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.api import Account, Api, connected
from tests.e2e.conftest import (
    LiveServer,
    assert_problem,
    assert_secure_headers,
    migrate,
    running,
    serve_command,
    service_env,
)
from tests.servers.postgres import PostgresServer, free_port

NOTE = {"title": "Invoice 2026-0042", "body": "<p>paid</p>"}


def post_note(api: Api, who: Account, key: str | None, body: dict[str, Any]) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key is not None else {}
    return api.request("POST", "/notes", who, json=body, headers=headers)


def note_ids(api: Api, who: Account) -> list[str]:
    page = api.ok("GET", "/notes", who)
    return [note["id"] for note in page["items"]]


def test_a_retried_create_is_answered_not_repeated(sqlite_server: LiveServer) -> None:
    with connected(sqlite_server) as api:
        alice = api.new_account("idem")
        first = post_note(api, alice, "e2e-order-1", NOTE)
        assert first.status_code == 201, first.text
        again = post_note(api, alice, "e2e-order-1", NOTE)
        assert again.status_code == 201, again.text
        assert again.content == first.content
        assert again.headers["location"] == first.headers["location"]
        assert again.headers["idempotent-replayed"] == "true"
        assert_secure_headers(again)
        assert note_ids(api, alice) == [first.json()["id"]]

        reused = post_note(api, alice, "e2e-order-1", {**NOTE, "title": "another"})
        assert assert_problem(reused, 422)["errors"][0]["loc"] == ["header", "Idempotency-Key"]
        assert_problem(post_note(api, alice, "two words", NOTE), 400)
        assert note_ids(api, alice) == [first.json()["id"]]


# -- a commit the service is told failed -----------------------------------------------------

_SSL_REQUEST, _GSSENC_REQUEST = 80877103, 80877104


@dataclass
class _Link:
    """One proxied connection: whether its transaction inserted a note, and whether its
    commit's answer is to be swallowed."""

    inserted: bool = False
    cut: bool = False


class CommitCutter:
    """A TCP proxy in front of PostgreSQL. Once ``arm()``ed, the next connection that sends
    an ``INSERT INTO notes`` and then ``COMMIT`` has the commit forwarded and executed, and
    is closed the moment PostgreSQL answers: the write committed, the service never hears.

    It reads the frontend's side of the protocol (PostgreSQL's wire protocol v3): the
    untyped start-up messages (an SSLRequest, answered "N" by the test server, which has no
    TLS; then the StartupMessage), then typed messages, one byte of type and a length."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.fired = threading.Event()
        self._armed = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    def __enter__(self) -> CommitCutter:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", self.port), self._loop
        ).result(timeout=5)
        return self

    def __exit__(self, *_exc: object) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def arm(self) -> None:
        self.fired.clear()
        self._armed = True

    async def _serve(self, client: asyncio.StreamReader, to_client: asyncio.StreamWriter) -> None:
        try:
            server, to_server = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            to_client.close()
            return
        link = _Link()
        await asyncio.gather(
            self._upstream(client, to_server, link),
            self._downstream(server, to_client, link),
            return_exceptions=True,
        )

    async def _upstream(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link
    ) -> None:
        try:
            while True:  # start-up: untyped messages until the StartupMessage
                head = await reader.readexactly(8)
                length, code = struct.unpack("!ii", head)
                writer.write(head + await reader.readexactly(length - 8))
                if code not in (_SSL_REQUEST, _GSSENC_REQUEST):
                    break
            while True:
                head = await reader.readexactly(5)
                payload = await reader.readexactly(struct.unpack("!i", head[1:])[0] - 4)
                if self._armed and not link.cut:
                    if b"INSERT INTO notes " in payload:
                        link.inserted = True
                    elif link.inserted and head[:1] == b"Q" and payload.startswith(b"COMMIT"):
                        link.cut = True
                        self._armed = False
                writer.write(head + payload)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _downstream(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link
    ) -> None:
        try:
            while data := await reader.read(65536):
                if link.cut:  # the commit's answer: PostgreSQL committed; drop it and go
                    self.fired.set()
                    break
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()


@contextlib.contextmanager
def served_through_cutter(
    postgres: PostgresServer, root: Path
) -> Iterator[tuple[LiveServer, CommitCutter]]:
    """``bastion serve`` on a fresh migrated database, reaching PostgreSQL through a
    ``CommitCutter``."""
    name = asyncio.run(postgres.create_database())
    try:
        with CommitCutter(postgres.port) as cutter:
            url = postgres.url(name).replace(f":{postgres.port}/", f":{cutter.port}/")
            env = service_env(root / "data", database_url=url)
            migrate(env, root)
            with running(serve_command, root=root, env=env, backend="postgresql") as server:
                yield server, cutter
    finally:
        asyncio.run(postgres.drop_database(name))


def test_a_503_that_hid_a_commit_is_answered_by_the_retry(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    with served_through_cutter(postgres_server, tmp_path) as (server, cutter):
        with connected(server) as api:
            alice = api.new_account("cut")

            # The finding: the 503 hides a note that was stored.
            cutter.arm()
            hidden = post_note(api, alice, None, {**NOTE, "title": "no key"})
            assert cutter.fired.is_set()
            assert_problem(hidden, 503)
            assert len(note_ids(api, alice)) == 1

            # With a key the retry is answered from the record the commit stored.
            cutter.arm()
            failed = post_note(api, alice, "e2e-invoice-42", NOTE)
            assert cutter.fired.is_set()
            assert_problem(failed, 503)
            stored = [note for note in api.ok("GET", "/notes", alice)["items"]
                      if note["title"] == NOTE["title"]]
            assert len(stored) == 1
            retried = post_note(api, alice, "e2e-invoice-42", NOTE)
            assert retried.status_code == 201, retried.text
            assert retried.headers["idempotent-replayed"] == "true"
            assert retried.json() == stored[0]
            assert retried.headers["location"] == f"/notes/{stored[0]['id']}"
            assert len(note_ids(api, alice)) == 2
