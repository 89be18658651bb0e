"""What an export run must say about its workspace list, kept out of the run itself.

* `address_problem`: an invalid WORKSPACE_<ID>_EMAIL fails that one workspace;
  the other tenants are still exported.
"""

from __future__ import annotations

from collections.abc import Sequence

from wa_export.settings import Settings


def address_problem(settings: Settings, workspace_id: str, email_override: Sequence[str] = ()) -> str | None:
    """Why this workspace's configured addresses cannot be used (`--email` replaces them), or None."""
    if email_override:
        return None
    problem = settings.recipient_problem(workspace_id)
    return None if problem is None else f"{problem.rstrip('.')}; fix it to export this workspace"


__all__ = ["address_problem"]
