"""A small load on a live server, and the check of what it was told, for the fault suite.

``Load`` runs ``clients`` threads against a base URL, each with an account of its own: it
registers, logs in, then creates notes (and, with ``reads``, reads one of them back) until
stopped, retrying through 503s and broken connections. Every answer is kept in a ``Ledger``:

- ``accounts``: every registration answered 201 (username, password, id);
- ``notes``: every acknowledged write, a note answered 201, with the id, title and body
  the answer gave;
- ``answers``: one ``Answer`` a request (method, route, status or transport error, the
  ``Retry-After`` header, the request id sent as ``X-Request-ID``).

``verify(base_url, ledger)``, after the fault and a restart, logs every account in again and
checks that each acknowledged note is there, readable by its owner, with its title and body,
and that nothing is half-written: every note an owner lists is readable and names that
owner. It returns what it found, including the notes stored but never acknowledged (in
flight when the fault struck: allowed after kill -9, not after a graceful stop).

Typical use::

    with Load(server.base_url, clients=4) as load:
        load.wait_for_notes(20)
        inject_the_fault()
    ledger = load.ledger
    ledger.assert_no_server_error()        # no 5xx but 503, ever
    restart_the_server()
    verify(server.base_url, ledger)

The server needs roomy rate limits for this (``ROOMY_LIMITS_ENV``, as ``BASTION_*`` values
through ``service_env``): every client registers and logs in from the same address.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import httpx

from tests.identity.helpers import PASSWORD, account_form, bearer, password_form

# Limits no load of this module reaches (``service_env(..., **ROOMY_LIMITS_ENV)``).
ROOMY_LIMITS_ENV = {
    "rate_limit_login": "100000/minute",
    "rate_limit_register": "100000/minute",
    "rate_limit_default": "1000000/minute",
}
RETRY_PAUSE_SECONDS = 0.05
STOP_TIMEOUT_SECONDS = 30.0
PAGE = 100

_loads = itertools.count(1)


@dataclass(frozen=True)
class Answer:
    """One request of the load and how it ended: a status, or a transport error's class."""

    method: str
    route: str  # "/auth/register", "/auth/token", "/notes", "/notes/{id}"
    request_id: str
    status: int | None
    error: str | None = None
    retry_after: str | None = None
    sent: float = 0.0  # time.monotonic() when the request was sent
    at: float = 0.0  # time.monotonic() when the answer (or the error) came
    # The answer itself, for the checks of tests.faults.checks (None after an error).
    response: httpx.Response | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class LoadAccount:
    id: str
    username: str
    password: str


@dataclass(frozen=True)
class AcknowledgedNote:
    """A write the server acknowledged (201): what it promised to keep."""

    id: str
    owner: LoadAccount
    title: str
    body: str


@dataclass
class Ledger:
    """Everything a load was told. Appended to by the load's threads under ``lock``."""

    accounts: list[LoadAccount] = field(default_factory=list)
    notes: list[AcknowledgedNote] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def statuses(self) -> Counter[int | str]:
        """How many answers of each status; transport errors counted under their class."""
        return Counter(a.status if a.status is not None else str(a.error) for a in self.answers)

    def server_errors(self) -> list[Answer]:
        """Every 5xx but 503: the fault suite's promise is that there is none, ever."""
        return [a for a in self.answers if a.status is not None and a.status >= 500
                and a.status != 503]

    def assert_no_server_error(self) -> None:
        errors = self.server_errors()
        assert not errors, f"{len(errors)} 5xx other than 503: {errors[:5]}"

    def unavailable(self) -> list[Answer]:
        return [a for a in self.answers if a.status == 503]

    def transport_errors(self) -> list[Answer]:
        return [a for a in self.answers if a.status is None]

    def sent_between(self, start: float, end: float = float("inf")) -> list[Answer]:
        """The answers to requests sent from ``start`` to ``end`` (``time.monotonic()``)."""
        return [a for a in self.answers if start <= a.sent < end]

    def summary(self) -> str:
        counts = ", ".join(f"{k}: {v}" for k, v in sorted(self.statuses().items(), key=str))
        return f"{len(self.accounts)} accounts, {len(self.notes)} notes acknowledged; {counts}"


class _Client:
    """One thread of a load: a client of its own, an account of its own."""

    def __init__(self, load: Load, number: int) -> None:
        self.load = load
        self.username = f"{load.prefix}{number}-{uuid.uuid4().hex[:8]}"
        self.account: LoadAccount | None = None
        self.token = ""
        self.written: list[AcknowledgedNote] = []
        self.sequence = itertools.count(1)

    def request(self, method: str, path: str, route: str, **options: Any) -> httpx.Response | None:
        """One request, recorded; None when it broke (after a short pause, so a dead server
        is not hammered)."""
        request_id = f"{self.username}-{next(self.sequence)}"
        headers = {"X-Request-ID": request_id, **options.pop("headers", {})}
        sent = time.monotonic()
        try:
            response = self.load.http.request(method, path, headers=headers, **options)
        except httpx.TransportError as error:
            self.load.record(Answer(method, route, request_id, None, type(error).__name__,
                                    sent=sent, at=time.monotonic()))
            time.sleep(RETRY_PAUSE_SECONDS)
            return None
        self.load.record(Answer(method, route, request_id, response.status_code,
                                retry_after=response.headers.get("retry-after"),
                                sent=sent, at=time.monotonic(), response=response))
        if response.status_code >= 500:
            time.sleep(RETRY_PAUSE_SECONDS)
        return response

    def run(self) -> None:
        try:
            self.loop()
        except BaseException as error:  # a thread's failure must fail the test, not vanish
            self.load.failures.append(error)

    def loop(self) -> None:
        while not self.load.stopping.is_set():
            if self.account is None:
                self.register()
            elif not self.token:
                self.log_in()
            else:
                self.write()
                if self.load.reads and self.written:
                    self.read()

    def register(self) -> None:
        form = account_form(self.username, password=PASSWORD)
        response = self.request("POST", "/auth/register", "/auth/register", json=form)
        if response is not None and response.status_code == 201:
            self.account = LoadAccount(response.json()["id"], self.username, PASSWORD)
            with self.load.ledger.lock:
                self.load.ledger.accounts.append(self.account)
        elif response is not None and response.status_code == 409:
            # Registered by a try whose answer was lost: the account exists, id unknown yet.
            self.account = LoadAccount("", self.username, PASSWORD)

    def log_in(self) -> None:
        assert self.account is not None
        form = password_form(self.username, PASSWORD)
        response = self.request("POST", "/auth/token", "/auth/token", data=form)
        if response is None or response.status_code != 200:
            return
        token = response.json()["access_token"]
        if not self.account.id:
            me = self.request("GET", "/auth/me", "/auth/me", headers=bearer(token))
            if me is None or me.status_code != 200:
                return
            self.account = LoadAccount(me.json()["id"], self.username, PASSWORD)
            with self.load.ledger.lock:
                self.load.ledger.accounts.append(self.account)
        self.token = token

    def write(self) -> None:
        assert self.account is not None
        marker = uuid.uuid4().hex
        note = {"title": f"{self.username} {marker[:8]}", "body": f"<p>note {marker}</p>"}
        response = self.request("POST", "/notes", "/notes", json=note,
                                headers=bearer(self.token))
        if response is None:
            return
        if response.status_code == 401:
            self.token = ""  # e.g. a key or a revocation lost: log in again
        elif response.status_code == 201:
            body = response.json()
            acknowledged = AcknowledgedNote(body["id"], self.account, body["title"], body["body"])
            assert (body["title"], body["owner_id"]) == (note["title"], self.account.id), body
            self.written.append(acknowledged)
            with self.load.ledger.lock:
                self.load.ledger.notes.append(acknowledged)

    def read(self) -> None:
        note = self.written[next(self.sequence) % len(self.written)]
        self.request("GET", f"/notes/{note.id}", "/notes/{id}", headers=bearer(self.token))


class Load:
    """``clients`` threads registering, logging in and writing notes on ``base_url`` until
    ``stop()`` (or the ``with`` block's end); ``ledger`` is what they were told."""

    def __init__(
        self,
        base_url: str,
        *,
        clients: int = 4,
        reads: bool = False,
        keep_alive: bool = True,
        timeout: float = 10.0,
        prefix: str | None = None,
        local_address: str | None = None,
    ) -> None:
        self.base_url = base_url
        self.reads = reads
        self.prefix = prefix or f"load{next(_loads)}u"
        self.ledger = Ledger()
        self.stopping = threading.Event()
        self.failures: list[BaseException] = []
        # One pool for every thread (httpx.Client is thread-safe); without keep-alive every
        # request opens a connection of its own; from ``local_address`` when given (e.g.
        # 127.0.0.2: another client address than the tests' usual 127.0.0.1).
        limits = httpx.Limits(max_connections=clients,
                              max_keepalive_connections=clients if keep_alive else 0)
        transport = httpx.HTTPTransport(limits=limits, local_address=local_address)
        self.http = httpx.Client(base_url=base_url, timeout=timeout, transport=transport)
        self._clients = [_Client(self, number) for number in range(1, clients + 1)]
        self._threads = [threading.Thread(target=c.run, daemon=True) for c in self._clients]

    def record(self, answer: Answer) -> None:
        with self.ledger.lock:
            self.ledger.answers.append(answer)

    def start(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> Ledger:
        """Stops every client after its current request; the ledger is complete then."""
        self.stopping.set()
        for thread in self._threads:
            thread.join(STOP_TIMEOUT_SECONDS)
            assert not thread.is_alive(), "a load client did not stop"
        self.http.close()
        assert not self.failures, f"a load client failed: {self.failures[0]!r}"
        return self.ledger

    def wait_for_notes(self, count: int, timeout: float = 30.0, *, every_client: bool = False
                       ) -> None:
        """Until ``count`` notes are acknowledged in all (so the fault strikes mid-load), and
        with ``every_client`` until each client has written one (all are signed in)."""
        deadline = time.monotonic() + timeout
        while len(self.ledger.notes) < count or (
            every_client and not all(client.written for client in self._clients)
        ):
            assert time.monotonic() < deadline, f"load too slow: {self.ledger.summary()}"
            time.sleep(0.02)

    def run_for(self, seconds: float) -> Ledger:
        self.start()
        time.sleep(seconds)
        return self.stop()

    def __enter__(self) -> Load:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()


@dataclass
class Verification:
    """What ``verify`` found: the acknowledged notes (all there) and those stored but never
    acknowledged (writes in flight when the fault struck)."""

    acknowledged: int
    stored: int
    unacknowledged: list[str]


def _pages(http: httpx.Client, token: str) -> Iterator[dict[str, Any]]:
    params = {"limit": str(PAGE)}
    while True:
        response = http.get("/notes", params=params, headers=bearer(token))
        assert response.status_code == 200, (response.status_code, response.text)
        page = response.json()
        yield from page["items"]
        if not page["next_cursor"]:
            return
        params = {"limit": str(PAGE), "cursor": page["next_cursor"]}


def verify(base_url: str, ledger: Ledger, *, timeout: float = 10.0) -> Verification:
    """Every acknowledged write is there and intact, nothing is half-written; fails with the
    first problems found otherwise. Run it on a server that is up again."""
    problems: list[str] = []
    acknowledged = {note.id: note for note in ledger.notes}
    stored: set[str] = set()
    with httpx.Client(base_url=base_url, timeout=timeout) as http:
        for account in ledger.accounts:
            token = http.post("/auth/token", data=password_form(account.username, account.password))
            if token.status_code != 200:
                problems.append(f"{account.username} cannot log in: {token.status_code}")
                continue
            access = token.json()["access_token"]
            for listed in _pages(http, access):
                stored.add(listed["id"])
                read = http.get(f"/notes/{listed['id']}", headers=bearer(access))
                if read.status_code != 200 or read.json()["owner_id"] != account.id:
                    problems.append(f"note {listed['id']} listed for {account.username} "
                                    f"reads {read.status_code}: {read.text[:200]}")
            for note in (n for n in ledger.notes if n.owner == account):
                read = http.get(f"/notes/{note.id}", headers=bearer(access))
                if read.status_code != 200:
                    problems.append(f"acknowledged note {note.id} answers {read.status_code}")
                    continue
                body = read.json()
                seen = (body["owner_id"], body["title"], body["body"])
                if seen != (account.id, note.title, note.body):
                    problems.append(f"acknowledged note {note.id} changed: {seen}")
    missing = sorted(set(acknowledged) - stored)
    if missing:
        problems.append(f"{len(missing)} acknowledged notes not listed: {missing[:5]}")
    assert not problems, f"{len(problems)} problems: {problems[:10]}"
    return Verification(len(acknowledged), len(stored), sorted(stored - set(acknowledged)))
