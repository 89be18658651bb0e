"""health's workspace_addresses check: do the active workspaces and the WORKSPACE_<ID>_EMAIL variables meet?

Failed: MONGODB_DATABASE has no workspaces collection, an active workspace has
no address, an invalid one, or one outside EXPORT_ALLOWED_EMAIL_DOMAINS (each
means a tenant gets nothing). Warning: no active workspace at all, or address
variables that match no active workspace (typos, inactive or deleted tenants,
malformed ids). The sentences are the ones `export` prints (export/preflight.py).
"""

from __future__ import annotations

from wa_export.addresses import outside_allowed_domains
from wa_export.commands.health_check import Check, count_noun, has, is_, named, sentence
from wa_export.export.preflight import run_warnings, unmatched_variable_warnings, workspaces_collection_problem
from wa_export.settings import Settings
from wa_export.store.connection import Store, Workspace


def check_workspace_addresses(store: Store, settings: Settings) -> Check:
    active = store.active_workspaces()
    if not active:
        wrong_database = workspaces_collection_problem(store)
        if wrong_database is not None:
            return Check("workspace_addresses", "failed", wrong_database)
        messages = [warning.message for warning in run_warnings(settings, [], covers_all_active=True)]
        return Check("workspace_addresses", "warning", sentence(messages))
    missing = [w for w in active if not settings.recipients_for(w.id) and settings.recipient_problem(w.id) is None]
    invalid = [w for w in active if settings.recipient_problem(w.id) is not None]
    outside = [
        w for w in active
        if outside_allowed_domains(settings.recipients_for(w.id), settings.export_allowed_email_domains)
    ]
    unmatched = unmatched_variable_warnings(settings, (w.id for w in active))
    unused = [warning.workspace_id for warning in unmatched if warning.workspace_id is not None]
    malformed = list(settings.malformed_email_variables)
    details = {
        "active": len(active),
        "missing": [{"id": w.id, "name": w.name} for w in missing],
        "invalid": [{"id": w.id, "name": w.name, "problem": settings.recipient_problem(w.id)} for w in invalid],
        "outside_allowed_domains": [{"id": w.id, "name": w.name} for w in outside],
        "configured_for_unknown_or_inactive": unused,
        "malformed_variables": malformed,
    }
    problems = []
    if missing:
        problems.append(
            f"{count_noun(len(missing), 'active workspace')} of {len(active)} {has(len(missing))} no address "
            f"and {is_(len(missing))} not exported: {named([_workspace_label(w) for w in missing])}; "
            "set WORKSPACE_<ID>_EMAIL for each"
        )
    if invalid:
        problems.append(
            f"{count_noun(len(invalid), 'workspace')} {has(len(invalid))} an invalid WORKSPACE_<ID>_EMAIL and "
            f"fail{'s' if len(invalid) == 1 else ''} every export: {named([_workspace_label(w) for w in invalid])}"
        )
    if outside:
        problems.append(
            f"{count_noun(len(outside), 'workspace')} {has(len(outside))} addresses outside "
            f"EXPORT_ALLOWED_EMAIL_DOMAINS and fail{'s' if len(outside) == 1 else ''} every export: "
            f"{named([_workspace_label(w) for w in outside])}"
        )
    notes = []
    if unused:
        notes.append(
            "WORKSPACE_<ID>_EMAIL is set for ids that are no active workspace (a typo, or an inactive or deleted "
            f"workspace): {named(unused)}"
        )
    if malformed:
        notes.append(
            f"{named(malformed)} {is_(len(malformed))} ignored: the part between WORKSPACE_ and _EMAIL must be "
            "a workspace id (24 hexadecimal characters)"
        )
    if problems:
        return Check("workspace_addresses", "failed", sentence(problems + notes), details)
    if notes:
        return Check("workspace_addresses", "warning",
                     sentence([f"All {len(active)} active workspaces have an address, but " + notes[0], *notes[1:]]),
                     details)
    return Check("workspace_addresses", "ok", f"All {len(active)} active workspaces have an address.", details)


def _workspace_label(workspace: Workspace) -> str:
    return f"{workspace.name or '(unnamed)'} ({workspace.id})"


__all__ = ["check_workspace_addresses"]
