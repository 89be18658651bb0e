"""Unit tests for export naming and folders."""

from __future__ import annotations

import os
import stat
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from wa_export.workbook.naming import (
    EXPORT_FILE_PATTERN,
    FOLDER_MARKER,
    export_file_pattern_for,
    publish_path_candidates,
    slugify,
    workspace_folder,
)
from wa_export.workbook.writer import WorkbookWriter

WS_A = "65a1b2c3d4e5f60718293a4b"
WS_B = "65a1b2c3d4e5f60718293aff"
SAFE = set("abcdefghijklmnopqrstuvwxyz0123456789_")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Acme Corp", "acme_corp"),
        ("  Acme -- Corp!!  ", "acme_corp"),
        ("ACME/Sales\\EU", "acme_sales_eu"),
        ("../../etc", "etc"),
        ("..", f"workspace_{WS_A}"),
        ("", f"workspace_{WS_A}"),
        ("🎉🎉", f"workspace_{WS_A}"),
        (None, f"workspace_{WS_A}"),
        (12345, "12345"),
        ("CON", "con_ws"),
        ("lpt9", "lpt9_ws"),
        ("Console", "console"),
        ("Acme\r\nBcc: attacker@example.com", "acme_bcc_attacker_example_com"),
        ("Café Müller", "cafe_muller"),
        ("Café Olé", "cafe_ole"),
        ("Zürich", "zurich"),
        ("Łódź", "lodz"),
        ("Straße Ærø", "strasse_aero"),
        ("ﬁnance ＨＱ", "finance_hq"),  # compatibility forms: ligature, full-width letters
        ("北京 office", "office"),  # letters without an ASCII form still become "_"
    ],
)
def test_slugify(name: object, expected: str) -> None:
    assert slugify(name, WS_A) == expected


def test_slugify_caps_length_and_stays_safe() -> None:
    slug = slugify("a" * 300, WS_A)
    assert 0 < len(slug) <= 100
    assert set(slug) <= SAFE
    slug = slugify("ab_" * 200, WS_A)
    assert not slug.endswith("_") and not slug.startswith("_")
    # the longest possible file name fits the 255-byte limit
    name = next(publish_path_candidates(Path("/x"), slug, datetime(2024, 1, 1))).name
    assert len(f".{name[:-5]}_999.xlsx.0123456789ab.sheet99.tmp".encode()) < 255


def test_workspace_folder_creates_private_dirs_with_marker(tmp_path: Path) -> None:
    export_dir = tmp_path / "a" / "b" / "exports"
    old = os.umask(0o022)
    try:
        folder = workspace_folder(export_dir, "acme", WS_A)
    finally:
        os.umask(old)
    assert folder == export_dir.resolve() / "acme"
    for path in (tmp_path / "a", tmp_path / "a" / "b", export_dir, folder):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o700, path
    assert (folder / FOLDER_MARKER).read_text().strip() == WS_A
    assert workspace_folder(export_dir, "acme", WS_A) == folder  # stable


def test_two_workspaces_same_slug_get_different_folders(tmp_path: Path) -> None:
    first = workspace_folder(tmp_path, "acme", WS_A)
    second = workspace_folder(tmp_path, "acme", WS_B)
    assert first != second
    assert second.name == f"acme_{WS_B[-8:]}"
    # both stay stable across runs, whichever asks first
    assert workspace_folder(tmp_path, "acme", WS_B) == second
    assert workspace_folder(tmp_path, "acme", WS_A) == first
    assert (second / FOLDER_MARKER).read_text().strip() == WS_B


def test_short_id_collision_falls_back_to_full_id(tmp_path: Path) -> None:
    other = "ffffffffffffffff18293a4b"  # same last 8 hex digits as WS_A
    workspace_folder(tmp_path, "acme", WS_B)
    (tmp_path / f"acme_{WS_A[-8:]}").mkdir()
    (tmp_path / f"acme_{WS_A[-8:]}" / FOLDER_MARKER).write_text(other)
    folder = workspace_folder(tmp_path, "acme", WS_A)
    assert folder.name == f"acme_{WS_A}"


def test_foreign_folder_without_marker_is_not_used(tmp_path: Path) -> None:
    foreign = tmp_path / "acme"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("someone else's")
    folder = workspace_folder(tmp_path, "acme", WS_A)
    assert folder != foreign.resolve()
    assert not (foreign / FOLDER_MARKER).exists()


def test_empty_folder_without_marker_is_adopted(tmp_path: Path) -> None:
    (tmp_path / "acme").mkdir()
    assert workspace_folder(tmp_path, "acme", WS_A) == (tmp_path / "acme").resolve()


def test_symlink_candidate_is_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    export_dir = tmp_path / "exports"
    export_dir.mkdir()
    (export_dir / "acme").symlink_to(outside)
    folder = workspace_folder(export_dir, "acme", WS_A)
    assert folder.parent == export_dir.resolve()
    assert not folder.is_symlink()
    assert os.listdir(outside) == []


def test_file_in_place_of_folder_is_taken(tmp_path: Path) -> None:
    (tmp_path / "acme").write_text("x")
    assert workspace_folder(tmp_path, "acme", WS_A).name == f"acme_{WS_A[-8:]}"


@pytest.mark.parametrize("bad", ["../etc", "..", "a/b", "", "Acme", "/abs"])
def test_workspace_folder_rejects_non_slugs(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError):
        workspace_folder(tmp_path, bad, WS_A)


@pytest.mark.parametrize("name", ["../../etc", "..", "", "🎉🎉", "CON", "a" * 300, None, "Acme\r\nBcc: x@y.z"])
def test_slugified_names_stay_inside_export_dir(tmp_path: Path, name: object) -> None:
    folder = workspace_folder(tmp_path, slugify(name, WS_A), WS_A)
    assert folder.parent == tmp_path.resolve()
    assert folder.resolve().is_relative_to(tmp_path.resolve())


def test_all_names_taken_raises(tmp_path: Path) -> None:
    for name in ("acme", f"acme_{WS_A[-8:]}", f"acme_{WS_A}"):
        (tmp_path / name).write_text("taken")
    with pytest.raises(FileExistsError):
        workspace_folder(tmp_path, "acme", WS_A)


def test_publish_candidates_are_the_base_name_then_numbered(tmp_path: Path) -> None:
    run = datetime(2024, 5, 1, 9, 5, 59, tzinfo=ZoneInfo("Asia/Kolkata"))
    candidates = publish_path_candidates(tmp_path, "acme", run)
    assert next(candidates) == tmp_path / "acme_whatsapp_messages_2024-05-01_09-05.xlsx"
    assert next(candidates).name == "acme_whatsapp_messages_2024-05-01_09-05_2.xlsx"
    assert next(candidates).name == "acme_whatsapp_messages_2024-05-01_09-05_3.xlsx"


def test_publish_candidates_with_writer_never_overwrite(tmp_path: Path) -> None:
    run = datetime(2024, 5, 1, 9, 5)
    paths = []
    for _ in range(3):
        with WorkbookWriter(next(publish_path_candidates(tmp_path, "acme", run)), ZoneInfo("UTC")) as writer:
            paths.append(writer.commit(publish_path_candidates(tmp_path, "acme", run)))
    assert [p.name for p in paths] == [
        "acme_whatsapp_messages_2024-05-01_09-05.xlsx",
        "acme_whatsapp_messages_2024-05-01_09-05_2.xlsx",
        "acme_whatsapp_messages_2024-05-01_09-05_3.xlsx",
    ]
    candidates = list(publish_path_candidates(tmp_path, "acme", run))
    assert len(candidates) == len(set(candidates)) and len(candidates) < 10_000


def test_export_file_pattern() -> None:
    for name in (
        "acme_whatsapp_messages_2024-05-01_09-05.xlsx",
        "acme_whatsapp_messages_2024-05-01_09-05_12.xlsx",
        f"workspace_{WS_A}_whatsapp_messages_2024-05-01_09-05.xlsx",
    ):
        assert EXPORT_FILE_PATTERN.match(name), name
        assert export_file_pattern_for(name.split("_whatsapp")[0]).match(name)
    for name in (
        "acme_whatsapp_messages_2024-05-01_09-05.xlsx.tmp",
        ".acme_whatsapp_messages_2024-05-01_09-05.xlsx.0123.tmp",
        "acme_whatsapp_messages_2024-05-01.xlsx",
        "report.xlsx",
        "acme_whatsapp_messages_2024-05-01_09-05_.xlsx",
        "Acme_whatsapp_messages_2024-05-01_09-05.xlsx",
    ):
        assert not EXPORT_FILE_PATTERN.match(name), name
    assert not export_file_pattern_for("acme").match("acme_eu_whatsapp_messages_2024-05-01_09-05.xlsx")


def test_an_export_dir_that_is_a_file_is_named_as_such_not_as_a_taken_folder(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "exports"
    not_a_directory.write_text("x")
    with pytest.raises(NotADirectoryError):  # describe_file_error then says "a regular file is in the way"
        workspace_folder(not_a_directory, "acme", WS_A)


@pytest.mark.parametrize("bad", ["../../x", "a/b", "Acme"])
def test_publish_paths_refuse_a_non_slug(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError):
        next(publish_path_candidates(tmp_path, bad, datetime(2026, 3, 1, 18, 45)))
