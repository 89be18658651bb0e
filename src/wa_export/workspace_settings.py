"""A workspace's own value of a setting: WORKSPACE_<ID>_<SUFFIX>, else a field of its document, else the default.

One resolver for every per-workspace setting (time zone, schedule, ...). The variable was parsed
when the configuration was loaded (an invalid one is a configuration error, or that workspace's
problem, as its registry entry says); the document field was read with the workspace list, so
resolving costs no query. An invalid document value fails that workspace alone, with one sentence
naming the workspace, the field and the value.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Generic, Literal, Protocol, TypeVar
from zoneinfo import ZoneInfo

from wa_export.errors import ConfigError
from wa_export.schedule import EVERY, Schedule, parse_schedule, parse_time_zone

if TYPE_CHECKING:  # settings imports this module (its registry's parsers)
    from wa_export.settings import Settings

T = TypeVar("T")
Source = Literal["environment", "database", "default"]
_SHOWN_MAX = 80  # a hostile document value is cut, not echoed whole


class SettingsView(Protocol):
    """What resolving needs from the settings (wa_export.settings.Settings)."""

    def workspace_variable(self, workspace_id: str, suffix: str) -> object | None: ...

    def workspace_variable_problem(self, workspace_id: str, suffix: str) -> str | None: ...

    def document_fields(self) -> Mapping[str, str]: ...


class WorkspaceView(Protocol):
    """What resolving needs from a workspace (wa_export.store.connection.Workspace)."""

    @property
    def id(self) -> str: ...

    @property
    def document_values(self) -> Mapping[str, object]: ...


@dataclass(frozen=True)
class WorkspaceSetting(Generic[T]):
    """One per-workspace setting: its variable's suffix, the setting naming its document field, how a
    document value is read, and the default."""

    suffix: str  # WORKSPACE_<ID>_<suffix>
    field_setting: str  # e.g. EXPORT_SCHEDULE_FIELD: the setting whose value is the dotted path
    kind: type[T]  # what the variable's parser and `parse` return
    # A document string -> value; ValueError whose text completes "<value> …" (e.g. "is not a schedule (…)").
    parse: Callable[[str], T]
    default: Callable[[Any], T | None]  # from the Settings: the global value, or None for none
    default_origin: str  # how `stats`/`config` name the default, e.g. EXPORT_TIMEZONE
    secret: bool = False  # the value is never shown, not even when invalid

    def variable(self, workspace_id: str) -> str:
        return f"WORKSPACE_{workspace_id}_{self.suffix}"


@dataclass(frozen=True)
class Resolved(Generic[T]):
    """A workspace's value of one setting and where it came from; with a `problem`, that workspace fails."""

    value: T | None
    source: Source
    origin: str  # the variable, the document field's path, or the default's name
    problem: str | None = None  # one sentence naming the workspace, the field or variable and the value

    @property
    def where(self) -> str:
        """Where the value comes from, as `stats` and `config` say it."""
        if self.source == "environment":
            return f"environment variable {self.origin}"
        if self.source == "database":
            return f"workspace field {self.origin}"
        return f"default ({self.origin})"

    def as_dict(self, *, secret: bool = False) -> dict[str, Any]:
        shown = None if self.value is None else ("set" if secret else str(self.value))
        return {"value": shown, "source": self.source, "origin": self.origin, "problem": self.problem}


def resolve(setting: WorkspaceSetting[T], workspace: WorkspaceView, settings: SettingsView) -> Resolved[T]:
    """The workspace's value: its variable, else its document field (a missing, null or blank one is
    unset), else the default. Never raises: an unusable value is the result's `problem`."""
    variable = setting.variable(workspace.id)
    problem = settings.workspace_variable_problem(workspace.id, setting.suffix)
    if problem is not None:
        return Resolved(None, "environment", variable, problem)
    configured = settings.workspace_variable(workspace.id, setting.suffix)
    if isinstance(configured, setting.kind):
        return Resolved(configured, "environment", variable)
    # The list holds a value only for a configured field: the common case asks nothing more.
    raw = workspace.document_values.get(setting.field_setting)
    path = settings.document_fields().get(setting.field_setting) if raw is not None else None
    if path is None or raw is None or (isinstance(raw, str) and not raw.strip()):
        return Resolved(setting.default(settings), "default", setting.default_origin)
    where = f"{path} of workspace {workspace.id}"
    fix = f"fix it in the platform or set {variable}"
    if not isinstance(raw, str):
        problem = f"{where} holds a value of type {type(raw).__name__}, not a string; {fix}."
        return Resolved(None, "database", path, problem)
    try:
        value = setting.parse(raw) if setting.secret else _parsed(setting.parse, raw)
        return Resolved(value, "database", path)
    except ValueError as error:
        shown = "a value" if setting.secret else _shown(raw.strip())
        return Resolved(None, "database", path, f"{where} holds {shown}, which {error}; {fix}.")


# The workspace's zone: its Timestamp cells, file names, email text and schedule times.
TIME_ZONE = WorkspaceSetting(
    "TIMEZONE",
    "EXPORT_TIMEZONE_FIELD",
    ZoneInfo,
    parse_time_zone,
    lambda settings: settings.export_timezone,
    "EXPORT_TIMEZONE",
)
# When scheduled runs deliver the workspace (wa_export.schedule).
SCHEDULE = WorkspaceSetting("SCHEDULE", "EXPORT_SCHEDULE_FIELD", Schedule, parse_schedule, lambda _: EVERY, "every")


def in_zone(settings: Settings, zone: ZoneInfo) -> Settings:
    """The settings as one workspace sees them: its zone in place of EXPORT_TIMEZONE, which every writer of cells,
    file names and email text (and the one time formatter, units.local_time) reads."""
    return settings if zone == settings.export_timezone else dataclasses.replace(settings, export_timezone=zone)


def environment_parser(parse: Callable[[str], T], *, secret: bool = False) -> Callable[[str, str], T]:
    """`parse` for a WORKSPACE_<ID>_<SUFFIX> registry entry: (value, variable) -> value, ConfigError naming
    the variable (and the value, unless secret) when invalid."""

    def parse_variable(written: str, variable: str) -> T:
        try:
            return parse(written)
        except ValueError as error:
            shown = "" if secret else f" {_shown(written.strip())}"
            raise ConfigError(f"{variable}{shown} {error}.") from None

    return parse_variable


@lru_cache(maxsize=4096)
def _parsed(parse: Callable[[str], T], raw: str) -> T:
    """Tenants share few values (zones, schedules): each is parsed once per process."""
    return parse(raw)


def _shown(text: str) -> str:
    return repr(text if len(text) <= _SHOWN_MAX else text[:_SHOWN_MAX] + "…")


__all__ = [
    "SCHEDULE",
    "TIME_ZONE",
    "Resolved",
    "SettingsView",
    "Source",
    "WorkspaceSetting",
    "WorkspaceView",
    "environment_parser",
    "in_zone",
    "resolve",
]
