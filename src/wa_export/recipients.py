"""Where a workspace's export addresses come from, one policy for every command: WORKSPACE_<ID>_EMAIL wins, else
the document's EXPORT_RECIPIENTS_FIELD (a comma list, or a list of strings). EXPORT_ALLOWED_EMAIL_DOMAINS applies
to both; a malformed address becomes that workspace's `problem` and fails that workspace only."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from wa_export.addresses import domain_refusal, split_address_list
from wa_export.settings import Settings
from wa_export.store.connection import Workspace

RecipientSource = Literal["environment", "database", "option", "none"]
ProblemKind = Literal["invalid", "domain"]  # malformed value / outside EXPORT_ALLOWED_EMAIL_DOMAINS
SOURCE_LABELS: dict[RecipientSource, str] = {
    "environment": "environment variable",
    "database": "database field",
    "option": "--email option",
    "none": "none",
}
_SHOWN_MAX = 80  # a hostile value is cut, not echoed whole


@dataclass(frozen=True)
class Recipients:
    """A workspace's addresses, where they come from (`origin`: the variable or field), and what is wrong."""

    addresses: tuple[str, ...]
    source: RecipientSource
    origin: str | None = None
    problem: str | None = None  # one clause naming the field and the workspace; the export fails with it
    problem_kind: ProblemKind | None = None

    def allowed(self, domains: tuple[str, ...], fix: str) -> Recipients:
        refusal = domain_refusal(self.addresses, domains, fix)
        return self if refusal is None else replace(self, problem=refusal, problem_kind="domain")

    @property
    def usable(self) -> bool:
        return bool(self.addresses) and self.problem is None

    def as_dict(self) -> dict[str, Any]:
        # Counts, not the addresses: outputs carry as little tenant data as they can.
        return {
            "source": self.source,
            "origin": self.origin,
            "addresses": len(self.addresses),
            "problem": self.problem,
            "problem_kind": self.problem_kind,
        }


def environment_variable(workspace_id: str) -> str:
    return f"WORKSPACE_{workspace_id}_EMAIL"


# A workspace gets its cursor on its first scheduled export, which reaches back one interval (the first-cursor
# rule): what arrived while it had no address is never in a scheduled window.
UNSENT_WITHOUT_ADDRESS = (
    "scheduled runs will not send the messages that arrive while a workspace has no address "
    "(a manual export with --since can)"
)


def missing_hint(workspace_id: str, settings: Settings) -> str:
    """What to set when a workspace has no address: the variable, and the field if one is configured."""
    hint = f"set {environment_variable(workspace_id)}"
    if settings.export_recipients_field:
        hint += f" or the workspace's {settings.export_recipients_field} field"
    return hint


def _shown(text: str) -> str:
    return repr(text if len(text) <= _SHOWN_MAX else text[:_SHOWN_MAX] + "…")


def from_environment(workspace_id: str, settings: Settings) -> Recipients | None:
    """The WORKSPACE_<ID>_EMAIL addresses, which win over the database; None when the variable is not set."""
    variable = environment_variable(workspace_id)
    problem = settings.recipient_problem(workspace_id)
    if problem is not None:
        return Recipients(
            (), "environment", variable, f"{problem.rstrip('.')}; fix it to export this workspace", "invalid"
        )
    configured = settings.environment_recipients(workspace_id)
    if not configured:
        return None
    return Recipients(configured, "environment", variable).allowed(
        settings.export_allowed_email_domains, f"fix {variable}"
    )


def recipients_for(workspace: Workspace, settings: Settings) -> Recipients:
    """The addresses an export of `workspace` goes to, with their source and any problem (never raises)."""
    configured = from_environment(workspace.id, settings)
    if configured is not None:
        return configured
    field, value = settings.export_recipients_field, workspace.document_values.get("EXPORT_RECIPIENTS_FIELD")
    if not field or value is None:
        return Recipients((), "none")
    where = f"{field} of workspace {workspace.id}"
    fix = f"fix {where} in the platform or set {environment_variable(workspace.id)}"

    def refused(problem: str, addresses: tuple[str, ...] = ()) -> Recipients:
        return Recipients(addresses, "database", field, f"{problem}; {fix}", "invalid")

    if isinstance(value, str):
        entries = [value]
    elif isinstance(value, (list, tuple)):
        strange = [item for item in value if not isinstance(item, str)]
        if strange:  # a None item too: a list is either all strings or wrong
            return refused(f"{where} holds a list with an item of type {type(strange[0]).__name__}, not only strings")
        entries = list(value)
    else:
        return refused(f"{where} holds a value of type {type(value).__name__}, not a string or a list of strings")
    addresses, invalid = split_address_list(",".join(entries))
    if invalid:
        return refused(f"{where} holds an invalid email address {_shown(invalid[0])}", addresses)
    if not addresses:
        return Recipients((), "none")
    return Recipients(addresses, "database", field).allowed(settings.export_allowed_email_domains, fix)


def describe_recipients(recipients: Recipients, workspace_id: str, settings: Settings) -> str:
    """Where a workspace's addresses come from, as a clause for `stats` and `health` (counts, no addresses)."""
    if recipients.source == "none":
        return f"No email address configured: {missing_hint(workspace_id, settings)}"
    where = f"the workspace field {recipients.origin}" if recipients.source == "database" else recipients.origin
    text = f"Addresses from {where} ({SOURCE_LABELS[recipients.source]}): {len(recipients.addresses)}"
    if recipients.problem:
        text += f"; not exported: {recipients.problem}"
    return text


def address_label(recipients: Recipients) -> str:
    """One word for a table column: env, db, no, or bad (set but refused)."""
    if recipients.problem:
        return "bad"
    return {"environment": "env", "database": "db", "option": "option", "none": "no"}[recipients.source]


def option_recipients(addresses: tuple[str, ...]) -> Recipients:
    """Manual `--email` addresses (already checked against the allow-list when the request was built)."""
    return Recipients(addresses, "option", "--email")
