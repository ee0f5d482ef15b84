"""One ``bastion serve`` per data directory while nothing is shared between processes.

Without Redis a server keeps revocations and rate-limit counters in its own memory: a second
server beside it, on the same data, would go on accepting a token the first one revoked, and
each would allow the whole rate. So ``bastion serve`` without ``BASTION_REDIS_URL`` holds an
exclusive lock on ``<data dir>/serve.lock`` for as long as it runs, and a second one that
cannot take it refuses to start. (With ``--workers N`` the supervisor would hold it; several
workers need Redis anyway, and with Redis nothing is locked.)

The lock is ``flock(2)`` on an open file, so the kernel drops it with the process, however
that ends (``kill -9`` included): no stale lock to clean up. The file stays behind between
runs; deleting it on exit would let a server that opened the old file and one that creates
a new one both hold "the" lock. It holds the pid of the holder, for the refusal's message
only: the lock, not the file's content, decides. The other commands (``migrate``,
``create-admin``, ``keys rotate``, ``audit verify``, ``check``) take no lock and run beside a
server.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from types import TracebackType

from bastion.storage.files import PRIVATE_FILE_MODE, ensure_private_dir

LOCK_FILE_NAME = "serve.lock"


class DataDirInUse(Exception):
    """Another process holds the data directory's lock."""

    def __init__(self, data_dir: Path, holder: int | None) -> None:
        super().__init__(f"{data_dir} is locked by {holder or 'another process'}")
        self.data_dir = data_dir
        self.holder = holder


class DataDirLock:
    """The held lock; released by ``release()``, on leaving a ``with`` block, or by the
    process's end."""

    def __init__(self, path: Path, descriptor: int) -> None:
        self.path = path
        self._descriptor: int | None = descriptor

    def release(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)  # closing the last descriptor drops the flock
            self._descriptor = None

    def __enter__(self) -> DataDirLock:
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _error: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        self.release()


def _holder(descriptor: int) -> int | None:
    """The pid the holder wrote, when it is there and readable (it may be mid-write)."""
    with contextlib.suppress(OSError, ValueError):
        return int(os.pread(descriptor, 32, 0).decode("ascii").strip())
    return None


def lock_data_dir(data_dir: Path) -> DataDirLock:
    """Takes the data directory's lock without waiting (creating the directory 0700 and the
    lock file 0600 if need be); raises ``DataDirInUse`` when another process holds it, and
    ``OSError`` when the directory cannot be used."""
    ensure_private_dir(data_dir)
    path = data_dir / LOCK_FILE_NAME
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
    descriptor = os.open(path, flags, PRIVATE_FILE_MODE)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DataDirInUse(data_dir.resolve(), _holder(descriptor)) from None
        if os.fstat(descriptor).st_mode & 0o777 != PRIVATE_FILE_MODE:
            os.fchmod(descriptor, PRIVATE_FILE_MODE)
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode("ascii"), 0)
    except BaseException:
        os.close(descriptor)
        raise
    return DataDirLock(path, descriptor)
