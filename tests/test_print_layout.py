"""A printed workbook reads like the screen: landscape, one page wide, the header row on every page.

Checked on the real thing: LibreOffice prints the workbook to PDF and pypdf reads each page.
"""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from pypdf import PdfReader

from seeding import seed_workspace
from wa_export.workbook.writer import HEADER, WorkbookWriter

# Long enough to wrap in the Message Content column, so the rows fill several pages.
CONTENTS = [
    f"message {number} " + "the quick brown fox jumps over the lazy dog " * (number % 4) for number in range(240)
]


def _pdf_pages(workbook: Path, out_dir: Path) -> list[tuple[float, float, str]]:
    """(width, height, text) of each page LibreOffice prints the workbook on."""
    soffice = shutil.which("soffice")
    assert soffice, "LibreOffice not found: ./dev tools installs it (Debian package libreoffice-calc-nogui)"
    profile = f"-env:UserInstallation={(out_dir / 'libreoffice-profile').as_uri()}"
    result = subprocess.run(
        [soffice, profile, "--headless", "--convert-to", "pdf", "--outdir", str(out_dir), str(workbook)],
        capture_output=True,
        text=True,
        timeout=180,
        env={"HOME": str(out_dir), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    reader = PdfReader(out_dir / (workbook.stem + ".pdf"))
    return [(float(page.mediabox.width), float(page.mediabox.height), page.extract_text()) for page in reader.pages]


def _assert_print_ready(pages: list[tuple[float, float, str]]) -> None:
    assert len(pages) >= 3, "the test data should fill several pages"
    first_words = HEADER[0]
    last_words = HEADER[-1]
    for number, (width, height, text) in enumerate(pages, 1):
        assert width > height, f"page {number} is portrait"
        # Every column on every page (one page wide), under the header row (repeated).
        assert first_words in text and last_words in text, f"page {number} lacks the header: {text[:200]!r}"
        assert text.count("message ") > 5, f"page {number} holds no rows"


def test_a_scheduled_export_prints_one_page_wide_with_the_header_on_every_page(mongo_db, cli, tmp_path):
    seed_workspace(mongo_db, "Print Shop", CONTENTS)
    result = cli(["export", "--no-email"])
    assert result.returncode == 0, result.stdout + result.stderr
    workbooks = sorted((tmp_path / "exports").rglob("*.xlsx"))
    assert len(workbooks) == 1
    out_dir = tmp_path / "pdf"
    out_dir.mkdir()
    _assert_print_ready(_pdf_pages(workbooks[0], out_dir))


def test_every_sheet_of_a_long_workbook_prints_the_same_way(tmp_path):
    # Over the row limit of a sheet the rows go on in "WhatsApp Messages (2)": its pages too.
    path = tmp_path / "two-sheets.xlsx"
    start = datetime(2026, 3, 1, tzinfo=UTC)
    with WorkbookWriter(path, ZoneInfo("Europe/Berlin"), rows_per_sheet=120, workspace_name="Print Shop") as writer:
        writer.append_many(
            ("+15550100001", "+15550123401", text, start + timedelta(minutes=number), "received", "a" * 24)
            for number, text in enumerate(CONTENTS)
        )
        writer.commit()
    out_dir = tmp_path / "pdf"
    out_dir.mkdir()
    pages = _pdf_pages(path, out_dir)
    _assert_print_ready(pages)
    assert any("message 0 " in text for _, _, text in pages) and any("message 239" in text for _, _, text in pages)
