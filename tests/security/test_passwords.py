"""The NIST SP 800-63B-4 password policy and Argon2id hashing."""

from __future__ import annotations

import pytest

from bastion.security.passwords import (
    MAX_LENGTH,
    MIN_LENGTH,
    PasswordHasher,
    common_passwords,
    password_problems,
)

GOOD = "correct horse battery staple"


def test_the_shipped_list_has_at_least_ten_thousand_entries() -> None:
    assert len(common_passwords()) >= 10_000
    assert "password" in common_passwords()


@pytest.mark.parametrize(
    "password",
    [
        GOOD,
        "x" * 3 + "Z" * 5 + "unusual phrase",  # no composition rules either way
        "пароль-который-никто-не-угадает",  # any printable characters
        "   spaces   are   fine   ",
        "a" * 0 + "q7!" * 5,
    ],
)
def test_long_uncommon_passwords_pass(password: str) -> None:
    assert password_problems(password, username="ann", email="ann@example.com") == []


def test_length_counts_code_points_after_nfkc() -> None:
    # 14 code points as typed; NFKC turns the ligature into "fi", which makes 15.
    assert len("of\ufb01cial-docs!!") == 14
    assert password_problems("of\ufb01cial-docs!!") == []
    # 14 distinct emoji are 14 code points (56 UTF-8 bytes): still too short.
    emoji = "".join(chr(0x1F600 + offset) for offset in range(15))
    assert password_problems(emoji[:14]) == [
        f"Password must be at least {MIN_LENGTH} characters long."
    ]
    assert password_problems(emoji) == []


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("x" * (MIN_LENGTH - 1), "at least"),
        ("x" * (MAX_LENGTH + 1) + "y", "at most"),
        ("passwordpassword", "too common"),
        ("PASSWORDPASSWORD", "too common"),
        ("aaaaaaaaaaaaaaaaaaaa", "too common"),
        ("abababababababababab", "too common"),
    ],
)
def test_weak_passwords_are_refused_with_a_message_that_does_not_echo_them(
    password: str, message: str
) -> None:
    problems = password_problems(password)
    assert problems
    assert message in " ".join(problems)
    assert all(password not in problem for problem in problems)


@pytest.mark.parametrize(
    ("password", "username", "email"),
    [
        ("my name is annabelle really", "annabelle", "x@example.com"),
        ("ANNABELLE-and-a-long-tail", "annabelle", "x@example.com"),
        ("the-jsmith99-account-pass", "someone", "jsmith99@example.com"),
    ],
)
def test_passwords_containing_the_identity_are_refused(
    password: str, username: str, email: str
) -> None:
    assert password_problems(password, username=username, email=email) == [
        "Password must not contain the username or the email address."
    ]


async def test_hashes_are_argon2id_and_verify() -> None:
    hasher = PasswordHasher(memory_kib=1024, time_cost=1, parallelism=1)
    stored = await hasher.hash(GOOD)
    assert stored.startswith("$argon2id$")
    assert GOOD not in stored
    assert (await hasher.verify(GOOD, stored)).valid
    assert not (await hasher.verify(GOOD + "!", stored)).valid


async def test_the_same_password_in_another_unicode_form_verifies() -> None:
    hasher = PasswordHasher(memory_kib=1024, time_cost=1, parallelism=1)
    stored = await hasher.hash("caf\u00e9 au lait with cream")
    assert (await hasher.verify("cafe\u0301 au lait with cream", stored)).valid


async def test_a_hash_with_old_parameters_is_upgraded_on_verify() -> None:
    old = await PasswordHasher(memory_kib=1024, time_cost=1, parallelism=1).hash(GOOD)
    current = PasswordHasher(memory_kib=2048, time_cost=2, parallelism=1)
    verification = await current.verify(GOOD, old)
    assert verification.valid
    assert verification.new_hash is not None
    assert "m=2048,t=2" in verification.new_hash
    assert (await current.verify(GOOD, verification.new_hash)).new_hash is None


async def test_the_dummy_verification_never_succeeds() -> None:
    hasher = PasswordHasher(memory_kib=1024, time_cost=1, parallelism=1)
    await hasher.verify_dummy("bastion-dummy-password-for-unknown-users")  # returns nothing
