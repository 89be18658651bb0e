"""Loopback-only helpers shared by the demo's servers: the address, free ports, .eml files."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover - typing only
    pass


LOOPBACK = "127.0.0.1"



class LocalServerError(Exception):
    """A local server could not be started (or stopped) as asked."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    aiosmtpd's Controller and the mongo child both need an explicit port up
    front, so we let the kernel pick one and release it immediately.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


_eml_lock = threading.Lock()


def write_eml(directory: Path, data: bytes) -> Path:
    """Write `data` as the next `NNN.eml` in `directory`, readable by the owner only.

    Mails contain customer conversations, hence 0600 from the moment the file
    exists (O_CREAT with a mode, never chmod afterwards). O_EXCL makes the
    sequential name safe even if two writers race.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with _eml_lock:
        number = len(list(directory.glob("*.eml"))) + 1
        while True:
            path = directory / f"{number:03d}.eml"
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                number += 1
                continue
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            return path


