"""Configuration: the process environment plus an optional `.env` file (SPEC §3).

Every value is validated here, once, so that a bad setting fails the run before
it touches MongoDB or SMTP, with one sentence naming the variable. Secret values
are never part of an error message.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import unquote_plus
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dotenv import dotenv_values
from pymongo.uri_parser import parse_userinfo, split_hosts, split_options

from wa_export.addresses import EMAIL_ADDRESS, parse_address_list
from wa_export.errors import ConfigError
from wa_export.redaction import redact

SmtpSecurity = Literal["auto", "ssl", "starttls", "none"]

WORKSPACE_EMAIL_VARIABLE = re.compile(r"^WORKSPACE_([0-9A-Fa-f]{24})_EMAIL$")


@dataclass(frozen=True)
class Settings:
    mongodb_uri: str = field(repr=False)
    mongodb_database: str
    smtp_server: str | None
    smtp_port: int
    smtp_username: str | None
    smtp_password: str | None = field(repr=False)
    smtp_from: str | None
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
    lease_seconds: int
    mongodb_timeout_seconds: float
    # Arrival order (docs/design.md): the field that orders messages by when they were written.
    export_arrival_field: str = "_id"
    export_max_rows_per_email: int = 100_000
    export_backfill_max_hours: float = 24.0
    # Computed once here (never per redaction): see secrets().
    _secrets: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        found = [self.smtp_password or "", *_uri_secrets(self.mongodb_uri)]
        object.__setattr__(self, "_secrets", tuple(dict.fromkeys(secret for secret in found if secret)))

    @property
    def timezone_name(self) -> str:
        return self.export_timezone.key

    @property
    def max_attachment_bytes(self) -> int:
        return int(self.export_max_attachment_mb * 1024 * 1024)

    def recipients_for(self, workspace_id: str) -> tuple[str, ...]:
        return self.workspace_emails.get(workspace_id.lower(), ())

    def secrets(self) -> list[str]:
        """Every secret value this configuration holds, for redaction of error texts (computed at load)."""
        return list(self._secrets)


@dataclass(frozen=True)
class MongoUriParts:
    """What configuration needs from MONGODB_URI, read without any network or DNS access."""

    srv: bool
    hosts: str
    username: str | None
    password: str | None  # URL-decoded
    raw_password: str | None  # as written in the URI
    database: str | None  # URL-decoded, without a ".collection" suffix


def parse_mongodb_uri(uri: str) -> MongoUriParts:
    """Split ``scheme://[userinfo@]hosts[/database][?options]`` and validate it; never touches DNS.

    pymongo's parse_uri resolves SRV and TXT records for ``mongodb+srv://``;
    this uses only its pure helpers (parse_userinfo, split_hosts, split_options)
    with the same rules. Raises ValueError (pymongo's InvalidURI is one) or
    pymongo's ConfigurationError on a malformed URI.
    """
    if uri.startswith("mongodb+srv://"):
        srv, rest = True, uri[len("mongodb+srv://"):]
    elif uri.startswith("mongodb://"):
        srv, rest = False, uri[len("mongodb://"):]
    else:
        raise ValueError("the URI must begin with mongodb:// or mongodb+srv://")
    if not rest:
        raise ValueError("no host")
    host_and_db, _, options = rest.partition("?")
    host_part, _, database = host_and_db.partition("/")
    username = password = raw_password = None
    if "@" in host_part:
        userinfo, _, hosts = host_part.rpartition("@")
        raw_password = userinfo.partition(":")[2] or None
        username, password = parse_userinfo(userinfo)
        password = password or None
    else:
        hosts = host_part
    if "/" in hosts or not hosts:
        raise ValueError("no host")
    opts = split_options(options, validate=True, warn=True, normalize=True) if options else {}
    if srv:
        nodes = split_hosts(hosts, default_port=None)
        if len(nodes) != 1 or nodes[0][1] is not None:
            raise ValueError("mongodb+srv:// takes exactly one host name and no port")
        if opts.get("directconnection"):
            raise ValueError("directConnection=true cannot be used with mongodb+srv://")
    else:
        nodes = split_hosts(hosts)
    # The option combinations pymongo's parse_uri refuses (its _check_options).
    if len(nodes) > 1 and opts.get("directconnection"):
        raise ValueError("directConnection=true needs a single host")
    if opts.get("loadbalanced") and (len(nodes) > 1 or opts.get("directconnection") or opts.get("replicaset")):
        raise ValueError("loadBalanced=true needs a single host, no directConnection and no replicaSet")
    name = unquote_plus(database).split(".", 1)[0] if database else ""
    if re.search(r'[/ "$]', name):
        raise ValueError("bad database name")
    return MongoUriParts(srv, hosts, username, password, raw_password, name or None)


def _uri_secrets(uri: str) -> list[str]:
    """The MongoDB password in MONGODB_URI, decoded and as written; tolerant of a malformed URI."""
    try:
        parts = parse_mongodb_uri(uri)
        return [parts.password or "", parts.raw_password or ""]
    except Exception:
        match = re.match(r"^[a-z+]+://[^:/@]*:([^@]*)@", uri)
        if match is None:
            return []
        raw = match.group(1)
        return [raw, unquote_plus(raw)]


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int, maximum: int | None = None) -> int:
    raw = env.get(name, "").strip()
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}.") from None
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f"at least {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise ConfigError(f"{name} must be {bounds}, got {value}.")
    return value


def _float(env: Mapping[str, str], name: str, default: float, *, minimum_exclusive: float) -> float:
    raw = env.get(name, "").strip()
    if raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}.") from None
    if not value > minimum_exclusive or value != value or value == float("inf"):
        raise ConfigError(f"{name} must be a number greater than {minimum_exclusive:g}, got {raw!r}.")
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


def _database_name(uri: str, explicit: str | None) -> str:
    if explicit:
        if re.search(r'[/\\. "$\x00]', explicit) or len(explicit) > 63:
            raise ConfigError(f"MONGODB_DATABASE {explicit!r} is not a valid MongoDB database name.")
        return explicit
    # The URI was validated (without DNS) before: its path, if any, is the database.
    return parse_mongodb_uri(uri).database or "whatsapp"


def _validate_uri(uri: str) -> None:
    try:
        parse_mongodb_uri(uri)
    except Exception:
        raise ConfigError(
            "MONGODB_URI is not a valid MongoDB connection string: "
            "expected something like mongodb://user:password@host:27017/database."
        ) from None


def read_environment(env_file: Path | None, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The effective variables: `.env` values overridden by the real environment."""
    process = dict(os.environ if environ is None else environ)
    if env_file is not None:
        if not env_file.is_file():
            raise ConfigError(f"--env-file {env_file} does not exist or is not a file.")
        path: Path | None = env_file
    else:
        default = Path.cwd() / ".env"
        path = default if default.is_file() else None
    merged: dict[str, str] = {}
    if path is not None:
        try:
            for key, value in dotenv_values(path).items():
                if value is not None:
                    merged[key] = value
        except OSError as error:
            raise ConfigError(f"Cannot read the env file {path}: {error.strerror}.") from None
    merged.update(process)
    return merged


def load_settings(env_file: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    env = read_environment(env_file, environ)
    try:
        return _settings_from(env)
    except ConfigError as error:
        # Swapped lines in a .env can put a password where a value is echoed back.
        raise ConfigError(redact(str(error), _secrets_in(env))) from None


def _secrets_in(env: Mapping[str, str]) -> list[str]:
    found = [env.get("SMTP_PASSWORD", "").strip(), env.get("SMTP_PASSWORD", "")]
    found += _uri_secrets(env.get("MONGODB_URI", "").strip())
    return [secret for secret in found if secret]


def _settings_from(env: Mapping[str, str]) -> Settings:
    uri = _text(env, "MONGODB_URI") or "mongodb://localhost:27017"
    _validate_uri(uri)
    database = _database_name(uri, _text(env, "MONGODB_DATABASE"))

    smtp_port = _int(env, "SMTP_PORT", 587, minimum=1, maximum=65535)
    security_raw = (_text(env, "SMTP_SECURITY") or "auto").lower()
    if security_raw not in ("auto", "ssl", "starttls", "none"):
        raise ConfigError(f"SMTP_SECURITY must be one of auto, ssl, starttls, none; got {security_raw!r}.")
    security: SmtpSecurity = security_raw  # type: ignore[assignment]

    ca_file_raw = _text(env, "SMTP_CA_FILE")
    ca_file = Path(ca_file_raw).expanduser() if ca_file_raw else None
    if ca_file is not None and not ca_file.is_file():
        raise ConfigError(f"SMTP_CA_FILE {ca_file} does not exist or is not a file.")

    username = _text(env, "SMTP_USERNAME")
    smtp_from = _text(env, "SMTP_FROM") or username
    if smtp_from is not None and not EMAIL_ADDRESS.match(smtp_from):
        variable = "SMTP_FROM" if _text(env, "SMTP_FROM") else "SMTP_USERNAME (used as the sender)"
        raise ConfigError(f"{variable} is not a valid email address; set SMTP_FROM to the sender address.")

    timezone_name = _text(env, "EXPORT_TIMEZONE") or "UTC"
    try:
        if timezone_name.startswith(("/", ".")) or ".." in timezone_name:
            raise ValueError
        timezone = ZoneInfo(timezone_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"EXPORT_TIMEZONE {timezone_name!r} is not a known IANA time zone (e.g. UTC, Europe/Berlin, Asia/Dubai)."
        ) from None

    allowed = tuple(
        domain.strip().lower().lstrip("@")
        for domain in (_text(env, "EXPORT_ALLOWED_EMAIL_DOMAINS") or "").split(",")
        if domain.strip()
    )

    workspace_emails: dict[str, tuple[str, ...]] = {}
    for name, value in env.items():
        match = WORKSPACE_EMAIL_VARIABLE.match(name)
        if match is None:
            continue
        addresses = parse_address_list(value, name)
        if addresses:
            workspace_emails[match.group(1).lower()] = addresses

    return Settings(
        mongodb_uri=uri,
        mongodb_database=database,
        smtp_server=_text(env, "SMTP_SERVER"),
        smtp_port=smtp_port,
        smtp_username=username,
        smtp_password=env.get("SMTP_PASSWORD") or None,
        smtp_from=smtp_from,
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
        lease_seconds=_int(env, "EXPORT_LEASE_SECONDS", 900, minimum=5),
        mongodb_timeout_seconds=_float(env, "MONGODB_TIMEOUT_SECONDS", 5.0, minimum_exclusive=0),
        export_arrival_field=_arrival_field(env),
        export_max_rows_per_email=_int(env, "EXPORT_MAX_ROWS_PER_EMAIL", 100_000, minimum=1, maximum=1_000_000_000),
        export_backfill_max_hours=_backfill_hours(env),
    )
