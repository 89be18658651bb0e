"""A workspace's workbook password (a secret, never shown): its source, and whether a workspace may go without one."""

from __future__ import annotations

from typing import TYPE_CHECKING

from wa_export.units import count_noun
from wa_export.workspace_settings import Resolved, WorkspaceSetting, resolve

if TYPE_CHECKING:
    from wa_export.settings import Settings
    from wa_export.store.connection import Workspace

MAX_PASSWORD_LENGTH = 255  # Excel opens no file whose password is longer


def parse_workbook_password(text: str) -> str:
    """The password as written (spaces count); ValueError whose text completes "<value> …"."""
    if len(text) > MAX_PASSWORD_LENGTH:
        raise ValueError(f"is longer than {count_noun(MAX_PASSWORD_LENGTH, 'character')}, which Excel cannot open")
    return text


WORKBOOK_PASSWORD = WorkspaceSetting(
    "WORKBOOK_PASSWORD",
    "EXPORT_WORKBOOK_PASSWORD_FIELD",
    str,
    parse_workbook_password,
    lambda _: None,
    "none",
    secret=True,
    fails_workspace_only=True,  # like an invalid address
)


def workbook_password(workspace: Workspace, settings: Settings) -> Resolved[str]:
    """The password (None: not encrypted) and its source; a `problem` (the workspace is not exported) if unusable or
    missing while EXPORT_REQUIRE_WORKBOOK_PASSWORD is on."""
    resolved = resolve(WORKBOOK_PASSWORD, workspace, settings)
    if resolved.problem is None and resolved.value is None and settings.export_require_workbook_password:
        field = settings.export_workbook_password_field
        where = f"WORKSPACE_{workspace.id}_WORKBOOK_PASSWORD" + (f" or the workspace's {field} field" if field else "")
        problem = (
            f"workspace {workspace.id} has no workbook password and EXPORT_REQUIRE_WORKBOOK_PASSWORD is true, so "
            f"nothing was exported and its messages wait: set {where}."
        )
        return Resolved(None, resolved.source, resolved.origin, problem)
    return resolved
