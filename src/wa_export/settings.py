"""Configuration: every setting's rule, validated once, before anything touches MongoDB or SMTP.

RULES is the one table of variables (name, Settings field, default, bounds, parser, secrecy, workspace document
field) and WORKSPACE_VARIABLES the one of WORKSPACE_<ID>_<SUFFIX>: validation, `wa-export config`, the near-miss
warnings and the `.env` permission warning all read them. Every invalid value is collected so `config` lists them
all; a command stops on the first. A value equal to (or holding) a secret is never echoed.

Why this module is long: every setting's rule lives here and nowhere else (the tables, their parsers, the
cross-field sending rules, near-miss names).
"""

from __future__ import annotations

import re
import stat
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast
from zoneinfo import ZoneInfo

from wa_export.addresses import EMAIL_ADDRESS, parse_address_list
from wa_export.envfile import ConfigurationSource, read_configuration
from wa_export.errors import ConfigError
from wa_export.mongodb_uri import DEFAULT_MONGODB_URI, parse_mongodb_uri, uri_secrets, userinfo_needs_encoding
from wa_export.redaction import redact, smtp_auth_forms
from wa_export.schedule import parse_schedule, parse_time_zone
from wa_export.workbook_password import parse_workbook_password
from wa_export.workspace_settings import environment_parser

SmtpSecurity = Literal["auto", "ssl", "starttls", "none"]
# A plain or dotted document field; no `$` (an operator) and no empty segment.
ARRIVAL_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_FIELD_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")
# The workspace list already projects these; a path below them would collide in the projection.
_RESERVED_WORKSPACE_FIELDS = frozenset({"_id", "name", "status"})


@dataclass(frozen=True)
class Bounds:
    """The values a number setting may take; every maximum keeps timedelta, datetime and socket arithmetic clear
    of OverflowError."""

    minimum: float
    maximum: float
    whole: bool = True
    minimum_exclusive: bool = False  # e.g. a timeout: 0 is not "no timeout" here but nonsense
    note: str = ""  # the maximum in words, e.g. "30 days"

    def admits(self, value: float) -> bool:
        low = self.minimum < value if self.minimum_exclusive else self.minimum <= value
        return low and value <= self.maximum  # NaN fails both

    def describe(self) -> str:
        low, high = _plain(self.minimum), _plain(self.maximum)
        note = f" ({self.note})" if self.note else ""
        if self.minimum_exclusive:
            return f"a number greater than {low} and at most {high}{note}"
        return f"{'a whole number' if self.whole else 'a number'} between {low} and {high}{note}"


_WHOLE_NUMBER = re.compile(r"[+-]?[0-9]+", re.ASCII)
_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?", re.ASCII)


def _plain(number: float) -> str:
    """2592000, not 2.592e+06: the operator copies it into a .env."""
    return str(int(number)) if number.is_integer() else f"{number:g}"


# "value": the whole value is a password; "uri": a password may sit in the URI's userinfo.
Secrecy = Literal["", "value", "uri"]
# Gets the value as written (stripped; the default when blank); a ConfigError makes it a problem, the default used.
Parser = Callable[[str, "_Environment"], Any]


@dataclass(frozen=True)
class SettingRule:
    """One variable: its default as written in a .env, how it is read, the Settings field it fills."""

    variable: str
    default: str = ""  # "" = unset
    bounds: Bounds | None = None  # a number setting
    secrecy: Secrecy = ""
    derived_from: str | None = None  # unset, it takes its value from this variable
    parse: Parser | None = None  # None: a number within `bounds`, else the text or None when empty
    # A dotted path in the workspace document: (what the field holds, an example path).
    document_field: tuple[str, str] | None = None
    field: str = ""  # the Settings field; "" = the variable in lower case

    def __post_init__(self) -> None:
        object.__setattr__(self, "field", self.field or self.variable.lower())

    def read(self, env: _Environment) -> Any:
        try:
            return self._parse(env.get(self.variable, "").strip() or self.default, env)
        except ConfigError as error:
            env.problem(self.variable, str(error))
            return self._parse(self.default, env)

    def _parse(self, written: str, env: _Environment) -> Any:
        if self.document_field is not None:
            return _document_path(self.variable, written, *self.document_field)
        if self.parse is not None:
            return self.parse(written, env)
        if self.bounds is None:
            return written or None
        # ASCII digits only: int() and float() also take "1_000", other scripts' digits, "nan" and "inf".
        if not (_WHOLE_NUMBER if self.bounds.whole else _NUMBER).fullmatch(written):
            kind = "a whole number" if self.bounds.whole else "a number"
            raise ConfigError(f"{self.variable} must be {kind}{env.got(written)}.")
        value = int(written) if self.bounds.whole else float(written)
        if not self.bounds.admits(value):
            raise ConfigError(f"{self.variable} must be {self.bounds.describe()}{env.got(written)}.")
        return value


def _mongodb_uri(written: str, env: _Environment) -> str:
    try:
        parse_mongodb_uri(written)
    except Exception:
        hint = (
            "the user name or password holds an unencoded @, : or /, percent-encode them (@ as %40, : as %3A, / as %2F)"
            if userinfo_needs_encoding(written)
            else "expected something like mongodb://user:password@host:27017/database"
        )
        raise ConfigError(f"MONGODB_URI is not a valid MongoDB connection string: {hint}.") from None
    return written


def _database_name(written: str, env: _Environment) -> str:
    if not written:  # the (validated, DNS-free) URI's path, if any
        return parse_mongodb_uri(env.parsed["mongodb_uri"]).database or "whatsapp"
    if re.search(r'[/\\. "$\x00]', written) or len(written) > 63:
        raise ConfigError(f"MONGODB_DATABASE{env.shown(written)} is not a valid MongoDB database name.")
    return written


def _sender(written: str, env: _Environment) -> str | None:
    sender: str | None = written or env.parsed["smtp_username"]
    # Reported, but kept: the sending rules then do not add "no sender address" to it.
    if sender is not None and not EMAIL_ADDRESS.match(sender):
        variable = "SMTP_FROM" if written else "SMTP_USERNAME (used as the sender)"
        env.problem(
            variable.split()[0], f"{variable} is not a valid email address; set SMTP_FROM to the sender address."
        )
    return sender


def _from_name(written: str, env: _Environment) -> str:
    """Set but empty means no display name. Line breaks would end the From header: one line, single spaces."""
    raw = env.get("SMTP_FROM_NAME")
    return "WhatsApp Exports" if raw is None else " ".join(raw.split())


def _security(written: str, env: _Environment) -> str:
    choice = written.lower()
    if choice not in ("auto", "ssl", "starttls", "none"):
        raise ConfigError(f"SMTP_SECURITY must be one of auto, ssl, starttls, none{env.got(choice)}.")
    return choice


def _ca_file(written: str, env: _Environment) -> Path | None:
    if not written:
        return None
    path = Path(written).expanduser()
    if not path.is_file():
        raise ConfigError(f"SMTP_CA_FILE{env.shown(str(path))} does not exist or is not a file.")
    return path


def _timezone(written: str, env: _Environment) -> ZoneInfo:
    try:
        return parse_time_zone(written)
    except ValueError as error:
        raise ConfigError(f"EXPORT_TIMEZONE{env.shown(written)} {error}.") from None


def _flag(written: str, env: _Environment, variable: str) -> bool:
    choice = written.lower()
    if choice not in ("true", "false", "yes", "no", "1", "0", "on", "off"):
        raise ConfigError(f"{variable} must be true or false{env.got(written)}.")
    return choice in ("true", "yes", "1", "on")


def _domains(written: str, env: _Environment) -> tuple[str, ...]:
    return tuple(domain.strip().lower().lstrip("@") for domain in written.split(",") if domain.strip())


def _document_path(variable: str, written: str, holds: str, example: str) -> str | None:
    if not written:
        return None
    segments = written.split(".")
    if not all(_FIELD_SEGMENT.match(segment) for segment in segments):
        raise ConfigError(
            f"{variable} {written!r} is not a dotted field path of the workspace document, e.g. {example}."
        )
    if segments[0] in _RESERVED_WORKSPACE_FIELDS:
        raise ConfigError(
            f"{variable} {written!r} must not be or lie below the workspace's {segments[0]} field; "
            f"name the field that holds {holds}, e.g. {example}."
        )
    return written


def _arrival_field(written: str, env: _Environment) -> str:
    if not ARRIVAL_FIELD_NAME.match(written) or len(written) > 200:
        raise ConfigError(
            f"EXPORT_ARRIVAL_FIELD {written!r} is not a field name; use _id (the default) or a field the platform "
            "writes at insert time, e.g. created_at."
        )
    return written


def metrics_file_path(raw: str | None, name: str = "EXPORT_METRICS_FILE") -> Path | None:
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


# Every variable wa-export reads, in the order `wa-export config` lists them (and validates them: a
# derived one follows its source). The maxima are generous but safe: see Bounds.
RULES: tuple[SettingRule, ...] = (
    SettingRule("MONGODB_URI", DEFAULT_MONGODB_URI, secrecy="uri", parse=_mongodb_uri),
    SettingRule("MONGODB_DATABASE", derived_from="MONGODB_URI", parse=_database_name),
    SettingRule("SMTP_SERVER"),
    SettingRule("SMTP_PORT", "587", Bounds(1, 65535)),
    SettingRule("SMTP_USERNAME"),
    SettingRule("SMTP_PASSWORD", secrecy="value", parse=lambda _, env: env.get("SMTP_PASSWORD") or None),
    SettingRule("SMTP_FROM", derived_from="SMTP_USERNAME", parse=_sender),
    SettingRule("SMTP_FROM_NAME", "WhatsApp Exports", parse=_from_name),
    SettingRule("SMTP_SECURITY", "auto", parse=_security),
    SettingRule("SMTP_CA_FILE", parse=_ca_file),
    # A socket timeout and a time.monotonic() deadline: an hour is far beyond any SMTP step.
    SettingRule("SMTP_TIMEOUT_SECONDS", "30", Bounds(0, 3600, whole=False, minimum_exclusive=True, note="1 hour")),
    SettingRule("EXPORT_INTERVAL_MINUTES", "15", Bounds(1, 7 * 24 * 60, note="1 week")),
    # now - timedelta(days=N) must stay a datetime: 100 years (the `cleanup --days` maximum too).
    SettingRule("EXPORT_CLEANUP_DAYS", "7", Bounds(0, 36_500, note="100 years")),
    SettingRule("EXPORT_DIR", "./exports", parse=lambda written, _: Path(written).expanduser().absolute()),
    SettingRule("EXPORT_TIMEZONE", "UTC", parse=_timezone),
    # A window end is now - timedelta(seconds=N); a lag of days already delays every export by days.
    SettingRule("EXPORT_LAG_SECONDS", "60", Bounds(0, 30 * 86_400, note="30 days")),
    # Mail servers refuse messages far smaller than 1 GiB; int(MB * 2**20) must stay a sane size.
    SettingRule("EXPORT_MAX_ATTACHMENT_MB", "20", Bounds(0, 1024, whole=False, minimum_exclusive=True, note="1 GiB")),
    SettingRule("EXPORT_ALLOWED_EMAIL_DOMAINS", parse=_domains),
    # A lease expiry is database now + timedelta(seconds=N); a killed run blocks its workspace that long.
    SettingRule("EXPORT_LEASE_SECONDS", "900", Bounds(5, 86_400, note="1 day"), field="lease_seconds"),
    # pymongo takes milliseconds (int(seconds * 1000)): below 1 ms it would read 0.
    SettingRule("MONGODB_TIMEOUT_SECONDS", "5", Bounds(0.001, 3600, whole=False, note="1 hour")),
    SettingRule("EXPORT_METRICS_FILE", parse=lambda written, _: metrics_file_path(written)),
    SettingRule("EXPORT_RECIPIENTS_FIELD", document_field=("the export addresses", "settings.export_email")),
    SettingRule("EXPORT_TIMEZONE_FIELD", document_field=("the workspace's IANA time zone", "settings.timezone")),
    SettingRule("EXPORT_SCHEDULE_FIELD", document_field=("the workspace's delivery schedule", "settings.schedule")),
    SettingRule("EXPORT_ARRIVAL_FIELD", "_id", parse=_arrival_field),
    SettingRule("EXPORT_MAX_ROWS_PER_EMAIL", "100000", Bounds(1, 1_000_000_000)),
    # A first window reaches back at most a leap year (now - timedelta(hours=N)).
    SettingRule("EXPORT_BACKFILL_MAX_HOURS", "24", Bounds(0, 24 * 366, whole=False, note="366 days")),
    SettingRule(
        "EXPORT_WORKBOOK_PASSWORD_FIELD",
        document_field=("the workbook password", "settings.export.workbook_password"),
    ),
    SettingRule(
        "EXPORT_REQUIRE_WORKBOOK_PASSWORD",
        "false",
        parse=lambda written, env: _flag(written, env, "EXPORT_REQUIRE_WORKBOOK_PASSWORD"),
    ),
)
RULE_OF = {rule.variable: rule for rule in RULES}
WORKSPACE_ID = re.compile(r"[0-9A-Fa-f]{24}")
ID_FORM = "24 hexadecimal characters"  # how every id an operator types is written: workspace, message, export


@dataclass(frozen=True)
class WorkspaceVariable:
    """WORKSPACE_<ID>_<suffix>: one workspace's own value."""

    suffix: str
    parse: Callable[[str, str], object]  # (value, variable name) -> value; ConfigError when invalid
    fails_workspace_only: bool  # an invalid value fails that workspace alone, not the configuration (exit 2)
    secret: bool = False  # a password: never shown (`config` masks it), redacted from every error text


# Every per-workspace variable, by suffix.
WORKSPACE_VARIABLES: dict[str, WorkspaceVariable] = {
    variable.suffix: variable
    for variable in (
        WorkspaceVariable("EMAIL", parse_address_list, True),
        # An unusable password fails its workspace alone (nothing of it is exported), like an invalid address.
        WorkspaceVariable(
            "WORKBOOK_PASSWORD", environment_parser(parse_workbook_password, secret=True), True, secret=True
        ),
        WorkspaceVariable("TIMEZONE", environment_parser(parse_time_zone), False),
        WorkspaceVariable("SCHEDULE", environment_parser(parse_schedule), False),
    )
}


def workspace_variable_name(name: str) -> tuple[str | None, str] | None:
    """(lower-case workspace id, suffix) of a WORKSPACE_<ID>_<SUFFIX> variable, the id None when it is not
    24 hex digits as written (a typo to report, not to ignore); None for any other name."""
    suffixes = "|".join(re.escape(suffix) for suffix in WORKSPACE_VARIABLES)
    match = re.fullmatch(rf"WORKSPACE_(.*)_({suffixes})", name, re.IGNORECASE)
    if match is None:
        return None
    workspace_id, suffix = match.group(1), match.group(2).upper()
    well_formed = WORKSPACE_ID.fullmatch(workspace_id) and name == f"WORKSPACE_{workspace_id}_{suffix}"
    return (workspace_id.lower() if well_formed else None), suffix


def _names(names: Sequence[str]) -> str:
    """The first name and how many more: the full list is in --json."""
    return names[0] + (f" and {len(names) - 1} more" if len(names) > 1 else "")


def malformed_variables_sentence(names: Sequence[str]) -> str:
    """Why these WORKSPACE_<ID>_<SUFFIX> names apply to no workspace (their id is not one), and what to write:
    the one wording of `config`, a run's warnings and `health`."""
    suffixes = {parsed[1] for name in names if (parsed := workspace_variable_name(name)) is not None}
    suffix = f"_{suffixes.pop()}" if len(suffixes) == 1 else "the suffix"
    verb = "applies" if len(names) == 1 else "apply"
    return f"{_names(names)} {verb} to no workspace; write a workspace id ({ID_FORM}) between WORKSPACE_ and {suffix}"


def unmatched_variables_sentence(names: Sequence[str], database: str) -> str:
    """These well-formed WORKSPACE_<ID>_<SUFFIX> names match no active workspace: a run's warnings and `health`."""
    verb = "matches" if len(names) == 1 else "match"
    return (
        f"{_names(names)} {verb} no active workspace in database {database!r}: "
        "a typo in the id, or an inactive or deleted workspace"
    )


def export_dir_not_a_directory(export_dir: Path, blocker: Path | None = None) -> str:
    """EXPORT_DIR is a file, or `blocker`, a parent it would be created in, is: what is wrong and what to do, for
    `health` and `cleanup` alike."""
    what = "is not a directory"
    if blocker is not None and blocker != export_dir:
        what = f"cannot be created: {blocker} is not a directory"
    return f"EXPORT_DIR {export_dir} {what}; point EXPORT_DIR at a directory."


# Names other tools use for our settings, one "written=meant" string each (so that a scan of this
# module for quoted variable names, as in tests/test_config_command.py, does not take them for ours).
_ALIASES: dict[str, str] = dict(
    re.findall(
        r"(\w+)=(\w+)",
        "SMTP_HOST=SMTP_SERVER SMTP_USER=SMTP_USERNAME SMTP_PASS=SMTP_PASSWORD SMTP_TIMEOUT=SMTP_TIMEOUT_SECONDS "
        "MONGO_URL=MONGODB_URI MONGODB_URL=MONGODB_URI MONGO_DB=MONGODB_DATABASE",
    )
)
# First words that stand for one of ours (MONGO_URI, MAIL_SERVER), ours included (EXPORT_PORT for SMTP_PORT).
_OTHER_PREFIXES = frozenset({"MONGODB", "SMTP", "EXPORT", "MONGO", "DB", "MAIL", "EMAIL", "WA"})
# Our variables' first words: a name with one that no setting reads is a typo or a leftover.
SETTING_PREFIXES = ("MONGODB_", "SMTP_", "EXPORT_")
NEAR_MISS_DISTANCE = 2


def _edit_distance(first: str, second: str) -> int:
    """Optimal string alignment distance: insertions, deletions, substitutions, swaps of neighbours."""
    previous_row: list[int] = []
    row = list(range(len(second) + 1))
    for i, a in enumerate(first, 1):
        before, previous_row, row = previous_row, row, [i] + [0] * len(second)
        for j, b in enumerate(second, 1):
            row[j] = min(previous_row[j] + 1, row[j - 1] + 1, previous_row[j - 1] + (a != b))
            if i > 1 and j > 1 and a == second[j - 2] and first[i - 2] == b:
                row[j] = min(row[j], before[j - 2] + 1)
    return row[-1]


def probable_setting(name: str) -> str | None:
    """The setting a variable that is not ours probably meant: another case, a known alias, an edit distance of
    at most 2, or a known name with another first word (MONGO_URI); None for names far from ours (PATH, HOME)."""
    workspace_variable = workspace_variable_name(name)
    if name in RULE_OF or (workspace_variable is not None and workspace_variable[0] is not None):
        return None
    upper = name.upper()
    if upper in RULE_OF or upper in _ALIASES:
        return _ALIASES.get(upper, upper)
    workspace_id = WORKSPACE_ID.search(upper)
    if workspace_id is not None:
        start, end = workspace_id.span()
        written = upper[:start] + "<ID>" + upper[end:]
        distance, suffix = min(
            (_edit_distance(written, f"WORKSPACE_<ID>_{suffix}"), suffix) for suffix in WORKSPACE_VARIABLES
        )
        return f"WORKSPACE_{name[start:end]}_{suffix}" if distance <= NEAR_MISS_DISTANCE else None
    distance, meant = min((_edit_distance(upper, rule.variable), rule.variable) for rule in RULES)
    # The first word must be ours give or take one letter (HTTP_PORT is no SMTP_PORT), or absent (SMTPPORT).
    first_word_near = "_" not in upper or _edit_distance(upper.partition("_")[0], meant.partition("_")[0]) <= 1
    if distance <= NEAR_MISS_DISTANCE and first_word_near:
        return meant
    first, _, rest = upper.partition("_")
    if first not in _OTHER_PREFIXES:
        return None
    if rest in RULE_OF:  # WA_SMTP_SERVER
        return rest
    # MONGO_URI, MAIL_SERVER, EXPORT_PORT; never HTTP_PORT or TMP_DIR, whose first word is not ours.
    return next((rule.variable for rule in RULES if rule.variable.partition("_")[2] == rest), None)


def misspelt_variables(names: Iterable[str]) -> dict[str, str]:
    """Each variable that looks like a misspelt setting, with the setting it probably meant."""
    return {name: meant for name in sorted(names) if (meant := probable_setting(name)) is not None}


def unknown_setting_variables(names: Iterable[str]) -> list[str]:
    """Names with our prefixes that no setting reads (`config` lists them)."""
    return sorted(name for name in names if name.startswith(SETTING_PREFIXES) and name not in RULE_OF)


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
    # WORKSPACE_<ID>_<SUFFIX> by (lower-case id, suffix): the values set, the invalid ones that fail their workspace.
    workspace_values: Mapping[tuple[str, str], object] = field(repr=False)  # workbook passwords among them
    workspace_problems: Mapping[tuple[str, str], str]
    malformed_workspace_variables: Mapping[str, str]  # name -> suffix: no workspace id, so never matching one
    load_warnings: tuple[str, ...]  # said on stderr by every command
    lease_seconds: int
    mongodb_timeout_seconds: float
    export_metrics_file: Path | None
    export_recipients_field: str | None
    export_timezone_field: str | None
    export_schedule_field: str | None
    export_arrival_field: str  # arrival order (docs/design.md)
    export_max_rows_per_email: int
    export_backfill_max_hours: float
    export_workbook_password_field: str | None
    export_require_workbook_password: bool
    misspelt_variables: Mapping[str, str]  # written -> the setting it probably meant
    _secrets: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Computed once, not per redaction; a server may echo the AUTH exchange (base64) in its refusal.
        found = [self.smtp_password or "", *uri_secrets(self.mongodb_uri)]
        found += smtp_auth_forms(self.smtp_username or "", self.smtp_password or "")
        found += [str(value) for (_, suffix), value in self.workspace_values.items() if _secret_suffix(suffix)]
        object.__setattr__(self, "_secrets", tuple(dict.fromkeys(secret for secret in found if secret)))

    @property
    def timezone_name(self) -> str:
        return self.export_timezone.key

    @property
    def max_attachment_bytes(self) -> int:
        return int(self.export_max_attachment_mb * 1024 * 1024)

    def workspace_variable(self, workspace_id: str, suffix: str) -> object | None:
        """The parsed WORKSPACE_<ID>_<suffix> of this workspace; None when unset (or invalid)."""
        return self.workspace_values.get((workspace_id.lower(), suffix))

    def workspace_variable_problem(self, workspace_id: str, suffix: str) -> str | None:
        """Why this workspace's WORKSPACE_<ID>_<suffix> cannot be used (it fails the workspace), or None."""
        return self.workspace_problems.get((workspace_id.lower(), suffix))

    def environment_recipients(self, workspace_id: str) -> tuple[str, ...]:
        """The addresses of WORKSPACE_<ID>_EMAIL alone; recipients.recipients_for is the whole policy."""
        return cast("tuple[str, ...]", self.workspace_variable(workspace_id, "EMAIL") or ())

    def recipient_problem(self, workspace_id: str) -> str | None:
        return self.workspace_variable_problem(workspace_id, "EMAIL")

    def configured_workspace_variables(self) -> list[tuple[str, str]]:
        """(lower-case id, suffix) of every well-formed WORKSPACE_<ID>_<SUFFIX>, valid or not, sorted."""
        return sorted({*self.workspace_values, *self.workspace_problems})

    def document_fields(self) -> dict[str, str]:
        """Setting name -> configured dotted path, for every workspace document field setting that is set."""
        paths = {rule.variable: getattr(self, rule.field) for rule in RULES if rule.document_field}
        return {variable: path for variable, path in paths.items() if path}

    def secrets(self) -> list[str]:
        """Every secret value this configuration holds, for redaction of error texts."""
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
        self.secrets = secrets_in(values)
        self.parsed: dict[str, Any] = {}  # Settings field -> value, for the rules derived from an earlier one

    def problem(self, variable: str, message: str) -> None:
        self.problems.append(SettingProblem(variable, redact(message, self.secrets)))

    def got(self, raw: str) -> str:
        """ ", got 'value'", or nothing for a secret (swapped .env lines put a password where a number belongs)."""
        return f", got{shown}" if (shown := self.shown(raw)) else ""

    def shown(self, raw: str) -> str:
        """ " 'value'" to name a value in a message, or nothing when it is (or holds) a secret."""
        return "" if any(secret in raw for secret in self.secrets) else f" {raw!r}"


def secrets_in(env: Mapping[str, str]) -> list[str]:
    """The secret values among these variables (RULES and WORKSPACE_VARIABLES say which are secret)."""
    found: list[str] = []
    for rule in RULES:
        raw = env.get(rule.variable, "")
        if rule.secrecy == "value":
            found += [raw.strip(), raw]
        elif rule.secrecy == "uri":
            found += uri_secrets(raw.strip())
    for name, raw in env.items():
        parsed_name = workspace_variable_name(name)
        if parsed_name is not None and _secret_suffix(parsed_name[1]):
            found += [raw.strip(), raw]
    return list(dict.fromkeys(secret for secret in found if secret))


def _secret_suffix(suffix: str) -> bool:
    variable = WORKSPACE_VARIABLES.get(suffix)
    return variable is not None and variable.secret


def validate_environment(source: ConfigurationSource) -> tuple[Settings, list[SettingProblem]]:
    """Settings from these variables (an invalid value replaced by its default) and every invalid one."""
    env = _Environment(source.values)
    for rule in RULES:
        env.parsed[rule.field] = rule.read(env)
    misspelt = misspelt_variables(source.values)
    warnings = [*source.warnings, *_exposed_env_file(source)]
    warnings += [
        f"{written} is not a wa-export setting and is ignored; did you mean {meant}?"
        for written, meant in misspelt.items()
    ]
    values, problems, malformed = _workspace_variables(env)
    settings = Settings(
        **env.parsed,
        workspace_values=values,
        workspace_problems=problems,
        malformed_workspace_variables=malformed,
        load_warnings=tuple(warnings),
        misspelt_variables=misspelt,
    )
    return settings, env.problems


def _exposed_env_file(source: ConfigurationSource) -> list[str]:
    """A warning if the .env file holds a secret and its mode lets group or others read it."""
    if source.env_file is None or not secrets_in(source.file_values):
        return []
    try:
        exposed = source.env_file.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH)
    except OSError:
        return []
    warning = f"{source.env_file} holds a password and is readable by group or others; run chmod 600 {source.env_file}."
    return [warning] if exposed else []


def _workspace_variables(
    env: _Environment,
) -> tuple[dict[tuple[str, str], object], dict[tuple[str, str], str], dict[str, str]]:
    """WORKSPACE_<ID>_<SUFFIX>: values and workspace problems by (lower-case id, suffix), the malformed names."""
    values: dict[tuple[str, str], object] = {}
    problems: dict[tuple[str, str], str] = {}
    malformed: dict[str, str] = {}
    for name in sorted(env):
        if (parsed_name := workspace_variable_name(name)) is None:
            continue
        workspace_id, suffix = parsed_name
        if workspace_id is None:
            malformed[name] = suffix
            continue
        variable = WORKSPACE_VARIABLES[suffix]
        try:
            value = variable.parse(env[name], name)
        except ConfigError as error:
            if variable.fails_workspace_only:
                problems[workspace_id, suffix] = redact(str(error), env.secrets)
            else:
                env.problem(name, str(error))
            continue
        if value not in (None, "", ()):
            values[workspace_id, suffix] = value
    return values, problems, malformed


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


@dataclass(frozen=True)
class SendingProblem:
    """Why these settings cannot send a mail without asking anyone: what is wrong, then what to do."""

    variable: str
    what: str
    hint: str


def sending_problems(settings: Settings) -> list[SendingProblem]:
    """The cross-field rules for sending, checked by `config` and before any send (mail.message.check_sendable):
    a run that sends refuses these with exit 2, so `config` does too."""
    problems: list[SendingProblem] = []
    if not settings.smtp_server:
        # A misspelt SMTP_SERVER is the likely cause: name it in the same sentence.
        typo = next((written for written, meant in settings.misspelt_variables.items() if meant == "SMTP_SERVER"), None)
        what = f"SMTP_SERVER is not set ({typo} is set: a typo?)" if typo else "SMTP_SERVER is not set"
        problems.append(SendingProblem("SMTP_SERVER", what, "Set SMTP_SERVER to your mail server's host name."))
    if settings.smtp_username and not settings.smtp_password:
        # Without this, yagmail would ask keyring and then prompt on the terminal.
        problems.append(
            SendingProblem(
                "SMTP_PASSWORD",
                "SMTP_USERNAME is set but SMTP_PASSWORD is not",
                "Set SMTP_PASSWORD (or unset SMTP_USERNAME for a server that needs no login).",
            )
        )
    if settings.smtp_password and not settings.smtp_username:
        problems.append(
            SendingProblem(
                "SMTP_USERNAME",
                "SMTP_PASSWORD is set but SMTP_USERNAME is not",
                "Set SMTP_USERNAME to the account the password belongs to.",
            )
        )
    if not settings.smtp_from:
        problems.append(
            SendingProblem("SMTP_FROM", "No sender address", "Set SMTP_FROM (or SMTP_USERNAME) to an email address.")
        )
    return problems
