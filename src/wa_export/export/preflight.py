"""What an export run must say about its workspace list, kept out of the run itself.

* `run_warnings`: the WARNING lines of every run: active workspaces without an
  address (they are silently never exported otherwise), WORKSPACE_*_EMAIL
  variables that match no active workspace (malformed ids included), a
  database without any active workspace, and a workspace stored twice
  (`duplicate_workspace_warning`, added by the run that exports it).

`health` reports the same findings with the same sentences.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from wa_export.recipients import missing_hint
from wa_export.settings import Settings
from wa_export.store.connection import DuplicateWorkspace

WarningKind = Literal[
    "no_active_workspace", "missing_address", "unmatched_address", "malformed_address_variable", "duplicate_workspace"
]


@dataclass(frozen=True)
class RunWarning:
    kind: WarningKind
    message: str
    workspace_id: str | None = None
    variable: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "message": self.message,
            "workspace_id": self.workspace_id,
            "variable": self.variable,
        }


def duplicate_workspace_warning(duplicate: DuplicateWorkspace) -> RunWarning:
    """A workspace stored twice (ObjectId and string `_id`): exported once, named every run until one is deleted."""
    return RunWarning("duplicate_workspace", duplicate.sentence(), workspace_id=duplicate.id)


def missing_address_warning(workspace_id: str, name: str, settings: Settings) -> RunWarning:
    return RunWarning(
        "missing_address",
        f"workspace {workspace_id} ({name or 'unnamed'}) has no email address and is not exported: "
        f"{missing_hint(workspace_id, settings)}",  # names EXPORT_RECIPIENTS_FIELD too when it is set
        workspace_id=workspace_id,
        variable=f"WORKSPACE_{workspace_id}_EMAIL",
    )


def unmatched_variable_warnings(settings: Settings, active_ids: Iterable[str]) -> list[RunWarning]:
    """WORKSPACE_*_EMAIL variables no active workspace uses: malformed ids, typos, inactive or deleted tenants."""
    active = {workspace_id.lower() for workspace_id in active_ids}
    warnings = [
        RunWarning(
            "unmatched_address",
            f"WORKSPACE_{workspace_id}_EMAIL matches no active workspace in database "
            f"{settings.mongodb_database!r}: a typo in the id, or an inactive or deleted workspace",
            workspace_id=workspace_id,
            variable=f"WORKSPACE_{workspace_id}_EMAIL",
        )
        for workspace_id in sorted(settings.configured_workspace_ids() - active)
    ]
    return malformed_variable_warnings(settings) + warnings


def malformed_variable_warnings(settings: Settings) -> list[RunWarning]:
    return [
        RunWarning(
            "malformed_address_variable",
            f"{name} is ignored: the part between WORKSPACE_ and _EMAIL must be a workspace id "
            "(24 hexadecimal characters)",
            variable=name,
        )
        for name in settings.malformed_email_variables
    ]


def run_warnings(
    settings: Settings,
    workspaces: Sequence[tuple[str, str]],
    *,
    covers_all_active: bool,
    email_override: bool = False,
    failed_ids: Collection[str] = (),
    without_address: Collection[str] = (),
) -> list[RunWarning]:
    """The warnings of a run over `workspaces` ((id, name) pairs).

    `covers_all_active`: the pairs are every active workspace (a complete
    scheduled run), so a variable matching none of them matches no active
    workspace at all. Workspaces in `failed_ids` already have their error line.
    """
    warnings: list[RunWarning] = []
    if covers_all_active and not workspaces:
        warnings.append(
            RunWarning(
                "no_active_workspace",
                f"database {settings.mongodb_database!r} has no active workspace, so nothing is exported: "
                "check MONGODB_DATABASE and the workspaces' status",
            )
        )
    if not email_override:
        warnings += [
            missing_address_warning(workspace_id, name, settings)
            for workspace_id, name in workspaces
            if workspace_id not in failed_ids and workspace_id in without_address
        ]
    if covers_all_active:
        warnings += unmatched_variable_warnings(settings, (workspace_id for workspace_id, _ in workspaces))
    else:
        warnings += malformed_variable_warnings(settings)
    return warnings


__all__ = [
    "RunWarning",
    "duplicate_workspace_warning",
    "missing_address_warning",
    "run_warnings",
    "unmatched_variable_warnings",
]
