"""Pure-ASGI middleware: each class wraps ``send`` or ``receive``; none buffers a body."""

from bastion.middleware.access_log import AccessLogMiddleware
from bastion.middleware.body_limit import BodyLimitMiddleware
from bastion.middleware.request_id import RequestIdMiddleware, request_id_of
from bastion.middleware.secure_headers import SecureHeadersMiddleware
from bastion.middleware.server_errors import ServerErrorMiddleware

__all__ = [
    "AccessLogMiddleware",
    "BodyLimitMiddleware",
    "RequestIdMiddleware",
    "SecureHeadersMiddleware",
    "ServerErrorMiddleware",
    "request_id_of",
]
