"""The keys for secrets at rest: ``BASTION_ENCRYPTION_KEY``, or in development a key file.

Production must set the variable (``config/findings.py`` refuses to start otherwise), so
the key is kept apart from the database and its backups. Development should work with no
set-up, so a key is generated into the data dir on first use. Several worker processes
may start at once on a fresh data dir: the key is written to a private temporary file and
linked to its name, which succeeds for exactly one of them; the others read the winner's
key, and no process ever sees a partly written file.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

from bastion.config import Settings
from bastion.logs import get_logger
from bastion.security.encryption import EncryptionKeys, new_key_text
from bastion.storage.files import PRIVATE_FILE_MODE, ensure_private_dir

log = get_logger("bastion.storage")

ENCRYPTION_KEY_FILE_NAME = "encryption.key"
SETTING = "BASTION_ENCRYPTION_KEY"


def encryption_key_path(settings: Settings) -> Path:
    return settings.data_dir / ENCRYPTION_KEY_FILE_NAME


def load_encryption_keys(settings: Settings) -> EncryptionKeys:
    """The configured keys. ``ValueError`` naming the setting (never its value) or the key
    file when they are unusable; ``OSError`` when the data dir cannot be used."""
    if settings.encryption_key is not None:
        try:
            return EncryptionKeys.parse(settings.encryption_key.get_secret_value())
        except ValueError as error:
            raise ValueError(f"{SETTING}: {error}") from None
    if settings.is_production:
        # The settings refuse this already; a key generated next to the database would
        # defeat the point of encrypting, so never fall back to one here either.
        raise ValueError(f"{SETTING} must be set in production")
    path = encryption_key_path(settings)
    try:
        return _read_key_file(path)
    except FileNotFoundError:
        pass
    _generate_key_file(path)
    return _read_key_file(path)


def _read_key_file(path: Path) -> EncryptionKeys:
    descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(descriptor, "rb") as key_file:
        mode = stat.S_IMODE(os.fstat(key_file.fileno()).st_mode)
        if mode != PRIVATE_FILE_MODE:
            os.fchmod(key_file.fileno(), PRIVATE_FILE_MODE)
            if mode & 0o077:
                log.warning("encryption_key_permissions_narrowed", path=str(path), was=oct(mode))
        raw = key_file.read()
    try:
        return EncryptionKeys.parse(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError) as error:
        raise ValueError(
            f"the encryption key file {path} is corrupt ({error}); restore it from a backup, "
            f"or set {SETTING}"
        ) from None


def _generate_key_file(path: Path) -> None:
    """Writes a new key to ``path`` unless another process got there first."""
    ensure_private_dir(path.parent)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(8)}")
    descriptor = os.open(
        temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, PRIVATE_FILE_MODE
    )
    try:
        with os.fdopen(descriptor, "wb") as key_file:
            key_file.write(new_key_text().encode("ascii") + b"\n")
            key_file.flush()
            os.fsync(key_file.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return  # another process won: its key is the one
        _sync_directory(path.parent)
        log.info("encryption_key_generated", path=str(path))
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def _sync_directory(directory: Path) -> None:
    """Makes the new name durable: a crash must not lose the key after values were
    encrypted with it."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
