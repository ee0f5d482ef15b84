"""Persistence: the async engine, the schema and its migrations, private files."""

from bastion.storage.database import Database, StorageUnavailable
from bastion.storage.files import ensure_private_dir, ensure_private_file

__all__ = ["Database", "StorageUnavailable", "ensure_private_dir", "ensure_private_file"]
