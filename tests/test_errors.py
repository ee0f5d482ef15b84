"""Every error is problem+json with the request id, and leaks nothing it was sent."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import structlog
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from bastion.app import create_app
from bastion.errors import Conflict, Forbidden, NotFound
from bastion.identity.schemas import Email
from bastion.schemas import StrictModel
from bastion.storage import StorageUnavailable
from tests.conftest import make_settings

PASSWORD = "correct horse battery staple 42"


class Signup(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=3, max_length=32)
    password: str = Field(min_length=15)
    age: int = Field(ge=13, le=130, strict=True)


class EmailBody(StrictModel):
    email: Email


def _add_probe_routes(app: FastAPI) -> None:
    @app.post("/probe/signup", status_code=201)
    async def signup(payload: Signup) -> dict[str, str]:
        return {"username": payload.username}

    @app.get("/probe/item/{item_id}")
    async def item(item_id: uuid.UUID) -> dict[str, str]:
        return {"id": str(item_id)}

    @app.post("/probe/email")
    async def email(payload: EmailBody) -> dict[str, str]:
        return {"email": payload.email}

    @app.get("/probe/not-found")
    async def not_found() -> None:
        raise NotFound

    @app.get("/probe/conflict")
    async def conflict() -> None:
        raise Conflict("That name is taken.")

    @app.get("/probe/forbidden")
    async def forbidden() -> None:
        raise Forbidden

    @app.get("/probe/teapot")
    async def teapot() -> None:
        raise HTTPException(status_code=418, detail="Short and stout.")

    @app.get("/probe/unavailable")
    async def unavailable() -> None:
        raise StorageUnavailable

    @app.get("/probe/crash")
    async def crash() -> None:
        raise RuntimeError("boom at /srv/app/secret.py: SELECT password FROM users")


@pytest.fixture
async def probe_client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(make_settings(tmp_path / "data"))
    _add_probe_routes(app)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client
    await app.state.bastion.database.dispose()


def assert_problem(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    problem: dict[str, object] = response.json()
    assert {"type", "title", "status", "detail", "request_id"} <= problem.keys()
    assert problem["status"] == status
    assert problem["request_id"] == response.headers["x-request-id"]
    return problem


async def test_unknown_path_is_a_404_problem(probe_client: httpx.AsyncClient) -> None:
    assert_problem(await probe_client.get("/no/such/thing"), 404)


async def test_wrong_method_is_a_405_problem_with_allow(probe_client: httpx.AsyncClient) -> None:
    response = await probe_client.delete("/health/live")
    assert_problem(response, 405)
    assert "GET" in response.headers["allow"].split(", ")


async def test_validation_errors_list_loc_and_msg_but_never_the_values(
    probe_client: httpx.AsyncClient,
) -> None:
    response = await probe_client.post(
        "/probe/signup",
        json={"username": "x", "password": PASSWORD[:10], "age": True, "owner_id": 7},
    )
    problem = assert_problem(response, 422)
    errors = problem["errors"]
    assert isinstance(errors, list)
    assert {tuple(error["loc"]) for error in errors} == {
        ("body", "username"),
        ("body", "password"),
        ("body", "age"),
        ("body",),  # the unknown field, by the schema's names only
    }
    assert {"loc": ["body"], "msg": "Unknown fields are not allowed."} in errors
    for error in errors:
        assert set(error) == {"loc", "msg"}
    assert PASSWORD[:10] not in response.text
    assert "owner_id" not in response.text


async def test_unknown_field_names_are_never_echoed(probe_client: httpx.AsyncClient) -> None:
    """A field name is the client's choice, as much as a value: three unknown ones are one
    error at the body, naming none of them."""
    chosen = ["<script>alert(1)</script>", "owner_id", "x" * 300]
    body = {"username": "abc", "password": PASSWORD, "age": 30, **dict.fromkeys(chosen, 1)}
    response = await probe_client.post("/probe/signup", json=body)
    problem = assert_problem(response, 422)
    assert problem["errors"] == [{"loc": ["body"], "msg": "Unknown fields are not allowed."}]
    for name in chosen:
        assert name not in response.text


async def test_messages_that_would_quote_the_value_are_replaced(
    probe_client: httpx.AsyncClient,
) -> None:
    """Pydantic's UUID message names the character it choked on; email-validator's quote
    characters of the address."""
    uuid_answer = await probe_client.get("/probe/item/zq-not-a-uuid")
    problem = assert_problem(uuid_answer, 422)
    assert problem["errors"] == [
        {"loc": ["path", "item_id"], "msg": "Input should be a valid UUID."}
    ]
    assert "zq" not in uuid_answer.text

    email_answer = await probe_client.post(
        "/probe/email", json={"email": "mal<l>ory@exa mple.com"}
    )
    problem = assert_problem(email_answer, 422)
    assert problem["errors"] == [
        {"loc": ["body", "email"], "msg": "Value error, Not a valid email address."}
    ]
    for quoted in ("<", "exa mple", "mal"):
        assert quoted not in email_answer.text


async def test_a_body_that_is_not_json_is_a_400(probe_client: httpx.AsyncClient) -> None:
    response = await probe_client.post(
        "/probe/signup",
        content=b'{"username": "abc", ',
        headers={"content-type": "application/json"},
    )
    problem = assert_problem(response, 400)
    assert problem["detail"] == "The body is not valid JSON."


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
async def test_a_body_of_another_media_type_is_a_415(
    probe_client: httpx.AsyncClient, content_type: str
) -> None:
    response = await probe_client.post(
        "/probe/signup",
        content=b'{"username": "abc", "password": "x", "age": 30}',
        headers={"content-type": content_type},
    )
    assert_problem(response, 415)
    assert response.headers["accept-post"] == "application/json"


async def test_json_with_a_structured_suffix_or_parameters_is_read(
    probe_client: httpx.AsyncClient,
) -> None:
    body = b'{"username": "abc", "password": "%s", "age": 30}' % PASSWORD.encode()
    for content_type in ("application/json; charset=utf-8", "application/merge-patch+json"):
        response = await probe_client.post(
            "/probe/signup", content=body, headers={"content-type": content_type}
        )
        assert response.status_code == 201, (content_type, response.text)


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b'{"username": "abc", "password": ', "application/json"),
        (b"\xff\xfe not utf-8", "application/json"),
        (b"[1, 2, 3]", "application/json"),
        (b"", "application/json"),
    ],
)
async def test_malformed_bodies_are_a_4xx_problem(
    probe_client: httpx.AsyncClient, content: bytes, content_type: str
) -> None:
    response = await probe_client.post(
        "/probe/signup", content=content, headers={"content-type": content_type}
    )
    assert 400 <= response.status_code < 500
    assert_problem(response, response.status_code)


@pytest.mark.parametrize(
    ("path", "status", "detail"),
    [
        ("/probe/not-found", 404, "The resource does not exist."),
        ("/probe/conflict", 409, "That name is taken."),
        ("/probe/forbidden", 403, "You are not allowed to do this."),
        ("/probe/teapot", 418, "Short and stout."),
    ],
)
async def test_domain_and_http_errors_translate_once(
    probe_client: httpx.AsyncClient, path: str, status: int, detail: str
) -> None:
    problem = assert_problem(await probe_client.get(path), status)
    assert problem["detail"] == detail


async def test_an_unavailable_database_is_a_503_with_retry_after(
    probe_client: httpx.AsyncClient,
) -> None:
    response = await probe_client.get("/probe/unavailable")
    assert_problem(response, 503)
    assert int(response.headers["retry-after"]) > 0


async def test_a_crash_is_a_generic_500_that_keeps_the_request_id(
    probe_client: httpx.AsyncClient,
) -> None:
    with structlog.testing.capture_logs() as logs:
        response = await probe_client.get("/probe/crash", headers={"X-Request-ID": "crash-1"})
    problem = assert_problem(response, 500)
    assert problem["request_id"] == "crash-1"
    for leak in ("boom", "/srv/app", "SELECT", "Traceback", "RuntimeError"):
        assert leak not in response.text
    assert response.headers["x-content-type-options"] == "nosniff"
    logged = [entry for entry in logs if entry["event"] == "unhandled_exception"]
    assert logged
    assert logged[0]["request_id"] == "crash-1"
    # The traceback as redacted text, never the exception object: no renderer the host app
    # configured can print the frames' local variables from it.
    assert "exc_info" not in logged[0]
    assert logged[0]["error"] == "RuntimeError"
    assert logged[0]["traceback"].startswith("Traceback")


@pytest.mark.parametrize("path", ["/health/live", "/health/ready"])
async def test_health_answers_head_for_load_balancers(
    probe_client: httpx.AsyncClient, path: str
) -> None:
    response = await probe_client.head(path)
    assert response.status_code == 200
    assert response.content == b""
