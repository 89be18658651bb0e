"""`wa-export config`: the effective settings, where each came from, and every invalid one.

Like `nginx -t`: every value is validated as a run validates it, without MongoDB or SMTP; secrets are masked.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import tzinfo
from pathlib import Path
from typing import Any

from wa_export.errors import ExitCode
from wa_export.mail.errors import MailError, MailOutcome
from wa_export.redaction import redact
from wa_export.settings import (
    RULES,
    WORKSPACE_VARIABLES,
    SettingProblem,
    malformed_variables_sentence,
    parse_mongodb_uri,
    read_configuration,
    secrets_in,
    sending_problems,
    unknown_setting_variables,
    validate_environment,
    workspace_variable_name,
)
from wa_export.units import count_noun

MASK = "********"


@dataclass(frozen=True)
class SettingLine:
    variable: str
    value: str  # masked where secret; the effective value when not set
    source: str  # "environment", ".env file <path>" or "default"
    problem: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "valid": self.problem is None}


@dataclass
class ConfigReport:
    env_file: Path | None
    settings: list[SettingLine] = field(default_factory=list)
    workspace_addresses: list[SettingLine] = field(default_factory=list)
    # A workspace's own zone or schedule (an invalid one is a setting problem: every run refuses it).
    workspace_settings: list[SettingLine] = field(default_factory=list)
    unknown_variables: list[str] = field(default_factory=list)  # our prefixes, read by no setting: typos?
    misspelt_variables: dict[str, str] = field(default_factory=dict)  # written -> the setting it probably meant
    warnings: list[str] = field(default_factory=list)  # said on stderr, as by every command

    @property
    def problems(self) -> list[SettingProblem]:
        lines = [*self.settings, *self.workspace_addresses]
        return [
            SettingProblem(line.variable, _after_name(line.variable, line.problem))
            for line in lines
            if line.problem is not None
        ]

    @property
    def problem_variables(self) -> str:
        return ", ".join(dict.fromkeys(problem.variable for problem in self.problems))

    @property
    def exit_code(self) -> ExitCode:
        """A run's verdict: 2 for what it refuses; an invalid WORKSPACE_<ID>_EMAIL or _WORKBOOK_PASSWORD alone fails
        its workspace: 1."""
        if any(line.problem for line in self.settings):
            return ExitCode.USAGE
        return ExitCode.FAILED if self.problems else ExitCode.OK

    def summary(self) -> str:
        count = len(self.problems)
        if count and self.exit_code == ExitCode.FAILED:
            return (
                f"configuration valid, but a run fails the workspaces of {count} invalid "
                "WORKSPACE_<ID>_EMAIL or _WORKBOOK_PASSWORD variable" + ("s" if count != 1 else "")
            )
        if count:
            return f"configuration invalid: {count_noun(count, 'problem')} ({self.problem_variables})"
        return (
            f"configuration valid: {count_noun(len(self.settings), 'setting')}, "
            f"{count_noun(len(self.workspace_addresses) + len(self.workspace_settings), 'per-workspace variable')} "
            "(WORKSPACE_<ID>_…)"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": not self.problems,
            "exit_code": self.exit_code,
            "env_file": str(self.env_file) if self.env_file is not None else None,
            "summary": self.summary(),
            "settings": [line.as_dict() for line in self.settings],
            "workspace_addresses": [line.as_dict() for line in self.workspace_addresses],
            "workspace_settings": [line.as_dict() for line in self.workspace_settings],
            "problems": [{"variable": p.variable, "message": p.message} for p in self.problems],
            "unknown_variables": self.unknown_variables,
            "misspelt_variables": self.misspelt_variables,
            "warnings": self.warnings,
        }


def config_report(env_file: Path | None, environ: dict[str, str] | None = None) -> ConfigReport:
    """Validate the configuration like every command does, but report instead of stopping (an unreadable .env
    file is still a ConfigError: there is nothing to list)."""
    source = read_configuration(env_file, environ)
    settings, problems = validate_environment(source)
    # An invalid MONGODB_URI is shown as written, so the secrets as configured count too.
    secrets = settings.secrets() + secrets_in(source.values)
    by_variable: dict[str, list[str]] = {}
    for problem in problems:
        by_variable.setdefault(problem.variable, []).append(problem.message)
    for sending in sending_problems(settings):  # what a run that sends refuses once the values are valid
        error = MailError("config", sending.what, sending.hint, outcome=MailOutcome.REFUSED)
        by_variable.setdefault(sending.variable, []).append(str(error))
    report = ConfigReport(source.env_file, warnings=list(settings.load_warnings))
    report.misspelt_variables = dict(settings.misspelt_variables)
    for rule in RULES:
        messages = by_variable.pop(rule.variable, [])
        configured = source.values.get(rule.variable, "").strip()
        # An invalid value is shown as written (the run refuses it); a valid or unset one as it is used.
        shown = configured if messages else _display(getattr(settings, rule.field))
        shown = (MASK if shown else "") if rule.secrecy == "value" else redact(shown, secrets)
        origin = source.origin(rule.variable)
        if origin == "default" and rule.derived_from:
            if rule.variable == "MONGODB_DATABASE":
                derived = parse_mongodb_uri(settings.mongodb_uri).database is not None
            else:
                derived = bool(source.values.get(rule.derived_from, "").strip())
            origin += f" (from {rule.derived_from})" if derived else ""
        report.settings.append(SettingLine(rule.variable, shown, origin, " ".join(messages) or None))
    for name in sorted(source.values):
        if (parsed_name := workspace_variable_name(name)) is None:
            continue
        (workspace_id, suffix), value = parsed_name, source.values[name]
        if workspace_id is None:
            trouble: str | None = malformed_variables_sentence([name]) + "."
        elif not WORKSPACE_VARIABLES[suffix].fails_workspace_only:
            if settings.workspace_variable(workspace_id, suffix) is not None:  # an invalid one is a setting problem
                shown = _display(settings.workspace_variable(workspace_id, suffix))
                report.workspace_settings.append(SettingLine(name, shown, source.origin(name)))
            continue
        elif (trouble := settings.workspace_variable_problem(workspace_id, suffix)) is None:
            value = _display(settings.workspace_variable(workspace_id, suffix))
        shown = (
            (MASK if value.strip() else "") if WORKSPACE_VARIABLES[suffix].secret else redact(value.strip(), secrets)
        )
        line = SettingLine(name, shown, source.origin(name), trouble)
        report.workspace_addresses.append(line)
    for variable, messages in by_variable.items():  # a problem reported under another name
        report.settings.append(SettingLine(variable, "", source.origin(variable), " ".join(messages)))
    report.unknown_variables = unknown_setting_variables(source.values)
    return report


def _after_name(variable: str, message: str) -> str:
    """A problem as said after its variable (`INVALID SMTP_PORT: must be …`): the variable named once."""
    return message.removeprefix(f"{variable} ")


def _display(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"  # as a .env writes it
    if isinstance(value, tzinfo):
        return str(getattr(value, "key", value))
    if isinstance(value, (tuple, list)):
        return ", ".join(str(item) for item in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
