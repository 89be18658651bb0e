"""`wa-export config`: the effective settings, where each came from, and every invalid one.

What an operator (or a CI smoke run) checks before enabling the timer, like
`nginx -t`: every value is validated exactly as a run validates it, without
touching MongoDB or SMTP. Secrets are masked; addresses are shown (they are
not secrets). Exit 2 if any value is invalid, listing all of them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import tzinfo
from pathlib import Path
from typing import Any

from wa_export.envfile import ConfigurationSource, read_configuration
from wa_export.errors import ExitCode
from wa_export.mongodb_uri import parse_mongodb_uri, uri_secrets
from wa_export.redaction import redact
from wa_export.settings import (
    ANY_WORKSPACE_EMAIL_VARIABLE,
    WORKSPACE_EMAIL_VARIABLE,
    SettingProblem,
    Settings,
    validate_environment,
)

# Settings fields that are not one variable each, and the fields whose variable is not their upper-case name.
DERIVED_FIELDS = frozenset({"workspace_emails", "workspace_email_problems", "malformed_email_variables", "load_warnings"})
VARIABLE_OF_FIELD = {"lease_seconds": "EXPORT_LEASE_SECONDS"}
SECRET_VARIABLES = frozenset({"SMTP_PASSWORD"})
# Unset, these take their value from another variable.
DERIVED_FROM = {"MONGODB_DATABASE": "MONGODB_URI", "SMTP_FROM": "SMTP_USERNAME"}
SETTING_PREFIXES = ("MONGODB_", "SMTP_", "EXPORT_")
MASK = "********"


def setting_variables() -> list[str]:
    """Every variable wa-export reads, in the order of the Settings fields."""
    return [
        VARIABLE_OF_FIELD.get(item.name, item.name.upper())
        for item in dataclasses.fields(Settings)
        if item.init and item.name not in DERIVED_FIELDS
    ]


@dataclass(frozen=True)
class SettingLine:
    variable: str
    value: str  # masked where secret; the effective value when not set
    source: str  # "environment", ".env file <path>" or "default"
    problem: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"variable": self.variable, "value": self.value, "source": self.source,
                "valid": self.problem is None, "problem": self.problem}


@dataclass
class ConfigReport:
    env_file: Path | None
    settings: list[SettingLine] = field(default_factory=list)
    workspace_addresses: list[SettingLine] = field(default_factory=list)
    unknown_variables: list[str] = field(default_factory=list)  # our prefixes, read by no setting: typos?
    warnings: list[str] = field(default_factory=list)  # ignored .env lines, "no configuration found"

    @property
    def problems(self) -> list[SettingProblem]:
        return [SettingProblem(line.variable, line.problem)
                for line in [*self.settings, *self.workspace_addresses] if line.problem is not None]

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.USAGE if self.problems else ExitCode.OK

    def summary(self) -> str:
        problems = self.problems
        if problems:
            count = len(problems)
            names = ", ".join(dict.fromkeys(problem.variable for problem in problems))
            return f"configuration invalid: {count} problem{'s' if count != 1 else ''} ({names})"
        return (
            f"configuration valid: {len(self.settings)} settings, "
            f"{len(self.workspace_addresses)} WORKSPACE_<ID>_EMAIL variables"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": not self.problems,
            "exit_code": self.exit_code,
            "env_file": str(self.env_file) if self.env_file is not None else None,
            "summary": self.summary(),
            "settings": [line.as_dict() for line in self.settings],
            "workspace_addresses": [line.as_dict() for line in self.workspace_addresses],
            "problems": [{"variable": p.variable, "message": p.message} for p in self.problems],
            "unknown_variables": self.unknown_variables,
            "warnings": self.warnings,
        }


def config_report(env_file: Path | None, environ: dict[str, str] | None = None) -> ConfigReport:
    """Read and validate the configuration like every command does, but report instead of stopping.

    An unreadable .env file is still a ConfigError (exit 2): there is nothing to list.
    """
    source = read_configuration(env_file, environ)
    settings, problems = validate_environment(source)
    secrets = settings.secrets() + _raw_secrets(source)
    by_variable: dict[str, list[str]] = {}
    for problem in problems:
        by_variable.setdefault(problem.variable, []).append(problem.message)
    report = ConfigReport(env_file=source.env_file, warnings=list(source.warnings))
    variables = setting_variables()
    for variable in variables:
        messages = by_variable.pop(variable, [])
        configured = source.values.get(variable, "").strip()
        # An invalid value is shown as written (the run refuses it); a valid or unset one as it is used.
        shown = configured if messages else _display(getattr(settings, _field_of(variable), configured))
        origin = source.origin(variable)
        if origin == "default" and _derived(variable, source, settings):
            origin = f"default (from {DERIVED_FROM[variable]})"
        report.settings.append(SettingLine(variable, _mask(variable, shown, secrets), origin, " ".join(messages) or None))
    for variable, messages in by_variable.items():  # a problem reported under another name
        report.settings.append(SettingLine(variable, "", source.origin(variable), " ".join(messages)))
    report.workspace_addresses = _workspace_lines(source, settings, secrets)
    report.unknown_variables = sorted(
        name for name in source.values
        if name.startswith(SETTING_PREFIXES) and name not in variables
    )
    return report


def _derived(variable: str, source: ConfigurationSource, settings: Settings) -> bool:
    """Whether an unset variable took its value from the one it derives from."""
    if variable == "MONGODB_DATABASE":
        try:
            return parse_mongodb_uri(settings.mongodb_uri).database is not None
        except ValueError:
            return False
    return variable in DERIVED_FROM and bool(source.values.get(DERIVED_FROM[variable], "").strip())


def _field_of(variable: str) -> str:
    reverse = {value: key for key, value in VARIABLE_OF_FIELD.items()}
    return reverse.get(variable, variable.lower())


def _raw_secrets(source: ConfigurationSource) -> list[str]:
    """The secrets as configured: an invalid MONGODB_URI is shown as written, so its password must be known."""
    raw = source.values.get("SMTP_PASSWORD", "")
    found = [raw, raw.strip(), *uri_secrets(source.values.get("MONGODB_URI", "").strip())]
    return [secret for secret in found if secret]


def _display(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, tzinfo):
        return str(getattr(value, "key", value))
    if isinstance(value, (tuple, list)):
        return ", ".join(str(item) for item in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _mask(variable: str, value: str, secrets: list[str]) -> str:
    if variable in SECRET_VARIABLES:
        return MASK if value else ""
    return redact(value, secrets)


def _workspace_lines(source: ConfigurationSource, settings: Settings, secrets: list[str]) -> list[SettingLine]:
    lines: list[SettingLine] = []
    for name in sorted(source.values):
        if ANY_WORKSPACE_EMAIL_VARIABLE.match(name) is None:
            continue
        match = WORKSPACE_EMAIL_VARIABLE.match(name)
        if match is None:
            problem: str | None = (
                f"{name} is not WORKSPACE_<ID>_EMAIL with a workspace id of 24 hexadecimal characters, "
                "so it can never apply to a workspace."
            )
        else:
            problem = settings.recipient_problem(match.group(1))
        value = ", ".join(settings.environment_recipients(match.group(1))) if match and problem is None else source.values[name]
        lines.append(SettingLine(name, redact(value.strip(), secrets), source.origin(name), problem))
    return lines


__all__ = ["ConfigReport", "SettingLine", "config_report", "setting_variables"]
