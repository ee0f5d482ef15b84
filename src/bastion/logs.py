"""structlog set-up: JSON lines on stdout, secrets redacted, stdlib loggers routed through it.

Redaction works on names, not guesses about values: any field, header or query parameter
whose name looks like a credential is replaced, at any depth, and a ``Bearer`` credential is
masked wherever it appears in a string.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

REDACTED = "[REDACTED]"
_SECRET_NAME = re.compile(
    r"pass(word|wd|phrase)?|secret|token|authorization|cookie|api[-_]?key|credential|private[-_]?key",
    re.IGNORECASE,
)
_SECRET_QUERY_PARAM = re.compile(
    r"(?P<name>(?:^|(?<=[?&;\s]))[^=&;?#\s]*(?:pass|secret|token|key|auth)[^=&;?#\s]*=)[^&;#\s]*",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(?P<scheme>\b(?:bearer|basic)\s+)[^\s,;\"']+", re.IGNORECASE)


@functools.lru_cache(maxsize=1024)
def is_secret_name(name: str) -> bool:
    return _SECRET_NAME.search(name) is not None


def _redact_string(value: str) -> str:
    if "=" in value:
        value = _SECRET_QUERY_PARAM.sub(rf"\g<name>{REDACTED}", value)
    if " " in value:
        value = _BEARER.sub(rf"\g<scheme>{REDACTED}", value)
    return value


def redact(value: Any) -> Any:
    """A copy of ``value`` with every secret-named entry and bearer credential masked."""
    if isinstance(value, str):
        return _redact_string(value)
    if isinstance(value, Mapping):
        return {
            key: REDACTED if isinstance(key, str) and is_secret_name(key) else redact(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        if len(value) == 2 and isinstance(value[0], str | bytes):  # a (name, value) header pair
            name = value[0].decode("latin-1") if isinstance(value[0], bytes) else value[0]
            if is_secret_name(name):
                return (value[0], REDACTED)
        return [redact(item) for item in value]
    return value


def redact_secrets(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    return {
        key: REDACTED if is_secret_name(key) else _redact_value(item)
        for key, item in event_dict.items()
    }


def _redact_value(value: Any) -> Any:
    # Numbers, None and booleans dominate log lines; skip the generic walk for them.
    if value is None or isinstance(value, int | float):
        return value
    return redact(value)


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact_secrets,
    ]


def _orjson_text(event: Any, **_kwargs: Any) -> str:
    return orjson.dumps(event, default=str).decode()


def _orjson_bytes(event: Any, **_kwargs: Any) -> bytes:
    return orjson.dumps(event, default=str)


_access_lines_enabled = True


class _UtcSecond:
    """The ISO 8601 text of the current UTC second, formatted once a second: the access
    line's timestamp costs an ``int`` comparison, not a ``datetime`` a request."""

    def __init__(self) -> None:
        self.second = -1
        self.text = ""

    def timestamp(self, now: float) -> str:
        second = int(now)
        if second != self.second:
            self.text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self.second = second
        return f"{self.text}.{int((now - second) * 1_000_000):06d}+00:00"


_utc_second = _UtcSecond()


class _DeferredFlush:
    """Flushes stdout once per event-loop turn instead of once per access line.

    The lines are written whole, in order, into stdout's buffer at once; only the system
    call is shared by the requests that finished in the same turn. Outside an event loop
    the line is flushed at once.
    """

    def __init__(self) -> None:
        self.pending = False

    def request(self, stream: Any) -> None:
        if self.pending:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            stream.flush()
            return
        self.pending = True
        loop.call_soon(self._flush, stream)

    def _flush(self, stream: Any) -> None:
        self.pending = False
        with contextlib.suppress(ValueError):  # stdout closed (or replaced) meanwhile
            stream.flush()


_deferred_flush = _DeferredFlush()


def write_access_line(fields: dict[str, Any]) -> None:
    """The access log's own writer: one orjson line on stdout.

    Hand-written rather than passed through structlog because it runs on every request
    and the general pipeline cost more than the rest of the middleware together. Its
    fields are fixed by AccessLogMiddleware and carry no secrets by construction (route
    templates, ids, status); the one attacker-chosen field, ``path``, is redacted like
    any other string.
    """
    if not _access_lines_enabled:
        return
    path = fields.get("path")
    if isinstance(path, str):
        fields["path"] = _redact_string(path)
    fields["event"] = "request"
    fields["level"] = "info"
    fields["logger_name"] = "bastion.access"
    fields["timestamp"] = _utc_second.timestamp(time.time())
    stream = sys.stdout.buffer
    stream.write(orjson.dumps(fields, default=str) + b"\n")
    _deferred_flush.request(stream)


def get_logger(name: str) -> Any:
    """A structlog logger whose lines carry ``logger_name=name``; configured lazily, so module
    level loggers pick up ``configure_logging`` whenever it runs."""
    return structlog.get_logger(logger_name=name)


def _stdlib_logger_name(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    record = event_dict.get("_record")
    if record is not None:
        event_dict["logger_name"] = record.name
    return event_dict


def configure_logging(level: str = "INFO") -> None:
    """Idempotent; called once per process (every uvicorn worker calls it too).

    Our own lines (the access log above all) go straight from structlog to stdout as
    orjson bytes: the stdlib ``logging`` detour costs more than the rest of the request
    stack. Other libraries' stdlib records are rendered by the same processors.
    """
    numeric_level: int = logging.getLevelName(level)
    global _access_lines_enabled
    _access_lines_enabled = numeric_level <= logging.INFO

    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[_stdlib_logger_name, *_shared_processors()],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.JSONRenderer(serializer=_orjson_text),
            ],
        )
    )
    # Python warnings become JSON lines too, instead of raw text on stderr.
    logging.captureWarnings(True)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(numeric_level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "gunicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True
    # SQLAlchemy logs every statement with its parameters at INFO, the drivers at DEBUG:
    # password hashes, private keys, token hashes. No log level lets them through.
    for name in ("sqlalchemy", "aiosqlite", "asyncpg"):
        logging.getLogger(name).setLevel(max(numeric_level, logging.WARNING))
    # Our access middleware logs each request with its id and route; uvicorn's would
    # duplicate it with the raw path (and query string).
    logging.getLogger("uvicorn.access").disabled = True

    structlog.configure(
        processors=[
            *_shared_processors(),
            structlog.processors.JSONRenderer(serializer=_orjson_bytes),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.BytesLoggerFactory(sys.stdout.buffer),
        cache_logger_on_first_use=True,
    )


def ensure_safe_logging() -> None:
    """When the host app configured no structlog, configure the safe minimum: JSON lines on
    stdout, secrets redacted, a traceback as plain text without local variables.
    structlog's own default renders exceptions with their locals (a request's token among
    them) over hundreds of lines. An app that configured structlog itself keeps its set-up;
    ``configure_logging`` (the service's) replaces this one."""
    if structlog.is_configured():
        return
    structlog.configure(
        processors=[
            *_shared_processors(),
            structlog.processors.JSONRenderer(serializer=_orjson_text),
        ],
        # The stream of the moment (a test's capture, a replaced stdout), not the one at
        # configuration time.
        logger_factory=lambda *_: structlog.PrintLogger(sys.stdout),
        cache_logger_on_first_use=False,
    )
