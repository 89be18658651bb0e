"""Configuration: the process environment plus an optional `.env` file.

Every value is validated here, once, so that a bad setting fails the run before
it touches MongoDB or SMTP, with one sentence naming the variable. Every invalid
value is collected (`validate_environment`), so `wa-export config` can list them
all; a command stops on the first. A value equal to a secret is never echoed.

One exception: an invalid WORKSPACE_<ID>_EMAIL concerns one tenant only. It is
kept as that workspace's problem (`Settings.recipient_problem`), so the export
fails that workspace alone instead of stopping every tenant's export.

Why this module is long: one small validator per variable, and the Settings
they build, side by side: a reader checks a variable's default, bounds and
message in one place, and every command validates the same way.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from wa_export.addresses import EMAIL_ADDRESS, parse_address_list
from wa_export.envfile import ConfigurationSource, read_configuration
from wa_export.errors import ConfigError
from wa_export.mongodb_uri import (
    DEFAULT_MONGODB_URI,
    parse_mongodb_uri,
    uri_secrets,
    userinfo_needs_encoding,
)
from wa_export.redaction import redact, smtp_auth_forms

T = TypeVar("T")
SmtpSecurity = Literal["auto", "ssl", "starttls", "none"]

DEFAULT_SMTP_FROM_NAME = "WhatsApp Exports"
WORKSPACE_EMAIL_VARIABLE = re.compile(r"^WORKSPACE_([0-9A-Fa-f]{24})_EMAIL$")
# One segment of a dotted field path in a workspace document: a plain MongoDB field name.
_FIELD_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")
# The workspace list already projects these; a path below them would collide in the projection.
_RESERVED_WORKSPACE_FIELDS = frozenset({"_id", "name", "status"})
# A plain or dotted document field; no `$` (an operator) and no empty segment.
FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
# Any WORKSPACE_..._EMAIL: one whose id is not 24 hex digits is a typo to report, not to ignore.
ANY_WORKSPACE_EMAIL_VARIABLE = re.compile(r"^WORKSPACE_(.*)_EMAIL$", re.IGNORECASE)


@dataclass(frozen=True)
class Settings:
    mongodb_uri: str = field(repr=False)
    mongodb_database: str
    smtp_server: str | None
    smtp_port: int
    smtp_username: str | None
    smtp_password: str | None = field(repr=False)
    smtp_from: str | None
    smtp_from_name: str  # the From display name; "" sends the bare address
    smtp_security: SmtpSecurity
    smtp_ca_file: Path | None
    smtp_timeout_seconds: float
    export_interval_minutes: int
    export_cleanup_days: int
    export_dir: Path
    export_timezone: ZoneInfo
    export_lag_seconds: int
    export_max_attachment_mb: float
    export_allowed_email_domains: tuple[str, ...]
    workspace_emails: Mapping[str, tuple[str, ...]]
    # Invalid WORKSPACE_<ID>_EMAIL values by lower-case id: that workspace fails, the others export.
    workspace_email_problems: Mapping[str, str]
    # WORKSPACE_..._EMAIL names whose id is not a workspace id: they can never match one.
    malformed_email_variables: tuple[str, ...]
    # Said on stderr by every command: ignored .env lines, "no configuration found".
    load_warnings: tuple[str, ...]
    lease_seconds: int
    mongodb_timeout_seconds: float
    export_metrics_file: Path | None = None
    # Dotted path in a workspace document holding its addresses (EXPORT_RECIPIENTS_FIELD); None: not used.
    export_recipients_field: str | None = None
    # Arrival order (docs/design.md): the field that orders messages by when they were written.
    export_arrival_field: str = "_id"
    export_max_rows_per_email: int = 100_000
    export_backfill_max_hours: float = 24.0
    # Computed once here (never per redaction): see secrets().
    _secrets: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        found = [self.smtp_password or "", *uri_secrets(self.mongodb_uri)]
        # A server may echo the AUTH exchange (base64) in its refusal.
        found += smtp_auth_forms(self.smtp_username or "", self.smtp_password or "")
        object.__setattr__(self, "_secrets", tuple(dict.fromkeys(secret for secret in found if secret)))

    @property
    def timezone_name(self) -> str:
        return self.export_timezone.key

    @property
    def max_attachment_bytes(self) -> int:
        return int(self.export_max_attachment_mb * 1024 * 1024)

    def environment_recipients(self, workspace_id: str) -> tuple[str, ...]:
        """The addresses of WORKSPACE_<ID>_EMAIL alone; recipients.recipients_for is the whole policy."""
        return self.workspace_emails.get(workspace_id.lower(), ())

    def recipient_problem(self, workspace_id: str) -> str | None:
        """Why this workspace's WORKSPACE_<ID>_EMAIL cannot be used, or None."""
        return self.workspace_email_problems.get(workspace_id.lower())

    def configured_workspace_ids(self) -> set[str]:
        """Every well-formed id with a WORKSPACE_<ID>_EMAIL variable, valid or not (lower case)."""
        return set(self.workspace_emails) | set(self.workspace_email_problems)

    def secrets(self) -> list[str]:
        """Every secret value this configuration holds, for redaction of error texts (computed at load)."""
        return list(self._secrets)


@dataclass(frozen=True)
class SettingProblem:
    """One invalid setting: the variable and the sentence saying what is wrong (no secret in it)."""

    variable: str
    message: str


class _Environment(dict[str, str]):
    """The effective variables while they are validated: collects every problem instead of stopping."""

    def __init__(self, values: Mapping[str, str]) -> None:
        super().__init__(values)
        self.problems: list[SettingProblem] = []
        self.secrets = _secrets_in(values)

    def problem(self, variable: str, message: str) -> None:
        self.problems.append(SettingProblem(variable, redact(message, self.secrets)))

    def got(self, raw: str) -> str:
        """", got 'value'" for an error message, or nothing when the value is (or holds) a secret.

        Swapped lines in a .env put a password where a number is expected; the
        message must name the variable without printing the password.
        """
        shown = self.shown(raw)
        return f", got{shown}" if shown else ""

    def shown(self, raw: str) -> str:
        """" 'value'" to name a value in a message, or nothing when it is (or holds) a secret."""
        if any(raw == secret or secret in raw for secret in self.secrets):
            return ""
        return f" {raw!r}"


def _int(env: _Environment, name: str, default: int, *, minimum: int, maximum: int | None = None) -> int:
    raw = env.get(name, "").strip()
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        env.problem(name, f"{name} must be a whole number{env.got(raw)}.")
        return default
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f"at least {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        env.problem(name, f"{name} must be {bounds}{env.got(raw)}.")
        return default
    return value


def _float(env: _Environment, name: str, default: float, *, minimum_exclusive: float) -> float:
    raw = env.get(name, "").strip()
    if raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        env.problem(name, f"{name} must be a number{env.got(raw)}.")
        return default
    if not value > minimum_exclusive or value != value or value == float("inf"):
        env.problem(name, f"{name} must be a number greater than {minimum_exclusive:g}{env.got(raw)}.")
        return default
    return value


ARRIVAL_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def _arrival_field(env: Mapping[str, str]) -> str:
    raw = env.get("EXPORT_ARRIVAL_FIELD", "").strip()
    if raw == "":
        return "_id"
    if not ARRIVAL_FIELD_NAME.match(raw) or len(raw) > 200:
        raise ConfigError(
            f"EXPORT_ARRIVAL_FIELD {raw!r} is not a field name; use _id (the default) or a field the platform "
            "writes at insert time, e.g. created_at."
        )
    return raw


def _backfill_hours(env: Mapping[str, str]) -> float:
    raw = env.get("EXPORT_BACKFILL_MAX_HOURS", "").strip()
    if raw == "":
        return 24.0
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 24 * 366:  # NaN fails this too
        raise ConfigError(f"EXPORT_BACKFILL_MAX_HOURS must be a number of hours between 0 and 8784, got {raw!r}.")
    return value


def _text(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value or None


def _recipients_field(env: Mapping[str, str]) -> str | None:
    path = _text(env, "EXPORT_RECIPIENTS_FIELD")
    if path is None:
        return None
    segments = path.split(".")
    if not all(_FIELD_SEGMENT.match(segment) for segment in segments):
        raise ConfigError(
            f"EXPORT_RECIPIENTS_FIELD {path!r} is not a dotted field path of the workspace document, "
            "e.g. settings.export_email."
        )
    if segments[0] in _RESERVED_WORKSPACE_FIELDS:
        raise ConfigError(
            f"EXPORT_RECIPIENTS_FIELD {path!r} must not be or lie below the workspace's {segments[0]} field; "
            "name the field that holds the export addresses, e.g. settings.export_email."
        )
    return path


def _from_name(env: Mapping[str, str]) -> str:
    """SMTP_FROM_NAME, the default when unset; set but empty means no display name."""
    raw = env.get("SMTP_FROM_NAME")
    if raw is None:
        return DEFAULT_SMTP_FROM_NAME
    # Line breaks would end the From header: one line, single spaces (mail/message.py repeats this).
    return " ".join(raw.split())


def _database_name(env: _Environment, uri: str | None, explicit: str | None) -> str:
    if explicit:
        if re.search(r'[/\\. "$\x00]', explicit) or len(explicit) > 63:
            env.problem(
                "MONGODB_DATABASE",
                f"MONGODB_DATABASE{env.shown(explicit)} is not a valid MongoDB database name.",
            )
            return "whatsapp"
        return explicit
    # The URI was validated (without DNS) before: its path, if any, is the database.
    return (parse_mongodb_uri(uri).database if uri else None) or "whatsapp"


def _validated_uri(env: _Environment) -> str | None:
    """MONGODB_URI (or the default), or None after recording why it cannot be used."""
    uri = _text(env, "MONGODB_URI") or DEFAULT_MONGODB_URI
    try:
        parse_mongodb_uri(uri)
    except Exception:
        hint = (
            "the user name or password holds an unencoded @, : or /, percent-encode them (@ as %40, : as %3A, / as %2F)"
            if userinfo_needs_encoding(uri)
            else "expected something like mongodb://user:password@host:27017/database"
        )
        env.problem("MONGODB_URI", f"MONGODB_URI is not a valid MongoDB connection string: {hint}.")
        return None
    return uri


def read_environment(env_file: Path | None, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The effective variables: `.env` values overridden by the real environment."""
    return read_configuration(env_file, environ).values


def validate_environment(source: ConfigurationSource) -> tuple[Settings, list[SettingProblem]]:
    """Settings from these variables and every invalid one; an invalid value is replaced by its default."""
    env = _Environment(source.values)
    settings = _settings_from(env, source.warnings)
    return settings, env.problems


def load_settings(env_file: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """The validated settings; the first invalid value raises ConfigError (saying how many more there are)."""
    settings, problems = validate_environment(read_configuration(env_file, environ))
    if problems:
        first = problems[0].message
        if len(problems) > 1:
            more = len(problems) - 1
            first = (
                f"{first.rstrip('.')}; {more} more setting{'s are' if more > 1 else ' is'} invalid "
                "(`wa-export config` lists them all)."
            )
        raise ConfigError(first)
    return settings


def _secrets_in(env: Mapping[str, str]) -> list[str]:
    found = [env.get("SMTP_PASSWORD", "").strip(), env.get("SMTP_PASSWORD", "")]
    found += uri_secrets(env.get("MONGODB_URI", "").strip())
    return list(dict.fromkeys(secret for secret in found if secret))


def _workspace_addresses(env: _Environment) -> tuple[dict[str, tuple[str, ...]], dict[str, str], tuple[str, ...]]:
    """WORKSPACE_<ID>_EMAIL: valid addresses and problems by lower-case id, and the malformed names."""
    addresses: dict[str, tuple[str, ...]] = {}
    problems: dict[str, str] = {}
    malformed: list[str] = []
    for name in sorted(env):
        if ANY_WORKSPACE_EMAIL_VARIABLE.match(name) is None:
            continue
        match = WORKSPACE_EMAIL_VARIABLE.match(name)
        if match is None:
            malformed.append(name)
            continue
        workspace_id = match.group(1).lower()
        try:
            parsed = parse_address_list(env[name], name)
        except ConfigError as error:
            problems[workspace_id] = redact(str(error), env.secrets)
            continue
        if parsed:
            addresses[workspace_id] = parsed
    return addresses, problems, tuple(malformed)


def _settings_from(env: _Environment, load_warnings: tuple[str, ...] = ()) -> Settings:
    uri = _validated_uri(env)
    database = _database_name(env, uri, _text(env, "MONGODB_DATABASE"))

    smtp_port = _int(env, "SMTP_PORT", 587, minimum=1, maximum=65535)
    security_raw = (_text(env, "SMTP_SECURITY") or "auto").lower()
    if security_raw not in ("auto", "ssl", "starttls", "none"):
        env.problem("SMTP_SECURITY", f"SMTP_SECURITY must be one of auto, ssl, starttls, none{env.got(security_raw)}.")
        security_raw = "auto"
    security: SmtpSecurity = security_raw  # type: ignore[assignment]

    ca_file_raw = _text(env, "SMTP_CA_FILE")
    ca_file = Path(ca_file_raw).expanduser() if ca_file_raw else None
    if ca_file is not None and not ca_file.is_file():
        env.problem("SMTP_CA_FILE", f"SMTP_CA_FILE{env.shown(str(ca_file))} does not exist or is not a file.")
        ca_file = None

    username = _text(env, "SMTP_USERNAME")
    smtp_from = _text(env, "SMTP_FROM") or username
    if smtp_from is not None and not EMAIL_ADDRESS.match(smtp_from):
        variable = "SMTP_FROM" if _text(env, "SMTP_FROM") else "SMTP_USERNAME (used as the sender)"
        env.problem(
            variable.split()[0], f"{variable} is not a valid email address; set SMTP_FROM to the sender address."
        )

    timezone_name = _text(env, "EXPORT_TIMEZONE") or "UTC"
    try:
        if timezone_name.startswith(("/", ".")) or ".." in timezone_name:
            raise ValueError
        timezone = ZoneInfo(timezone_name)
    except (ZoneInfoNotFoundError, ValueError):
        env.problem(
            "EXPORT_TIMEZONE",
            f"EXPORT_TIMEZONE{env.shown(timezone_name)} is not a known IANA time zone (e.g. UTC, Europe/Berlin, Asia/Dubai).",
        )
        timezone = ZoneInfo("UTC")

    allowed = tuple(
        domain.strip().lower().lstrip("@")
        for domain in (_text(env, "EXPORT_ALLOWED_EMAIL_DOMAINS") or "").split(",")
        if domain.strip()
    )

    workspace_emails, workspace_email_problems, malformed_email_variables = _workspace_addresses(env)

    return Settings(
        mongodb_uri=uri or DEFAULT_MONGODB_URI,
        mongodb_database=database,
        smtp_server=_text(env, "SMTP_SERVER"),
        smtp_port=smtp_port,
        smtp_username=username,
        smtp_password=env.get("SMTP_PASSWORD") or None,
        smtp_from=smtp_from,
        smtp_from_name=_from_name(env),
        smtp_security=security,
        smtp_ca_file=ca_file,
        smtp_timeout_seconds=_float(env, "SMTP_TIMEOUT_SECONDS", 30.0, minimum_exclusive=0),
        export_interval_minutes=_int(env, "EXPORT_INTERVAL_MINUTES", 15, minimum=1, maximum=7 * 24 * 60),
        export_cleanup_days=_int(env, "EXPORT_CLEANUP_DAYS", 7, minimum=0),
        export_dir=Path(_text(env, "EXPORT_DIR") or "./exports").expanduser().absolute(),
        export_timezone=timezone,
        export_lag_seconds=_int(env, "EXPORT_LAG_SECONDS", 60, minimum=0),
        export_max_attachment_mb=_float(env, "EXPORT_MAX_ATTACHMENT_MB", 20.0, minimum_exclusive=0),
        export_allowed_email_domains=allowed,
        workspace_emails=workspace_emails,
        workspace_email_problems=workspace_email_problems,
        malformed_email_variables=malformed_email_variables,
        load_warnings=load_warnings,
        lease_seconds=_int(env, "EXPORT_LEASE_SECONDS", 900, minimum=5),
        mongodb_timeout_seconds=_float(env, "MONGODB_TIMEOUT_SECONDS", 5.0, minimum_exclusive=0),
        export_recipients_field=_or_problem(env, "EXPORT_RECIPIENTS_FIELD", lambda: _recipients_field(env), None),
        export_arrival_field=_or_problem(env, "EXPORT_ARRIVAL_FIELD", lambda: _arrival_field(env), "_id"),
        export_max_rows_per_email=_int(env, "EXPORT_MAX_ROWS_PER_EMAIL", 100_000, minimum=1, maximum=1_000_000_000),
        export_backfill_max_hours=_or_problem(env, "EXPORT_BACKFILL_MAX_HOURS", lambda: _backfill_hours(env), 24.0),
        export_metrics_file=_or_problem(
            env,
            "EXPORT_METRICS_FILE",
            lambda: metrics_file_path(_text(env, "EXPORT_METRICS_FILE"), "EXPORT_METRICS_FILE"),
            None,
        ),
    )


def _or_problem(env: _Environment, variable: str, compute: Callable[[], T], fallback: T) -> T:
    """`compute()`, or `fallback` with its ConfigError recorded, so every invalid setting is reported at once."""
    try:
        return compute()
    except ConfigError as error:
        env.problem(variable, str(error))
        return fallback




def metrics_file_path(raw: str | None, name: str) -> Path | None:
    """A Prometheus textfile-collector file: `*.prom` (node_exporter reads nothing else), not a directory."""
    if raw is None or not raw.strip():
        return None
    path = Path(raw.strip()).expanduser().absolute()
    if path.is_dir():
        raise ConfigError(f"{name} {path} is a directory; name a file in it, e.g. {path / 'wa_export.prom'}.")
    if path.suffix != ".prom":
        raise ConfigError(
            f"{name} {path} must end in .prom: node_exporter's textfile collector reads only *.prom files."
        )
    return path
