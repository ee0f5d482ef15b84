"""The authorization issue's "Done means", walked over HTTP against ``bastion serve``.

On SQLite and on PostgreSQL, through a real socket, with the operator's commands run as
separate processes against the server's own database while it serves:

- ``bastion create-admin`` (password piped) makes ``root``, who logs in, lists every user
  (the cursor walk meets each account once) and reads the audit log;
- a user can never read, change, delete or share another user's note: 404, the same body as
  for a note that does not exist or an id that is not one, and the note is left as it was;
- a user is refused the admin routes (403 problem details), and every refusal is an
  ``access_denied`` audit event naming them as actor;
- disabling an account ends its tokens at once (access 401, refresh ``invalid_grant``) and
  refuses its logins until it is re-enabled; granting a role ends the old access token and
  the next login carries the new permission;
- stored notes never keep script, event handlers or ``javascript:`` URLs;
- injection-shaped search strings match only themselves, and only the caller's notes.

Without a database: an app with a route that declares no policy refuses to start (non-zero
exit, never listening, the route named in its log), and ``bastion check --deploy`` fails on
the development defaults and passes on a correct production environment.

The servers are this module's own (the shared ``live_server`` is for read-only checks):
these tests create accounts and change roles. Each test makes its own users, so the tests
share a server without depending on each other's order.
"""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import TEST_ENCRYPTION_KEY
from tests.e2e.api import (
    FAST_HASHING_ENV,
    ROOMY_LOGIN_LIMIT,
    USER_PERMISSIONS,
    Account,
    Api,
    assert_invalid_grant,
    assert_unauthorized,
    connected,
)
from tests.e2e.conftest import (
    Deployment,
    LiveServer,
    assert_problem,
    deployed,
    factory_command,
    postgres_for,
    run_bastion,
    service_env,
    with_tests_importable,
)
from tests.identity.helpers import PASSWORD
from tests.servers.postgres import free_port

ROOT = "root"
ROOT_EMAIL = "root@example.com"
ROOT_PASSWORD = "an operator's long passphrase 2026"
ADMIN_PERMISSIONS = {"users:read", "users:write", "notes:read_all", "audit:read"}

XSS_BODY = (
    "<script>alert(1)</script><img src=x onerror=alert(1)>"
    '<a href="javascript:alert(1)">x</a><p onclick="x">ok</p>'
)
XSS_NEEDLES = ("<script", "onerror", "onclick", "javascript:")
ANCHOR = re.compile(r"<a\b[^>]*>", re.IGNORECASE)

# Search strings shaped like SQL injection or LIKE wildcards; each must match only itself.
INJECTIONS = ("' OR '1'='1", "%", "_", "%' OR 1=1 --", "\\", "\\%", "%%", "' OR 1=1; --")
# Title suffixes of each user's notes: some hold the strings above literally, some do not.
SEARCH_TITLES = (
    "plain words only",
    "one hundred 100% sure",
    "snake_case name",
    "quoted ' OR '1'='1 inside",
    "a back\\slash here",
    "commented %' OR 1=1 -- out",
)
SEARCH_BODY = "<p>nothing special</p>"

UNGUARDED_APP = "tests.e2e.test_authorization_flow:create_app_with_unguarded_route"
UNGUARDED_DEADLINE = 20.0

PRODUCTION_ENV = {
    "env": "production",
    "issuer": "https://id.example.com",
    "public_url": "https://id.example.com",
    "allowed_hosts": "id.example.com",
    "encryption_key": TEST_ENCRYPTION_KEY,
    "smtp_url": "smtps://mail.example.com",
}


def create_app_with_unguarded_route() -> FastAPI:
    """The service plus ``GET /unguarded``, which declares no policy: must never serve."""
    from bastion.app import app_from_environment

    app = app_from_environment()

    @app.get("/unguarded")
    async def unguarded() -> dict[str, str]:
        return {"secret": "anyone may read this"}

    return app


# -- the deployment, its operator and a client that knows who it is ---------------------------


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    """``bastion serve`` on each backend, with the env ``bastion`` commands need to reach the
    same database (SQLite: the same data dir; PostgreSQL: the same URL)."""
    root = tmp_path_factory.mktemp(f"authz-{request.param}")
    variables = {"rate_limit_login": ROOMY_LOGIN_LIMIT, **FAST_HASHING_ENV}
    with deployed(root, request.param, postgres_for(request), **variables) as running:
        yield running


@dataclass
class Operated:
    deployment: Deployment
    api: Api
    root: Account

    @property
    def server(self) -> LiveServer:
        return self.deployment.server


@pytest.fixture(scope="module")
def root_admin(deployment: Deployment) -> Account:
    """``bastion create-admin`` run against the live server's database while it serves."""
    deployment.create_admin(ROOT, ROOT_PASSWORD)
    with connected(deployment.server) as api:
        root = api.sign_in(Account("", ROOT, ROOT_PASSWORD))
        me = api.me(root.access_token)
    assert me.status_code == 200, me.text
    root.id = me.json()["id"]
    assert me.json()["roles"] == ["admin", "user"], me.json()
    return root


@pytest.fixture
def operated(deployment: Deployment, root_admin: Account) -> Iterator[Operated]:
    with connected(deployment.server) as api:
        # A fresh login per test, so no test depends on what another did to root's sessions.
        root = api.sign_in(Account(root_admin.id, ROOT, ROOT_PASSWORD))
        yield Operated(deployment, api, root)


def without_request_id(response: httpx.Response, status: int) -> dict[str, Any]:
    body = dict(assert_problem(response, status))
    body.pop("request_id")
    return body


# -- the tests ------------------------------------------------------------------------------


def test_created_admin_lists_every_user_once_and_reads_the_audit_log(
    operated: Operated,
) -> None:
    api, root = operated.api, operated.root
    assert ADMIN_PERMISSIONS | USER_PERMISSIONS <= root.scope, root.scope
    created = {api.new_account("walk").id for _ in range(5)}

    # The cursor walk, two at a time: every account once, none skipped, oldest first.
    walked: list[dict[str, Any]] = []
    cursor: str | None = None
    pages = 0
    while True:
        params = {"limit": "2"} | ({"cursor": cursor} if cursor else {})
        page = api.ok("GET", "/admin/users", root, params=params)
        assert len(page["items"]) <= 2
        walked.extend(page["items"])
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert pages < 100, "the cursor walk does not end"
    ids = [user["id"] for user in walked]
    assert len(ids) == len(set(ids)), "an account was listed twice"
    assert {root.id, *created} <= set(ids)
    single = api.ok("GET", "/admin/users", root, params={"limit": "100"})
    assert single["next_cursor"] is None
    assert [user["id"] for user in single["items"]] == ids
    for user in walked:
        assert {"disabled", "locked_until", "roles", "username"} <= user.keys(), user
        assert not {"password", "password_hash"} & user.keys(), user
    [root_row] = [user for user in walked if user["id"] == root.id]
    assert (root_row["username"], root_row["email"]) == (ROOT, ROOT_EMAIL)

    # The audit log, newest first; the CLI's creation of root is in it, with no actor.
    events = api.audit(root)
    seqs = [event["seq"] for event in events]
    assert seqs == sorted(seqs, reverse=True), seqs
    mine = api.audit(root, user_id=root.id, type="registration")
    assert [(e["actor_id"], e["subject_id"], e["details"].get("source")) for e in mine] == [
        (None, root.id, "cli")
    ]
    assert api.audit(root, user_id=root.id, type="login_success"), "root's logins not audited"

    # A tampered cursor is refused, not followed.
    first = api.ok("GET", "/admin/users", root, params={"limit": "1"})
    assert first["next_cursor"]
    forged = first["next_cursor"][:-2] + ("AA" if first["next_cursor"][-2:] != "AA" else "BB")
    assert_problem(api.request("GET", "/admin/users", root, params={"cursor": forged}), 400)


def test_a_user_never_reads_changes_deletes_or_shares_another_users_note(
    operated: Operated,
) -> None:
    api = operated.api
    alice, bob, carol = api.new_account("alice"), api.new_account("bob"), api.new_account("carol")
    note = api.ok(
        "POST", "/notes", alice, 201, json={"title": "alice's secret", "body": "<p>mine</p>"}
    )
    path = f"/notes/{note['id']}"
    assert api.ok("GET", path, alice) == note

    def attempts(target: str) -> list[tuple[str, str, dict[str, Any]]]:
        return [
            ("GET", target, {}),
            ("PATCH", target, {"json": {"title": "bob was here", "body": "<p>bob</p>"}}),
            ("DELETE", target, {}),
            ("POST", f"{target}/shares", {"json": {"username": bob.username}}),
        ]

    def refused(who: Account, target: str) -> list[dict[str, Any]]:
        answers = []
        for method, where, options in attempts(target):
            response = api.request(method, where, who, **options)
            answers.append(without_request_id(response, 404))
        return answers

    reference = refused(bob, f"/notes/{uuid.uuid4()}")
    assert all(answer == reference[0] for answer in reference), reference
    for target in (path, "/notes/not-a-uuid", "/notes/1", f"/notes/{str(uuid.uuid4()).upper()}"):
        assert refused(bob, target) == reference, target
    # Alice asking for a note that does not exist gets the very same answer.
    assert refused(alice, f"/notes/{uuid.uuid4()}") == reference

    # Nothing bob did reached the note, and it is not in his listing.
    assert api.ok("GET", path, alice) == note
    assert note["id"] not in {n["id"] for n in api.ok("GET", "/notes", bob)["items"]}

    # Shared with bob: he may read it, and still not change, delete or re-share it.
    shared = api.ok("POST", f"{path}/shares", alice, json={"username": bob.username})
    assert shared["shared_with"] == [bob.username]
    assert api.ok("GET", path, bob) == shared
    for method, where, options in attempts(path)[1:]:
        if method == "POST":
            options = {"json": {"username": carol.username}}
        response = api.request(method, where, bob, **options)
        assert without_request_id(response, 404) == reference[0], (method, where)
    # Carol, with whom nothing was shared, still gets the not-found answer.
    assert refused(carol, path) == reference
    assert api.ok("GET", path, alice) == shared


def test_a_user_is_refused_admin_routes_and_each_refusal_is_audited(
    operated: Operated,
) -> None:
    api, root = operated.api, operated.root
    bob = api.new_account("bob")
    attempts: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/admin/users", {}),
        ("PATCH", f"/admin/users/{root.id}", {"json": {"disabled": True}}),
        ("PATCH", f"/admin/users/{bob.id}", {"json": {"roles": ["admin", "user"]}}),
        ("POST", f"/admin/users/{root.id}/unlock", {}),
        ("GET", "/admin/audit", {}),
    ]
    request_ids: dict[str, tuple[str, str]] = {}
    for method, path, options in attempts:
        response = api.request(method, path, bob, **options)
        body = assert_problem(response, 403)
        request_ids[body["request_id"]] = (method, path)
        # Without a token at all it is 401, not 403: authentication comes first.
        assert_unauthorized(api.request(method, path, **options))

    # Each 403 is an access_denied event, with bob as the actor.
    denials = api.audit(root, type="access_denied", user_id=bob.id)
    by_request = {event["request_id"]: event for event in denials}
    assert request_ids.keys() <= by_request.keys(), (sorted(request_ids), denials)
    for request_id, (method, _path) in request_ids.items():
        event = by_request[request_id]
        assert event["type"] == "access_denied"
        assert event["actor_id"] == bob.id
        assert event["outcome"] == "denied"
        assert event["details"]["method"] == method
        assert str(event["details"]["route"]).startswith("/admin/"), event

    # None of it took: root is enabled and an admin, bob is a plain user.
    users = {
        u["id"]: u for u in api.ok("GET", "/admin/users", root, params={"limit": "100"})["items"]
    }
    assert users[root.id]["disabled"] is False
    assert users[root.id]["roles"] == ["admin", "user"]
    assert users[bob.id]["roles"] == ["user"]
    assert api.sign_in(bob).scope == USER_PERMISSIONS


def test_disabling_ends_every_token_at_once_and_re_enabling_restores_login(
    operated: Operated,
) -> None:
    api, root = operated.api, operated.root
    bob = api.new_account("bob")
    old_access, old_refresh = bob.access_token, bob.refresh_token
    assert api.request("GET", "/auth/me", bob).status_code == 200

    disabled = api.ok("PATCH", f"/admin/users/{bob.id}", root, json={"disabled": True})
    assert disabled["disabled"] is True

    # At once: no waiting for the access token to expire.
    assert_unauthorized(api.request("GET", "/auth/me", bob))
    assert_unauthorized(api.request("GET", "/notes", bob))
    assert_invalid_grant(api.refresh(old_refresh))
    refused_login = api.password_grant(bob.username, bob.password)
    assert_invalid_grant(refused_login)
    # ...and the refusal says no more than an unknown user's does.
    assert refused_login.content == api.password_grant("nobody-at-all", PASSWORD).content

    [event] = api.audit(root, type="disable", user_id=bob.id)
    assert (event["actor_id"], event["subject_id"]) == (root.id, bob.id)
    assert event["details"]["disabled"] is True

    enabled = api.ok("PATCH", f"/admin/users/{bob.id}", root, json={"disabled": False})
    assert enabled["disabled"] is False
    api.sign_in(bob)
    assert api.request("GET", "/auth/me", bob).status_code == 200
    # What was ended stays ended.
    bob_before = Account(bob.id, bob.username, bob.password, old_access, old_refresh)
    assert_unauthorized(api.request("GET", "/auth/me", bob_before))
    assert_invalid_grant(api.refresh(old_refresh))


def test_a_granted_role_takes_effect_at_once(operated: Operated) -> None:
    api, root = operated.api, operated.root
    bob = api.new_account("bob")
    old = Account(bob.id, bob.username, bob.password, bob.access_token, bob.refresh_token)
    assert_problem(api.request("GET", "/admin/audit", bob), 403)

    granted = api.ok("PATCH", f"/admin/users/{bob.id}", root, json={"roles": ["user", "auditor"]})
    assert granted["roles"] == ["auditor", "user"]

    # The token issued before the change is refused; the session itself lives on.
    assert_unauthorized(api.request("GET", "/auth/me", old))
    refreshed = api.refresh(old.refresh_token)
    assert refreshed.status_code == 200, refreshed.text
    renewed = Account(bob.id, bob.username, bob.password, refreshed.json()["access_token"])
    assert api.request("GET", "/auth/me", renewed).status_code == 200

    # A new login carries audit:read and reads the audit log; still no user administration.
    api.sign_in(bob)
    assert bob.scope == USER_PERMISSIONS | {"audit:read"}, bob.scope
    events = api.audit(bob, type="role_change", user_id=bob.id)
    [change] = [event for event in events if event["actor_id"] == root.id]
    assert (change["details"]["before"], change["details"]["after"]) == ("user", "auditor user")
    assert_problem(api.request("GET", "/admin/users", bob), 403)


def test_stored_notes_never_keep_script_handlers_or_javascript_urls(
    operated: Operated,
) -> None:
    api = operated.api
    alice = api.new_account("alice")

    def assert_clean(body: str) -> None:
        lowered = body.lower()
        for needle in XSS_NEEDLES:
            assert needle not in lowered, (needle, body)
        anchors = ANCHOR.findall(body)
        assert anchors, body
        for anchor in anchors:
            assert 'rel="noopener noreferrer"' in anchor, anchor
        assert "<p>ok</p>" in body, body

    response = api.request("POST", "/notes", alice, json={"title": "xss", "body": XSS_BODY})
    assert response.status_code == 201, response.text
    note = response.json()
    assert_clean(note["body"])
    assert response.headers["location"] == f"/notes/{note['id']}"
    fetched = api.ok("GET", f"/notes/{note['id']}", alice)
    assert fetched["body"] == note["body"]
    assert_clean(fetched["body"])
    [listed] = [n for n in api.ok("GET", "/notes", alice)["items"] if n["id"] == note["id"]]
    assert_clean(listed["body"])

    # The update path sanitizes the same way.
    clean = api.ok("POST", "/notes", alice, 201, json={"title": "later", "body": "<p>ok</p>"})
    patched = api.ok("PATCH", f"/notes/{clean['id']}", alice, json={"body": XSS_BODY})
    assert_clean(patched["body"])
    assert_clean(api.ok("GET", f"/notes/{clean['id']}", alice)["body"])


def test_injection_shaped_search_matches_only_itself_and_only_the_callers_notes(
    operated: Operated,
) -> None:
    api = operated.api
    alice, bob = api.new_account("alice"), api.new_account("bob")
    titles: dict[str, dict[str, str]] = {alice.id: {}, bob.id: {}}
    for owner in (alice, bob):
        for suffix in SEARCH_TITLES:
            title = f"{owner.username} {suffix}"
            note = api.ok("POST", "/notes", owner, 201, json={"title": title, "body": SEARCH_BODY})
            titles[owner.id][note["id"]] = title

    for who in (alice, bob):
        for q in (*INJECTIONS, "SNAKE", "1=1"):
            response = api.request("GET", "/notes", who, params={"q": q, "limit": "100"})
            assert response.status_code == 200, (q, response.status_code, response.text)
            items = response.json()["items"]
            assert all(item["owner_id"] == who.id for item in items), (q, items)
            expected = {
                note_id
                for note_id, title in titles[who.id].items()
                if q.lower() in title.lower() or q.lower() in SEARCH_BODY
            }
            assert {item["id"] for item in items} == expected, (who.username, q)

    # Wildcards alone match what holds them literally, not everything.
    percent = api.ok("GET", "/notes", alice, params={"q": "%"})["items"]
    assert 0 < len(percent) < len(SEARCH_TITLES)


def _port_answers(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
        return True
    return False


def test_an_unguarded_route_stops_the_app_from_starting(tmp_path: Path) -> None:
    env = with_tests_importable(service_env(tmp_path / "data"))
    port = free_port()
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            factory_command(UNGUARDED_APP)(port),
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    answered = False
    deadline = time.monotonic() + UNGUARDED_DEADLINE
    try:
        while process.poll() is None and time.monotonic() < deadline:
            answered = answered or _port_answers(port)
            time.sleep(0.05)
    finally:
        still_running = process.poll() is None
        if still_running:
            process.kill()
        process.wait(timeout=10)
    text = log_path.read_text(encoding="utf-8", errors="replace")
    assert not still_running, f"still running after {UNGUARDED_DEADLINE} s:\n{text[-4000:]}"
    assert process.returncode != 0, text[-4000:]
    assert not answered, "the app accepted connections"
    assert "GET /unguarded" in text, text[-4000:]
    assert "declare no policy" in text, text[-4000:]


def test_check_deploy_fails_on_development_defaults_and_passes_in_production(
    tmp_path: Path,
) -> None:
    def check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return run_bastion("check", "--deploy", env=env, cwd=tmp_path)

    development = check(service_env(tmp_path / "dev-data"))
    assert development.returncode == 1, development.stdout + development.stderr
    named = {line.split(":", 1)[0] for line in development.stdout.splitlines()}
    assert {"BASTION_ENV", "BASTION_ISSUER"} <= named, development.stdout
    assert "no insecure settings found" not in development.stdout

    production = check(service_env(tmp_path / "prod-data", **PRODUCTION_ENV))
    assert production.returncode == 0, production.stdout + production.stderr
    assert production.stdout == "no insecure settings found\n", production.stdout

    # One insecure setting more, and production is refused again, naming it.
    http_issuer = check(
        service_env(tmp_path / "prod-data", **{**PRODUCTION_ENV, "issuer": "http://id.example.com"})
    )
    assert http_issuer.returncode != 0
    assert "BASTION_ISSUER" in http_issuer.stdout + http_issuer.stderr
