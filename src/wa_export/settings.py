"""Configuration. Why this module is long: the one home of where variables come from, every rule, near-miss names."""

from __future__ import annotations

import codecs
import difflib
import io
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple, get_type_hints
from urllib.parse import unquote_plus
from zoneinfo import ZoneInfo

from dotenv import dotenv_values
from dotenv.parser import parse_stream
from pymongo.uri_parser import parse_userinfo, split_hosts, split_options

from wa_export.errors import ConfigError
from wa_export.recipients import ADDRESSES, EMAIL_ADDRESS
from wa_export.redaction import redact, smtp_auth_forms
from wa_export.units import named
from wa_export.workbook_password import WORKBOOK_PASSWORD
from wa_export.workspace_settings import SCHEDULE, TIME_ZONE, WorkspaceSetting, parse_time_zone, shown_value

DEFAULT_MONGODB_URI = "mongodb://localhost:27017"
# python-dotenv logs "could not parse statement" without the file name; read_env_file reports those lines itself.
logging.getLogger("dotenv.main").setLevel(logging.ERROR)


@dataclass(frozen=True)
class ConfigurationSource:
    values: dict[str, str]  # effective: the .env values overridden by the real environment
    process_keys: frozenset[str]
    env_file: Path | None
    file_values: dict[str, str]
    warnings: tuple[str, ...]

    def origin(self, name: str) -> str:  # "default": set nowhere
        if name in self.process_keys:
            return "environment"
        return f".env file {self.env_file}" if name in self.file_values else "default"


def read_configuration(env_file: Path | None, environ: Mapping[str, str] | None = None) -> ConfigurationSource:
    process = dict(os.environ if environ is None else environ)
    path: Path | None = env_file or Path.cwd() / ".env"
    if path and not path.is_file():
        if env_file is not None:
            raise ConfigError(f"--env-file {env_file} does not exist or is not a file.")
        path = None  # a directory named .env (often a virtualenv) is not a settings file
    file_values, warnings = read_env_file(path) if path is not None else ({}, [])
    if path is None and not process.get("MONGODB_URI", "").strip():
        warnings.append(
            f"no .env file in {Path.cwd()} and no MONGODB_URI in the environment: "
            f"using {DEFAULT_MONGODB_URI} (set MONGODB_URI, or pass --env-file)."
        )
    return ConfigurationSource({**file_values, **process}, frozenset(process), path, file_values, tuple(warnings))


def read_env_file(path: Path) -> tuple[dict[str, str], list[str]]:
    """Its variables (UTF-16 and byte-order marks too, which python-dotenv reads neither) and a warning per bad line."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(
            f"Cannot read the env file {path} ({error.strerror or error}); "
            "make it readable by the user that runs wa-export, or pass another one with --env-file."
        ) from None
    # A BOM decides (UTF-32 LE's before UTF-16 LE's, its prefix), else NULs in every other byte mean UTF-16.
    marks = {codecs.BOM_UTF32_LE: "utf-32-le", codecs.BOM_UTF32_BE: "utf-32-be", codecs.BOM_UTF8: "utf-8"}
    marks |= {codecs.BOM_UTF16_LE: "utf-16-le", codecs.BOM_UTF16_BE: "utf-16-be"}
    mark = next((mark for mark in marks if data.startswith(mark)), b"")
    odd, even = (len(data) >= 2 and data[start::2].count(0) > len(data) // 4 for start in (1, 0))
    encoding = marks.get(mark) or ("utf-16-le" if odd else "utf-16-be" if even else "utf-8")
    data = data[len(mark) :]
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as error:
        line = data[: error.start].count("\n".encode(encoding)) + 1
        raise ConfigError(
            f"The env file {path} is not valid {encoding.upper()} text (line {line}); "
            "save it as UTF-8 (or UTF-16 with a byte-order mark)."
        ) from None
    values = {key: value for key, value in dotenv_values(stream=io.StringIO(text)).items() if value is not None}
    warnings: list[str] = []  # the line itself is never quoted: it may hold a password that lost its name
    for binding in parse_stream(io.StringIO(text)):
        # python-dotenv counts a statement's line from the blank lines before it.
        statement = binding.original.string
        leading = statement[: len(statement) - len(statement.lstrip())]
        line = binding.original.line + len(leading.replace("\r\n", "\n").replace("\r", "\n").split("\n")) - 1
        if binding.error:
            warnings.append(f"{path} line {line} is not NAME=value and was ignored.")
        elif binding.key is not None and binding.value is None:
            warnings.append(f"{path} line {line} sets {binding.key} without '=' and was ignored.")
    return values, warnings


@dataclass(frozen=True)
class MongoUriParts:
    username: str | None
    password: str | None  # URL-decoded
    raw_password: str | None  # as written in the URI
    database: str | None  # URL-decoded, without a ".collection" suffix


def parse_mongodb_uri(uri: str) -> MongoUriParts:
    """By pymongo's pure helpers and rules, without the DNS lookups its parse_uri makes for mongodb+srv://."""
    scheme, _, rest = uri.partition("://")
    if scheme not in ("mongodb", "mongodb+srv"):
        raise ValueError("the URI must begin with mongodb:// or mongodb+srv://")
    host_and_db, _, options = rest.partition("?")
    host_part, _, database = host_and_db.partition("/")
    userinfo, at, hosts = host_part.rpartition("@")
    username, password = parse_userinfo(userinfo) if at else (None, None)
    if "/" in hosts or not hosts:
        raise ValueError("no host")
    opts = split_options(options, validate=True, warn=True, normalize=True) if options else {}
    nodes = split_hosts(hosts, default_port=None) if scheme == "mongodb+srv" else split_hosts(hosts)
    if scheme == "mongodb+srv" and (len(nodes) != 1 or nodes[0][1] is not None or opts.get("directconnection")):
        raise ValueError("mongodb+srv:// takes exactly one host name and no port, and no directConnection=true")
    # The option combinations pymongo's parse_uri refuses (its _check_options).
    if len(nodes) > 1 and opts.get("directconnection"):
        raise ValueError("directConnection=true needs a single host")
    if opts.get("loadbalanced") and (len(nodes) > 1 or opts.get("directconnection") or opts.get("replicaset")):
        raise ValueError("loadBalanced=true needs a single host, no directConnection and no replicaSet")
    name = unquote_plus(database).split(".", 1)[0] if database else ""
    if re.search(r'[/ "$]', name):
        raise ValueError("bad database name")
    return MongoUriParts(username, password or None, userinfo.partition(":")[2] or None, name or None)


def uri_secrets(uri: str) -> list[str]:
    """The password in MONGODB_URI, decoded and as written, even from a malformed URI."""
    try:
        parts = parse_mongodb_uri(uri)
        return [parts.password or "", parts.raw_password or ""]
    except Exception:
        # Often an unencoded "@" or "/" in the password: all between the first ":" and the last "@" is the password.
        raw = uri.partition("://")[2].rpartition("@")[0].partition(":")[2]
        return [raw, unquote_plus(raw)] if raw else []


_NUMBER = {True: re.compile(r"[+-]?[0-9]+"), False: re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")}
WORKSPACE_ID = re.compile(r"[0-9A-Fa-f]{24}")
_FLAGS = ("true", "false", "yes", "no", "1", "0", "on", "off")  # every other word means true
ID_FORM = "24 hexadecimal characters"  # how every id an operator types is written: workspace, message, export


@dataclass(frozen=True)
class Bounds:  # every maximum keeps timedelta, datetime and sockets clear of overflow
    minimum: float
    maximum: float
    whole: bool = True
    minimum_exclusive: bool = False  # e.g. a timeout: 0 is not "no timeout" here but nonsense
    note: str = ""  # the maximum in words, e.g. "30 days"

    def check(self, written: str) -> float:
        # ASCII digits only: int() and float() also take "1_000", other scripts' digits, "nan" and "inf".
        value = (int if self.whole else float)(written) if _NUMBER[self.whole].fullmatch(written) else None
        kind = "a whole number" if self.whole else "a number"
        if value is None:
            raise ValueError(f"must be {kind}")
        if not (self.minimum < value if self.minimum_exclusive else self.minimum <= value) or not value <= self.maximum:
            # 2592000, not 2.592e+06: the operator copies it into a .env.
            low, high, note = f"{self.minimum:.15g}", f"{self.maximum:.15g}", f" ({self.note})" if self.note else ""
            range_ = f"greater than {low} and at most {high}" if self.minimum_exclusive else f"between {low} and {high}"
            raise ValueError(f"must be {'a number' if self.minimum_exclusive else kind} {range_}{note}")
        return value


@dataclass(frozen=True)
class SettingRule:
    default: str = ""  # "" = unset
    bounds: Bounds | None = None  # a number setting
    variable: str = ""  # "" = its Settings field's name in upper case (RULES sets it)
    secrecy: Literal["", "value", "uri"] = ""  # the whole value is a password, or the URI's userinfo may hold one
    derived_from: str | None = None  # unset, it takes its value from this variable
    # (stripped value or the default) -> value; ValueError "must be …"/"is …" completes "<variable> <value> …".
    parse: Callable[[str, _Environment], Any] | None = None
    document_field: tuple[str, str] | None = None  # a path in the workspace document: (what it holds, an example)
    field: str = ""  # the Settings field (RULES sets it)

    def read(self, env: _Environment) -> Any:
        try:
            written = env.get(self.variable, "")
            return self._parse(written if self.secrecy == "value" else written.strip() or self.default, env)
        except ConfigError as error:
            env.problem(self.variable, str(error))
            return self._parse(self.default, env)

    def _parse(self, written: str, env: _Environment) -> Any:
        try:
            if self.document_field is not None:
                return _document_path(written, *self.document_field)
            if self.parse is not None:
                return self.parse(written, env)
            return written or None if self.bounds is None else self.bounds.check(written)
        except ValueError as error:
            if str(error).startswith("must"):
                got = f", got{shown}" if (shown := env.shown(written)) else ""
                raise ConfigError(f"{self.variable} {error}{got}.") from None
            raise ConfigError(f"{self.variable}{env.shown(written)} {error}.") from None


def _mongodb_uri(written: str, env: _Environment) -> str:
    try:
        parse_mongodb_uri(written)
    except Exception:
        userinfo = written.partition("://")[2].rpartition("@")[0]
        unencoded = re.search(r"[@/?#\[\]]|%(?![0-9A-Fa-f]{2})", userinfo) or userinfo.count(":") > 1
        hint = (
            "the user name or password holds an unencoded @, : or /, percent-encode them (@ as %40, : as %3A, / as %2F)"
            if unencoded
            else "expected something like mongodb://user:password@host:27017/database"
        )
        raise ConfigError(f"MONGODB_URI is not a valid MongoDB connection string: {hint}.") from None
    return written


def _database_name(written: str, env: _Environment) -> str:
    if not written:  # the (validated, DNS-free) URI's path, if any
        return parse_mongodb_uri(env.parsed["mongodb_uri"]).database or "whatsapp"
    if re.search(r'[/\\. "$\x00]', written) or len(written) > 63:
        raise ValueError("is not a valid MongoDB database name")
    return written


def _sender(written: str, env: _Environment) -> str | None:
    sender: str | None = written or env.parsed["smtp_username"]
    # Reported, but kept: the sending rules then do not add "no sender address" to it.
    if sender is not None and not EMAIL_ADDRESS.match(sender):
        variable = "SMTP_FROM" if written else "SMTP_USERNAME (used as the sender)"
        message = f"{variable} is not a valid email address; set SMTP_FROM to the sender address."
        env.problem(variable.split()[0], message)
    return sender


def _word(written: str, words: tuple[str, ...], said: str) -> str:
    if written.lower() not in words:
        raise ValueError(f"must be {said}")
    return written.lower()


def _ca_file(written: str, env: _Environment) -> Path | None:
    path = Path(written).expanduser()  # shown expanded: under cron, ~ is the cron user's home
    if written and not path.is_file():
        raise ConfigError(f"SMTP_CA_FILE{env.shown(str(path))} does not exist or is not a file.")
    return path if written else None


def _document_path(written: str, holds: str, example: str) -> str | None:
    segments = written.split(".")
    if written and not all(re.match(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$", segment) for segment in segments):
        raise ValueError(f"is not a dotted field path of the workspace document, e.g. {example}")
    # The workspace list already projects these; a path below them would collide in the projection.
    if segments[0] in ("_id", "name", "status"):
        raise ValueError(
            f"is or lies below the workspace's {segments[0]} field; name the field that holds {holds}, e.g. {example}"
        )
    return written or None


def _arrival_field(written: str, env: _Environment) -> str:
    # A plain or dotted field: no `$` (an operator), no empty segment.
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", written) or len(written) > 200:
        raise ValueError(
            "is not a field name; use _id (the default) or a field the platform writes at insert time, e.g. created_at"
        )
    return written


def metrics_file_path(raw: str | None, name: str = "EXPORT_METRICS_FILE") -> Path | None:
    if raw is None or not raw.strip():
        return None
    path = Path(raw.strip()).expanduser().absolute()
    if path.is_dir():
        raise ConfigError(f"{name} {path} is a directory; name a file in it, e.g. {path / 'wa_export.prom'}.")
    if path.suffix != ".prom":
        raise ConfigError(f"{name} {path} must end in .prom, the only files node_exporter's textfile collector reads.")
    return path


_rule = SettingRule


def _path(holds: str, example: str) -> SettingRule:
    return _rule(document_field=(holds, example))


@dataclass(frozen=True)
class Settings:
    # WORKSPACE_<ID>_<SUFFIX> by (lower-case id, suffix): the values set, the invalid ones that fail their workspace.
    workspace_values: Mapping[tuple[str, str], object] = field(repr=False)  # workbook passwords among them
    workspace_problems: Mapping[tuple[str, str], str]
    malformed_workspace_variables: Mapping[str, str]  # name -> suffix: no workspace id, so never matching one
    load_warnings: tuple[str, ...]  # said on stderr by every command
    misspelt_variables: Mapping[str, str]  # written -> the setting it probably meant
    # Each setting and its rule, in the order `config` lists (and validates) them: a derived one follows its source.
    mongodb_uri: Annotated[str, _rule(DEFAULT_MONGODB_URI, secrecy="uri", parse=_mongodb_uri)] = field(repr=False)
    mongodb_database: Annotated[str, _rule(derived_from="MONGODB_URI", parse=_database_name)]
    smtp_server: Annotated[str | None, _rule()]
    smtp_port: Annotated[int, _rule("587", Bounds(1, 65535))]
    smtp_username: Annotated[str | None, _rule()]
    smtp_password: Annotated[str | None, _rule(secrecy="value")] = field(repr=False)  # spaces count
    smtp_from: Annotated[str | None, _rule(derived_from="SMTP_USERNAME", parse=_sender)]
    # The From display name: set but empty sends the bare address; line breaks would end the header.
    smtp_from_name: Annotated[
        str,
        _rule("WhatsApp Exports", parse=lambda _, env: " ".join(env.get("SMTP_FROM_NAME", "WhatsApp Exports").split())),
    ]
    smtp_security: Annotated[
        Literal["auto", "ssl", "starttls", "none"],
        _rule(
            "auto",
            parse=lambda written, _: _word(written, ("auto", "ssl", "starttls", "none"), "auto, ssl, starttls or none"),
        ),
    ]
    smtp_ca_file: Annotated[Path | None, _rule(parse=_ca_file)]
    # A socket timeout and a time.monotonic() deadline: an hour is far beyond any SMTP step.
    smtp_timeout_seconds: Annotated[float, _rule("30", Bounds(0, 3600, False, True, "1 hour"))]
    export_interval_minutes: Annotated[int, _rule("15", Bounds(1, 7 * 24 * 60, note="1 week"))]
    # now - timedelta(days=N) must stay a datetime: 100 years (the `cleanup --days` maximum too).
    export_cleanup_days: Annotated[int, _rule("7", Bounds(0, 36_500, note="100 years"))]
    export_dir: Annotated[Path, _rule("./exports", parse=lambda written, _: Path(written).expanduser().absolute())]
    export_timezone: Annotated[ZoneInfo, _rule("UTC", parse=lambda written, _: parse_time_zone(written))]
    # A window end is now - timedelta(seconds=N); a lag of days already delays every export by days.
    export_lag_seconds: Annotated[int, _rule("60", Bounds(0, 30 * 86_400, note="30 days"))]
    # Mail servers refuse messages far smaller than 1 GiB; int(MB * 2**20) must stay a sane size.
    export_max_attachment_mb: Annotated[float, _rule("20", Bounds(0, 1024, False, True, "1 GiB"))]
    export_allowed_email_domains: Annotated[
        tuple[str, ...],
        _rule(parse=lambda written, _: tuple(d.strip().lower().lstrip("@") for d in written.split(",") if d.strip())),
    ]
    # A lease expiry is database now + timedelta(seconds=N); a killed run blocks its workspace that long.
    lease_seconds: Annotated[int, _rule("900", Bounds(5, 86_400, note="1 day"), variable="EXPORT_LEASE_SECONDS")]
    # pymongo takes milliseconds (int(seconds * 1000)): below 1 ms it would read 0.
    mongodb_timeout_seconds: Annotated[float, _rule("5", Bounds(0.001, 3600, False, note="1 hour"))]
    export_metrics_file: Annotated[Path | None, _rule(parse=lambda written, _: metrics_file_path(written))]
    export_recipients_field: Annotated[str | None, _path("the export addresses", "settings.export_email")]
    export_timezone_field: Annotated[str | None, _path("the workspace's IANA time zone", "settings.timezone")]
    export_schedule_field: Annotated[str | None, _path("the workspace's delivery schedule", "settings.schedule")]
    export_arrival_field: Annotated[str, _rule("_id", parse=_arrival_field)]  # arrival order (docs/design.md)
    export_max_rows_per_email: Annotated[int, _rule("100000", Bounds(1, 1_000_000_000))]
    # A first window reaches back at most a leap year (now - timedelta(hours=N)).
    export_backfill_max_hours: Annotated[float, _rule("24", Bounds(0, 24 * 366, False, note="366 days"))]
    export_workbook_password_field: Annotated[
        str | None, _path("the workbook password", "settings.export.workbook_password")
    ]
    export_require_workbook_password: Annotated[
        bool, _rule("false", parse=lambda written, _: _word(written, _FLAGS, "true or false") in _FLAGS[::2])
    ]

    @cached_property
    def _secrets(self) -> tuple[str, ...]:
        # Computed once, not per redaction; a server may echo the AUTH exchange (base64) in its refusal.
        found = [self.smtp_password or "", *uri_secrets(self.mongodb_uri)]
        found += smtp_auth_forms(self.smtp_username or "", self.smtp_password or "")
        found += [str(v) for (_, suffix), v in self.workspace_values.items() if WORKSPACE_VARIABLES[suffix].secret]
        return tuple(dict.fromkeys(secret for secret in found if secret))

    @property
    def timezone_name(self) -> str:
        return self.export_timezone.key

    @property
    def max_attachment_bytes(self) -> int:
        return int(self.export_max_attachment_mb * 1024 * 1024)

    def workspace_variable(self, workspace_id: str, suffix: str) -> object | None:
        return self.workspace_values.get((workspace_id.lower(), suffix))

    def workspace_variable_problem(self, workspace_id: str, suffix: str) -> str | None:
        return self.workspace_problems.get((workspace_id.lower(), suffix))

    def configured_workspace_variables(self) -> list[tuple[str, str]]:
        return sorted({*self.workspace_values, *self.workspace_problems})

    def document_fields(self) -> dict[str, str]:
        return {rule.variable: path for rule in RULES if rule.document_field and (path := getattr(self, rule.field))}

    def secrets(self) -> list[str]:
        return list(self._secrets)


RULES: tuple[SettingRule, ...] = tuple(
    replace(rule, variable=rule.variable or name.upper(), field=name)
    for name, hint in get_type_hints(Settings, globals(), include_extras=True).items()
    for rule in getattr(hint, "__metadata__", ())
)
RULE_OF = {rule.variable: rule for rule in RULES}


# Every per-workspace variable, by suffix.
WORKSPACE_VARIABLES: dict[str, WorkspaceSetting[Any]] = {
    setting.suffix: setting for setting in (ADDRESSES, WORKBOOK_PASSWORD, TIME_ZONE, SCHEDULE)
}


def workspace_variable_name(name: str) -> tuple[str | None, str] | None:
    """(lower-case workspace id or None when malformed, suffix) of WORKSPACE_<ID>_<SUFFIX>."""
    suffixes = "|".join(re.escape(suffix) for suffix in WORKSPACE_VARIABLES)
    match = re.fullmatch(rf"WORKSPACE_(.*)_({suffixes})", name, re.IGNORECASE)
    if match is None:
        return None
    workspace_id, suffix = match.group(1), match.group(2).upper()
    well_formed = WORKSPACE_ID.fullmatch(workspace_id) and name == f"WORKSPACE_{workspace_id}_{suffix}"
    return (workspace_id.lower() if well_formed else None), suffix


def malformed_variables_sentence(names: Sequence[str]) -> str:
    suffixes = {parsed[1] for name in names if (parsed := workspace_variable_name(name)) is not None}
    suffix = f"_{suffixes.pop()}" if len(suffixes) == 1 else "the suffix"
    return f"{named(names, 1)} {'applies' if len(names) == 1 else 'apply'} to no workspace; write a workspace id ({ID_FORM}) between WORKSPACE_ and {suffix}"


def unmatched_variables_sentence(names: Sequence[str], database: str) -> str:
    return (
        f"{named(names, 1)} {'matches' if len(names) == 1 else 'match'} no active workspace in database {database!r}: "
        "a typo in the id, or an inactive or deleted workspace"
    )


def export_dir_not_a_directory(export_dir: Path, blocker: Path | None = None) -> str:
    """EXPORT_DIR is a file, or `blocker`, a parent it would be created in, is."""
    what = f"cannot be created: {blocker} " if blocker not in (None, export_dir) else ""
    return f"EXPORT_DIR {export_dir} {what}is not a directory; point EXPORT_DIR at a directory."


# Names other tools use for our settings.
_ALIASES = dict(SMTP_HOST="SMTP_SERVER", SMTP_USER="SMTP_USERNAME", SMTP_PASS="SMTP_PASSWORD", MONGO_URL="MONGODB_URI")
_ALIASES |= dict(MONGO_DB="MONGODB_DATABASE", SMTP_TIMEOUT="SMTP_TIMEOUT_SECONDS", MONGODB_URL="MONGODB_URI")
# First words that stand for one of ours (MONGO_URI, MAIL_SERVER), ours included (EXPORT_PORT for SMTP_PORT).
_OTHER_PREFIXES = frozenset({"MONGODB", "SMTP", "EXPORT", "MONGO", "DB", "MAIL", "EMAIL", "WA"})
# Our variables' first words: a name with one that no setting reads is a typo or a leftover.
SETTING_PREFIXES = ("MONGODB_", "SMTP_", "EXPORT_")


def probable_setting(name: str) -> str | None:
    """What a name that is not ours probably meant: another case, an alias, a close spelling, another first word."""
    workspace_variable = workspace_variable_name(name)
    if name in RULE_OF or (workspace_variable is not None and workspace_variable[0] is not None):
        return None
    upper = name.upper()
    if upper in RULE_OF or upper in _ALIASES:
        return _ALIASES.get(upper, upper)
    if (workspace_id := WORKSPACE_ID.search(upper)) is not None:  # compared with <ID> in place of the id
        start, end = workspace_id.span()
        forms = [f"WORKSPACE_<ID>_{suffix}" for suffix in WORKSPACE_VARIABLES]
        close = difflib.get_close_matches(f"{upper[:start]}<ID>{upper[end:]}", forms, 1, 0.85)
        return close[0].replace("<ID>", name[start:end]) if close else None
    first, _, rest = upper.partition("_")
    close = difflib.get_close_matches(upper, list(RULE_OF), 1, 0.85)
    # The first word must be ours give or take a letter (HTTP_PORT is no SMTP_PORT), or absent (SMTPPORT).
    if close and (not rest or difflib.SequenceMatcher(None, first, close[0].partition("_")[0]).ratio() >= 0.75):
        return close[0]
    if first not in _OTHER_PREFIXES:
        return None
    # WA_SMTP_SERVER, MONGO_URI, MAIL_SERVER, EXPORT_PORT; never HTTP_PORT or TMP_DIR, whose first word is not ours.
    return rest if rest in RULE_OF else next((v for v in RULE_OF if v.partition("_")[2] == rest), None)


def unknown_setting_variables(names: Iterable[str]) -> list[str]:
    return sorted(name for name in names if name.startswith(SETTING_PREFIXES) and name not in RULE_OF)


@dataclass(frozen=True)
class SettingProblem:
    variable: str
    message: str


class _Environment(dict[str, str]):  # the variables while they are validated, with every problem found
    def __init__(self, values: Mapping[str, str]) -> None:
        super().__init__(values)
        self.problems: list[SettingProblem] = []
        self.secrets = secrets_in(values)
        self.parsed: dict[str, Any] = {}  # Settings field -> value, for the rules derived from an earlier one

    def problem(self, variable: str, message: str) -> None:
        self.problems.append(SettingProblem(variable, redact(message, self.secrets)))

    def shown(self, raw: str) -> str:  # never a secret: swapped .env lines put a password where a number belongs
        return "" if any(secret in raw for secret in self.secrets) else f" {raw!r}"


def secrets_in(env: Mapping[str, str]) -> list[str]:
    found: list[str] = []
    for rule in RULES:
        raw = env.get(rule.variable, "")
        found += {"": [], "value": [raw.strip(), raw], "uri": uri_secrets(raw.strip())}[rule.secrecy]
    for name, raw in env.items():
        if (parsed_name := workspace_variable_name(name)) is not None and WORKSPACE_VARIABLES[parsed_name[1]].secret:
            found += [raw.strip(), raw]
    return list(dict.fromkeys(secret for secret in found if secret))


def validate_environment(source: ConfigurationSource) -> tuple[Settings, list[SettingProblem]]:
    """Settings (an invalid value replaced by its default) and every problem."""
    env = _Environment(source.values)
    for rule in RULES:
        env.parsed[rule.field] = rule.read(env)
    misspelt = {name: meant for name in sorted(source.values) if (meant := probable_setting(name)) is not None}
    warnings = list(source.warnings)
    with suppress(OSError):
        if (path := source.env_file) and secrets_in(source.file_values) and path.stat().st_mode & 0o044:
            warnings.append(f"{path} holds a password and is readable by group or others; run chmod 600 {path}.")
    warnings += [f"{n} is not a wa-export setting and is ignored; did you mean {m}?" for n, m in misspelt.items()]
    values: dict[tuple[str, str], object] = {}
    problems: dict[tuple[str, str], str] = {}
    malformed: dict[str, str] = {}
    for name, (workspace_id, suffix) in ((n, parsed) for n in sorted(env) if (parsed := workspace_variable_name(n))):
        setting = WORKSPACE_VARIABLES[suffix]
        if workspace_id is None:
            malformed[name] = suffix
            continue
        try:
            if (value := setting.parse(env[name])) not in (None, "", ()):
                values[workspace_id, suffix] = value
        except ValueError as error:
            shown = f" {shown_value(env[name])}" if setting.quoted and not setting.secret else ""
            if setting.fails_workspace_only:
                problems[workspace_id, suffix] = redact(f"{name}{shown} {error}.", env.secrets)
            else:
                env.problem(name, f"{name}{shown} {error}.")
    return Settings(values, problems, malformed, tuple(warnings), misspelt, **env.parsed), env.problems


def load_settings(env_file: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """The validated settings; the first invalid value raises ConfigError (saying how many more there are)."""
    settings, problems = validate_environment(read_configuration(env_file, environ))
    if problems:
        more = len(problems) - 1
        tail = f"; {more} more setting{'s are' if more > 1 else ' is'} invalid (`wa-export config` lists them all)."
        raise ConfigError(f"{problems[0].message.rstrip('.')}{tail}" if more else problems[0].message)
    return settings


class SendingProblem(NamedTuple):
    variable: str
    what: str
    hint: str


def sending_problems(settings: Settings) -> list[SendingProblem]:
    """What a run that sends refuses (exit 2), so `config` does too."""
    problems, user, password = [], settings.smtp_username, settings.smtp_password
    if not settings.smtp_server:
        # A misspelt SMTP_SERVER is the likely cause: name it in the same sentence.
        typo = next((written for written, meant in settings.misspelt_variables.items() if meant == "SMTP_SERVER"), None)
        what = "SMTP_SERVER is not set" + (f" ({typo} is set: a typo?)" if typo else "")
        problems.append(SendingProblem("SMTP_SERVER", what, "Set SMTP_SERVER to your mail server's host name."))
    if user and not password:  # else yagmail would ask keyring, then prompt on the terminal
        hint = "Set SMTP_PASSWORD (or unset SMTP_USERNAME for a server that needs no login)."
        problems.append(SendingProblem("SMTP_PASSWORD", "SMTP_USERNAME is set but SMTP_PASSWORD is not", hint))
    if password and not user:
        hint = "Set SMTP_USERNAME to the account the password belongs to."
        problems.append(SendingProblem("SMTP_USERNAME", "SMTP_PASSWORD is set but SMTP_USERNAME is not", hint))
    if not settings.smtp_from:
        hint = "Set SMTP_FROM (or SMTP_USERNAME) to an email address."
        problems.append(SendingProblem("SMTP_FROM", "No sender address", hint))
    return problems
