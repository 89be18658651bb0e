"""`health` checks about the workspaces themselves: where their addresses come from, and their folders.

Each reads the active workspace list once and judges it with the same rules the
export uses (recipients.py for addresses, workbook/naming.py for folders), so
`health` predicts what the next run will do.
"""

from __future__ import annotations

from wa_export.commands.check import Check, named
from wa_export.recipients import SOURCE_LABELS, RecipientSource, recipients_for
from wa_export.settings import Settings
from wa_export.store.connection import Store, Workspace
from wa_export.workbook.naming import FOLDER_MARKER, slugify, unclaimed_folders


def _label(workspace: Workspace) -> str:
    return f"{workspace.name or '(unnamed)'} ({workspace.id})"


def check_workspace_addresses(store: Store, settings: Settings) -> Check:
    active = store.active_workspaces()
    if not active:
        return Check("workspace_addresses", "warning",
                     f"No active workspaces in database {settings.mongodb_database!r}; check MONGODB_DATABASE.")
    recipients = {w.id: recipients_for(w, settings) for w in active}
    missing = [w for w in active if recipients[w.id].source == "none"]
    refused = [w for w in active if recipients[w.id].problem]
    active_ids = {w.id for w in active}
    unused = sorted(i for i in settings.workspace_emails if i not in active_ids)
    listed: tuple[RecipientSource, ...] = ("environment", "database", "none")
    sources = {source: sum(1 for r in recipients.values() if r.source == source) for source in listed}
    details = {
        "active": len(active),
        "sources": sources,
        "workspaces": [{"id": w.id, "name": w.name, **recipients[w.id].as_dict()} for w in active],
        "missing": [{"id": w.id, "name": w.name} for w in missing],
        "refused": [{"id": w.id, "name": w.name, "problem": recipients[w.id].problem} for w in refused],
        "configured_for_unknown_or_inactive": unused,
    }
    where = ", ".join(
        f"{count} from the {SOURCE_LABELS[source]}"
        + (f" {settings.export_recipients_field}" if source == "database" else " WORKSPACE_<ID>_EMAIL")
        for source, count in sources.items() if count and source != "none"
    )
    problems = []
    if missing:
        problems.append(
            f"{len(missing)} of {len(active)} active workspaces have no address and are not exported: "
            f"{named([_label(w) for w in missing])}; "
            + "set WORKSPACE_<ID>_EMAIL"
            + (f" or their {settings.export_recipients_field} field" if settings.export_recipients_field else "")
            + " for each"
        )
    if refused:
        first = recipients[refused[0].id].problem
        problems.append(
            f"{len(refused)} workspaces have refused addresses and fail every export: "
            f"{named([_label(w) for w in refused])} (first: {first})"
        )
    if problems:
        return Check("workspace_addresses", "failed",
                     "; ".join(problems) + (f"; addresses of the others: {where}" if where else "") + ".", details)
    if unused:
        return Check("workspace_addresses", "warning",
                     f"All {len(active)} active workspaces have an address ({where}), but WORKSPACE_<ID>_EMAIL is "
                     f"set for ids that are no active workspace (typo?): {named(unused)}.", details)
    return Check("workspace_addresses", "ok", f"All {len(active)} active workspaces have an address ({where}).",
                 details)


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


__all__ = ["check_export_folders", "check_workspace_addresses"]
