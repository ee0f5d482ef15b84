"""Passwords: the NIST SP 800-63B-4 policy, and Argon2id hashing off the event loop.

The policy has no composition rules. It asks for length (15 to 128 code points after NFKC
normalisation), refuses the 30,000 most common passwords, and refuses a password that
contains the username or the email's local part. Messages name the rule, never the value.
"""

from __future__ import annotations

import functools
import gzip
import unicodedata
from dataclasses import dataclass
from importlib.resources import files

import anyio
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

MIN_LENGTH = 15
MAX_LENGTH = 128
# Below this, a name inside a password is too likely to be a coincidence.
MIN_IDENTIFIER_LENGTH = 3


def normalise(password: str) -> str:
    """NFKC, so that the same password typed on different keyboards hashes the same."""
    return unicodedata.normalize("NFKC", password)


@functools.cache
def common_passwords() -> frozenset[str]:
    data = (files("bastion.security.data") / "common-passwords.txt.gz").read_bytes()
    return frozenset(gzip.decompress(data).decode().split("\n")) - {""}


def _is_common(folded: str) -> bool:
    listed = common_passwords()
    if folded in listed:
        return True
    # "passwordpassword" is as guessable as "password": refuse repeats of a listed one.
    for size in range(1, len(folded) // 2 + 1):
        if len(folded) % size == 0 and folded == folded[:size] * (len(folded) // size):
            return folded[:size] in listed or size <= 2
    return False


def password_problems(password: str, *, username: str = "", email: str = "") -> list[str]:
    """Every rule the password breaks, as messages safe to show (they never echo it)."""
    normalised = normalise(password)
    length = len(normalised)
    if length < MIN_LENGTH:
        return [f"Password must be at least {MIN_LENGTH} characters long."]
    if length > MAX_LENGTH:
        return [f"Password must be at most {MAX_LENGTH} characters long."]
    problems: list[str] = []
    folded = normalised.casefold()
    if _is_common(folded):
        problems.append("Password is too common; choose one that is hard to guess.")
    identifiers = [username, email.split("@", 1)[0]]
    for identifier in identifiers:
        folded_identifier = normalise(identifier).casefold()
        if len(folded_identifier) >= MIN_IDENTIFIER_LENGTH and folded_identifier in folded:
            problems.append("Password must not contain the username or the email address.")
            break
    return problems


@dataclass(frozen=True, slots=True)
class Verification:
    valid: bool
    # A new hash when the stored one used older parameters; store it.
    new_hash: str | None = None


class PasswordHasher:
    """Argon2id through pwdlib, run in worker threads so hashing never blocks the loop.

    A limiter bounds how many hashes run at once: each costs ``memory_kib`` of memory, so
    a flood of logins cannot exhaust memory or starve the thread pool.
    """

    def __init__(
        self, *, memory_kib: int, time_cost: int, parallelism: int, concurrency: int = 4
    ) -> None:
        self._hash = PasswordHash(
            (Argon2Hasher(memory_cost=memory_kib, time_cost=time_cost, parallelism=parallelism),)
        )
        self._limiter = anyio.CapacityLimiter(concurrency)
        # Verified against when the user does not exist, so that path costs the same.
        # Made on first use: building an app should not cost a hash.
        self._dummy_hash: str | None = None

    async def hash(self, password: str) -> str:
        return await anyio.to_thread.run_sync(
            self._hash.hash, normalise(password), limiter=self._limiter
        )

    async def verify(self, password: str, stored_hash: str) -> Verification:
        valid, updated = await anyio.to_thread.run_sync(
            self._hash.verify_and_update, normalise(password), stored_hash, limiter=self._limiter
        )
        return Verification(valid=valid, new_hash=updated if valid else None)

    async def verify_dummy(self, password: str) -> None:
        """Spends the time of a real verification and always fails."""
        if self._dummy_hash is None:
            self._dummy_hash = await self.hash("bastion-dummy-password-for-unknown-users")
        await anyio.to_thread.run_sync(
            self._hash.verify, normalise(password), self._dummy_hash, limiter=self._limiter
        )
