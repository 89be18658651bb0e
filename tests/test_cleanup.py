"""`wa-export cleanup`: the installed CLI against a real MongoDB and a real disk."""

from __future__ import annotations

import os
import time
from pathlib import Path

from helpers import aged_file, parse_json
from seeding import add_workspace
from servers import free_port

DAY = 86_400
FOLDER_MARKER = ".wa-export-workspace"


def _workspace_folder(export_dir: Path, name: str) -> Path:
    folder = export_dir / name
    folder.mkdir(parents=True, mode=0o700)
    (folder / FOLDER_MARKER).write_text("0123456789abcdef01234567\n")
    return folder


class Layout:
    """An EXPORT_DIR with everything cleanup must and must not touch."""

    def __init__(self, root: Path) -> None:
        self.export_dir = root / "exports"
        outside = root / "outside"
        acme = _workspace_folder(self.export_dir, "acme")
        tech = _workspace_folder(self.export_dir, "tech")

        self.old_workbook = aged_file(acme / "acme_whatsapp_messages_2026-01-01_10-00.xlsx", 10, b"x" * 1000)
        self.old_workbook_seq = aged_file(acme / "acme_whatsapp_messages_2026-01-01_10-00_2.xlsx", 9, b"x" * 500)
        self.stale_temp = aged_file(
            acme / ".acme_whatsapp_messages_2026-01-02_10-00.xlsx.0a1b2c3d4e5f.tmp", 2, b"x" * 30
        )
        self.stale_sheet_temp = aged_file(
            acme / ".acme_whatsapp_messages_2026-01-02_10-00.xlsx.0a1b2c3d4e5f.sheet0.tmp", 2, b"x" * 20
        )
        self.tech_old = aged_file(tech / "tech_whatsapp_messages_2026-01-03_08-15.xlsx", 30, b"x" * 700)
        self.delete = [self.old_workbook, self.old_workbook_seq, self.stale_temp, self.stale_sheet_temp, self.tech_old]

        # Kept: recent, foreign, nested, temp of a running export, wrong kind of name.
        self.recent = aged_file(acme / "acme_whatsapp_messages_2026-02-01_10-00.xlsx", 1)
        self.running_temp = aged_file(acme / ".acme_whatsapp_messages_2026-02-01_10-15.xlsx.aaaaaaaaaaaa.tmp", 0.05)
        self.foreign_in_folder = aged_file(acme / "notes.txt", 100)
        self.foreign_xlsx = aged_file(acme / "budget.xlsx", 100)
        self.nested = aged_file(acme / "sub" / "acme_whatsapp_messages_2026-01-01_10-00.xlsx", 100)
        self.foreign_top = aged_file(self.export_dir / "README.txt", 100)
        self.pattern_at_top = aged_file(self.export_dir / "acme_whatsapp_messages_2025-01-01_00-00.xlsx", 100)
        # A folder without our marker is someone else's unless its workbooks carry its own name
        # (the original service's layout, tested in test_migration.py): this one's do not.
        self.unmarked = aged_file(self.export_dir / "other" / "another_whatsapp_messages_2025-01-01_00-00.xlsx", 100)

        # A symlink inside our folder, named like a workbook, pointing outside EXPORT_DIR.
        self.link_target = aged_file(outside / "acme_whatsapp_messages_2025-06-01_00-00.xlsx", 100, b"x" * 4242)
        self.link = acme / "acme_whatsapp_messages_2025-06-01_00-00.xlsx"
        self.link.symlink_to(self.link_target)
        old = time.time() - 100 * DAY
        os.utime(self.link, (old, old), follow_symlinks=False)
        # A symlinked workspace folder (with marker and old workbook) outside EXPORT_DIR.
        linked_folder = _workspace_folder(outside, "linked")
        self.behind_linked_folder = aged_file(linked_folder / "linked_whatsapp_messages_2025-01-01_00-00.xlsx", 100)
        (self.export_dir / "linked").symlink_to(linked_folder, target_is_directory=True)

        self.keep = [
            self.recent,
            self.running_temp,
            self.foreign_in_folder,
            self.foreign_xlsx,
            self.nested,
            self.foreign_top,
            self.pattern_at_top,
            self.unmarked,
            self.link_target,
            self.behind_linked_folder,
            acme / FOLDER_MARKER,
            linked_folder / FOLDER_MARKER,
        ]
        self.tech = tech
        self.acme = acme


def _assert_untouched(layout: Layout) -> None:
    for path in layout.keep:
        assert path.is_file(), f"{path} must not be deleted"
    assert layout.link.is_symlink() and os.readlink(layout.link) == str(layout.link_target)
    assert layout.link_target.read_bytes() == b"x" * 4242
    assert (layout.export_dir / "linked").is_symlink()


def test_cleanup_deletes_only_old_workbooks_and_stale_temp_files(mongo_db, make_env, cli, tmp_path):
    add_workspace(mongo_db, "Acme")  # the platform's database: the event is recorded there
    layout = Layout(tmp_path)
    env = make_env(EXPORT_DIR=str(layout.export_dir))
    expected = sorted(str(path) for path in layout.delete)

    dry_json = cli(["cleanup", "--days", "7", "--dry-run", "--json"], env=env)
    assert dry_json.returncode == 0, dry_json.stdout + dry_json.stderr
    dry = parse_json(dry_json)
    assert sorted(item["path"] for item in dry["files"]) == expected
    assert dry["folders_removed"] == [str(layout.tech)]
    assert dry["files_deleted"] == 0 and dry["bytes"] == 1000 + 500 + 30 + 20 + 700
    for path in layout.delete:
        assert path.is_file(), f"--dry-run deleted {path}"
    assert layout.tech.is_dir()
    _assert_untouched(layout)

    dry_plain = cli(["cleanup", "--days", "7", "--dry-run"], env=env)
    assert dry_plain.returncode == 0, dry_plain.stderr
    listed = {
        line.split(" would delete ")[1].split()[1]
        for line in dry_plain.stdout.splitlines()
        if " would delete " in line and " size=" in line
    }
    # Log lines name files relative to EXPORT_DIR, which the summary line names in full.
    assert sorted(listed) == sorted(str(path.relative_to(layout.export_dir)) for path in layout.delete)
    assert f"of {layout.export_dir}:" in dry_plain.stdout
    assert f"would remove empty folder {layout.tech.name}\n" in dry_plain.stdout
    assert mongo_db.system_logs.count_documents({}) == 0, "a dry run writes nothing anywhere"

    run = cli(["cleanup", "--days", "7", "--json"], env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    done = parse_json(run)
    assert sorted(item["path"] for item in done["files"]) == expected
    assert done["files_deleted"] == 5 and done["bytes_freed"] == 2250
    assert done["folders_removed"] == [str(layout.tech)] and done["event_recorded"] is True
    for path in layout.delete:
        assert not os.path.lexists(path), f"{path} should be deleted"
    assert not os.path.lexists(layout.tech), "a folder left with only its marker is removed"
    assert layout.acme.is_dir()
    _assert_untouched(layout)

    [event] = mongo_db.system_logs.find({"event_type": "cleanup"})
    assert event["service"] == "excel_export_scheduler"
    assert event["files_deleted"] == 5 and event["bytes_freed"] == 2250 and event["folders_removed"] == 1
    assert event["workbooks_deleted"] == 3 and event["temp_files_deleted"] == 2
    assert event["dry_run"] is False and event["timestamp"] is not None
    assert "deleted 3 workbooks" in event["message"]

    again = cli(["cleanup", "--days", "7"], env=env)
    assert again.returncode == 0, again.stderr
    assert "deleted 0 workbooks" in again.stdout
    _assert_untouched(layout)


def test_cleanup_default_days_missing_dir_and_bad_days(mongo_db, make_env, cli, tmp_path):
    add_workspace(mongo_db, "Acme")
    export_dir = tmp_path / "exports"
    missing = cli(["cleanup"], env=make_env(EXPORT_DIR=str(tmp_path / "nowhere")))
    assert missing.returncode == 0, missing.stderr
    assert "does not exist, nothing to clean" in missing.stdout
    assert not (tmp_path / "nowhere").exists(), "cleanup never creates EXPORT_DIR"

    folder = _workspace_folder(export_dir, "acme")
    four = aged_file(folder / "acme_whatsapp_messages_2026-01-01_10-00.xlsx", 4)
    two = aged_file(folder / "acme_whatsapp_messages_2026-01-03_10-00.xlsx", 2)
    result = cli(["cleanup", "--json"], env=make_env(EXPORT_DIR=str(export_dir), EXPORT_CLEANUP_DAYS="3"))
    assert result.returncode == 0, result.stderr
    assert parse_json(result)["days"] == 3
    assert not four.exists() and two.exists()

    bad = cli(["cleanup", "--days", "-1"], env=make_env(EXPORT_DIR=str(export_dir)))
    assert bad.returncode == 2
    assert bad.stderr.strip() == "wa-export: --days must be between 0 and 36500, got -1."
    assert two.exists()


def test_cleanup_cleans_files_even_when_mongodb_is_unreachable(make_env, cli, tmp_path):
    export_dir = tmp_path / "exports"
    folder = _workspace_folder(export_dir, "acme")
    old = aged_file(folder / "acme_whatsapp_messages_2026-01-01_10-00.xlsx", 30)
    env = make_env(
        EXPORT_DIR=str(export_dir),
        MONGODB_URI=f"mongodb://127.0.0.1:{free_port()}",
        MONGODB_TIMEOUT_SECONDS="1",
    )
    result = cli(["cleanup", "--json"], env=env)
    assert result.returncode == 3, result.stdout + result.stderr
    assert not old.exists() and not folder.exists()
    document = parse_json(result)
    assert document["files_deleted"] == 1 and document["event_recorded"] is False
    assert "could not be recorded in system_logs" in result.stderr
    assert "Traceback" not in result.stderr
