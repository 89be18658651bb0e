"""`wa-export verify FILE`: which recorded export a file is, by the SHA-256 of its bytes (one query on the indexed
`export_logs.attachment_sha256`). One byte changed is another hash: no entry, exit 1."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wa_export.commands.logs import entry_facts
from wa_export.errors import ExitCode, UsageProblem
from wa_export.settings import Settings
from wa_export.store.connection import mongo_errors, open_store
from wa_export.store.logs import LedgerEntry, entries_with_sha256
from wa_export.workbook.fingerprint import Fingerprint, fingerprint

NOT_RECORDED = "No export of this file is recorded: no export_logs entry has its SHA-256, so it is not a workbook wa-export emailed from this database, or it was changed after it was sent."


class UnreadableFile(UsageProblem):
    """The file to verify is missing, not a file, or unreadable (exit 2)."""


@dataclass
class VerifyReport:
    path: Path
    file: Fingerprint
    entries: list[LedgerEntry]

    @property
    def found(self) -> bool:
        return bool(self.entries)

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK if self.found else ExitCode.FAILED

    def as_dict(self) -> dict[str, Any]:
        file = {"file": str(self.path), "sha256": self.file.sha256, "bytes": self.file.size, "found": self.found}
        document = {"exit_code": self.exit_code, **file, "entries": [entry_facts(entry) for entry in self.entries]}
        return document if self.found else {**document, "error": NOT_RECORDED}


def read_fingerprint(raw_path: str | Path) -> tuple[Path, Fingerprint]:
    """The file's path and fingerprint; UnreadableFile (exit 2) with one sentence when it cannot be read."""
    path = Path(raw_path).expanduser()
    try:
        return path, fingerprint(path)
    except FileNotFoundError:
        raise UnreadableFile(f"{path} does not exist; give the path of the file to verify.") from None
    except OSError as error:
        raise UnreadableFile(
            f"Cannot read {path} ({error.strerror or error}); give the path of a readable file."
        ) from None


def verify(settings: Settings, raw_path: str | Path) -> VerifyReport:
    path, file = read_fingerprint(raw_path)
    with open_store(settings) as store, mongo_errors(settings):
        store.require_workspaces_collection()  # the ledger of another database proves nothing
        return VerifyReport(path, file, entries_with_sha256(store.export_logs, file.sha256))
