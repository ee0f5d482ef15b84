"""TOTP (RFC 6238) for bastion's second factor: SHA-1, 6 digits, 30-second steps.

Those parameters are the ones every authenticator app implements; anything else is a
support burden for no security gain at this length of code. The HMAC-based one-time
password (RFC 4226) is written out here rather than taken from pyotp, so the RFC's own
test vectors (Appendix B: SHA-1, SHA-256, SHA-512, 8 digits) check exactly the code that
runs.

A code is accepted for the current step and one step either side (clocks drift, and a
user types a code that was valid when they read it), never for a step at or before the
last one accepted: ``after_step`` is that step, and the caller records the returned step
with a conditional update, so a code seen once (over a shoulder, in a phishing proxy) is
not accepted twice.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import secrets
from datetime import UTC, datetime, timedelta
from io import BytesIO
from urllib.parse import quote, urlencode

import segno

TOTP_PERIOD = 30
TOTP_DIGITS = 6
_ALGORITHM = "sha1"
_SECRET_BYTES = 20  # 160 bits: RFC 4226's recommended length for HMAC-SHA-1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_STEP = timedelta(seconds=TOTP_PERIOD)
_CODE = re.compile(f"[0-9]{{{TOTP_DIGITS}}}")
_DIGESTS = frozenset({"sha1", "sha256", "sha512"})
# The symbol with its quiet zone is drawn this wide, near enough, whatever the version.
_QR_TARGET_PIXELS = 200
_QR_QUIET_ZONE = 4


def hotp(key: bytes, counter: int, *, digits: int, digest: str) -> str:
    """RFC 4226's HOTP (dynamic truncation of an HMAC of the counter), which RFC 6238 runs
    on the time step. Other digests and lengths than bastion's are here for the RFC's
    vectors only."""
    if digest not in _DIGESTS:
        raise ValueError(f"unsupported HOTP digest {digest!r}")
    if not 6 <= digits <= 10:
        raise ValueError("an HOTP code has 6 to 10 digits")
    if not 0 <= counter < 2**64:
        raise ValueError("an HOTP counter is an unsigned 64-bit integer")
    mac = hmac.new(key, counter.to_bytes(8, "big"), digest).digest()
    offset = mac[-1] & 0x0F
    value = int.from_bytes(mac[offset : offset + 4], "big") & 0x7FFF_FFFF
    return str(value % 10**digits).zfill(digits)


def new_totp_secret() -> str:
    """A new shared secret, base32 as authenticator apps take it (160 bits: no padding)."""
    return base64.b32encode(secrets.token_bytes(_SECRET_BYTES)).decode("ascii").rstrip("=")


def _secret_key(secret: str) -> bytes:
    """The key bytes of a base32 secret, however it is padded or cased. ``ValueError``
    when it is not base32: a stored secret is bastion's own, so that is corruption, not
    a user's mistake."""
    text = secret.strip().upper()
    try:
        key = base64.b32decode(text + "=" * (-len(text) % 8))
    except (binascii.Error, ValueError):
        raise ValueError("a TOTP secret is not base32") from None
    if not key:
        raise ValueError("a TOTP secret is empty")
    return key


def provisioning_uri(secret: str, *, account: str, issuer: str) -> str:
    """The ``otpauth://`` URI an authenticator app scans. The issuer is in the label (for
    older apps) and in the ``issuer`` parameter (which newer ones prefer); the algorithm,
    digits and period are written out even though they are the defaults, so no app has
    to guess. The key URI format forbids a colon in either name: it splits the label."""
    if ":" in issuer or ":" in account:
        raise ValueError("a TOTP issuer or account name cannot contain ':'")
    _secret_key(secret)
    label = f"{quote(issuer, safe='')}:{quote(account, safe='')}"
    parameters = urlencode(
        {
            "secret": secret.strip().upper().rstrip("="),
            "issuer": issuer,
            "algorithm": _ALGORITHM.upper(),
            "digits": TOTP_DIGITS,
            "period": TOTP_PERIOD,
        },
        quote_via=quote,
    )
    return f"otpauth://totp/{label}?{parameters}"


def time_step(at: datetime) -> int:
    """RFC 6238's T: whole periods since the Unix epoch, floored. Exact (no float), and
    refusing a naive datetime, which Python would read as local time."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("time_step needs a timezone-aware datetime")
    return (at - _EPOCH) // _STEP


def _normalised_code(code: object) -> str | None:
    """The code as typed, without the spaces apps display in the middle of it; None unless
    it is then exactly six ASCII digits (``str.isdigit`` would take other scripts' digits)."""
    if not isinstance(code, str):
        return None
    text = code.strip().replace(" ", "")
    return text if _CODE.fullmatch(text) else None


def accepted_step(secret: str, code: str, *, at: datetime, after_step: int | None) -> int | None:
    """The time step, among T-1, T and T+1, whose code ``code`` is and which is later than
    ``after_step``; the latest such step if more than one, None if none or if ``code`` is
    malformed. The caller must then record the step (and accept the code) only if no other
    request recorded it or a later one first."""
    typed = _normalised_code(code)
    if typed is None:
        return None
    key = _secret_key(secret)
    current = time_step(at)
    accepted: int | None = None
    # Every candidate is computed and compared, so the time taken says nothing about which
    # step (if any) matched.
    for step in (current + 1, current, current - 1):
        if step < 0:
            continue
        expected = hotp(key, step, digits=TOTP_DIGITS, digest=_ALGORITHM)
        matches = hmac.compare_digest(expected.encode("ascii"), typed.encode("ascii"))
        fresh = after_step is None or step > after_step
        if matches and fresh and accepted is None:
            accepted = step
    return accepted


def qr_code_data_uri(text: str) -> str:
    """``text`` as an SVG QR code in a ``data:`` URI, for an ``<img>`` on the set-up page:
    nothing leaves the browser (an external QR service would see the secret), and an SVG
    in an ``<img>`` runs no script. Error correction M, a four-module quiet zone, and a
    scale that draws it about 200 pixels wide, dark on an opaque white background so it
    scans on a dark page too."""
    qr = segno.make(text, error="m", micro=False, boost_error=False)
    width, _ = qr.symbol_size(scale=1, border=_QR_QUIET_ZONE)
    scale = max(1, round(_QR_TARGET_PIXELS / width))
    buffer = BytesIO()
    qr.save(
        buffer, kind="svg", scale=scale, border=_QR_QUIET_ZONE, dark="#000", light="#fff",
        xmldecl=False,
    )
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
