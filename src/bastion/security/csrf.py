"""Cross-site request forgery: where a cookie-authenticated request came from, and its token.

A browser attaches the session cookie to any request for this host, whoever's page sent it.
Two independent checks refuse a request another site made (OWASP's CSRF cheat sheet):

1. **Where it came from.** ``Sec-Fetch-Site`` (Fetch Metadata), which a page's script
   cannot set, must say ``same-origin`` (or ``none``: the person typed it). Browsers
   without it send ``Origin``, and failing that ``Referer``, which must be the service's
   own origin (``BASTION_PUBLIC_URL``). With none of the three, the request is refused: a
   browser always sends one of them on an unsafe request.
2. **A token only its own pages can read.** ``X-CSRF-Token`` must equal the CSRF cookie,
   and both must be the HMAC of this session's id under a secret of the service (the
   *signed* double submit: a cookie planted by a sibling subdomain or another session's
   token does not match, where a naive double submit would accept any equal pair).

Pure: no I/O; the caller supplies headers, cookies and the session.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping

from bastion.security.hostport import web_origin

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
CSRF_HEADER = "x-csrf-token"
_SAME_ORIGIN_SITES = frozenset({"same-origin", "none"})
_DOMAIN = b"bastion csrf v1\x00"
# A token is 43 base64url characters; anything much longer is not worth hashing.
_MAX_TOKEN_CHARS = 64


def origin_refusal(headers: Mapping[str, str], public_origin: str) -> str | None:
    """Why a request does not come from the service's own pages, or None when it does.

    The reason is for the audit log: ``cross_site`` (Fetch Metadata says another site or
    a sibling origin), ``foreign_origin``, ``foreign_referer``, ``no_origin``."""
    site = headers.get("sec-fetch-site")
    if site is not None:
        return None if site.strip().lower() in _SAME_ORIGIN_SITES else "cross_site"
    origin = headers.get("origin")
    if origin is not None:
        return None if web_origin(origin) == public_origin else "foreign_origin"
    referer = headers.get("referer")
    if referer is not None:
        return None if web_origin(referer) == public_origin else "foreign_referer"
    return "no_origin"


class CsrfTokens:
    """Issues and checks the session-bound CSRF token (an HMAC-SHA256 of the session id)."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def token_for(self, session_id: str) -> str:
        digest = hmac.new(self._secret, _DOMAIN + session_id.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def refusal(
        self, session_id: str, *, header: str | None, cookie: str | None
    ) -> str | None:
        """Why the token pair does not prove the request came from this session's pages, or
        None when it does: ``missing_token``, ``token_mismatch`` (header and cookie differ),
        ``wrong_session`` (an equal pair that is not this session's: planted or stale)."""
        if not header or not cookie or len(header) > _MAX_TOKEN_CHARS:
            return "missing_token"
        if not hmac.compare_digest(header.encode(), cookie.encode()):
            return "token_mismatch"
        if not hmac.compare_digest(header.encode(), self.token_for(session_id).encode()):
            return "wrong_session"
        return None
