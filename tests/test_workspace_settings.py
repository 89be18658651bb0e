"""The one resolver of per-workspace settings: variable, then document field, then the global default."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from wa_export import settings as settings_module
from wa_export.settings import load_settings, read_configuration, validate_environment
from wa_export.workspace_settings import EVERY, SCHEDULE, TIME_ZONE, WorkspaceSetting, parse_schedule, resolve

WORKSPACE_ID = "65f0a1b2c3d4e5f6a7b8c9d0"
GLOBAL_ZONE = ZoneInfo("Asia/Dubai")


@dataclass
class FakeSettings:
    """Settings as the resolver sees them: parsed variables, their problems, the configured field paths."""

    variables: dict[tuple[str, str], object] = field(default_factory=dict)
    problems: dict[tuple[str, str], str] = field(default_factory=dict)
    fields: dict[str, str] = field(default_factory=dict)
    export_timezone: ZoneInfo = GLOBAL_ZONE

    def workspace_variable(self, workspace_id: str, suffix: str) -> object | None:
        return self.variables.get((workspace_id.lower(), suffix))

    def workspace_variable_problem(self, workspace_id: str, suffix: str) -> str | None:
        return self.problems.get((workspace_id.lower(), suffix))

    def document_fields(self) -> Mapping[str, str]:
        return self.fields


@dataclass
class FakeWorkspace:
    id: str = WORKSPACE_ID
    document_values: Mapping[str, object] = field(default_factory=dict)


def test_without_variable_or_field_the_global_default_applies() -> None:
    zone = resolve(TIME_ZONE, FakeWorkspace(), FakeSettings())
    assert (zone.value, zone.source, zone.origin, zone.problem) == (GLOBAL_ZONE, "default", "EXPORT_TIMEZONE", None)
    assert zone.where == "default (EXPORT_TIMEZONE)"
    schedule = resolve(SCHEDULE, FakeWorkspace(), FakeSettings())
    assert (schedule.value, schedule.source) == (EVERY, "default")


def test_the_document_field_comes_before_the_default() -> None:
    settings = FakeSettings(fields={"EXPORT_TIMEZONE_FIELD": "settings.tz", "EXPORT_SCHEDULE_FIELD": "settings.when"})
    workspace = FakeWorkspace(
        document_values={"EXPORT_TIMEZONE_FIELD": "America/New_York", "EXPORT_SCHEDULE_FIELD": "daily@17:30, 08:00"}
    )
    zone = resolve(TIME_ZONE, workspace, settings)
    assert (zone.value, zone.source, zone.origin) == (ZoneInfo("America/New_York"), "database", "settings.tz")
    assert zone.where == "workspace field settings.tz"
    schedule = resolve(SCHEDULE, workspace, settings)
    assert schedule.value == parse_schedule("daily@08:00,17:30")
    assert schedule.as_dict() == {
        "value": "daily@08:00,17:30",
        "source": "database",
        "origin": "settings.when",
        "problem": None,
    }


def test_the_variable_wins_over_the_document_field() -> None:
    settings = FakeSettings(
        variables={(WORKSPACE_ID, "TIMEZONE"): ZoneInfo("Europe/Berlin")},
        fields={"EXPORT_TIMEZONE_FIELD": "settings.tz"},
    )
    workspace = FakeWorkspace(document_values={"EXPORT_TIMEZONE_FIELD": "not a zone at all"})
    zone = resolve(TIME_ZONE, workspace, settings)
    assert (zone.value, zone.source, zone.origin, zone.problem) == (
        ZoneInfo("Europe/Berlin"),
        "environment",
        f"WORKSPACE_{WORKSPACE_ID}_TIMEZONE",
        None,
    )
    assert zone.where == f"environment variable WORKSPACE_{WORKSPACE_ID}_TIMEZONE"


@pytest.mark.parametrize("value", [None, "", "   "])
def test_an_empty_document_value_is_unset(value: object) -> None:
    settings = FakeSettings(fields={"EXPORT_SCHEDULE_FIELD": "schedule"})
    values = {} if value is None else {"EXPORT_SCHEDULE_FIELD": value}
    resolved = resolve(SCHEDULE, FakeWorkspace(document_values=values), settings)
    assert (resolved.value, resolved.source, resolved.problem) == (EVERY, "default", None)


def test_a_field_value_is_ignored_when_its_setting_is_not_configured() -> None:
    workspace = FakeWorkspace(document_values={"EXPORT_SCHEDULE_FIELD": "sometimes"})
    assert resolve(SCHEDULE, workspace, FakeSettings()).value == EVERY


def test_an_invalid_document_value_is_that_workspaces_problem_naming_workspace_field_and_value() -> None:
    settings = FakeSettings(fields={"EXPORT_SCHEDULE_FIELD": "settings.schedule"})
    resolved = resolve(SCHEDULE, FakeWorkspace(document_values={"EXPORT_SCHEDULE_FIELD": "sometimes"}), settings)
    assert resolved.value is None
    assert (resolved.source, resolved.origin) == ("database", "settings.schedule")
    assert resolved.problem == (
        f"settings.schedule of workspace {WORKSPACE_ID} holds 'sometimes', which is not a schedule (use every, "
        "hourly, daily@HH:MM[,HH:MM…] such as daily@08:00,17:30, or off); fix it in the platform or set "
        f"WORKSPACE_{WORKSPACE_ID}_SCHEDULE."
    )


def test_a_document_value_that_is_no_string_is_refused_by_type() -> None:
    settings = FakeSettings(fields={"EXPORT_TIMEZONE_FIELD": "tz"})
    resolved = resolve(TIME_ZONE, FakeWorkspace(document_values={"EXPORT_TIMEZONE_FIELD": 5.5}), settings)
    assert resolved.problem == (
        f"tz of workspace {WORKSPACE_ID} holds a value of type float, not a string; fix it in the platform or "
        f"set WORKSPACE_{WORKSPACE_ID}_TIMEZONE."
    )


def test_a_hostile_document_value_is_cut_in_the_sentence() -> None:
    settings = FakeSettings(fields={"EXPORT_TIMEZONE_FIELD": "tz"})
    resolved = resolve(TIME_ZONE, FakeWorkspace(document_values={"EXPORT_TIMEZONE_FIELD": "x" * 500}), settings)
    assert resolved.problem is not None
    assert "x" * 80 + "…" in resolved.problem
    assert "x" * 81 not in resolved.problem


def test_a_secret_setting_never_shows_its_value(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def must_be_long(text: str) -> str:
        if len(text) < 8:
            raise ValueError("is shorter than 8 characters")
        return text

    password = WorkspaceSetting("WORKBOOK_PASSWORD", "PASSWORD_FIELD", str, must_be_long, lambda _: None, "none", True)
    settings = FakeSettings(fields={"PASSWORD_FIELD": "secret.pw"})
    short = resolve(password, FakeWorkspace(document_values={"PASSWORD_FIELD": "hunter2"}), settings)
    assert short.problem is not None
    assert "hunter2" not in short.problem
    assert "holds a value, which is shorter than 8 characters" in short.problem
    good = resolve(password, FakeWorkspace(document_values={"PASSWORD_FIELD": "correct horse"}), settings)
    assert good.as_dict(secret=True)["value"] == "set"
    assert resolve(password, FakeWorkspace(), settings).value is None
    variable = f"WORKSPACE_{WORKSPACE_ID}_WORKBOOK_PASSWORD"
    monkeypatch.setitem(settings_module.WORKSPACE_VARIABLES, "WORKBOOK_PASSWORD", password)
    assert _problems(monkeypatch, tmp_path, {variable: "hunter2"}) == [f"{variable} is shorter than 8 characters."]


def test_a_variable_problem_that_fails_only_its_workspace_is_passed_on() -> None:
    settings = FakeSettings(problems={(WORKSPACE_ID, "SCHEDULE"): "WORKSPACE_… is broken."})
    resolved = resolve(SCHEDULE, FakeWorkspace(), settings)
    assert (resolved.value, resolved.source, resolved.problem) == (None, "environment", "WORKSPACE_… is broken.")


def _problems(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, environ: dict[str, str]) -> list[str]:
    monkeypatch.chdir(tmp_path)  # never the developer's .env
    return [problem.message for problem in validate_environment(read_configuration(None, environ))[1]]


def test_a_workspace_variable_sentence_names_the_variable_and_the_value(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    variable = f"WORKSPACE_{WORKSPACE_ID}_SCHEDULE"
    monkeypatch.chdir(tmp_path)
    settings = load_settings(environ={variable: " hourly "})
    assert settings.workspace_variable(WORKSPACE_ID, "SCHEDULE") == parse_schedule("hourly")
    assert _problems(monkeypatch, tmp_path, {variable: "sometimes"}) == [
        f"{variable} 'sometimes' is not a schedule (use every, hourly, daily@HH:MM[,HH:MM…] such as "
        "daily@08:00,17:30, or off)."
    ]
    [zone] = _problems(monkeypatch, tmp_path, {f"WORKSPACE_{WORKSPACE_ID}_TIMEZONE": "Mars/Base"})
    assert "TIMEZONE 'Mars/Base' is not a known IANA time zone" in zone
