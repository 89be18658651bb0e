"""Accented workspace names in file and folder names, and folders named before transliteration."""

from __future__ import annotations

import os
import time
from pathlib import Path

from helpers import parse_json, xlsx_files
from seeding import seed_workspace
from wa_export.workbook.naming import FOLDER_MARKER

DAY = 86_400


def _seed(mongo_db, name: str) -> str:
    return str(seed_workspace(mongo_db, name, ["m0", "m1"], minutes_ago=3))


def test_accented_names_are_transliterated_in_folder_and_file_names(mongo_db, make_env, cli, tmp_path):
    cafe = _seed(mongo_db, "Café Olé")
    zurich = _seed(mongo_db, "Zürich")
    lodz = _seed(mongo_db, "Łódź")
    result = cli(["export", "--no-email", "--hours", "1", "--json"], env=make_env())
    assert result.returncode == 0, result.stdout + result.stderr
    export_dir = tmp_path / "exports"
    by_workspace = {ws["workspace_id"]: Path(ws["file_path"]) for ws in parse_json(result)["workspaces"]}
    for workspace_id, slug in ((cafe, "cafe_ole"), (zurich, "zurich"), (lodz, "lodz")):
        path = by_workspace[workspace_id]
        assert path.parent == export_dir / slug
        assert path.name.startswith(f"{slug}_whatsapp_messages_")
        assert (path.parent / FOLDER_MARKER).read_text().strip() == workspace_id


def test_a_folder_named_before_transliteration_stays_owned_and_ages_out(mongo_db, make_env, cli, tmp_path):
    """`Café Olé` exported as `caf_ol/` before; now it writes to `cafe_ole/`. The old folder keeps its
    marker (no other workspace can take it, its files are never mixed with another tenant's) and
    cleanup removes its old workbooks and then the folder."""
    cafe = _seed(mongo_db, "Café Olé")
    export_dir = tmp_path / "exports"
    legacy = export_dir / "caf_ol"
    legacy.mkdir(parents=True, mode=0o700)
    (legacy / FOLDER_MARKER).write_text(f"{cafe}\n")
    old_workbook = legacy / "caf_ol_whatsapp_messages_2026-01-01_10-00.xlsx"
    old_workbook.write_bytes(b"x" * 10)
    old = time.time() - 30 * DAY
    os.utime(old_workbook, (old, old))
    # Another workspace whose (new) slug is the old folder's name must not get into it.
    other = _seed(mongo_db, "Caf Ol")

    result = cli(["export", "--no-email", "--hours", "1", "--json"], env=make_env())
    assert result.returncode == 0, result.stdout + result.stderr
    paths = {ws["workspace_id"]: Path(ws["file_path"]) for ws in parse_json(result)["workspaces"]}
    assert paths[cafe].parent == export_dir / "cafe_ole"
    assert paths[other].parent == export_dir / f"caf_ol_{other[-8:]}"
    assert (legacy / FOLDER_MARKER).read_text().strip() == cafe
    assert sorted(p.name for p in legacy.iterdir()) == sorted([FOLDER_MARKER, old_workbook.name])

    cleaned = cli(["cleanup", "--days", "7", "--json"], env=make_env())
    assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
    assert not legacy.exists()
    assert sorted(xlsx_files(export_dir)) == sorted(paths.values())
