"""API7:2023 Server Side Request Forgery: bastion fetches nothing a client names.

bastion has no outbound HTTP client: no webhook, no URL preview, no image proxy, no key set
fetched from a token's header, no mail-domain lookup. Every input that can carry a URL or a
host name is filled with one here (a note's links and images, a title, a search, an email
domain, an ``Idempotency-Key``, ``Origin``, ``Referer``, ``Host`` and the forwarding headers),
and the ``network`` fixture (``conftest.py``) records every socket the process connects and
every name it looks up while the app serves: nothing but the database under test may appear.

The token header variant (``jku``, ``x5u``, ``x5c``, ``jwk``) is attacked in
``test_api2_authentication.py::test_headers_that_carry_keys_or_urls_are_refused_without_fetching``
under the same fixture.
"""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from tests.attacks.conftest import Network
from tests.identity.helpers import account_form, bearer, login

pytestmark = pytest.mark.usefixtures("network")

PROBE_HOST = "ssrf-probe.example.net"
METADATA = "169.254.169.254"
LINKS = (
    f'<p><img src="http://{PROBE_HOST}/pixel.png" alt="x">'
    f'<a href="https://{METADATA}/latest/meta-data/">metadata</a>'
    f'<img src="//{PROBE_HOST}:8080/relative-scheme.png">'
    f'<a href="http://127.0.0.1:6379/">redis</a></p>'
)
# Headers that name a host or an address; none is ever contacted. (Forwarding headers from a
# peer that is not a trusted proxy are not even read.)
NAMING_HEADERS = {
    "Origin": f"http://{PROBE_HOST}",
    "Referer": f"http://{PROBE_HOST}/page",
    "X-Forwarded-Host": PROBE_HOST,
    "X-Forwarded-For": METADATA,
    "Forwarded": f'for="{METADATA}";host={PROBE_HOST};proto=https',
}


async def test_urls_and_hosts_in_requests_are_never_fetched_or_looked_up(
    app: FastAPI, client: httpx.AsyncClient, network: Network
) -> None:
    registered = await client.post(
        "/auth/register",
        json=account_form("alice", email=f"alice@{PROBE_HOST}"),
        headers=NAMING_HEADERS,
    )
    assert registered.status_code == 201, registered.text
    await client.post("/auth/register", json=account_form("bob"))
    headers = {**bearer((await login(client, "alice"))["access_token"]), **NAMING_HEADERS}

    created = await client.post(
        "/notes",
        json={"title": f"http://{PROBE_HOST}/", "body": LINKS},
        headers={**headers, "Idempotency-Key": f"http://{PROBE_HOST}/key"},
    )
    assert created.status_code == 201, created.text
    note = f"/notes/{created.json()['id']}"
    # The links are kept (http and https URLs are allowed in a note), so the server did take
    # them in; it only never follows them.
    assert f"http://{PROBE_HOST}/pixel.png" in created.json()["body"]
    assert METADATA in created.json()["body"]
    changed = await client.patch(
        note, json={"body": f'<a href="http://{PROBE_HOST}/changed">x</a>'}, headers=headers
    )
    assert changed.status_code == 200, changed.text
    shared = await client.post(f"{note}/shares", json={"username": "bob"}, headers=headers)
    assert shared.status_code == 200, shared.text
    assert (await client.get(note, headers=headers)).status_code == 200
    search = await client.get("/notes", params={"q": f"http://{PROBE_HOST}"}, headers=headers)
    assert search.status_code == 200
    assert (await client.get("/auth/me", headers=headers)).status_code == 200
    foreign_host = await client.get("/health/live", headers={"Host": PROBE_HOST})
    assert foreign_host.status_code == 400  # refused by the Host allow-list, not resolved

    assert network.foreign_lookups() == []
    assert network.outbound() == []
