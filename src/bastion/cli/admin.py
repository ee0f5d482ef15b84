"""``create-admin``: the first administrator, from the command line."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Annotated

import typer
from pydantic import TypeAdapter, ValidationError

from bastion.admin.service import create_admin
from bastion.cli.common import current_database, fail, load_settings, run_on_current_database
from bastion.config import Settings
from bastion.identity.accounts import AccountExists
from bastion.identity.schemas import Email, Username
from bastion.security.passwords import PasswordHasher, password_problems

MIN_AGE, MAX_AGE = 13, 130  # as for /auth/register


def _read_password() -> str:
    """The new account's password: one line of stdin when it is piped (the trailing newline
    removed, nothing else), otherwise typed twice without echo."""
    if sys.stdin is not None and not sys.stdin.isatty():
        line = sys.stdin.readline()
        if line.endswith("\n"):
            line = line[:-1]
            if line.endswith("\r"):
                line = line[:-1]
        return line
    password: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return password


def _valid(adapter: TypeAdapter[str], value: str, name: str) -> str:
    try:
        return adapter.validate_python(value)
    except ValidationError:
        raise fail(f"bastion: --{name} is not a valid {name}", code=2) from None


async def _create_admin(
    settings: Settings, *, username: str, email: str, age: int, password: str
) -> str:
    """The new admin's id."""
    async with current_database(settings) as database:
        hasher = PasswordHasher(
            memory_kib=settings.password_hash_memory_kib,
            time_cost=settings.password_hash_time_cost,
            parallelism=settings.password_hash_parallelism,
        )
        password_hash = await hasher.hash(password)  # outside the transaction (write lock)
        async with database.transaction() as session:
            user = await create_admin(
                session,
                username=username,
                email=email,
                age=age,
                password_hash=password_hash,
                now=datetime.now(UTC),
            )
        return str(user.id)


def create_admin_command(
    username: Annotated[str, typer.Option(help="3-32 characters of a-z 0-9 _ . -")],
    email: Annotated[str, typer.Option(help="The admin's email address.")],
    age: Annotated[
        int, typer.Option(min=MIN_AGE, max=MAX_AGE, help="Stored like any account's age.")
    ] = 18,
) -> None:
    """Create an account with the roles admin and user.

    The password is read from stdin when it is piped (one line), otherwise prompted for
    twice. The password policy applies; an existing username or email is refused.
    """
    settings = load_settings()  # logging left unconfigured: the outcome is the only output
    username = _valid(TypeAdapter(Username), username, "username")
    email = _valid(TypeAdapter(Email), email, "email")
    password = _read_password()
    problems = password_problems(password, username=username, email=email)
    if problems:
        raise fail("bastion: the password was refused\n" + "\n".join(problems), code=2)
    try:
        user_id = run_on_current_database(
            _create_admin(settings, username=username, email=email, age=age, password=password),
            nothing_done="no account was created",
        )
    except AccountExists:
        raise fail(
            "bastion: that username or email address exists already; no account was created"
        ) from None
    typer.echo(f"admin {username} created (id {user_id})")
