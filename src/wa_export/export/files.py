"""Workbooks on disk: writing one from rows, explaining a failed write, removing superseded ones."""

from __future__ import annotations

import errno
import itertools
import os
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path

from wa_export.export.rows import Row
from wa_export.settings import Settings
from wa_export.store.connection import Workspace
from wa_export.workbook.naming import publish_path_candidates, slugify, workspace_folder
from wa_export.workbook.template import TemplateWorkbookWriter


def write_workbook(
    settings: Settings,
    workspace: Workspace,
    rows: Iterator[Row],
    run_time: datetime,
    contested_slugs: frozenset[str] = frozenset(),
) -> Path | None:
    """Stream the rows into a new workbook; None (and no file, no folder) when there are none.

    The original service's unmarked `<slug>/` folder is adopted unless several
    active workspaces have that slug (`contested_slugs`, workbook/naming.py).

    The template writer makes the same file as WorkbookWriter at a fraction of the
    fixed cost (a scheduled run writes one small workbook per busy workspace).
    """
    first = next(rows, None)
    if first is None:
        return None
    slug = slugify(workspace.name, workspace.id)
    adopt = workspace.status == "active" and slug not in contested_slugs
    folder = workspace_folder(settings.export_dir, slug, workspace.id, adopt_unmarked=adopt)
    local_run_time = run_time.astimezone(settings.export_timezone)
    candidates = iter(publish_path_candidates(folder, slug, local_run_time))
    final_path = next(candidates)
    with TemplateWorkbookWriter(
        final_path, settings.export_timezone, workspace_name=workspace.name, timezone_name=settings.timezone_name
    ) as writer:
        writer.append(*first)
        writer.append_many(rows)
        return writer.commit(itertools.chain([final_path], candidates))


def remove_files(paths: Iterable[str | Path], keep: Iterable[str | Path] = ()) -> None:
    """Delete workbooks that were superseded (never one in `keep`); already gone is fine."""
    kept = {str(path) for path in keep}
    for path in paths:
        if str(path) in kept:
            continue
        try:
            os.unlink(path)
        except OSError:
            pass


def describe_file_error(error: OSError, export_dir: Path) -> str:
    where = error.filename or export_dir
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"the disk is full while writing {where}; free space in EXPORT_DIR ({export_dir}) — no partial file was kept"
    if error.errno == errno.EFBIG:
        return (
            f"the export file grew past this process's file-size limit (ulimit -f) while writing {where}; "
            f"raise the limit for wa-export or export a shorter period (EXPORT_DIR {export_dir}) — no partial file was kept"
        )
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write in {where} ({error.strerror}); make EXPORT_DIR ({export_dir}) writable by this user"
    if error.errno == errno.ENOTDIR:
        return (
            f"cannot create the export folder {where} ({error.strerror}): a regular file is in the way; "
            f"point EXPORT_DIR ({export_dir}) at a directory"
        )
    return f"cannot write the export file in {where} ({error.strerror or error}); check EXPORT_DIR ({export_dir})"


__all__ = ["describe_file_error", "remove_files", "write_workbook"]
