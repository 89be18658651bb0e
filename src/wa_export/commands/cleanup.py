"""`wa-export cleanup`: delete this tool's old workbooks and stale temp files. Folders are opened with O_NOFOLLOW and
files removed relative to that descriptor, so a folder swapped for a symlink cannot redirect a deletion."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from wa_export.errors import ConfigError, ExitCode, MongoUnavailable, UsageProblem
from wa_export.settings import Settings, export_dir_not_a_directory
from wa_export.store import logs
from wa_export.store.connection import mongo_errors, open_store
from wa_export.units import count_noun, format_bytes
from wa_export.workbook.naming import EXPORT_FILE_PATTERN, FOLDER_MARKER, export_file_pattern_for, is_slug

FileKind = Literal["workbook", "temp"]
CLEANUP_MAX_DAYS = 36_500
TEMP_FILE_MAX_AGE = timedelta(days=1)  # a temp file this old belongs to a killed run: no export takes a day
_WORKBOOK_NAME = EXPORT_FILE_PATTERN.pattern.removeprefix("^").removesuffix("$")
# The writer's temp files: the workbook, a sheet spool, the encrypted workbook (workbook/writer.py).
TEMP_FILE_PATTERN: re.Pattern[str] = re.compile(rf"^\.(?:{_WORKBOOK_NAME})\.[0-9a-f]+(?:\.sheet\d+|\.encrypted)?\.tmp$")
_NO_FOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC
_DIRECTORY = os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC


@dataclass(frozen=True)
class CleanupFile:
    path: str
    folder: str
    kind: FileKind
    size: int
    modified_at: datetime


@dataclass
class CleanupResult:
    export_dir: str
    days: int
    dry_run: bool
    cutoff: datetime
    started_at: datetime
    export_dir_exists: bool = True
    files: list[CleanupFile] = field(default_factory=list)
    folders_removed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    event_recorded: bool = False
    event_error: MongoUnavailable | ConfigError | None = None  # exit 3, or 2 for a database not the platform's

    @property
    def bytes_freed(self) -> int:
        return sum(item.size for item in self.files)

    @property
    def exit_code(self) -> ExitCode:
        # The event's failure outranks failed deletions: it is what monitoring must see first.
        if self.event_error is not None:
            return self.event_error.exit_code
        return ExitCode.FAILED if self.errors else ExitCode.OK

    def summary(self) -> str:
        if not self.export_dir_exists:
            return f"cleanup: {self.export_dir} does not exist, nothing to clean"
        dry, workbooks = self.dry_run, sum(item.kind == "workbook" for item in self.files)
        parts = [
            f"cleanup{' (dry run)' if dry else ''} of {self.export_dir}: {'would delete' if dry else 'deleted'} "
            f"{count_noun(workbooks, 'workbook')} older than {count_noun(self.days, 'day')}",
            count_noun(len(self.files) - workbooks, "stale temp file"),
            f"{format_bytes(self.bytes_freed)} {'to free' if dry else 'freed'}",
            f"{count_noun(len(self.folders_removed), 'empty folder')} {'to remove' if dry else 'removed'}",
        ]
        return ", ".join(parts + ([count_noun(len(self.errors), "error")] if self.errors else []))

    def as_dict(self) -> dict[str, Any]:
        document = asdict(self)  # datetimes become ISO text in Output.json
        deleted = {"files_deleted": len(self.files), "bytes_freed": self.bytes_freed}
        document |= dict.fromkeys(deleted, 0) if self.dry_run else deleted
        return document | {"bytes": self.bytes_freed, "exit_code": self.exit_code, "summary": self.summary()}


def cleanup(settings: Settings, days: int | None, dry_run: bool) -> CleanupResult:
    """Clean the files first, then record the event (a MongoDB outage must not keep the disk full); a dry run
    changes nothing anywhere, so it neither connects nor records."""
    days = settings.export_cleanup_days if days is None else days
    if not 0 <= days <= CLEANUP_MAX_DAYS:
        raise UsageProblem(f"--days must be between 0 and {CLEANUP_MAX_DAYS}, got {days}.")
    now = datetime.now(UTC)
    result = CleanupResult(str(settings.export_dir), days, dry_run, cutoff=now - timedelta(days=days), started_at=now)
    _clean_export_dir(settings.export_dir, result)
    if dry_run:
        return result
    try:
        with open_store(settings) as store, mongo_errors(settings):
            store.require_workspaces_collection()  # never create a misspelt database just to log in it
            details = {"export_dir": result.export_dir, "days": days, "dry_run": False, "errors": result.errors[:50]}
            details |= {"files_deleted": len(result.files), "bytes_freed": result.bytes_freed}
            workbooks = sum(item.kind == "workbook" for item in result.files)
            details |= {"workbooks_deleted": workbooks, "temp_files_deleted": len(result.files) - workbooks}
            details["folders_removed"] = len(result.folders_removed)
            logs.record_cleanup(store.system_logs, result.summary(), datetime.now(UTC), details)
        result.event_recorded = True
    except (MongoUnavailable, ConfigError) as error:
        result.event_error = error
    return result


def _clean_export_dir(export_dir: Path, result: CleanupResult) -> None:
    try:
        # EXPORT_DIR itself is configuration: following a symlink to a data disk is intended.
        root_fd = os.open(export_dir, _DIRECTORY)
    except FileNotFoundError:
        result.export_dir_exists = False
        return
    except NotADirectoryError:
        raise ConfigError(export_dir_not_a_directory(export_dir)) from None
    except PermissionError:
        raise ConfigError(f"EXPORT_DIR {export_dir} cannot be read by this user; run cleanup as its owner.") from None
    try:
        with os.scandir(root_fd) as entries:
            folder_names = sorted(entry.name for entry in entries if entry.is_dir(follow_symlinks=False))
        for name in folder_names:
            try:
                _clean_folder(root_fd, name, result)
            except OSError as error:
                result.errors.append(f"{export_dir / name}: {error.strerror or error}")
    finally:
        os.close(root_fd)


def _clean_folder(root_fd: int, name: str, result: CleanupResult) -> None:
    try:
        folder_fd = os.open(name, _DIRECTORY | _NO_FOLLOW, dir_fd=root_fd)
    except OSError as error:
        if error.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            return  # a symlink (O_NOFOLLOW refused it) or gone meanwhile
        raise
    folder = Path(result.export_dir) / name
    try:
        try:  # the marker's bytes, if it is a regular file: the folder is ours (O_NONBLOCK: a FIFO cannot hang us)
            fd = os.open(FOLDER_MARKER, os.O_RDONLY | os.O_NONBLOCK | _NO_FOLLOW, dir_fd=folder_fd)
            try:
                marker = os.read(fd, 1024) if stat.S_ISREG(os.fstat(fd).st_mode) else None
            finally:
                os.close(fd)
        except OSError:
            marker = None
        if marker is None and not is_slug(name):
            return  # neither ours by marker nor named like one of the original service's folders
        # Without a marker only workbooks named for this very folder are ours (the original service's).
        workbooks = EXPORT_FILE_PATTERN if marker is not None else export_file_pattern_for(name)
        rules: list[tuple[FileKind, re.Pattern[str], float]] = [("workbook", workbooks, result.cutoff.timestamp())]
        if marker is not None:  # temp files only in our own folders
            rules.append(("temp", TEMP_FILE_PATTERN, (result.started_at - TEMP_FILE_MAX_AGE).timestamp()))
        remaining, found = 0, len(result.files)
        with os.scandir(folder_fd) as scanned:
            entries = [entry for entry in scanned if marker is None or entry.name != FOLDER_MARKER]
        for entry in sorted(entries, key=lambda entry: entry.name):
            try:
                info = entry.stat(follow_symlinks=False)  # fstatat in the folder's descriptor
            except FileNotFoundError:
                continue
            kinds = [kind for kind, pattern, limit in rules if pattern.match(entry.name) and info.st_mtime < limit]
            if not kinds or not stat.S_ISREG(info.st_mode):  # symlinks, folders, sockets...: never ours to delete
                remaining += 1
                continue
            modified = datetime.fromtimestamp(info.st_mtime, UTC)
            item = CleanupFile(str(folder / entry.name), str(folder), kinds[0], info.st_size, modified)
            if not result.dry_run:
                try:
                    os.unlink(entry.name, dir_fd=folder_fd)
                except FileNotFoundError:
                    continue  # removed by someone else meanwhile: nothing freed by us
                except OSError as error:
                    result.errors.append(f"cannot delete {item.path}: {error.strerror or error}")
                    remaining += 1
                    continue
            result.files.append(item)
        # An unmarked folder is removed only when this cleanup emptied it.
        emptied = remaining == 0 and (marker is not None or len(result.files) > found)
        if emptied and (result.dry_run or _remove_empty_folder(root_fd, name, folder_fd, marker)):
            result.folders_removed.append(str(folder))
    finally:
        os.close(folder_fd)


def _remove_empty_folder(root_fd: int, name: str, folder_fd: int, marker: bytes | None) -> bool:
    """Remove the marker and the folder; if an export wrote into it meanwhile, put the marker back."""
    with os.scandir(folder_fd) as entries:
        if any(marker is None or entry.name != FOLDER_MARKER for entry in entries):
            return False  # without a marker of ours, any entry (an adopting export's marker too) keeps it
    if marker is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(FOLDER_MARKER, dir_fd=folder_fd)
    try:
        os.rmdir(name, dir_fd=root_fd)
        return True
    except OSError as error:
        if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
    # An export created a file between our check and rmdir: the folder stays, and so must its owner (without a
    # marker of ours, an export adopted it meanwhile: its marker is in place).
    if marker is not None:
        with contextlib.suppress(FileExistsError):
            fd = os.open(FOLDER_MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NO_FOLLOW, 0o600, dir_fd=folder_fd)
            with os.fdopen(fd, "wb") as restored:
                restored.write(marker)
    return False
