"""`wa-export deploy`: the systemd units, crontab, logrotate file and commented env file shipped in the package
(deploy_files/<kind>/, so a wheel has them too), printed as shipped or written into a directory."""

from __future__ import annotations

import os
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from wa_export.errors import ExitCode, UsageProblem, WaExportError
from wa_export.workbook.publish import replace_file

KINDS = ("systemd", "cron", "logrotate", "env")  # in `wa-export deploy --help` order; files: deploy_files/<kind>/*
FILE_MODE = 0o644  # like any unit or config file there, whatever the umask


@dataclass(frozen=True)
class DeployFile:
    kind: str
    name: str
    text: str


@dataclass
class DeployResult:
    target: str
    files: list[DeployFile]
    directory: Path | None = None
    written: list[Path] = field(default_factory=list)
    unchanged: list[Path] = field(default_factory=list)  # already there as shipped

    def as_dict(self) -> dict[str, Any]:
        return {"exit_code": ExitCode.OK, **asdict(self)}  # paths become strings in the JSON


def all_files() -> list[DeployFile]:
    """Every shipped file, kind by kind, each kind's by name."""
    root = resources.files("wa_export") / "deploy_files"
    found = [(kind, entry) for kind in KINDS for entry in sorted((root / kind).iterdir(), key=lambda e: e.name)]
    return [DeployFile(kind, entry.name, entry.read_text(encoding="utf-8")) for kind, entry in found if entry.is_file()]


def shipped_files(target: str) -> list[DeployFile]:
    """The files of a kind (`systemd`), or the one file of that name (`wa-export.timer`)."""
    if not (found := [file for file in all_files() if target in (file.kind, file.name)]):
        names = ", ".join(file.name for file in all_files())
        raise UsageProblem(f"There is no deploy file {target!r}; name one of {', '.join(KINDS)}, or a file: {names}.")
    return found


def deploy(target: str, directory: Path | None = None, overwrite: bool = False) -> DeployResult:
    """The files of `target`; with `directory`, also write them there, replacing a file that differs only with
    `overwrite` (else none is written)."""
    result = DeployResult(target, shipped_files(target))
    if directory is None:
        return result
    result.directory = directory = directory.expanduser().absolute()
    if not directory.is_dir():
        raise UsageProblem(f"{directory} is not a directory; create it first or name another --to DIR.")
    same = {file.name for file in result.files if _holds(directory / file.name, file.text)}
    differing = [str(directory / f.name) for f in result.files if f.name not in same and (directory / f.name).exists()]
    if differing and not overwrite:
        problem = f"{', '.join(differing)}: already there with other content; compare with `wa-export deploy {target}` and pass --force to replace."
        raise UsageProblem(problem)
    for file in result.files:
        path = directory / file.name
        try:
            if file.name in same:
                os.chmod(path, FILE_MODE)
            else:
                replace_file(path, file.text.encode(), FILE_MODE)  # atomic: a reader never sees half a unit
        except OSError as error:
            fix = "run as a user who may write there (e.g. with sudo)"
            raise WaExportError(f"Cannot write {path} ({error.strerror or error}); {fix}.") from None
        (result.unchanged if file.name in same else result.written).append(path)
    return result


def _holds(path: Path, text: str) -> bool:
    with suppress(OSError):
        return path.is_file() and path.read_bytes() == text.encode("utf-8")
    return False
