"""TOTP (RFC 6238): the RFC's vectors, the window, replay refusal, what a code may look like,
the otpauth URI and the QR code."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import parse_qs, unquote, urlsplit

import pyotp
import pytest
import segno

from bastion.security.totp import (
    TOTP_DIGITS,
    TOTP_PERIOD,
    accepted_step,
    hotp,
    new_totp_secret,
    provisioning_uri,
    qr_code_data_uri,
    time_step,
)

SHA1_SEED = b"12345678901234567890"
SEEDS = {
    "sha1": SHA1_SEED,
    "sha256": b"12345678901234567890123456789012",
    "sha512": b"1234567890123456789012345678901234567890123456789012345678901234",
}
# RFC 6238 Appendix B: (Unix time, T, {mode: 8-digit TOTP}).
RFC_6238_VECTORS = [
    (59, 0x1, {"sha1": "94287082", "sha256": "46119246", "sha512": "90693936"}),
    (1111111109, 0x23523EC, {"sha1": "07081804", "sha256": "68084774", "sha512": "25091201"}),
    (1111111111, 0x23523ED, {"sha1": "14050471", "sha256": "67062674", "sha512": "99943326"}),
    (1234567890, 0x273EF07, {"sha1": "89005924", "sha256": "91819424", "sha512": "93441116"}),
    (2000000000, 0x3F940AA, {"sha1": "69279037", "sha256": "90698825", "sha512": "38618901"}),
    (20000000000, 0x27BC86AA, {"sha1": "65353130", "sha256": "77737706", "sha512": "47863826"}),
]
# RFC 4226 Appendix D: HOTP-SHA1, 6 digits, counters 0 to 9.
RFC_4226_VECTORS = ["755224", "287082", "359152", "969429", "338314",
                    "254676", "287922", "162583", "399871", "520489"]

SECRET = base64.b32encode(SHA1_SEED).decode()  # GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ
NOW = datetime(2026, 12, 2, 10, 0, 15, tzinfo=UTC)


def code_at_step(step: int, secret: str = SECRET) -> str:
    return hotp(base64.b32decode(secret), step, digits=TOTP_DIGITS, digest="sha1")


@pytest.mark.parametrize(("unix_time", "step", "codes"), RFC_6238_VECTORS)
@pytest.mark.parametrize("digest", ["sha1", "sha256", "sha512"])
def test_rfc_6238_appendix_b(unix_time: int, step: int, codes: dict[str, str], digest: str) -> None:
    at = datetime.fromtimestamp(unix_time, UTC)
    assert time_step(at) == step
    assert hotp(SEEDS[digest], time_step(at), digits=8, digest=digest) == codes[digest]


@pytest.mark.parametrize(("counter", "code"), list(enumerate(RFC_4226_VECTORS)))
def test_rfc_4226_appendix_d(counter: int, code: str) -> None:
    assert hotp(SHA1_SEED, counter, digits=6, digest="sha1") == code


def test_codes_agree_with_pyotp() -> None:
    """An independent implementation, at bastion's own parameters, over many steps."""
    secret = new_totp_secret()
    reference = pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_PERIOD)
    for offset in range(0, 200 * TOTP_PERIOD, 7):
        at = NOW + timedelta(seconds=offset)
        assert code_at_step(time_step(at), secret) == reference.at(at)


def test_hotp_refuses_what_it_does_not_implement() -> None:
    with pytest.raises(ValueError, match="digest"):
        hotp(SHA1_SEED, 0, digits=6, digest="md5")
    with pytest.raises(ValueError, match="digits"):
        hotp(SHA1_SEED, 0, digits=5, digest="sha1")
    with pytest.raises(ValueError, match="counter"):
        hotp(SHA1_SEED, -1, digits=6, digest="sha1")


def test_time_step_floors_and_needs_an_aware_datetime() -> None:
    assert time_step(datetime.fromtimestamp(29, UTC)) == 0
    assert time_step(datetime.fromtimestamp(30, UTC)) == 1
    assert time_step(datetime.fromtimestamp(-1, UTC)) == -1
    assert time_step(datetime(1970, 1, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1)))) == 1
    with pytest.raises(ValueError, match="timezone"):
        time_step(datetime(2026, 1, 1))  # naive: read as local time


def test_new_secrets_are_160_random_bits_of_unpadded_base32() -> None:
    secrets = {new_totp_secret() for _ in range(50)}
    assert len(secrets) == 50
    for secret in secrets:
        assert re.fullmatch(r"[A-Z2-7]{32}", secret)
        assert len(base64.b32decode(secret)) == 20


def test_the_current_step_and_one_either_side_are_accepted() -> None:
    step = time_step(NOW)
    for accepted in (step - 1, step, step + 1):
        assert accepted_step(SECRET, code_at_step(accepted), at=NOW, after_step=None) == accepted


def test_two_steps_away_is_refused() -> None:
    step = time_step(NOW)
    for refused in (step - 2, step + 2, step - 10, step + 10):
        code = code_at_step(refused)
        if code in {code_at_step(s) for s in (step - 1, step, step + 1)}:
            continue  # a chance collision of 6-digit codes, not a window bug
        assert accepted_step(SECRET, code, at=NOW, after_step=None) is None


def test_the_window_follows_the_clock() -> None:
    """Sixty seconds later, the code that was current is two steps old."""
    code = code_at_step(time_step(NOW))
    assert accepted_step(SECRET, code, at=NOW + timedelta(seconds=30), after_step=None)
    assert accepted_step(SECRET, code, at=NOW + timedelta(seconds=60), after_step=None) is None


def test_a_wrong_code_is_refused() -> None:
    step = time_step(NOW)
    window = {code_at_step(s) for s in (step - 1, step, step + 1)}
    wrong = next(f"{n:06d}" for n in range(1_000_000) if f"{n:06d}" not in window)
    assert accepted_step(SECRET, wrong, at=NOW, after_step=None) is None


def test_a_step_at_or_before_the_last_accepted_is_never_accepted_again() -> None:
    step = time_step(NOW)
    code = code_at_step(step)
    assert accepted_step(SECRET, code, at=NOW, after_step=step - 1) == step
    assert accepted_step(SECRET, code, at=NOW, after_step=step) is None
    assert accepted_step(SECRET, code, at=NOW, after_step=step + 1) is None
    # The previous step's code, after the current one was used: refused too.
    assert accepted_step(SECRET, code_at_step(step - 1), at=NOW, after_step=step) is None
    # The next step's code is still fresh.
    assert accepted_step(SECRET, code_at_step(step + 1), at=NOW, after_step=step) == step + 1


def test_the_latest_matching_step_is_preferred() -> None:
    """When a code repeats within the window, the later step is the one returned, so the
    replay barrier moves as far as it can. For the RFC's seed, steps 59061240 and 59061241
    share a code (found by search)."""
    step = 59061241
    at = datetime.fromtimestamp(step * TOTP_PERIOD + 10, UTC)
    code = code_at_step(step)
    assert code_at_step(step - 1) == code
    assert accepted_step(SECRET, code, at=at, after_step=None) == step
    assert accepted_step(SECRET, code, at=at, after_step=step - 2) == step
    assert accepted_step(SECRET, code, at=at, after_step=step) is None


@pytest.mark.parametrize(
    "template",
    ["{code}", " {code} ", "{head} {tail}", "\t{head} {tail}\n", "  {head}   {tail}  "],
    ids=["plain", "surrounding-whitespace", "grouped", "tab-and-newline-around", "many-spaces"],
)
def test_spaces_are_forgiven(template: str) -> None:
    step = time_step(NOW)
    code = code_at_step(step)
    typed = template.format(code=code, head=code[:3], tail=code[3:])
    assert accepted_step(SECRET, typed, at=NOW, after_step=None) == step


def test_malformed_codes_are_refused_never_raised() -> None:
    step = time_step(NOW)
    code = code_at_step(step)
    arabic = "".join(chr(0x0660 + int(d)) for d in code)  # Arabic-Indic digits
    fullwidth = "".join(chr(0xFF10 + int(d)) for d in code)
    for typed in [
        "", " ", code[:5], code + "0", "0" + code, f"{code[:3]}-{code[3:]}", f"{code}\x00",
        arabic, fullwidth, "abcdef", "12345a", "+12345", "-12345", "1e5000", code + "\n0",
        f"{code[:3]}\t{code[3:]}", "9" * 10_000,
    ]:
        assert accepted_step(SECRET, typed, at=NOW, after_step=None) is None, repr(typed)
    assert accepted_step(SECRET, None, at=NOW, after_step=None) is None  # type: ignore[arg-type]


def test_a_corrupt_secret_is_an_error_not_a_refusal() -> None:
    with pytest.raises(ValueError, match="base32"):
        accepted_step("not base32!", "123456", at=NOW, after_step=None)


def test_the_provisioning_uri_names_every_parameter() -> None:
    secret = new_totp_secret()
    uri = provisioning_uri(secret, account="alice@example.com", issuer="Bastion Test")
    parts = urlsplit(uri)
    assert parts.scheme == "otpauth"
    assert parts.netloc == "totp"
    assert unquote(parts.path) == "/Bastion Test:alice@example.com"
    assert " " not in uri and "+" not in uri  # spaces as %20: apps differ on '+'
    query = parse_qs(parts.query, strict_parsing=True)
    assert query == {
        "secret": [secret], "issuer": ["Bastion Test"], "algorithm": ["SHA1"],
        "digits": ["6"], "period": ["30"],
    }
    parsed = pyotp.parse_uri(uri)
    assert isinstance(parsed, pyotp.TOTP)
    assert parsed.at(NOW) == pyotp.TOTP(secret).at(NOW)
    assert parsed.issuer == "Bastion Test"
    assert parsed.name == "alice@example.com"


def test_the_provisioning_uri_escapes_what_would_change_its_meaning() -> None:
    uri = provisioning_uri(SECRET, account="a&b?c/d#e", issuer="x&secret=AAAA")
    query = parse_qs(urlsplit(uri).query)
    assert query["secret"] == [SECRET]
    assert query["issuer"] == ["x&secret=AAAA"]
    assert unquote(urlsplit(uri).path) == "/x&secret=AAAA:a&b?c/d#e"


@pytest.mark.parametrize(("account", "issuer"), [("a:b", "Bastion"), ("alice", "Bas:tion")])
def test_a_colon_in_a_name_is_refused(account: str, issuer: str) -> None:
    with pytest.raises(ValueError, match="':'"):
        provisioning_uri(SECRET, account=account, issuer=issuer)


def _svg_modules(svg: str) -> tuple[int, set[tuple[int, int]]]:
    """The scale and the dark modules of segno's SVG path (``M x y``, ``h n``, ``m dx dy``,
    in modules before scaling; the quiet zone included)."""
    scale = re.search(r'scale\((\d+)\)', svg)
    path = re.search(r'class="qrline"[^>]* d="([^"]+)"', svg)
    assert scale and path
    dark: set[tuple[int, int]] = set()
    x = y = 0.0
    for command, args in re.findall(r"([Mmh])([-\d. ]+)", path.group(1)):
        numbers = [float(n) for n in args.split()]
        if command == "M":
            x, y = numbers
        elif command == "m":
            x, y = x + numbers[0], y + numbers[1]
        else:
            dark.update((int(x) + i, int(y)) for i in range(int(numbers[0])))
            x += numbers[0]
    return int(scale.group(1)), dark


def test_the_qr_code_is_a_self_contained_svg_of_the_text() -> None:
    text = provisioning_uri(new_totp_secret(), account="alice@example.com", issuer="Bastion")
    uri = qr_code_data_uri(text)
    prefix = "data:image/svg+xml;base64,"
    assert uri.startswith(prefix)
    svg = base64.b64decode(uri.removeprefix(prefix), validate=True).decode("utf-8")
    assert svg.startswith("<svg ")
    lowered = svg.lower()
    for forbidden in ("<script", "href", "<foreignobject", "url(", "<image", "<use", "<style"):
        assert forbidden not in lowered, forbidden
    assert not re.search(r"\son\w*=", lowered)  # no event handler attributes
    assert re.findall(r"https?://[^\"]*", svg) == ["http://www.w3.org/2000/svg"]
    width = int(re.search(r'width="(\d+)"', svg).group(1))  # type: ignore[union-attr]
    assert 150 <= width <= 260
    # The symbol drawn is the text's at error level M, with a four-module quiet zone.
    scale, dark = _svg_modules(svg)
    expected = segno.make(text, error="m", micro=False, boost_error=False)
    assert expected.error == "M"
    assert width == scale * (len(expected.matrix) + 8)
    assert dark == {
        (column + 4, row + 4)
        for row, line in enumerate(expected.matrix)
        for column, module in enumerate(line)
        if module
    }
