"""Where a workspace's export addresses come from, one policy for every command: WORKSPACE_<ID>_EMAIL wins, else
the document's EXPORT_RECIPIENTS_FIELD (a comma list, or a list of strings). EXPORT_ALLOWED_EMAIL_DOMAINS applies
to both; a malformed address becomes that workspace's `problem` and fails that workspace only."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal, cast

from wa_export.addresses import domain_refusal, split_address_list
from wa_export.settings import Settings
from wa_export.store.connection import Workspace
from wa_export.workspace_settings import shown_value

RecipientSource = Literal["environment", "database", "option", "none"]
SOURCE_LABELS: dict[RecipientSource, str] = {
    "environment": "environment variable",
    "database": "database field",
    "option": "--email option",
    "none": "none",
}
# A workspace gets its cursor on its first scheduled export, which reaches back one interval (the first-cursor
# rule): what arrived while it had no address is never in a scheduled window.
UNSENT_WITHOUT_ADDRESS = (
    "scheduled runs will not send the messages that arrive while a workspace has no address "
    "(a manual export with --since can)"
)


@dataclass(frozen=True)
class Recipients:
    """A workspace's addresses, where they come from (`origin`: the variable or field), and what is wrong."""

    addresses: tuple[str, ...]
    source: RecipientSource
    origin: str | None = None
    problem: str | None = None  # one clause naming the field and the workspace; the export fails with it
    problem_kind: Literal["invalid", "domain"] | None = None  # malformed / outside EXPORT_ALLOWED_EMAIL_DOMAINS

    def allowed(self, domains: tuple[str, ...], fix: str) -> Recipients:
        refusal = domain_refusal(self.addresses, domains, fix)
        return self if refusal is None else replace(self, problem=refusal, problem_kind="domain")

    @property
    def usable(self) -> bool:
        return bool(self.addresses) and self.problem is None

    def as_dict(self) -> dict[str, Any]:
        # Counts, not the addresses: outputs carry as little tenant data as they can.
        return {**asdict(self), "addresses": len(self.addresses)}


def missing_hint(workspace_id: str, settings: Settings) -> str:
    """What to set when a workspace has no address: the variable, and the field if one is configured."""
    field = settings.export_recipients_field
    return f"set WORKSPACE_{workspace_id}_EMAIL" + (f" or the workspace's {field} field" if field else "")


def from_environment(workspace_id: str, settings: Settings) -> Recipients | None:
    """The WORKSPACE_<ID>_EMAIL addresses, which win over the database; None when the variable is not set."""
    variable = f"WORKSPACE_{workspace_id}_EMAIL"
    if (problem := settings.workspace_variable_problem(workspace_id, "EMAIL")) is not None:
        return _refused((), "environment", variable, f"{problem.rstrip('.')}; fix it to export this workspace")
    configured = cast("tuple[str, ...] | None", settings.workspace_variable(workspace_id, "EMAIL"))
    domains = settings.export_allowed_email_domains
    return Recipients(configured, "environment", variable).allowed(domains, f"fix {variable}") if configured else None


def _refused(addresses: tuple[str, ...], source: RecipientSource, origin: str, problem: str) -> Recipients:
    return Recipients(addresses, source, origin, problem, "invalid")


def recipients_for(workspace: Workspace, settings: Settings) -> Recipients:
    """The addresses an export of `workspace` goes to, with their source and any problem (never raises)."""
    configured = from_environment(workspace.id, settings)
    field, value = settings.export_recipients_field, workspace.document_values.get("EXPORT_RECIPIENTS_FIELD")
    if configured is not None or not field or value is None:
        return configured or Recipients((), "none")
    where = f"{field} of workspace {workspace.id}"
    fix = f"fix {where} in the platform or set WORKSPACE_{workspace.id}_EMAIL"
    strange = [item for item in value if not isinstance(item, str)] if isinstance(value, (list, tuple)) else []
    if strange:  # a None item too: a list is either all strings or wrong
        kind = type(strange[0]).__name__
        return _refused(
            (), "database", field, f"{where} holds a list with an item of type {kind}, not only strings; {fix}"
        )
    if not isinstance(value, (str, list, tuple)):
        kind = type(value).__name__
        return _refused(
            (), "database", field, f"{where} holds a value of type {kind}, not a string or a list of strings; {fix}"
        )
    addresses, invalid = split_address_list(value if isinstance(value, str) else ",".join(value))
    if invalid:
        return _refused(
            addresses, "database", field, f"{where} holds an invalid email address {shown_value(invalid[0])}; {fix}"
        )
    if not addresses:
        return Recipients((), "none")
    return Recipients(addresses, "database", field).allowed(settings.export_allowed_email_domains, fix)


def describe_recipients(recipients: Recipients, workspace_id: str, settings: Settings) -> str:
    """Where a workspace's addresses come from, as a clause for `stats` and `health` (counts, no addresses)."""
    if recipients.source == "none":
        return f"No email address configured: {missing_hint(workspace_id, settings)}"
    where = f"the workspace field {recipients.origin}" if recipients.source == "database" else recipients.origin
    text = f"Addresses from {where} ({SOURCE_LABELS[recipients.source]}): {len(recipients.addresses)}"
    return text + (f"; not exported: {recipients.problem}" if recipients.problem else "")


def address_label(recipients: Recipients) -> str:
    """One word for a table column: env, db, no, or bad (set but refused)."""
    labels = {"environment": "env", "database": "db", "option": "option", "none": "no"}
    return "bad" if recipients.problem else labels[recipients.source]


def option_recipients(addresses: tuple[str, ...]) -> Recipients:
    """Manual `--email` addresses (already checked against the allow-list when the request was built)."""
    return Recipients(addresses, "option", "--email")
