"""Rebuilds src/bastion/security/data/common-passwords.txt.gz (not run by the build).

Source: the 30,000 most common passwords of zxcvbn's frequency lists (MIT licence, compiled
from Xato's 10-million-password corpus). Run in a throw-away venv that has ``zxcvbn``:
``python scripts/build-common-passwords.py``.
"""

from __future__ import annotations

import gzip
import unicodedata
from pathlib import Path

from zxcvbn.frequency_lists import FREQUENCY_LISTS  # type: ignore[import-not-found]

TARGET = Path(__file__).resolve().parent.parent / "src/bastion/security/data"


def main() -> None:
    words = sorted(
        {unicodedata.normalize("NFKC", word).casefold() for word in FREQUENCY_LISTS["passwords"]}
    )
    payload = ("\n".join(words) + "\n").encode()
    # mtime=0 keeps the file byte-identical between rebuilds.
    (TARGET / "common-passwords.txt.gz").write_bytes(gzip.compress(payload, 9, mtime=0))
    print(f"{len(words)} passwords")  # noqa: T201


if __name__ == "__main__":
    main()
