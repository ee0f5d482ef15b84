"""The service as ``bastion serve`` runs it, on SQLite and on PostgreSQL, over a real socket."""

from __future__ import annotations

import json
import stat

import pytest

from tests.e2e.conftest import (
    SANE_GENERATED_ID,
    LiveServer,
    assert_problem,
    assert_secure_headers,
    raw_exchange,
)

ACCESS_FIELDS = ("method", "route", "status", "duration_ms", "client_ip", "request_id")


def test_health_live_and_ready(live_server: LiveServer) -> None:
    with live_server.client() as client:
        for path in ("/health/live", "/health/ready"):
            response = client.get(path)
            assert response.status_code == 200, (path, response.text)
            assert response.headers["content-type"].startswith("application/json")
            assert response.json() == {"status": "ok"}
            assert_secure_headers(response)


def test_unknown_path_is_a_404_problem(live_server: LiveServer) -> None:
    with live_server.client() as client:
        assert_problem(client.get("/no/such/path"), 404)


@pytest.mark.parametrize("path", ["/admin/users/", "/notes/", "/auth/me/"])
def test_a_trailing_slash_is_a_404_not_a_redirect(live_server: LiveServer, path: str) -> None:
    """Starlette redirected these (307) before any policy ran, telling an anonymous caller
    which paths exist."""
    with live_server.client() as client:
        response = client.get(path)
    assert_problem(response, 404)
    assert "location" not in response.headers


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", "/health/live", "GET, HEAD"),
        ("OPTIONS", "/health/ready", "GET, HEAD"),
        # Several routes share these paths: Starlette named only the first one's method.
        ("OPTIONS", "/notes", "GET, POST"),
        ("PUT", "/notes/3f1e4c0a-6f0e-4a36-9a57-0d1f5a1d7c11", "DELETE, GET, PATCH"),
        ("GET", "/auth/token", "POST"),
    ],
)
def test_wrong_method_is_a_405_problem_with_the_full_allow_list(
    live_server: LiveServer, method: str, path: str, allow: str
) -> None:
    """RFC 9110 §15.5.6: the Allow header lists every method the resource supports."""
    with live_server.client() as client:
        response = client.request(method, path)
        assert_problem(response, 405)
        assert response.headers["allow"] == allow


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/docs", "text/html"),
        ("/docs/swagger-init.js", "text/javascript"),
        ("/docs/static/swagger-ui.css", "text/css"),
        ("/docs/static/swagger-ui-bundle.js", "javascript"),
        ("/openapi.json", "application/json"),
    ],
)
def test_docs_and_their_assets_carry_the_security_headers(
    live_server: LiveServer, path: str, content_type: str
) -> None:
    with live_server.client() as client:
        response = client.get(path)
    assert response.status_code == 200, (path, response.status_code)
    assert content_type in response.headers["content-type"]
    assert_secure_headers(response)


def test_docs_csp_allows_only_this_origin(live_server: LiveServer) -> None:
    with live_server.client() as client:
        csp = client.get("/docs").headers["content-security-policy"]
    assert "unsafe-inline" not in csp
    assert "unsafe-eval" not in csp
    assert "http" not in csp  # no other host is named anywhere in the policy


def test_openapi_declares_the_password_flow(live_server: LiveServer) -> None:
    with live_server.client() as client:
        spec = client.get("/openapi.json").json()
    schemes = spec["components"]["securitySchemes"].values()
    assert any("password" in scheme.get("flows", {}) for scheme in schemes), schemes
    assert "/health/live" in spec["paths"]


def test_a_sane_request_id_is_echoed(live_server: LiveServer) -> None:
    with live_server.client() as client:
        for path in ("/health/live", "/no/such/path"):
            response = client.get(path, headers={"X-Request-ID": "abc-123.X_y"})
            assert response.headers["x-request-id"] == "abc-123.X_y"
        assert response.json()["request_id"] == "abc-123.X_y"


@pytest.mark.parametrize(
    "incoming",
    ["a" * 65, "<script>alert(1)</script>", "abc 123", "id;rm", ""],
    ids=["too-long", "markup", "space", "punctuation", "empty"],
)
def test_an_insane_request_id_is_replaced(live_server: LiveServer, incoming: str) -> None:
    with live_server.client() as client:
        response = client.get("/no/such/path", headers={"X-Request-ID": incoming})
    generated = response.headers["x-request-id"]
    assert generated != incoming
    assert SANE_GENERATED_ID.fullmatch(generated), generated
    assert response.json()["request_id"] == generated
    if incoming:
        assert incoming not in response.text


def test_each_response_gets_its_own_request_id(live_server: LiveServer) -> None:
    with live_server.client() as client:
        ids = {client.get("/health/live").headers["x-request-id"] for _ in range(5)}
    assert len(ids) == 5


def test_data_dir_is_private(live_server: LiveServer) -> None:
    with live_server.client() as client:
        assert client.get("/health/ready").status_code == 200  # the database file is in use
    data_dir = live_server.data_dir
    sqlite_file = data_dir / "bastion.sqlite3"
    if live_server.backend == "sqlite":
        assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
        assert sqlite_file.is_file()
        # The database and its WAL/shared-memory companions: readable by the service only.
        for path in data_dir.iterdir():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, (path, oct(path.stat().st_mode))
    else:
        assert not sqlite_file.exists(), "an SQLite file was created although PG is configured"
        if data_dir.exists():
            assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700


def test_logs_are_json_lines_with_one_access_line_per_request(live_server: LiveServer) -> None:
    sent = {
        "e2e-access-live": ("GET", "/health/live", "/health/live", 200),
        "e2e-access-ready": ("GET", "/health/ready", "/health/ready", 200),
        "e2e-access-405": ("POST", "/health/live", "/health/live", 405),
        "e2e-access-404": ("GET", "/nope/42", None, 404),
        # Generating the spec must not write anything but JSON lines either.
        "e2e-access-openapi": ("GET", "/openapi.json", "/openapi.json", 200),
    }
    with live_server.client() as client:
        for request_id, (method, path, _route, _status) in sent.items():
            unique = f"{request_id}-{live_server.backend}"
            client.request(method, path, headers={"X-Request-ID": unique})

    for request_id, (method, path, route, status) in sent.items():
        lines = live_server.access_records(f"{request_id}-{live_server.backend}")
        assert len(lines) == 1, lines
        line = lines[0]
        for name in ACCESS_FIELDS:
            assert name in line, (name, line)
        assert line["method"] == method
        if path == "/openapi.json":
            # FastAPI sets scope["route"] for its APIRoutes only; for the spec's plain
            # Starlette route the access line names the (fixed) path instead.
            assert route in (line["route"], line.get("path")), line
        else:
            assert line["route"] == route, line
        assert line["status"] == status
        assert isinstance(line["duration_ms"], int | float) and line["duration_ms"] >= 0
        assert line["client_ip"] == "127.0.0.1"

    # Every line is JSON (log_records fails otherwise), uvicorn's own start-up lines included.
    events = [str(record.get("event")) for record in live_server.log_records()]
    assert any(event.startswith("Started server process") for event in events), events
    assert any(event.startswith("Uvicorn running on") for event in events), events


@pytest.mark.parametrize(
    ("path", "form"),
    [
        ("/auth/token", {"grant_type": "password", "username": "admin1\x00",
                         "password": "a long enough passphrase 7"}),
        ("/auth/token", {"grant_type": "password", "username": "admin1",
                         "password": "a long enough\x1bpassphrase 7"}),
        ("/auth/token", {"grant_type": "refresh_token", "refresh_token": "abc\x00def"}),
        ("/auth/revoke", {"token": "abc\x00def"}),
    ],
)
def test_control_characters_in_a_form_are_an_oauth_invalid_request_not_a_500(
    live_server: LiveServer, path: str, form: dict[str, str]
) -> None:
    """``username=admin1%00`` was a 500 on PostgreSQL (it refuses NUL in text), and the log's
    unhandled_exception carried the SQL statement and its parameters."""
    with live_server.client() as client:
        response = client.post(path, data=form)
    assert response.status_code == 400, response.text
    assert response.json() == {
        "error": "invalid_request",
        "error_description": "The request must be a valid form.",
    }
    log = live_server.log_text()
    assert "unhandled_exception" not in log
    assert "SELECT" not in log and "admin1" not in log


@pytest.mark.parametrize(
    "path",
    [
        "/docs/static/index.html",  # Swagger's stock page, pointing at petstore.swagger.io
        "/docs/static/oauth2-redirect.html",
        "/docs/static/swagger-ui-bundle.js.map",
        "/docs/static/swagger-ui.js",
    ],
)
def test_only_the_files_the_docs_page_loads_are_served(live_server: LiveServer, path: str) -> None:
    with live_server.client() as client:
        assert_problem(client.get(path), 404)
        served = client.get("/docs/static/swagger-ui.css")
        assert served.status_code == 200
        assert served.headers["ratelimit-policy"].startswith('"default"')  # metered


def test_a_whole_oversized_head_in_one_write_is_a_431(live_server: LiveServer) -> None:
    """100,000 bytes of header in one write, complete, used to be served with 200: the bound
    only counted heads that arrived in several reads."""
    head = (
        b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: "
        + b"x" * 100_000
        + b"\r\nConnection: close\r\n\r\n"
    )
    reply = raw_exchange(live_server.port, head)
    assert reply.startswith(b"HTTP/1.1 431 "), reply[:100]
    assert_server_layer_problem(reply, 431)


def assert_server_layer_problem(reply: bytes, status: int) -> None:
    """An answer from below the app is problem details with the security headers too."""
    head, _, body = reply.partition(b"\r\n\r\n")
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(b":") for line in head.split(b"\r\n")[1:])
    }
    assert headers[b"content-type"] == b"application/problem+json", headers
    assert headers[b"x-content-type-options"] == b"nosniff"
    assert headers[b"content-security-policy"].startswith(b"default-src 'none'")
    problem = json.loads(body)
    assert problem["status"] == status and problem["title"] and problem["detail"]
    assert b"x" * 100 not in body


def test_a_request_that_is_not_http_is_a_400_problem(live_server: LiveServer) -> None:
    """uvicorn answered an unparsable request in plain text without the security headers."""
    reply = raw_exchange(
        live_server.port, b"GET /health/live HTTP/1.1\r\nHost 127.0.0.1\r\n\r\n"
    )
    assert reply.startswith(b"HTTP/1.1 400 "), reply[:100]
    assert_server_layer_problem(reply, 400)
