"""The demo's folder and `demo --serve`: a fresh folder per demo, its env file, waiting for Ctrl-C.

Emptying a folder the operator named is only safe if it holds only what a demo writes there (its workspaces'
folders and workbooks, `.eml` files, its .env), else the demo refuses to start rather than delete someone's files.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

from wa_export.errors import UsageProblem
from wa_export.workbook.naming import FOLDER_MARKER
from wa_export.workbook.publish import unlink_quietly

ENV_FILE_NAME = ".env"
# The first line of the demo's .env: only a file that starts so is the demo's to replace or remove.
ENV_FILE_HEADER = "# wa-export demo: the settings of its local servers, valid while `demo --serve` runs."


def clear_demo_folder(out_dir: Path, workspace_ids: set[str]) -> None:
    """Remove an earlier demo's workbooks, emails and env file; a UsageProblem naming the first file a demo
    did not write (checked before anything is removed)."""

    def check(path: Path, written_by_a_demo: bool) -> Path:
        if not written_by_a_demo:
            raise UsageProblem(
                f"{out_dir} holds {path}, which no demo wrote, so the demo will not empty it; pass another --out DIR."
            )
        return path

    env_file = out_dir / ENV_FILE_NAME
    found = [check(env_file, _first_line(env_file) == ENV_FILE_HEADER)] if os.path.lexists(env_file) else []
    found += [check(path, path.suffix == ".eml" and _plain_file(path)) for path in _entries(out_dir / "mail")]
    for folder in _entries(out_dir / "exports"):
        marker = folder / FOLDER_MARKER
        owner = _first_line(marker).strip()
        check(folder, not folder.is_symlink() and folder.is_dir() and owner in workspace_ids)
        for path in _entries(folder):
            check(path, _plain_file(path) and (path.suffix in (".xlsx", ".tmp") or path.name == FOLDER_MARKER))
        found.append(folder)
    for path in found:
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def _entries(folder: Path) -> list[Path]:
    if not folder.exists():
        return []
    if folder.is_symlink() or not folder.is_dir():
        raise UsageProblem(f"{folder} is not a folder a demo writes; pass another --out DIR.")
    return sorted(folder.iterdir())


def _first_line(path: Path) -> str:
    """The first line of a plain file (never through a symlink); "" for anything else."""
    if not _plain_file(path):
        return ""
    with path.open(encoding="utf-8", errors="replace") as stream:
        return stream.readline().rstrip("\n")


def _plain_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def write_env_file(path: Path, environ: Mapping[str, str]) -> Path:
    """The settings as a .env file, 0600 from the start (it holds the demo's SMTP password)."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(f"{ENV_FILE_HEADER}\n")
            stream.writelines(f"{name}={value}\n" for name, value in environ.items())
        os.replace(temporary, path)
    except BaseException:
        unlink_quietly(temporary)
        raise
    return path


def serve_until_stopped(announce: Callable[[], None]) -> None:
    """Announce, then sleep until Ctrl-C (or SIGTERM, which the CLI turns into the same KeyboardInterrupt).
    The announcement is inside the wait: a signal sent as soon as it says "ready" still ends it cleanly."""
    try:
        announce()
        while True:
            signal.pause()
    except KeyboardInterrupt:
        return
