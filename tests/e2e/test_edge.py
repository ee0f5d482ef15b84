"""The network edge through the real server process: Host allow-list, CORS, client address."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.conftest import assert_problem, service

FRONT_END = "https://app.example.com"
SPOOFED = "203.0.113.66"


def test_hosts_cors_and_forwarded_addresses(tmp_path: Path) -> None:
    with service(tmp_path / "direct", "sqlite", cors_origins=FRONT_END) as server:
        with server.client() as client:
            foreign = client.get("/health/live", headers={"Host": "evil.example"})
            allowed = client.get("/health/live", headers={"Origin": FRONT_END})
            refused = client.get("/health/live", headers={"Origin": "https://evil.example"})
            preflight = client.options(
                "/auth/me",
                headers={
                    "Origin": "https://evil.example",
                    "Access-Control-Request-Method": "GET",
                },
            )
            spoofed = client.get(
                "/health/live",
                headers={"X-Forwarded-For": SPOOFED, "X-Request-ID": "e2e-edge-spoofed"},
            )
        assert_problem(foreign, 400)
        assert "evil.example" not in foreign.text
        assert allowed.headers["access-control-allow-origin"] == FRONT_END
        assert allowed.headers["access-control-allow-credentials"] == "true"
        assert "access-control-allow-origin" not in refused.headers
        assert_problem(preflight, 400)
        assert spoofed.status_code == 200
        [line] = server.access_records("e2e-edge-spoofed")
        assert line["client_ip"] == "127.0.0.1"  # no trusted proxy: the header is ignored

    with service(tmp_path / "proxied", "sqlite", trusted_proxies="127.0.0.1") as server:
        with server.client() as client:
            forwarded = client.get(
                "/health/live",
                headers={
                    "X-Forwarded-For": f"198.51.100.1, {SPOOFED}",
                    "X-Request-ID": "e2e-edge-proxied",
                },
            )
        assert forwarded.status_code == 200
        [line] = server.access_records("e2e-edge-proxied")
        assert line["client_ip"] == SPOOFED  # the address the trusted proxy (127.0.0.1) added
