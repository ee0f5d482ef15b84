"""The edge of every input, through the real server on SQLite and PostgreSQL: who is asking
is settled before the body is looked at, a body of the wrong media type is a 415, no text
input takes a control character, and a 422 names fields by the schema's own names only.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from bastion.security.sanitize import sanitize_html
from tests.e2e.api import ROOMY_LOGIN_LIMIT, Account, Api, connected
from tests.e2e.conftest import LiveServer, assert_problem, postgres_for, service
from tests.identity.helpers import PASSWORD

# Characters no text input takes: NUL (which PostgreSQL refuses in text outright, and which
# reached it in a note's body), another C0 control, DEL and a C1 control.
REFUSED = ["\x00", "\x1b", "\x7f", "\x85"]
CONTROL_MESSAGE = "Value error, Text must not contain control characters."
UNKNOWN_FIELDS = {"loc": ["body"], "msg": "Unknown fields are not allowed."}
MALFORMED_JSON = b'{"title": "unfinished'
SOME_ID = "5b0f3c9e-2f6d-4e8a-9c1b-7d4e6f8a0b21"  # nobody's: identity is settled first


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def edge_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """A server of this module's own: it registers and changes passwords more often than
    the default register and login quotas (20 an hour, 10 a minute per address) let a
    shared server take."""
    root = tmp_path_factory.mktemp(f"edges-{request.param}")
    with service(
        root,
        request.param,
        postgres_for(request),
        rate_limit_register="1000/hour",
        rate_limit_login=ROOMY_LOGIN_LIMIT,
    ) as server:
        yield server


@pytest.fixture(scope="module")
def api(edge_server: LiveServer) -> Iterator[Api]:
    with connected(edge_server) as api:
        yield api


@pytest.fixture(scope="module")
def user(api: Api) -> Account:
    return api.new_account("edge")


@pytest.fixture(scope="module")
def note(api: Api, user: Account) -> dict[str, Any]:
    created: dict[str, Any] = api.ok(
        "POST", "/notes", user, 201, json={"title": "edge", "body": "<p>edge</p>"}
    )
    return created


def assert_metered(response: Any) -> None:
    assert response.headers["ratelimit-policy"], response.headers
    assert response.headers["ratelimit"], response.headers


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/notes"),
        ("PATCH", f"/notes/{SOME_ID}"),
        ("POST", f"/notes/{SOME_ID}/shares"),
        ("POST", "/auth/password"),
        ("PATCH", f"/admin/users/{SOME_ID}"),
    ],
)
def test_a_malformed_body_without_a_token_is_a_counted_401(
    api: Api, method: str, path: str
) -> None:
    """The body used to be parsed first: a 422 (or 400), and no quota counted."""
    response = api.request(
        method, path, content=MALFORMED_JSON, headers={"content-type": "text/plain"}
    )
    assert_problem(response, 401)
    assert_metered(response)


def test_a_malformed_body_without_the_permission_is_a_403(api: Api, user: Account) -> None:
    response = api.request(
        "PATCH", f"/admin/users/{user.id}", user, content=MALFORMED_JSON,
        headers={"content-type": "application/json"},
    )
    assert_problem(response, 403)
    assert_metered(response)


def test_the_schema_and_the_docs_are_metered(api: Api) -> None:
    for path in ("/openapi.json", "/docs"):
        response = api.request("GET", path)
        assert response.status_code == 200, (path, response.status_code)
        assert_metered(response)


@pytest.mark.parametrize(
    ("method", "path", "content_type", "accepted"),
    [
        ("POST", "/auth/register", "text/plain", ("Accept-Post", "application/json")),
        ("POST", "/auth/register", "application/x-www-form-urlencoded",
         ("Accept-Post", "application/json")),
        ("POST", "/auth/token", "application/json",
         ("Accept-Post", "application/x-www-form-urlencoded")),
        ("POST", "/auth/revoke", "multipart/form-data",
         ("Accept-Post", "application/x-www-form-urlencoded")),
    ],
)
def test_a_body_of_another_media_type_is_a_415(
    api: Api, method: str, path: str, content_type: str, accepted: tuple[str, str]
) -> None:
    response = api.request(method, path, content=b"{}", headers={"content-type": content_type})
    assert_problem(response, 415)
    name, value = accepted
    assert response.headers[name] == value


def test_a_media_type_refusal_comes_after_identity(
    api: Api, user: Account, note: dict[str, Any]
) -> None:
    anonymous = api.request("PATCH", f"/notes/{note['id']}", content=b"{}",
                            headers={"content-type": "text/plain"})
    assert_problem(anonymous, 401)
    owner = api.request("PATCH", f"/notes/{note['id']}", user, content=b"{}",
                        headers={"content-type": "text/plain"})
    assert_problem(owner, 415)
    assert owner.headers["accept-patch"] == "application/json"


def _json_inputs(user: Account, note: dict[str, Any]) -> list[tuple[str, str, dict[str, Any], str]]:
    """(method, path, a valid body, the text field to poison) for every JSON text input."""
    register = {"username": "edgy", "email": "edgy@example.com", "password": PASSWORD, "age": 30}
    return [
        ("POST", "/auth/register", register, "password"),
        ("POST", "/auth/password", {"current_password": PASSWORD, "new_password": PASSWORD * 2},
         "current_password"),
        ("POST", "/auth/password", {"current_password": PASSWORD, "new_password": PASSWORD * 2},
         "new_password"),
        ("POST", "/notes", {"title": "t", "body": "<p>b</p>"}, "title"),
        ("POST", "/notes", {"title": "t", "body": "<p>b</p>"}, "body"),
        ("PATCH", f"/notes/{note['id']}", {"body": "<p>b</p>"}, "body"),
        ("POST", f"/notes/{note['id']}/shares", {"username": "someone"}, "username"),
    ]


@pytest.mark.parametrize("character", REFUSED, ids=[f"U+{ord(c):04X}" for c in REFUSED])
def test_no_json_text_input_takes_a_control_character(
    api: Api, user: Account, note: dict[str, Any], character: str
) -> None:
    """A NUL in a note's body reached PostgreSQL (a 400 from the database's refusal) and
    was stored on SQLite; every text field now refuses it at the edge, on both."""
    for method, path, body, field in _json_inputs(user, note):
        poisoned = {**body, field: f"a{character}b{body[field]}"}
        response = api.request(method, path, user, json=poisoned)
        problem = assert_problem(response, 422)
        assert {"loc": ["body", field], "msg": CONTROL_MESSAGE} in problem["errors"] or (
            # A field with a stricter rule of its own says so in its own words.
            ["body", field] in [error["loc"] for error in problem["errors"]]
        ), (path, field, problem)
    search = api.request("GET", "/notes", user, params={"q": f"a{character}"})
    assert_problem(search, 422)
    read = api.ok("GET", f"/notes/{note['id']}", user)
    assert read["body"] == note["body"]  # nothing was stored half-way
    log = api.server.log_text()
    assert "unhandled_exception" not in log
    assert "database_refused_value" not in log  # refused at the edge, not by the database


def test_tab_and_line_breaks_are_text(api: Api, user: Account) -> None:
    body = "<p>one\r\ntwo\tthree</p>\n"
    created = api.ok("POST", "/notes", user, 201, json={"title": "lines", "body": body})
    assert created["body"] == sanitize_html(body) == "<p>one\ntwo\tthree</p>\n"


def test_a_422_names_no_field_the_client_chose(api: Api, user: Account) -> None:
    chosen = "<img src=x onerror=alert(1)>"
    response = api.request(
        "POST", "/notes", user, json={"title": "t", "body": "b", chosen: 1, "owner_id": user.id}
    )
    problem = assert_problem(response, 422)
    assert problem["errors"] == [UNKNOWN_FIELDS]
    assert chosen not in response.text and "owner_id" not in response.text


def test_an_invalid_email_is_refused_without_quoting_it(api: Api) -> None:
    body = {"username": "quoted", "email": "mal\u00a7ory@exa mple.com", "password": PASSWORD,
            "age": 30}
    response = api.request("POST", "/auth/register", json=body)
    problem = assert_problem(response, 422)
    assert problem["errors"] == [
        {"loc": ["body", "email"], "msg": "Value error, Not a valid email address."}
    ]
    assert "exa mple" not in response.text and "\u00a7" not in response.text


def test_a_body_that_is_not_json_is_a_400(api: Api, user: Account) -> None:
    for content in (MALFORMED_JSON, b"\xff\xfe{}"):
        response = api.request(
            "POST", "/notes", user, content=content, headers={"content-type": "application/json"}
        )
        assert_problem(response, 400)
