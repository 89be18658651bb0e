"""`health` checks about the workspaces themselves: where their addresses come from, and their folders.

Each reads the active workspace list once and judges it with the same rules the
export uses (recipients.py for addresses, workbook/naming.py for folders), so
`health` predicts what the next run will do.
"""

from __future__ import annotations

from wa_export.commands.health_check import Check, named
from wa_export.settings import Settings
from wa_export.store.connection import Store, Workspace
from wa_export.workbook.naming import FOLDER_MARKER, slugify, unclaimed_folders


def _label(workspace: Workspace) -> str:
    return f"{workspace.name or '(unnamed)'} ({workspace.id})"


def check_export_folders(store: Store, settings: Settings) -> Check:
    """Folders without an owner marker (the original service's) that an export would adopt, or could not."""
    by_slug: dict[str, list[Workspace]] = {}
    for workspace in store.active_workspaces():
        by_slug.setdefault(slugify(workspace.name, workspace.id), []).append(workspace)
    try:
        unclaimed = unclaimed_folders(settings.export_dir, by_slug)
    except OSError as error:
        return Check("export_folders", "warning",
                     f"Cannot inspect the folders in {settings.export_dir} ({error.strerror or error}); "
                     "make EXPORT_DIR readable by the user that runs wa-export.")
    contested = [slug for slug in unclaimed if len(by_slug[slug]) > 1]
    adoptable = [slug for slug in unclaimed if len(by_slug[slug]) == 1]
    details = {
        "contested": [
            {"folder": str(settings.export_dir / slug),
             "workspaces": [{"id": w.id, "name": w.name} for w in by_slug[slug]]}
            for slug in contested
        ],
        "to_adopt": [
            {"folder": str(settings.export_dir / slug), "workspace": {"id": by_slug[slug][0].id,
                                                                      "name": by_slug[slug][0].name}}
            for slug in adoptable
        ],
    }
    adopt_note = (
        f"{len(adoptable)} folders without an owner marker will be adopted by their workspace on its next export: "
        + named([f"{slug}/ by {_label(by_slug[slug][0])}" for slug in adoptable])
        if adoptable else ""
    )
    if contested:
        slug = contested[0]
        reason = (
            f"{len(contested)} folders without an owner marker are adopted by nobody because several active "
            f"workspaces have their name: {named([f'{s}/' for s in contested])}; "
            f"{settings.export_dir / slug} could belong to {named([_label(w) for w in by_slug[slug]])}, so each "
            f"exports into its own {slug}_<id> folder; to give the folder to one of them, write that workspace's "
            f"id into {settings.export_dir / slug / FOLDER_MARKER}"
        )
        return Check("export_folders", "warning", reason + (f"; {adopt_note}" if adopt_note else "") + ".",
                     details)
    if adopt_note:
        return Check("export_folders", "ok", adopt_note + ".", details)
    return Check("export_folders", "ok", "Every workspace folder in EXPORT_DIR has its owner marker or is new.",
                 details)


__all__ = ["check_export_folders"]
