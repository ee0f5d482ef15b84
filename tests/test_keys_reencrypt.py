"""``bastion keys reencrypt``: after a rotation of BASTION_ENCRYPTION_KEY (new key first),
every secret at rest moves to the new key, so the old one can be dropped."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from bastion.clock import utc_now
from bastion.config import Settings
from bastion.identity.second_factor import totp_context
from bastion.mail.outbox import content_context
from bastion.security.encryption import DecryptionFailed, EncryptionKeys, new_key_text
from bastion.storage import Database
from bastion.storage.encryption_key import ENCRYPTION_KEY_FILE_NAME
from bastion.storage.migrate import upgrade_to_head
from bastion.storage.tables import OutboxMail, User
from tests.conftest import make_settings
from tests.test_cli import run_bastion

KEY_A = new_key_text()
KEY_B = new_key_text()


@dataclass(frozen=True)
class Seeded:
    user_id: uuid.UUID
    secret: str
    message_id: str
    mail: str


def user(name: str, totp_secret: str | None, user_id: uuid.UUID | None = None) -> User:
    now = utc_now()
    return User(id=user_id or uuid.uuid4(), username=name, email=f"{name}@example.com", age=30,
                password_hash="-", roles=["user"], totp_secret=totp_secret, created_at=now,
                updated_at=now)


def mail(message_id: str, content: str | None) -> OutboxMail:
    now = utc_now()
    return OutboxMail(id=uuid.uuid4(), message_id=message_id, recipient="ann@example.com",
                      content=content, created_at=now, attempts=0, next_attempt_at=now)


async def seed(settings: Settings, keys: EncryptionKeys, *extra: User | OutboxMail) -> Seeded:
    """A migrated database with one TOTP secret and one queued mail under ``keys``, a user
    without TOTP and a sent mail (content emptied)."""
    database = Database.from_settings(settings)
    try:
        await upgrade_to_head(database.engine)
        seeded = Seeded(uuid.uuid4(), "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP",
                        f"<{uuid.uuid4()}@bastion.test>", "Subject: hi\n\nclick here")
        async with database.transaction() as session:
            session.add(user("ann", keys.encrypt(
                seeded.secret, context=totp_context(seeded.user_id)), seeded.user_id))
            session.add(user("bob", None))
            session.add(mail(seeded.message_id, keys.encrypt(
                seeded.mail, context=content_context(seeded.message_id))))
            session.add(mail("<sent@bastion.test>", None))
            session.add_all(extra)
        return seeded
    finally:
        await database.dispose()


async def stored(settings: Settings, seeded: Seeded) -> tuple[str, str]:
    database = Database.from_settings(settings)
    try:
        async with database.read() as session:
            secret = await session.scalar(
                select(User.totp_secret).where(User.id == seeded.user_id))
            content = await session.scalar(
                select(OutboxMail.content).where(OutboxMail.message_id == seeded.message_id))
    finally:
        await database.dispose()
    assert secret is not None and content is not None
    return secret, content


def reencrypt(data_dir: Path, key_setting: str) -> tuple[int, str, str]:
    result = run_bastion(
        "keys", "reencrypt", cwd=data_dir.parent,
        env={"BASTION_DATA_DIR": str(data_dir), "BASTION_ENCRYPTION_KEY": key_setting},
    )
    return result.returncode, result.stdout, result.stderr


def test_the_contexts_are_the_services() -> None:
    user_id = uuid.uuid4()
    assert totp_context(user_id) == f"totp:{user_id}"
    assert content_context("<m@x>") == "mail:<m@x>"


def test_values_under_the_old_key_move_to_the_new_one(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    settings = make_settings(data_dir)
    seeded = asyncio.run(seed(settings, EncryptionKeys.parse(KEY_A)))

    code, out, err = reencrypt(data_dir, f"{KEY_B},{KEY_A}")
    assert code == 0, err
    assert "re-encrypted 2 values" in out
    assert "1 in users.totp_secret" in out and "1 in mail_outbox.content" in out

    only_b = EncryptionKeys.parse(KEY_B)
    secret, content = asyncio.run(stored(settings, seeded))
    assert not only_b.needs_reencryption(secret)
    assert only_b.decrypt(secret, context=f"totp:{seeded.user_id}") == seeded.secret
    assert only_b.decrypt(content, context=f"mail:{seeded.message_id}") == seeded.mail
    with pytest.raises(DecryptionFailed):
        EncryptionKeys.parse(KEY_A).decrypt(secret, context=f"totp:{seeded.user_id}")

    # The old key can go: a second run with the new key alone finds nothing to do.
    code, out, err = reencrypt(data_dir, KEY_B)
    assert code == 0, err
    assert "re-encrypted 0 values" in out
    assert asyncio.run(stored(settings, seeded)) == (secret, content)
    assert not (data_dir / ENCRYPTION_KEY_FILE_NAME).exists()


def test_values_no_key_opens_are_listed_and_left_alone(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    settings = make_settings(data_dir)
    keys_a = EncryptionKeys.parse(KEY_A)
    lost_id, copied_id = uuid.uuid4(), uuid.uuid4()
    lost = EncryptionKeys.parse(new_key_text()).encrypt("s", context=f"totp:{lost_id}")
    # A ciphertext copied from another row: under key A, but bound to another user.
    copied = keys_a.encrypt("s", context=f"totp:{uuid.uuid4()}")
    seeded = asyncio.run(seed(settings, keys_a, user("cat", lost, lost_id),
                              user("dan", copied, copied_id)))

    code, out, err = reencrypt(data_dir, f"{KEY_B},{KEY_A}")
    assert code == 1
    assert "re-encrypted 2 values" in out
    assert "2 values decrypt under no key of BASTION_ENCRYPTION_KEY" in err
    assert f"users.totp_secret, user {lost_id}" in err
    assert f"users.totp_secret, user {copied_id}" in err
    assert seeded.user_id.hex not in err and str(seeded.user_id) not in err
    assert KEY_A not in out + err and KEY_B not in out + err

    async def secrets_of(*user_ids: uuid.UUID) -> list[str | None]:
        database = Database.from_settings(settings)
        try:
            async with database.read() as session:
                return [await session.scalar(select(User.totp_secret).where(User.id == one))
                        for one in user_ids]
        finally:
            await database.dispose()

    assert asyncio.run(secrets_of(lost_id, copied_id)) == [lost, copied]
    assert not EncryptionKeys.parse(KEY_B).needs_reencryption(
        asyncio.run(stored(settings, seeded))[0])


def test_a_bad_key_setting_is_refused_without_echoing_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    asyncio.run(seed(make_settings(data_dir), EncryptionKeys.parse(KEY_A)))
    code, out, err = reencrypt(data_dir, f"{KEY_B},not-a-key")
    assert code == 2
    assert "BASTION_ENCRYPTION_KEY" in err
    assert "not-a-key" not in err and KEY_B not in err
    assert out == ""


def test_without_a_database_nothing_is_created(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    result = run_bastion("keys", "reencrypt", cwd=tmp_path,
                         env={"BASTION_DATA_DIR": str(data_dir)})
    assert result.returncode == 1
    assert "nothing was re-encrypted" in result.stderr
    assert not (data_dir / ENCRYPTION_KEY_FILE_NAME).exists()


async def test_every_batch_is_done_on_every_backend(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More rows than a batch, on SQLite and PostgreSQL (whose UUIDs order differently)."""
    from bastion.cli import keys as keys_command

    monkeypatch.setattr(keys_command, "REENCRYPT_BATCH", 3)
    old, rotated = EncryptionKeys.parse(KEY_A), EncryptionKeys.parse(f"{KEY_B},{KEY_A}")
    database = Database.from_settings(settings)
    try:
        await upgrade_to_head(database.engine)
        ids = [uuid.uuid4() for _ in range(10)]
        async with database.transaction() as session:
            session.add_all(
                user(f"u{n}", old.encrypt(f"secret {n}", context=f"totp:{user_id}"), user_id)
                for n, user_id in enumerate(ids)
            )
            session.add_all(
                mail(message_id, old.encrypt("a mail", context=f"mail:{message_id}"))
                for message_id in (f"<{n}@bastion.test>" for n in range(7))
            )
        outcome = await keys_command.reencrypt_all(database, rotated)
        assert outcome.reencrypted == {"users.totp_secret": 10, "mail_outbox.content": 7}
        assert outcome.unreadable == {}
        async with database.read() as session:
            rows = (await session.execute(select(User.id, User.totp_secret))).all()
        new_only = EncryptionKeys.parse(KEY_B)
        opened = [new_only.decrypt(secret or "", context=f"totp:{user_id}")
                  for user_id, secret in rows]
        assert sorted(opened) == sorted(f"secret {n}" for n in range(10))
        again = await keys_command.reencrypt_all(database, rotated)
        assert again.reencrypted == {"users.totp_secret": 0, "mail_outbox.content": 0}
    finally:
        await database.dispose()
