"""What the delivery ledger records of an attached file (SHA-256, size, name): the same for a workbook
before it is emailed and a file handed to `wa-export verify`, so both match byte for byte."""

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
    """Hash the file in chunks, never whole in memory; OSError if it is no readable file. Size and digest come
    from the one open file, so a file replaced meanwhile cannot mix two versions."""
    # Checked before opening: opening a named pipe would wait for a writer.
    mode = os.stat(path).st_mode
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    if not stat.S_ISREG(mode):
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    with open(path, "rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
        size = os.fstat(handle.fileno()).st_size
    return Fingerprint(digest, size, path.name)
