"""The one ASGI request the in-process benches (overhead.py, memory.py) send: a GET with an
optional bearer token, from a given client address, with no socket and no client library."""

from __future__ import annotations

from typing import Any


def get_scope(path: str, *, client: str = "127.0.0.1", token: str | None = None) -> dict[str, Any]:
    headers = [(b"host", b"localhost"), (b"accept", b"*/*")]
    if token:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": headers,
        "client": (client, 5000), "server": ("127.0.0.1", 8000),
    }


async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}
