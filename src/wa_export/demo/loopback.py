"""Loopback-only helpers shared by the demo's servers: the address, free ports, .eml files."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

LOOPBACK = "127.0.0.1"


class LocalServerError(Exception):
    """A local server could not be started as asked."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the mongo child needs one on its command line)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


_eml_lock = threading.Lock()


def write_eml(directory: Path, data: bytes) -> Path:
    """Write `data` as the next `NNN.eml` in `directory`: 0600 from the moment it exists (mails hold
    customer conversations); O_EXCL keeps the sequential name safe if two writers race."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with _eml_lock:
        number = len(list(directory.glob("*.eml"))) + 1
        while True:
            try:
                fd = os.open(directory / f"{number:03d}.eml", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                number += 1
                continue
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            return directory / f"{number:03d}.eml"
