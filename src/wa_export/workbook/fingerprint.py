"""What the delivery ledger records of an attached file: alike for an emailed workbook and one given to `verify`."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Fingerprint:
    sha256: str  # lowercase hex
    size: int  # bytes
    file_name: str


def fingerprint(path: Path) -> Fingerprint:
    """Digest and size of one open file (a file replaced meanwhile cannot mix two versions), read in chunks."""
    mode = os.stat(path).st_mode  # before opening: opening a named pipe would wait for a writer
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):  # open() refuses a directory itself
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    with open(path, "rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
        return Fingerprint(digest, os.fstat(handle.fileno()).st_size, path.name)
