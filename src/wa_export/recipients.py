"""Recipient addresses: their syntax, EXPORT_ALLOWED_EMAIL_DOMAINS, and where a workspace's come from."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any, Literal, cast

from wa_export.errors import ConfigError
from wa_export.workspace_settings import WorkspaceSetting, shown_value

if TYPE_CHECKING:  # settings imports this module (the address syntax)
    from wa_export.settings import Settings
    from wa_export.store.connection import Workspace

# Deliberately strict (no spaces, no header-breaking characters): anything fancier is an operator typo, not a need.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"  # a domain label
EMAIL_ADDRESS = re.compile(rf"^[A-Za-z0-9.!#$%&'*+/=?^_`{{|}}~-]+@{_LABEL}(?:\.{_LABEL})+$")
RecipientSource = Literal["environment", "database", "option", "none"]
SOURCE_LABELS: dict[RecipientSource, str] = {"environment": "environment variable", "database": "database field"}
SOURCE_LABELS |= {"option": "--email option", "none": "none"}
# A first scheduled export reaches back one interval: what arrived while there was no address is never in a window.
UNSENT_WITHOUT_ADDRESS = (
    "scheduled runs will not send the messages that arrive while a workspace has no address "
    "(a manual export with --since can)"
)


def split_address_list(value: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A comma (or semicolon) separated list -> (valid addresses without repeats, invalid entries)."""
    entries = [address for raw in re.split(r"[,;]", value) if (address := raw.strip())]
    valid: dict[str, str] = {}  # lower case -> the first spelling
    for address in entries:
        if EMAIL_ADDRESS.match(address):
            valid.setdefault(address.lower(), address)
    return tuple(valid.values()), tuple(address for address in entries if not EMAIL_ADDRESS.match(address))


def address_list(value: str) -> tuple[str, ...]:
    addresses, invalid = split_address_list(value)
    if invalid:
        raise ValueError(
            f"contains an invalid email address {invalid[0]!r}: "
            "use plain addresses separated by commas, e.g. a@example.com,b@example.com"
        )
    return addresses


def parse_address_list(value: str, variable: str) -> tuple[str, ...]:
    try:
        return address_list(value)
    except ValueError as error:
        raise ConfigError(f"{variable} {error}.") from None


# Not secret, fails its workspace alone, quotes the bad address, not the list; recipients_for reads its field.
ADDRESSES = WorkspaceSetting(
    "EMAIL", "EXPORT_RECIPIENTS_FIELD", tuple, address_list, lambda _: None, "none", False, True, quoted=False
)


def outside_allowed_domains(addresses: Sequence[str], allowed: tuple[str, ...]) -> list[str]:
    """The addresses whose domain is not in `allowed` or below one (an empty allow-list allows every domain)."""
    suffixes = tuple("." + domain for domain in allowed)
    return [a for a in addresses if allowed and not ("." + a.rsplit("@", 1)[-1].lower()).endswith(suffixes)]


def domain_refusal(addresses: Sequence[str], allowed: tuple[str, ...], fix: str) -> str | None:
    if refused := outside_allowed_domains(addresses, allowed):
        return (
            f"recipient(s) {', '.join(refused)} are outside EXPORT_ALLOWED_EMAIL_DOMAINS ({', '.join(allowed)}); {fix}"
        )
    return None


@dataclass(frozen=True)
class Recipients:  # a workspace's addresses, where they come from (`origin`: the variable or field), and what is wrong
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

    def as_dict(self) -> dict[str, Any]:  # counts, not the addresses: outputs carry as little tenant data as they can
        return {**asdict(self), "addresses": len(self.addresses)}


def missing_hint(workspace_id: str, settings: Settings) -> str:
    field = settings.export_recipients_field
    return f"set WORKSPACE_{workspace_id}_EMAIL" + (f" or the workspace's {field} field" if field else "")


def from_environment(workspace_id: str, settings: Settings) -> Recipients | None:
    """The WORKSPACE_<ID>_EMAIL addresses, which win over the database; None when the variable is not set."""
    variable = f"WORKSPACE_{workspace_id}_EMAIL"
    if (problem := settings.workspace_variable_problem(workspace_id, "EMAIL")) is not None:
        problem = f"{problem.rstrip('.')}; fix it to export this workspace"
        return Recipients((), "environment", variable, problem, "invalid")
    configured = cast("tuple[str, ...] | None", settings.workspace_variable(workspace_id, "EMAIL"))
    domains = settings.export_allowed_email_domains
    return Recipients(configured, "environment", variable).allowed(domains, f"fix {variable}") if configured else None


def recipients_for(workspace: Workspace, settings: Settings) -> Recipients:
    """The addresses an export of `workspace` goes to, with their source and any problem (never raises)."""
    configured = from_environment(workspace.id, settings)
    field, value = settings.export_recipients_field, workspace.document_values.get("EXPORT_RECIPIENTS_FIELD")
    if configured is not None or not field or value is None:
        return configured or Recipients((), "none")
    where = f"{field} of workspace {workspace.id}"
    fix = f"fix {where} in the platform or set WORKSPACE_{workspace.id}_EMAIL"
    strange = [item for item in value if not isinstance(item, str)] if isinstance(value, (list, tuple)) else []
    addresses: tuple[str, ...] = ()
    if strange:  # a None item too: a list is either all strings or wrong
        problem: str | None = f"holds a list with an item of type {type(strange[0]).__name__}, not only strings"
    elif not isinstance(value, (str, list, tuple)):
        problem = f"holds a value of type {type(value).__name__}, not a string or a list of strings"
    else:
        addresses, invalid = split_address_list(value if isinstance(value, str) else ",".join(value))
        problem = f"holds an invalid email address {shown_value(invalid[0])}" if invalid else None
    if problem is not None:
        return Recipients(addresses, "database", field, f"{where} {problem}; {fix}", "invalid")
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


def address_label(recipients: Recipients) -> str:  # one word for a table column: env, db, no, or bad (set but refused)
    labels = {"environment": "env", "database": "db", "option": "option", "none": "no"}
    return "bad" if recipients.problem else labels[recipients.source]


def option_recipients(addresses: tuple[str, ...]) -> Recipients:
    """Manual `--email` addresses (already checked against the allow-list when the request was built)."""
    return Recipients(addresses, "option", "--email")
