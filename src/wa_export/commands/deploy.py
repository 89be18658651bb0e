"""`wa-export deploy`: the systemd units, crontab, logrotate file and commented env file shipped in the package.

The package data under deploy_files/ is the one copy of each file, so an installation from a wheel has
them too. A file is printed as shipped or written into a directory (0644, like any unit or config
file there); an existing file that differs is left alone unless the operator says --force.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from wa_export.errors import ExitCode, UsageProblem, WaExportError

# What each kind is for, in `wa-export deploy --help` order; its files are deploy_files/<kind>/*.
KINDS: dict[str, str] = {
    "systemd": "the export, cleanup and health services with their timers (for /etc/systemd/system)",
    "cron": "the crontab: export every 15 minutes, daily cleanup, hourly health check",
    "logrotate": "rotation of the cron jobs' logs (for /etc/logrotate.d)",
    "env": "every setting, commented, with its default (for .env or /etc/wa-export/env)",
}
FILE_MODE = 0o644


@dataclass(frozen=True)
class DeployFile:
    kind: str
    name: str
    text: str


@dataclass
class DeployResult:
    """The files asked for; with a directory, which were written and which were already there as shipped."""

    target: str
    files: list[DeployFile]
    directory: Path | None = None
    written: list[Path] = field(default_factory=list)
    unchanged: list[Path] = field(default_factory=list)
    exit_code: int = ExitCode.OK

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": True,
            "exit_code": self.exit_code,
            "target": self.target,
            "directory": str(self.directory) if self.directory is not None else None,
            "files": [{"kind": file.kind, "name": file.name, "text": file.text} for file in self.files],
            "written": [str(path) for path in self.written],
            "unchanged": [str(path) for path in self.unchanged],
        }


def _folder(kind: str) -> Traversable:
    return resources.files("wa_export").joinpath("deploy_files", kind)


def _files_of(kind: str) -> list[DeployFile]:
    entries = sorted((entry for entry in _folder(kind).iterdir() if entry.is_file()), key=lambda entry: entry.name)
    return [DeployFile(kind, entry.name, entry.read_text(encoding="utf-8")) for entry in entries]


def all_files() -> list[DeployFile]:
    """Every shipped file, kind by kind."""
    return [file for kind in KINDS for file in _files_of(kind)]


def shipped_files(target: str) -> list[DeployFile]:
    """The files of a kind (`systemd`), or the one file of that name (`wa-export.timer`)."""
    if target in KINDS:
        return _files_of(target)
    named = [file for file in all_files() if file.name == target]
    if not named:
        kinds = ", ".join(KINDS)
        names = ", ".join(file.name for file in all_files())
        raise UsageProblem(f"There is no deploy file {target!r}; name one of {kinds}, or a file: {names}.")
    return named


def deploy(target: str, directory: Path | None = None, overwrite: bool = False) -> DeployResult:
    """The files of `target`; with `directory`, also write them there (nothing is written if one
    would replace a different file and `overwrite` is false)."""
    files = shipped_files(target)
    result = DeployResult(target, files)
    if directory is None:
        return result
    result.directory = directory = directory.expanduser().absolute()
    if not directory.is_dir():
        raise UsageProblem(f"{directory} is not a directory; create it first or name another --to DIR.")
    differing = [
        directory / file.name
        for file in files
        if (directory / file.name).exists() and not _holds(directory / file.name, file.text)
    ]
    if differing and not overwrite:
        names = ", ".join(str(path) for path in differing)
        raise UsageProblem(
            f"{names} already {'exists' if len(differing) == 1 else 'exist'} with other content; "
            f"compare with `wa-export deploy {target}` and pass --force to replace {'it' if len(differing) == 1 else 'them'}."
        )
    for file in files:
        path = directory / file.name
        if path.exists() and _holds(path, file.text):
            os.chmod(path, FILE_MODE)
            result.unchanged.append(path)
        else:
            _write(path, file.text)
            result.written.append(path)
    return result


def _holds(path: Path, text: str) -> bool:
    try:
        return path.is_file() and path.read_bytes() == text.encode("utf-8")
    except OSError:
        return False


def _write(path: Path, text: str) -> None:
    """Replace `path` atomically (a reader never sees half a unit), mode 0644 whatever the umask."""
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                stream.write(text)
            os.chmod(temporary, FILE_MODE)
            os.replace(temporary, path)
        except BaseException:
            os.unlink(temporary)
            raise
    except OSError as error:
        raise WaExportError(
            f"Cannot write {path} ({error.strerror or error}); run as a user who may write there (e.g. with sudo)."
        ) from None
