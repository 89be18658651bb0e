"""`wa-export config`: the effective settings, where each came from, and every invalid one. Like `nginx -t`: every
value is validated as a run validates it, without MongoDB or SMTP; secrets are masked."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from wa_export import settings as rules
from wa_export.errors import ExitCode
from wa_export.mail.errors import refusal
from wa_export.redaction import redact
from wa_export.settings import parse_mongodb_uri, read_configuration
from wa_export.units import count_noun


@dataclass
class SettingLine:
    variable: str
    value: str  # masked where secret; the effective value when not set
    source: str  # "environment", ".env file <path>" or "default"
    problem: str | None = None
    valid: bool = field(init=False)

    def __post_init__(self) -> None:
        self.valid = self.problem is None


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
    def problems(self) -> list[rules.SettingProblem]:
        """Each as said after its variable (`INVALID SMTP_PORT: must be …`): the variable named once."""
        lines = [*self.settings, *self.workspace_addresses]
        return [rules.SettingProblem(n.variable, n.problem.removeprefix(f"{n.variable} ")) for n in lines if n.problem]

    @property
    def problem_variables(self) -> str:
        return ", ".join(dict.fromkeys(problem.variable for problem in self.problems))

    @property
    def exit_code(self) -> ExitCode:
        """2 for what a run refuses; an invalid WORKSPACE_<ID>_EMAIL or _WORKBOOK_PASSWORD alone fails its workspace: 1."""
        refused = any(line.problem for line in self.settings)
        return ExitCode.USAGE if refused else ExitCode.FAILED if self.problems else ExitCode.OK

    def summary(self) -> str:
        count = len(self.problems)
        if count and self.exit_code == ExitCode.FAILED:
            return f"configuration valid, but a run fails the workspaces of {count} invalid WORKSPACE_<ID>_EMAIL or _WORKBOOK_PASSWORD variable{'s' if count != 1 else ''}"
        if count:
            return f"configuration invalid: {count_noun(count, 'problem')} ({self.problem_variables})"
        variables = count_noun(len(self.workspace_addresses) + len(self.workspace_settings), "per-workspace variable")
        return f"configuration valid: {count_noun(len(self.settings), 'setting')}, {variables} (WORKSPACE_<ID>_…)"

    def as_dict(self) -> dict[str, Any]:
        facts = {"ok": not self.problems, "exit_code": self.exit_code, "env_file": None, "summary": self.summary()}
        return facts | asdict(self) | {"problems": [asdict(problem) for problem in self.problems]}


def config_report(env_file: Path | None, environ: dict[str, str] | None = None) -> ConfigReport:
    """Validated as every command does, reporting every problem (an unreadable .env file is still a ConfigError)."""
    source = read_configuration(env_file, environ)
    settings, problems = rules.validate_environment(source)
    # An invalid MONGODB_URI is shown as written, so the secrets as configured count too.
    secrets = settings.secrets() + rules.secrets_in(source.values)
    # What a run that sends refuses once the values are valid is a problem too.
    sending = rules.sending_problems(settings)
    problems += [rules.SettingProblem(s.variable, str(refusal(settings, "config", s.what, s.hint))) for s in sending]
    by_variable: dict[str, list[str]] = {}
    for problem in problems:
        by_variable.setdefault(problem.variable, []).append(problem.message)
    report = ConfigReport(source.env_file, unknown_variables=rules.unknown_setting_variables(source.values))
    report.misspelt_variables, report.warnings = dict(settings.misspelt_variables), list(settings.load_warnings)
    for rule in rules.RULES:
        messages = by_variable.pop(rule.variable, [])
        # An invalid value is shown as written (the run refuses it); a valid or unset one as it is used.
        shown = source.values.get(rule.variable, "") if messages else _display(getattr(settings, rule.field))
        origin = source.origin(rule.variable)
        derived = bool(rule.derived_from and source.values.get(rule.derived_from, "").strip())
        if rule.variable == "MONGODB_DATABASE":  # only where the URI names a database
            derived = parse_mongodb_uri(settings.mongodb_uri).database is not None
        origin += f" (from {rule.derived_from})" if origin == "default" and derived else ""
        shown = _masked(shown, rule.secrecy == "value", secrets)
        report.settings.append(SettingLine(rule.variable, shown, origin, " ".join(messages) or None))
    for name in sorted(source.values):
        if (parsed_name := rules.workspace_variable_name(name)) is None:
            continue
        workspace_id, suffix = parsed_name
        value = settings.workspace_variable(workspace_id, suffix) if workspace_id is not None else None
        if workspace_id is not None and not rules.WORKSPACE_VARIABLES[suffix].fails_workspace_only:
            if value is not None:  # an invalid one is a setting problem
                report.workspace_settings.append(SettingLine(name, _display(value), source.origin(name)))
            continue
        malformed = rules.malformed_variables_sentence([name]) + "."  # an id-less name applies to no workspace
        trouble = settings.workspace_variable_problem(workspace_id, suffix) if workspace_id is not None else malformed
        shown = source.values[name] if trouble is not None else _display(value)
        shown = _masked(shown, rules.WORKSPACE_VARIABLES[suffix].secret, secrets)
        report.workspace_addresses.append(SettingLine(name, shown, source.origin(name), trouble))
    for variable, messages in by_variable.items():  # a problem reported under another name
        report.settings.append(SettingLine(variable, "", source.origin(variable), " ".join(messages)))
    return report


def _masked(value: str, secret: bool, secrets: list[str]) -> str:
    return ("********" if value.strip() else "") if secret else redact(value.strip(), secrets)


def _display(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"  # as a .env writes it
    if isinstance(value, (tuple, list)):
        return ", ".join(str(item) for item in value)
    return f"{value:g}" if isinstance(value, float) else str(value)
