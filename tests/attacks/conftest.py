"""What the attack tests share: a record of everything this process asks of the network.

bastion fetches nothing a client names (no key URL in a token, no image or link in a note,
no mail domain), so while the app serves, the only connections it may open are to the
database under test. ``network`` records every ``socket.connect``, every datagram sent to an
address and every name lookup of this process during a test, and fails the test at teardown
if anything else was contacted or looked up: a future feature that fetches a client-supplied
URL (a key set, a link preview, a deliverability check) shows up here as server-side request
forgery."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest

from bastion.config import Settings

SocketAddress = Any  # a (host, port[, ...]) tuple, or a path for AF_UNIX
LOOPBACK_NAMES = frozenset({"127.0.0.1", "::1", "localhost"})


@dataclass
class Network:
    """Every address connected to and every name looked up, in order."""

    settings: Settings
    connects: list[SocketAddress] = field(default_factory=list)
    lookups: list[str] = field(default_factory=list)

    def _database(self) -> tuple[str, int] | None:
        if self.settings.database_url is None:
            return None  # embedded SQLite: no network at all
        parts = urlsplit(self.settings.database_url.get_secret_value())
        return parts.hostname or "localhost", parts.port or 5432

    def outbound(self) -> list[SocketAddress]:
        """Connections to anything but the database under test."""
        database = self._database()
        return [
            address
            for address in self.connects
            if isinstance(address, tuple)
            and not (
                database is not None
                and address[0] in LOOPBACK_NAMES | {database[0]}
                and address[1] == database[1]
            )
        ]

    def foreign_lookups(self) -> list[str]:
        """Names looked up other than the loopback and the database's host."""
        database = self._database()
        allowed = LOOPBACK_NAMES | ({database[0]} if database else set())
        return [name for name in self.lookups if name not in allowed]


@pytest.fixture
def network(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> Iterator[Network]:
    """Records the process's connections and lookups during the test and the app's life;
    anything beyond the database under test fails the test."""
    log = Network(settings)
    original_connect = socket.socket.connect
    original_connect_ex = socket.socket.connect_ex
    original_sendto = socket.socket.sendto
    original_getaddrinfo = socket.getaddrinfo

    def connect(self: socket.socket, address: SocketAddress) -> None:
        log.connects.append(address)
        original_connect(self, address)

    def connect_ex(self: socket.socket, address: SocketAddress) -> int:
        log.connects.append(address)
        return original_connect_ex(self, address)

    def sendto(self: socket.socket, data: Any, *rest: Any) -> int:
        # A datagram to an address (a DNS query, say) is a connection of its own.
        log.connects.append(rest[-1])
        return original_sendto(self, data, *rest)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host is not None:
            log.lookups.append(host.decode() if isinstance(host, bytes) else str(host))
        return original_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket.socket, "sendto", sendto)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield log
    assert log.outbound() == [], "the app connected to something other than its database"
    assert log.foreign_lookups() == [], "the app looked up a name it was given"
