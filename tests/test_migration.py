"""Replacing the original service: its folders are adopted, its workbooks cleaned.

The original service wrote ``EXPORT_DIR/<slug>/<slug>_whatsapp_messages_<stamp>.xlsx``
without this tool's owner marker. The end-to-end paths run the installed CLI
against the test MongoDB and SMTP servers; the folder rules underneath
(workbook/naming.py) are also checked directly, since they decide on their own
whether a tenant's personal data lands in the right folder.
"""

from __future__ import annotations

import os
import stat
import time
from datetime import timedelta
from pathlib import Path

from helpers import aged_file, mailed_contents, parse_json
from seeding import add_chat, add_messages, add_workspace, utcnow
from wa_export.workbook import naming
from wa_export.workbook.naming import (
    FOLDER_MARKER,
    contested_slugs,
    unclaimed_folders,
    workspace_folder,
)

DAY = 86_400
WS_A = "65a1b2c3d4e5f60718293a4b"
WS_B = "65a1b2c3d4e5f60718293aff"


def _original_folder(export_dir: Path, slug: str) -> Path:
    """A folder as the original service left it: world-readable, no marker."""
    folder = export_dir / slug
    folder.mkdir(parents=True)
    os.chmod(export_dir, 0o700)
    os.chmod(folder, 0o755)
    return folder


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# --- the installed CLI ------------------------------------------------------------------


def test_export_adopts_the_original_folder_and_cleanup_deletes_only_its_old_workbook(
    mongo_db, make_env, cli, tmp_path, smtp_server
):
    export_dir = tmp_path / "exports"
    folder = _original_folder(export_dir, "acme_corp")
    old = aged_file(folder / "acme_corp_whatsapp_messages_2025-01-15_14-30.xlsx", 10)
    recent = aged_file(folder / "acme_corp_whatsapp_messages_2025-01-15_14-45_2.xlsx", 1)
    foreign = aged_file(folder / "notes.txt", 100, b"the operator's notes")

    acme = add_workspace(mongo_db, "Acme Corp")
    add_workspace(mongo_db, "ACME corp", status="inactive")  # inactive: does not contest the folder
    add_messages(
        mongo_db,
        add_chat(mongo_db, acme),
        [{"content": "after the switch", "timestamp": utcnow() - timedelta(minutes=3)}],
    )
    env = make_env(EXPORT_DIR=str(export_dir), **{f"WORKSPACE_{acme}_EMAIL": "ops@acme.test"})

    exported = cli(["export", "--json"], env=env)
    assert exported.returncode == 0, exported.stdout + exported.stderr
    [result] = parse_json(exported)["workspaces"]
    assert result["outcome"] == "completed"
    new_workbook = Path(result["file_path"])
    assert new_workbook.parent == folder.resolve(), "the new workbook goes into the original folder"
    assert sorted(path.name for path in export_dir.iterdir()) == ["acme_corp"], "no second folder"
    assert (folder / FOLDER_MARKER).read_text().strip() == str(acme)
    assert _mode(folder) == 0o700 and _mode(folder / FOLDER_MARKER) == 0o600
    assert _mode(new_workbook) == 0o600
    assert mailed_contents(smtp_server.messages) == ["after the switch"]
    assert old.is_file() and recent.is_file() and foreign.read_bytes() == b"the operator's notes"

    cleaned = cli(["cleanup", "--days", "7", "--json"], env=env)
    assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
    document = parse_json(cleaned)
    assert [item["path"] for item in document["files"]] == [str(old)]
    assert document["files_deleted"] == 1 and document["folders_removed"] == []
    assert not old.exists()
    assert recent.is_file() and new_workbook.is_file() and foreign.is_file()
    assert (folder / FOLDER_MARKER).is_file()


def test_two_active_workspaces_with_the_folders_slug_adopt_nothing_and_health_names_them(
    mongo_db, make_env, cli, cli_process, tmp_path, smtp_server
):
    export_dir = tmp_path / "exports"
    folder = _original_folder(export_dir, "acme_corp")
    old = aged_file(folder / "acme_corp_whatsapp_messages_2025-01-15_14-30.xlsx", 1)
    first = add_workspace(mongo_db, "Acme Corp")
    second = add_workspace(mongo_db, "ACME  corp!")
    moment = utcnow() - timedelta(minutes=3)
    for workspace_id in (first, second):
        add_messages(
            mongo_db, add_chat(mongo_db, workspace_id), [{"content": f"for {workspace_id}", "timestamp": moment}]
        )
    env = make_env(
        EXPORT_DIR=str(export_dir),
        **{f"WORKSPACE_{first}_EMAIL": "one@acme.test", f"WORKSPACE_{second}_EMAIL": "two@acme.test"},
    )

    # Two worker processes, one workspace each: each must still know the other has the slug.
    exported = cli_process(["export", "--workers", "2", "--json"], env=env)
    assert exported.returncode == 0, exported.stdout + exported.stderr
    results = {r["workspace_id"]: r for r in parse_json(exported)["workspaces"]}
    assert {r["outcome"] for r in results.values()} == {"completed"}
    for workspace_id in (first, second):
        path = Path(results[str(workspace_id)]["file_path"])
        assert path.parent.name == f"acme_corp_{str(workspace_id)[-8:]}"
        assert (path.parent / FOLDER_MARKER).read_text().strip() == str(workspace_id)
    assert not (folder / FOLDER_MARKER).exists(), "nobody adopts a folder two workspaces could own"
    assert sorted(p.name for p in folder.iterdir()) == [old.name] and _mode(folder) == 0o755

    health = cli(["health", "--json"], env=env)
    check = {c["name"]: c for c in parse_json(health)["checks"]}["export_folders"]
    assert check["status"] == "warning"
    for needed in (str(folder), str(first), str(second), "Acme Corp", "ACME  corp!", FOLDER_MARKER):
        assert needed in check["reason"], needed
    assert check["details"]["contested"] == [
        {
            "folder": str(folder),
            "workspaces": [{"id": str(first), "name": "Acme Corp"}, {"id": str(second), "name": "ACME  corp!"}],
        }
    ]
    plain = cli(["health"], env=env)
    [line] = [line for line in plain.stdout.splitlines() if " export_folders: " in line]
    assert line.split()[1] == "warning" and str(folder) in line

    # Once one of them is renamed, the other is the folder's only owner and adopts it.
    mongo_db.workspaces.update_one({"_id": second}, {"$set": {"name": "Beta"}})
    before = cli(["health", "--json"], env=env)
    check = {c["name"]: c for c in parse_json(before)["checks"]}["export_folders"]
    assert check["status"] == "ok" and "acme_corp/ by Acme Corp" in check["reason"]
    add_messages(mongo_db, add_chat(mongo_db, first), [{"content": "later", "timestamp": utcnow()}])
    again = cli(["export", "--json"], env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    [adopted] = [r for r in parse_json(again)["workspaces"] if r["outcome"] == "completed"]
    assert adopted["workspace_id"] == str(first)
    assert (folder / FOLDER_MARKER).read_text().strip() == str(first)


def test_cleanup_deletes_the_original_services_old_workbooks_without_a_marker(mongo_db, make_env, cli, tmp_path):
    add_workspace(mongo_db, "Acme Corp")  # the platform's database: cleanup records its event there
    export_dir = tmp_path / "exports"
    outside = tmp_path / "outside"
    acme = _original_folder(export_dir, "acme_corp")
    delete = [
        aged_file(acme / "acme_corp_whatsapp_messages_2025-01-15_14-30.xlsx", 30),
        aged_file(acme / "acme_corp_whatsapp_messages_2025-01-15_14-30_2.xlsx", 30),
        aged_file(export_dir / "legacy" / "legacy_whatsapp_messages_2024-12-31_23-45.xlsx", 60),
    ]
    keep = [
        aged_file(acme / "acme_corp_whatsapp_messages_2025-03-01_09-00.xlsx", 2),  # not old yet
        aged_file(acme / "tech_whatsapp_messages_2025-01-15_14-30.xlsx", 30),  # another slug's name
        aged_file(acme / "notes.txt", 30),
        aged_file(acme / ".acme_corp_whatsapp_messages_2025-01-15_14-30.xlsx.0a1b2c3d.tmp", 30),  # no temps here
        aged_file(acme / "sub" / "acme_corp_whatsapp_messages_2025-01-15_14-30.xlsx", 30),  # nested
        aged_file(export_dir / "Not A Slug" / "not_a_slug_whatsapp_messages_2025-01-15_14-30.xlsx", 30),
        aged_file(outside / "acme_corp_whatsapp_messages_2025-01-01_00-00.xlsx", 30),
        aged_file(outside / "linked" / "linked_whatsapp_messages_2025-01-01_00-00.xlsx", 30),
    ]
    link = acme / "acme_corp_whatsapp_messages_2025-01-01_00-00.xlsx"
    link.symlink_to(outside / link.name)
    os.utime(link, (time.time() - 30 * DAY,) * 2, follow_symlinks=False)
    (export_dir / "linked").symlink_to(outside / "linked", target_is_directory=True)
    (export_dir / "empty").mkdir()  # an unmarked folder cleanup did not empty stays
    env = make_env(EXPORT_DIR=str(export_dir))

    dry = parse_json(cli(["cleanup", "--days", "7", "--dry-run", "--json"], env=env))
    assert sorted(item["path"] for item in dry["files"]) == sorted(str(path) for path in delete)
    assert dry["folders_removed"] == [str(export_dir / "legacy")]
    assert all(path.is_file() for path in delete)

    result = cli(["cleanup", "--days", "7", "--json"], env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    document = parse_json(result)
    assert sorted(item["path"] for item in document["files"]) == sorted(str(path) for path in delete)
    assert document["folders_removed"] == [str(export_dir / "legacy")]
    assert not any(os.path.lexists(path) for path in delete)
    assert not os.path.lexists(export_dir / "legacy"), "a legacy folder emptied by cleanup is removed"
    for path in keep:
        assert path.is_file(), f"{path} must not be deleted"
    assert link.is_symlink() and (export_dir / "linked").is_symlink() and (export_dir / "empty").is_dir()
    assert not (acme / FOLDER_MARKER).exists(), "cleanup adopts nothing"


# --- the folder rules (workbook/naming.py) ------------------------------------------------


def test_adoption_takes_an_unmarked_folder_with_content_only_when_allowed(tmp_path: Path) -> None:
    legacy = _original_folder(tmp_path, "acme")
    aged_file(legacy / "acme_whatsapp_messages_2025-01-15_14-30.xlsx", 3)
    assert workspace_folder(tmp_path, "acme", WS_A).name == f"acme_{WS_A[-8:]}"
    assert not (legacy / FOLDER_MARKER).exists() and _mode(legacy) == 0o755

    assert workspace_folder(tmp_path, "acme", WS_B, adopt_unmarked=True) == legacy.resolve()
    assert (legacy / FOLDER_MARKER).read_text() == f"{WS_B}\n"
    assert _mode(legacy) == 0o700 and _mode(legacy / FOLDER_MARKER) == 0o600
    # Once adopted, the marker decides: nobody else gets it, with or without adoption allowed.
    assert workspace_folder(tmp_path, "acme", WS_A, adopt_unmarked=True).name == f"acme_{WS_A[-8:]}"
    assert workspace_folder(tmp_path, "acme", WS_B) == legacy.resolve()


def test_adoption_never_follows_a_symlink_nor_takes_a_suffixed_name(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    aged_file(outside / "acme_whatsapp_messages_2025-01-15_14-30.xlsx", 3)
    os.chmod(outside, 0o755)
    export_dir = tmp_path / "exports"
    export_dir.mkdir(mode=0o700)
    (export_dir / "acme").symlink_to(outside, target_is_directory=True)
    suffixed = _original_folder(export_dir, f"acme_{WS_A[-8:]}")
    aged_file(suffixed / "x.txt", 1)
    folder = workspace_folder(export_dir, "acme", WS_A, adopt_unmarked=True)
    assert folder.name == f"acme_{WS_A}", "neither the symlink nor the unmarked suffixed folder is taken"
    assert not (outside / FOLDER_MARKER).exists() and not (suffixed / FOLDER_MARKER).exists()
    assert _mode(outside) == 0o755 and _mode(suffixed) == 0o755, "no mode changed through the symlink"


def test_contested_slugs_and_unclaimed_folders(tmp_path: Path) -> None:
    assert contested_slugs([("Acme Corp", WS_A), ("acme-corp", WS_B), ("Tech", "1" * 24)]) == {"acme_corp"}
    assert contested_slugs([("", WS_A), ("", WS_B)]) == frozenset(), "empty names slug to their ids"
    aged_file(tmp_path / "legacy" / "legacy_whatsapp_messages_2025-01-15_14-30.xlsx", 1)
    (tmp_path / "empty").mkdir()
    aged_file(tmp_path / "owned" / FOLDER_MARKER, 0, WS_A.encode())
    aged_file(tmp_path / "owned" / "owned_whatsapp_messages_2025-01-15_14-30.xlsx", 1)
    aged_file(tmp_path / "outside" / "x.txt", 1)
    (tmp_path / "linked").symlink_to(tmp_path / "outside", target_is_directory=True)
    slugs = ["legacy", "empty", "owned", "linked", "missing", "../outside"]
    assert unclaimed_folders(tmp_path, slugs) == ["legacy"]
    assert unclaimed_folders(tmp_path / "nowhere", slugs) == []


def test_a_folder_cleanup_removes_during_adoption_is_made_anew_under_the_slug(tmp_path: Path, monkeypatch) -> None:
    legacy = _original_folder(tmp_path, "acme")
    old = aged_file(legacy / "acme_whatsapp_messages_2025-01-15_14-30.xlsx", 30)
    real_fchmod = os.fchmod

    def cleanup_wins_the_race(fd: int, mode: int) -> None:
        # Just before adoption makes it private, a concurrent `cleanup` deletes the last old workbook and the folder.
        old.unlink()
        legacy.rmdir()
        monkeypatch.setattr(naming.os, "fchmod", real_fchmod)
        real_fchmod(fd, mode)

    monkeypatch.setattr(naming.os, "fchmod", cleanup_wins_the_race)
    folder = workspace_folder(tmp_path, "acme", WS_A, adopt_unmarked=True)
    assert folder == legacy.resolve() and not old.exists(), "made anew, not a second acme_<id8> folder"
    assert (folder / FOLDER_MARKER).read_text().strip() == WS_A and _mode(folder) == 0o700
