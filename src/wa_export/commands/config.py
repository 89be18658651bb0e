"""`wa-export config`: the effective settings, where each came from, and every invalid one.

What an operator (or a CI smoke run) checks before enabling the timer, like
`nginx -t`: every value is validated exactly as a run validates it, without
touching MongoDB or SMTP. Secrets are masked; addresses are shown (they are
not secrets). Exit 2 for exactly what a scheduled run refuses with exit 2 (the
sending rules included), listing all of them; 1 if only WORKSPACE_<ID>_EMAIL
values are invalid, as the run fails those workspaces alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import tzinfo
from pathlib import Path
from typing import Any

from wa_export.envfile import ConfigurationSource, read_configuration
from wa_export.errors import ExitCode
from wa_export.mail.errors import MailError, MailOutcome
from wa_export.mongodb_uri import parse_mongodb_uri
from wa_export.redaction import redact
from wa_export.settings import (
    ANY_WORKSPACE_EMAIL_VARIABLE,
    RULE_OF,
    RULES,
    WORKSPACE_EMAIL_VARIABLE,
    SettingProblem,
    Settings,
    secrets_in,
    sending_problems,
    unknown_setting_variables,
    validate_environment,
)

MASK = "********"


def setting_variables() -> list[str]:
    """Every variable wa-export reads (settings.RULES), in its order."""
    return [rule.variable for rule in RULES]


@dataclass(frozen=True)
class SettingLine:
    variable: str
    value: str  # masked where secret; the effective value when not set
    source: str  # "environment", ".env file <path>" or "default"
    problem: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "variable": self.variable,
            "value": self.value,
            "source": self.source,
            "valid": self.problem is None,
            "problem": self.problem,
        }


@dataclass
class ConfigReport:
    env_file: Path | None
    settings: list[SettingLine] = field(default_factory=list)
    workspace_addresses: list[SettingLine] = field(default_factory=list)
    unknown_variables: list[str] = field(default_factory=list)  # our prefixes, read by no setting: typos?
    misspelt_variables: dict[str, str] = field(default_factory=dict)  # written -> the setting it probably meant
    # Said on stderr, as by every command: ignored .env lines, "no configuration found", an exposed
    # .env file, misspelt variables.
    warnings: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[SettingProblem]:
        return [
            SettingProblem(line.variable, line.problem)
            for line in [*self.settings, *self.workspace_addresses]
            if line.problem is not None
        ]

    @property
    def exit_code(self) -> ExitCode:
        """A run's verdict: 2 for what it refuses (any setting, the sending rules included); an invalid
        WORKSPACE_<ID>_EMAIL alone fails only those workspaces, exit 1 as in the run."""
        if any(line.problem for line in self.settings):
            return ExitCode.USAGE
        return ExitCode.FAILED if self.problems else ExitCode.OK

    def summary(self) -> str:
        problems = self.problems
        if problems and self.exit_code == ExitCode.FAILED:
            return (
                f"configuration valid, but a run fails the workspaces of {len(problems)} invalid "
                "WORKSPACE_<ID>_EMAIL variable" + ("s" if len(problems) != 1 else "")
            )
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
            "misspelt_variables": self.misspelt_variables,
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
    # What a run that sends refuses (exit 2) after the values themselves are valid.
    for sending in sending_problems(settings):
        by_variable.setdefault(sending.variable, []).append(str(MailError("config", sending.what, sending.hint, outcome=MailOutcome.REFUSED)))
    report = ConfigReport(
        env_file=source.env_file,
        warnings=list(settings.load_warnings),
        misspelt_variables=dict(settings.misspelt_variables),
    )
    variables = setting_variables()
    for variable in variables:
        messages = by_variable.pop(variable, [])
        configured = source.values.get(variable, "").strip()
        # An invalid value is shown as written (the run refuses it); a valid or unset one as it is used.
        shown = configured if messages else _display(getattr(settings, _field_of(variable), configured))
        origin = source.origin(variable)
        derived_from = RULE_OF[variable].derived_from
        if origin == "default" and derived_from and _derived(variable, derived_from, source, settings):
            origin = f"default (from {derived_from})"
        report.settings.append(
            SettingLine(variable, _mask(variable, shown, secrets), origin, " ".join(messages) or None)
        )
    for variable, messages in by_variable.items():  # a problem reported under another name
        report.settings.append(SettingLine(variable, "", source.origin(variable), " ".join(messages)))
    report.workspace_addresses = _workspace_lines(source, settings, secrets)
    report.unknown_variables = unknown_setting_variables(source.values)
    return report


def _derived(variable: str, derived_from: str, source: ConfigurationSource, settings: Settings) -> bool:
    """Whether an unset variable took its value from the one it derives from."""
    if variable == "MONGODB_DATABASE":
        try:
            return parse_mongodb_uri(settings.mongodb_uri).database is not None
        except ValueError:
            return False
    return bool(source.values.get(derived_from, "").strip())


def _field_of(variable: str) -> str:
    return RULE_OF[variable].field


def _raw_secrets(source: ConfigurationSource) -> list[str]:
    """The secrets as configured: an invalid MONGODB_URI is shown as written, so its password must be known."""
    return secrets_in(source.values)


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
    if variable in RULE_OF and RULE_OF[variable].secrecy == "value":
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
        value = (
            ", ".join(settings.environment_recipients(match.group(1)))
            if match and problem is None
            else source.values[name]
        )
        lines.append(SettingLine(name, redact(value.strip(), secrets), source.origin(name), problem))
    return lines


__all__ = ["ConfigReport", "SettingLine", "config_report", "setting_variables"]
