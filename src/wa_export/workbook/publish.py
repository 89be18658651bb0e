"""Atomic 0600 files: a hidden temp file linked to a free name (never an overwrite), or renamed over the old one."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterable
from contextlib import suppress
from pathlib import Path

_LINK_UNSUPPORTED = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EMLINK}


def create_private_file(path: Path) -> int:
    # O_EXCL+O_NOFOLLOW: never reuse or follow what is planted under our name; fchmod: the umask must not change 0600.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
    except BaseException:
        os.close(fd)
        unlink_quietly(path)
        raise
    return fd


def unlink_quietly(path: Path | str) -> None:
    with suppress(OSError):  # FileNotFoundError included: already gone is fine
        os.unlink(path)


def fsync_dir(directory: Path) -> None:  # best effort: makes a rename or link durable
    with suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def replace_file(path: Path, data: bytes, mode: int | None = None) -> None:
    """Replace `path` atomically (0600 unless `mode`); on OSError the old file stays as it was."""
    # Hidden and ending in .tmp: a reader globbing the real name (node_exporter's *.prom) never sees it half-written.
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), 0o600 if mode is None else mode)  # explicit: the umask must not change it
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        unlink_quietly(temporary)
        raise
    fsync_dir(path.parent)


def publish_without_overwrite(tmp_path: Path, candidates: Iterable[Path | str], first: Path) -> Path:
    """Give the finished temp file the first free candidate name; an existing file is never replaced."""
    for target in map(Path, candidates):
        try:
            os.link(tmp_path, target, follow_symlinks=False)
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno not in _LINK_UNSUPPORTED:
                raise
            # No hard links here: reserve the name exclusively, then rename over our own empty reservation.
            try:
                os.close(create_private_file(target))
            except FileExistsError:
                continue
            os.replace(tmp_path, target)
        unlink_quietly(tmp_path)
        return target
    raise FileExistsError(errno.EEXIST, "every candidate name is taken", str(first))
