"""Every error path through the real server is problem+json that gives nothing away.

Uses the echo server: the service plus ``POST /echo`` (a strict JSON model) and ``GET /boom``
(an unhandled exception whose message mimics internals), served by the same hardened uvicorn.
"""

from __future__ import annotations

from collections.abc import Iterator

from tests.e2e.conftest import LiveServer, assert_problem, assert_secure_headers
from tests.e2e.echo_app import BOOM_MESSAGE

TWO_MIB = 2 * 1024 * 1024
CHUNK = 64 * 1024
PASSWORD = "PlainPassw0rdValue"
JSON_HEADERS = {"Content-Type": "application/json"}


def test_a_valid_body_is_accepted(echo_server: LiveServer) -> None:
    with echo_server.client() as client:
        response = client.post("/echo", json={"name": "ada", "password": PASSWORD})
    assert response.status_code == 200, response.text
    assert response.json() == {"name": "ada"}
    assert PASSWORD not in response.text
    assert_secure_headers(response)


def test_malformed_json_is_a_4xx_problem(echo_server: LiveServer) -> None:
    with echo_server.client() as client:
        truncated = b'{"name": "ada", "password": "' + PASSWORD.encode()
        response = client.post("/echo", content=truncated, headers=JSON_HEADERS)
    assert 400 <= response.status_code < 500, response.status_code
    assert_problem(response, response.status_code, PASSWORD)


def test_an_unknown_field_is_a_422_without_the_submitted_values(echo_server: LiveServer) -> None:
    with echo_server.client() as client:
        response = client.post(
            "/echo", json={"name": "ada", "password": PASSWORD, "is_admin": "yes-please"}
        )
    body = assert_problem(response, 422, PASSWORD, "yes-please")
    errors = body["errors"]
    assert isinstance(errors, list) and errors
    for error in errors:
        assert set(error) == {"loc", "msg"}, error
        assert isinstance(error["loc"], list)
        assert isinstance(error["msg"], str) and error["msg"]
    # Reported at the body, without the name the client chose.
    assert errors == [{"loc": ["body"], "msg": "Unknown fields are not allowed."}], errors
    assert "is_admin" not in response.text


def test_a_wrongly_typed_password_is_a_422_without_its_value(echo_server: LiveServer) -> None:
    with echo_server.client() as client:
        response = client.post("/echo", json={"name": "ada", "password": [PASSWORD]})
    body = assert_problem(response, 422, PASSWORD)
    assert any("password" in error["loc"] for error in body["errors"]), body


def test_a_declared_oversized_body_is_a_413(echo_server: LiveServer) -> None:
    with echo_server.client() as client:
        response = client.post("/echo", content=b"x" * TWO_MIB, headers=JSON_HEADERS)
        assert response.request.headers["content-length"] == str(TWO_MIB)
        assert_problem(response, 413)
        # The server is still fine afterwards.
        assert client.get("/health/live").status_code == 200


def test_a_chunked_oversized_body_is_a_413(echo_server: LiveServer) -> None:
    def body() -> Iterator[bytes]:
        for _ in range(TWO_MIB // CHUNK):
            yield b"x" * CHUNK

    with echo_server.client() as client:
        response = client.post("/echo", content=body(), headers=JSON_HEADERS)
        assert "content-length" not in response.request.headers
        assert response.request.headers["transfer-encoding"] == "chunked"
        assert_problem(response, 413)
        assert client.get("/health/live").status_code == 200


def test_a_body_just_under_the_limit_is_read(echo_server: LiveServer) -> None:
    """The 413 is about size only: a large but allowed body reaches validation."""
    padding = "p" * (1024 * 1024 - 100)
    with echo_server.client() as client:
        response = client.post("/echo", json={"name": padding, "password": PASSWORD})
    assert response.status_code == 200, response.text[:200]


def test_an_unhandled_exception_is_a_bare_500(echo_server: LiveServer) -> None:
    with echo_server.client() as client:
        response = client.get("/boom", headers={"X-Request-ID": "e2e-boom-500"})
    body = assert_problem(response, 500, BOOM_MESSAGE, "secret-internal-detail", "RuntimeError")
    assert response.headers["x-request-id"] == "e2e-boom-500"
    assert body["request_id"] == "e2e-boom-500"
    assert_secure_headers(response)


def test_every_error_status_carries_the_security_headers(echo_server: LiveServer) -> None:
    with echo_server.client() as client:
        responses = [
            client.get("/health/live"),
            client.get("/nowhere"),
            client.put("/echo"),
            client.post("/echo", json={"extra": 1}),
            client.post("/echo", content=b"x" * TWO_MIB, headers=JSON_HEADERS),
            client.get("/boom"),
            client.get("/docs"),
            client.get("/docs/static/swagger-ui-bundle.js"),
            client.get("/openapi.json"),
        ]
    assert [r.status_code for r in responses] == [200, 404, 405, 422, 413, 500, 200, 200, 200]
    for response in responses:
        assert_secure_headers(response)


def test_requests_after_errors_still_work(echo_server: LiveServer) -> None:
    """A 500 or 413 does not poison the process or the connection pool."""
    with echo_server.client() as client:
        for _ in range(3):
            assert client.get("/boom").status_code == 500
        response = client.post("/echo", json={"name": "ok", "password": PASSWORD})
    assert response.status_code == 200
