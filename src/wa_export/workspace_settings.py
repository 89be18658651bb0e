"""A workspace's own value of a setting: WORKSPACE_<ID>_<SUFFIX>, else a field of its document, else the default."""

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


class WorkspaceView(Protocol):  # wa_export.store.connection.Workspace
    @property
    def id(self) -> str: ...

    @property
    def document_values(self) -> Mapping[str, object]: ...


@dataclass(frozen=True)
class WorkspaceSetting(Generic[T]):
    suffix: str  # WORKSPACE_<ID>_<suffix>
    field_setting: str  # the setting naming its document field, e.g. EXPORT_SCHEDULE_FIELD
    kind: type[T]  # what the variable's parser and `parse` return
    parse: Callable[[str], T]  # a document string -> value; ValueError completing "<value> …"
    default: Callable[[Any], T | None]  # from the Settings: the global value, or None for none
    default_origin: str  # how `stats`/`config` name the default, e.g. EXPORT_TIMEZONE
    secret: bool = False  # the value is never shown, not even when invalid


@dataclass(frozen=True)
class Resolved(Generic[T]):
    value: T | None
    source: Literal["environment", "database", "default"]
    origin: str  # the variable, the document field's path, or the default's name
    problem: str | None = None

    @property
    def where(self) -> str:  # as `stats` and `config` say it
        kind = {"environment": "environment variable", "database": "workspace field"}.get(self.source)
        return f"{kind} {self.origin}" if kind else f"default ({self.origin})"

    def as_dict(self, *, secret: bool = False) -> dict[str, Any]:
        shown = None if self.value is None else ("set" if secret else str(self.value))
        return {"value": shown, "source": self.source, "origin": self.origin, "problem": self.problem}


def resolve(setting: WorkspaceSetting[T], workspace: WorkspaceView, settings: Settings) -> Resolved[T]:
    """Its variable, else its document field (missing, null or blank: unset), else the default; with a `problem`
    (one sentence naming the workspace, the field and the value), that workspace alone fails."""
    variable = f"WORKSPACE_{workspace.id}_{setting.suffix}"
    if (problem := settings.workspace_variable_problem(workspace.id, setting.suffix)) is not None:
        return Resolved(None, "environment", variable, problem)
    if isinstance(configured := settings.workspace_variable(workspace.id, setting.suffix), setting.kind):
        return Resolved(configured, "environment", variable)
    # The list holds a value only for a configured field: the common case asks nothing more.
    raw = workspace.document_values.get(setting.field_setting)
    path = settings.document_fields().get(setting.field_setting) if raw is not None else None
    if path is None or raw is None or (isinstance(raw, str) and not raw.strip()):
        return Resolved(setting.default(settings), "default", setting.default_origin)
    where, fix = f"{path} of workspace {workspace.id}", f"fix it in the platform or set {variable}"
    if not isinstance(raw, str):
        problem = f"{where} holds a value of type {type(raw).__name__}, not a string; {fix}."
        return Resolved(None, "database", path, problem)
    try:
        return Resolved(setting.parse(raw) if setting.secret else _parsed(setting.parse, raw), "database", path)
    except ValueError as error:
        shown = "a value" if setting.secret else shown_value(raw)
        return Resolved(None, "database", path, f"{where} holds {shown}, which {error}; {fix}.")


# The workspace's zone: its Timestamp cells, file names, email text and schedule times.
TIME_ZONE = WorkspaceSetting(
    "TIMEZONE", "EXPORT_TIMEZONE_FIELD", ZoneInfo, parse_time_zone, lambda s: s.export_timezone, "EXPORT_TIMEZONE"
)
# When scheduled runs deliver the workspace (wa_export.schedule).
SCHEDULE = WorkspaceSetting("SCHEDULE", "EXPORT_SCHEDULE_FIELD", Schedule, parse_schedule, lambda _: EVERY, "every")


def in_zone(settings: Settings, zone: ZoneInfo) -> Settings:
    """Its zone in place of EXPORT_TIMEZONE, which every writer reads."""
    return settings if zone == settings.export_timezone else dataclasses.replace(settings, export_timezone=zone)


def environment_parser(parse: Callable[[str], T], *, secret: bool = False) -> Callable[[str, str], T]:
    """`parse` for WORKSPACE_VARIABLES: ConfigError naming the variable when invalid."""

    def parse_variable(written: str, variable: str) -> T:
        try:
            return parse(written)
        except ValueError as error:
            raise ConfigError(f"{variable}{'' if secret else ' ' + shown_value(written)} {error}.") from None

    return parse_variable


@lru_cache(maxsize=4096)
def _parsed(parse: Callable[[str], T], raw: str) -> T:
    # Tenants share few values (zones, schedules): each is parsed once per process.
    return parse(raw)


def shown_value(text: str) -> str:
    """Quoted; a hostile one is cut, not echoed whole."""
    text = text.strip()
    return repr(text if len(text) <= 80 else text[:80] + "…")
