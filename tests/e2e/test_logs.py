"""The server's own log file: JSON lines, one access line per request, no secrets."""

from __future__ import annotations

from tests.e2e.conftest import LiveServer, assert_problem, logger_of
from tests.identity.helpers import bearer

TOKEN = "SECRETTOKEN123"
QUERY_PASSWORD = "hunter2hunter2"
BODY_PASSWORD = "PlainPassw0rdValue"
SECRETS = (TOKEN, QUERY_PASSWORD, BODY_PASSWORD)
SECRET_QUERY = {"password": QUERY_PASSWORD, "token": "abc"}
AUTHORIZATION = bearer(TOKEN)


def test_secrets_sent_by_clients_never_reach_the_log(echo_server: LiveServer) -> None:
    sent: dict[str, tuple[str, str, int]] = {}
    with echo_server.client(headers=AUTHORIZATION, params=SECRET_QUERY) as client:
        for request_id, method, path, status, body in (
            ("e2e-secret-live", "GET", "/health/live", 200, None),
            ("e2e-secret-404", "GET", "/no/such/path", 404, None),
            ("e2e-secret-405", "DELETE", "/health/ready", 405, None),
            (
                "e2e-secret-422",
                "POST",
                "/echo",
                422,
                {"name": "x", "password": BODY_PASSWORD, "token": TOKEN},
            ),
            ("e2e-secret-bad-type", "POST", "/echo", 422, {"name": 1, "password": [BODY_PASSWORD]}),
            ("e2e-secret-500", "GET", "/boom", 500, None),
        ):
            response = client.request(method, path, json=body, headers={"X-Request-ID": request_id})
            assert response.url.params["password"] == QUERY_PASSWORD  # really sent
            if status == 200:
                assert response.status_code == 200
            else:
                assert_problem(response, status, *SECRETS)
            sent[request_id] = (method, path, status)

    for request_id, (method, _path, status) in sent.items():
        lines = echo_server.access_records(request_id)
        assert len(lines) == 1, lines
        assert lines[0]["method"] == method
        assert lines[0]["status"] == status

    text = echo_server.log_text()
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} is in the server log"
    assert "password=" not in text and "token=abc" not in text  # no raw query string at all


def test_the_500_is_logged_with_its_request_id(echo_server: LiveServer) -> None:
    with echo_server.client(headers=AUTHORIZATION) as client:
        response = client.get("/boom", headers={"X-Request-ID": "e2e-logged-boom"})
    assert response.status_code == 500

    def logged(records: list[dict[str, object]]) -> bool:
        return any(
            r.get("request_id") == "e2e-logged-boom" and logger_of(r) == "bastion.errors"
            for r in records
        )

    records = echo_server.wait_for_records(logged)
    errors = [
        r
        for r in records
        if r.get("request_id") == "e2e-logged-boom" and logger_of(r) == "bastion.errors"
    ]
    assert len(errors) == 1, errors
    assert errors[0]["level"] == "error"
    # The operator gets the exception (its type, and the traceback as redacted text without
    # local variables, in one JSON line); the client got none of it.
    assert errors[0]["error"] == "RuntimeError"
    assert "RuntimeError" in str(errors[0]["traceback"])
    assert "exception" not in errors[0]
    access = echo_server.access_records("e2e-logged-boom")
    assert [line["status"] for line in access] == [500]
    assert access[0]["route"] == "/boom"
    assert TOKEN not in echo_server.log_text()


def test_every_line_is_json_including_uvicorns(echo_server: LiveServer) -> None:
    with echo_server.client() as client:
        client.get("/openapi.json")
        client.get("/health/live", headers={"X-Request-ID": "e2e-json-lines"})
    echo_server.access_records("e2e-json-lines")
    records = echo_server.log_records()  # fails on any line that is not a JSON object
    assert records
    for record in records:
        assert "event" in record and "level" in record and "timestamp" in record, record
    uvicorn_events = [str(r["event"]) for r in records if logger_of(r) == "uvicorn.error"]
    assert any(event.startswith("Started server process") for event in uvicorn_events)
    assert any(event.startswith("Uvicorn running on") for event in uvicorn_events)
