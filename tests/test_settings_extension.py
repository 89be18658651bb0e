"""A per-workspace variable or a workspace document field is one table entry in settings.py.

Registered in WORKSPACE_VARIABLES or RULES (here by monkeypatching), a new one is parsed,
near-miss checked, reported as unmatched or malformed, and projected by the workspace list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from seeding import add_workspace
from wa_export import settings as settings_module
from wa_export.export.results import unmatched_variable_warnings
from wa_export.settings import (
    RULES,
    WORKSPACE_VARIABLES,
    SettingRule,
    Settings,
    probable_setting,
    validate_environment,
)
from wa_export.store.connection import open_store
from wa_export.workspace_settings import WorkspaceSetting

WORKSPACE = "65a1b2c3d4e5f60718293a4b"


@dataclass(frozen=True)
class ColourSettings(Settings):
    export_colour_field: str | None = None


def _colour(value: str) -> str:
    if value.strip().lower() not in ("red", "blue"):
        raise ValueError("must be red or blue")
    return value.strip().lower()


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.chdir(tmp_path)  # never the developer's .env
    colour = WorkspaceSetting("COLOUR", "EXPORT_COLOUR_FIELD", str, _colour, lambda _: None, "none")
    monkeypatch.setattr(settings_module, "WORKSPACE_VARIABLES", {**WORKSPACE_VARIABLES, "COLOUR": colour})
    colour_field = ("a colour", "brand.colour")
    field_rule = SettingRule(variable="EXPORT_COLOUR_FIELD", document_field=colour_field, field="export_colour_field")
    monkeypatch.setattr(settings_module, "RULES", (*RULES, field_rule))
    monkeypatch.setattr(settings_module, "Settings", ColourSettings)


def _validate(values: dict[str, str]) -> tuple[Settings, list[str]]:
    source = settings_module.read_configuration(None, values)
    settings, problems = validate_environment(source)
    return settings, [problem.variable for problem in problems]


@pytest.mark.usefixtures("registered")
def test_a_registered_workspace_variable_is_parsed_checked_and_reported() -> None:
    malformed = "WORKSPACE_1234_COLOUR"
    settings, problems = _validate(
        {
            f"WORKSPACE_{WORKSPACE.upper()}_COLOUR": " Red ",
            f"WORKSPACE_{WORKSPACE}_EMAIL": "a@acme.test",
            malformed: "x",
        }
    )
    assert problems == []
    assert settings.workspace_variable(WORKSPACE, "COLOUR") == "red"
    assert settings.workspace_variable(WORKSPACE, "EMAIL") == ("a@acme.test",)
    assert settings.workspace_variable("0" * 24, "COLOUR") is None
    assert settings.malformed_workspace_variables == {malformed: "COLOUR"}
    unmatched = unmatched_variable_warnings(settings, [])
    assert {warning.variable for warning in unmatched} == {
        malformed,
        f"WORKSPACE_{WORKSPACE}_COLOUR",
        f"WORKSPACE_{WORKSPACE}_EMAIL",
    }
    assert probable_setting(f"WORKSPACE_{WORKSPACE}_COLOR") == f"WORKSPACE_{WORKSPACE}_COLOUR"
    assert probable_setting(f"WORKSPACE_{WORKSPACE}_COLOUR") is None
    # Registered as a configuration error (exit 2), unlike EMAIL, which fails its workspace alone.
    invalid, problems = _validate({f"WORKSPACE_{WORKSPACE}_COLOUR": "green", f"WORKSPACE_{WORKSPACE}_EMAIL": "bad"})
    assert problems == [f"WORKSPACE_{WORKSPACE}_COLOUR"]
    assert invalid.workspace_variable_problem(WORKSPACE, "COLOUR") is None
    assert invalid.workspace_variable_problem(WORKSPACE, "EMAIL") is not None


@pytest.mark.usefixtures("registered")
def test_a_registered_document_field_is_validated_and_projected_by_the_workspace_list(mongo_db, make_env) -> None:
    assert _validate({"EXPORT_COLOUR_FIELD": "status.colour"})[1] == ["EXPORT_COLOUR_FIELD"]
    both = add_workspace(mongo_db, "Both")
    mongo_db.workspaces.update_one({"_id": both}, {"$set": {"brand": {"colour": "red"}, "settings.email": "a@b.test"}})
    colour_only = add_workspace(mongo_db, "Colour only")
    mongo_db.workspaces.update_one({"_id": colour_only}, {"$set": {"brand.colour": ["blue"]}})
    settings, problems = _validate(
        make_env(EXPORT_RECIPIENTS_FIELD="settings.email", EXPORT_COLOUR_FIELD="brand.colour")
    )
    assert problems == []
    assert settings.document_fields() == {
        "EXPORT_RECIPIENTS_FIELD": "settings.email",
        "EXPORT_COLOUR_FIELD": "brand.colour",
    }
    with open_store(settings) as store:
        listed = {workspace.id: workspace.document_values for workspace in store.active_workspaces()}
    assert listed == {
        str(both): {"EXPORT_RECIPIENTS_FIELD": "a@b.test", "EXPORT_COLOUR_FIELD": "red"},
        str(colour_only): {"EXPORT_COLOUR_FIELD": ["blue"]},
    }
