"""Pure-ASGI middleware: each class wraps ``send`` or ``receive``; none buffers a body."""

from bastion.middleware.access_log import AccessLogMiddleware
from bastion.middleware.body_limit import BodyLimitMiddleware
from bastion.middleware.cors import CORSMiddleware
from bastion.middleware.https_redirect import HTTPSRedirectMiddleware
from bastion.middleware.proxy_headers import ProxyHeadersMiddleware
from bastion.middleware.request_id import RequestIdMiddleware, request_id_of
from bastion.middleware.secure_headers import SecureHeadersMiddleware
from bastion.middleware.server_errors import ServerErrorMiddleware
from bastion.middleware.trusted_host import TrustedHostMiddleware

__all__ = [
    "AccessLogMiddleware",
    "BodyLimitMiddleware",
    "CORSMiddleware",
    "HTTPSRedirectMiddleware",
    "ProxyHeadersMiddleware",
    "RequestIdMiddleware",
    "SecureHeadersMiddleware",
    "ServerErrorMiddleware",
    "TrustedHostMiddleware",
    "request_id_of",
]
