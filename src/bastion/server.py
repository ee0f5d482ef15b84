"""uvicorn with bastion's hardening, in one place for ``bastion serve`` and the tests.

Chosen settings: no ``Server`` header; forwarded headers believed only from configured
proxies; uvicorn's own access log off (ours carries the request id and route); short
keep-alive and a bounded graceful shutdown. (uvicorn's httptools parser has no header-size
cap; put a reverse proxy with one in front, see docs/operations.md.)
"""

from __future__ import annotations

import uvicorn

from bastion.config import Settings

SERVICE_APP = "bastion.app:app_from_environment"
KEEP_ALIVE_SECONDS = 5
GRACEFUL_SHUTDOWN_SECONDS = 10


def run_server(
    settings: Settings,
    *,
    app_factory: str = SERVICE_APP,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
) -> None:
    trusted = settings.trusted_proxies
    uvicorn.run(
        app_factory,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
        proxy_headers=bool(trusted),
        forwarded_allow_ips=trusted or [],
        server_header=False,
        log_config=None,
        access_log=False,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
