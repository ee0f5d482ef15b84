"""The data dir holds the database file and signing keys: only the service's user may read it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from bastion.logs import get_logger

log = get_logger("bastion.storage")

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def ensure_private_dir(path: Path) -> Path:
    """Creates ``path`` 0700, or narrows an existing one that others could read."""
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode != PRIVATE_DIR_MODE:
        path.chmod(PRIVATE_DIR_MODE)
        if mode & 0o077:
            log.warning("data_dir_permissions_narrowed", path=str(path), was=oct(mode))
    return path


def ensure_private_file(path: Path) -> Path:
    """Creates ``path`` 0600 before anything writes to it, so it is never briefly readable."""
    ensure_private_dir(path.parent)
    descriptor = os.open(path, os.O_CREAT | os.O_WRONLY, PRIVATE_FILE_MODE)
    os.close(descriptor)
    if stat.S_IMODE(path.stat().st_mode) != PRIVATE_FILE_MODE:
        path.chmod(PRIVATE_FILE_MODE)
    return path
