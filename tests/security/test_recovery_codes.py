"""Recovery codes: random enough, readable, forgiving of how they are typed, hashed."""

from __future__ import annotations

import hashlib
import math
import re

import pytest

from bastion.security.recovery_codes import (
    ALPHABET,
    RECOVERY_CODE_COUNT,
    hash_recovery_code,
    new_recovery_codes,
    normalise_recovery_code,
)

SHAPE = re.compile(r"[a-z2-9]{4}(-[a-z2-9]{4}){4}")


def test_ten_distinct_codes_in_readable_groups() -> None:
    codes = new_recovery_codes()
    assert len(codes) == RECOVERY_CODE_COUNT == 10
    assert len(set(codes)) == len(codes)
    for code in codes:
        assert SHAPE.fullmatch(code), code
        assert set(code.replace("-", "")) <= set(ALPHABET)


def test_no_characters_that_read_alike() -> None:
    assert not set(ALPHABET) & set("0o1li")
    assert len(set(ALPHABET)) == len(ALPHABET)
    assert ALPHABET == ALPHABET.lower()


def test_each_code_holds_at_least_80_random_bits() -> None:
    length = len(new_recovery_codes(1)[0].replace("-", ""))
    assert length * math.log2(len(ALPHABET)) >= 80


def test_every_symbol_is_used() -> None:
    """A generator stuck on part of the alphabet would hold fewer bits than it claims."""
    seen = set("".join(new_recovery_codes(100)).replace("-", ""))
    assert seen == set(ALPHABET)


def test_the_count_is_honoured_and_must_be_positive() -> None:
    assert len(new_recovery_codes(3)) == 3
    with pytest.raises(ValueError):
        new_recovery_codes(0)


def test_codes_are_forgiven_case_hyphens_and_spaces() -> None:
    code = new_recovery_codes(1)[0]
    bare = code.replace("-", "")
    for typed in [code, code.upper(), bare, f"  {code} ", code.replace("-", " "),
                  " ".join(bare), f"{bare[:10]}-{bare[10:]}", f"\t{code}\n"]:
        assert normalise_recovery_code(typed) == bare, typed
        assert hash_recovery_code(typed) == hash_recovery_code(code)


@pytest.mark.parametrize(
    "typed",
    ["", "    ", "k7m2-x9qp-4rtw-h3nc", "k7m2-x9qp-4rtw-h3nc-7bq2-a", "k7m2-x9qp-4rtw-h3nc-7bq0",
     "k7m2-x9qp-4rtw-h3nc-7bql", "k7m2-x9qp-4rtw-h3nc-7bqo", "k7m2-x9qp-4rtw-h3nc-7bq1",
     "k7m2_x9qp_4rtw_h3nc_7bq2", "k7m2-x9qp-4rtw-h3nc-7bq\u0662", "k7m2-x9qp-4rtw-h3nc-7bqİ"],
)
def test_text_that_is_no_code_is_refused(typed: str) -> None:
    assert normalise_recovery_code(typed) is None
    with pytest.raises(ValueError, match="not a recovery code"):
        hash_recovery_code(typed)


def test_the_hash_is_sha256_of_the_normalised_code() -> None:
    code = "k7m2-x9qp-4rtw-h3nc-7bq2"
    expected = hashlib.sha256(b"k7m2x9qp4rtwh3nc7bq2").hexdigest()
    assert hash_recovery_code(code) == expected
    assert hash_recovery_code("K7M2 X9QP 4RTW H3NC 7BQ2") == expected
    assert hash_recovery_code("k7m2-x9qp-4rtw-h3nc-7bq3") != expected
