"""health's workspace_addresses check: does every active workspace have usable addresses, and where from?

Failed: an active workspace has no address, an invalid one, or one outside
EXPORT_ALLOWED_EMAIL_DOMAINS (each means a tenant gets nothing). Warning: no
active workspace at all, or address variables that match no active workspace
(typos, inactive or deleted tenants, malformed ids). The sentences are the ones `export` prints (export/preflight.py).
"""

from __future__ import annotations

from wa_export.commands.health_check import Check, count_noun, has, is_, named, sentence
from wa_export.export.results import run_warnings, unmatched_variable_warnings
from wa_export.recipients import SOURCE_LABELS, RecipientSource, missing_hint, recipients_for
from wa_export.settings import Settings
from wa_export.store.connection import Store, Workspace


def check_workspace_addresses(store: Store, settings: Settings) -> Check:
    active = store.active_workspaces()  # a database without a workspaces collection ends health: exit 2
    if not active:
        messages = [warning.message for warning in run_warnings(settings, [], covers_all_active=True)]
        return Check("workspace_addresses", "warning", sentence(messages))
    recipients = {w.id: recipients_for(w, settings) for w in active}
    missing = [w for w in active if recipients[w.id].source == "none"]
    refused = [w for w in active if recipients[w.id].problem]
    invalid = [w for w in refused if recipients[w.id].problem_kind == "invalid"]
    outside = [w for w in refused if recipients[w.id].problem_kind == "domain"]
    unmatched = unmatched_variable_warnings(settings, (w.id for w in active))
    unused = [warning.workspace_id for warning in unmatched if warning.workspace_id is not None]
    malformed = list(settings.malformed_email_variables)
    listed: tuple[RecipientSource, ...] = ("environment", "database", "none")
    sources = {source: sum(1 for r in recipients.values() if r.source == source) for source in listed}
    details = {
        "active": len(active),
        "sources": sources,
        "workspaces": [{"id": w.id, "name": w.name, **recipients[w.id].as_dict()} for w in active],
        "missing": [{"id": w.id, "name": w.name} for w in missing],
        "refused": [{"id": w.id, "name": w.name, "problem": recipients[w.id].problem} for w in refused],
        "invalid": [{"id": w.id, "name": w.name, "problem": recipients[w.id].problem} for w in invalid],
        "outside_allowed_domains": [{"id": w.id, "name": w.name} for w in outside],
        "configured_for_unknown_or_inactive": unused,
        "malformed_variables": malformed,
    }
    where = ", ".join(
        f"{count} from the {SOURCE_LABELS[source]}"
        + (f" {settings.export_recipients_field}" if source == "database" else " WORKSPACE_<ID>_EMAIL")
        for source, count in sources.items()
        if count and source != "none"
    )
    problems = []
    if missing:
        problems.append(
            f"{count_noun(len(missing), 'active workspace')} of {len(active)} {has(len(missing))} no address "
            f"and {is_(len(missing))} not exported: {named([_workspace_label(w) for w in missing])}; "
            + missing_hint("<ID>", settings)
            + " for each"
        )
    if refused:
        first = recipients[refused[0].id].problem
        problems.append(
            f"{count_noun(len(refused), 'workspace')} {has(len(refused))} refused addresses (invalid, or outside "
            f"EXPORT_ALLOWED_EMAIL_DOMAINS) and fail{'s' if len(refused) == 1 else ''} every export: "
            f"{named([_workspace_label(w) for w in refused])} (first: {first})"
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
    sources_clause = f" ({where})" if where else ""
    if problems:
        if where:
            problems.append(f"addresses of the others: {where}")
        return Check("workspace_addresses", "failed", sentence(problems + notes), details)
    if notes:
        return Check(
            "workspace_addresses",
            "warning",
            sentence(
                [f"All {len(active)} active workspaces have an address{sources_clause}, but " + notes[0], *notes[1:]]
            ),
            details,
        )
    return Check(
        "workspace_addresses", "ok", f"All {len(active)} active workspaces have an address{sources_clause}.", details
    )


def _workspace_label(workspace: Workspace) -> str:
    return f"{workspace.name or '(unnamed)'} ({workspace.id})"


__all__ = ["check_workspace_addresses"]
