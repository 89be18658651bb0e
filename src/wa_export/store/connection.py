"""MongoDB access: the connection, the collections, the workspace list (reads of messages and chats: arrivals.py)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, MongoClient, ReadPreference
from pymongo.collection import Collection
from pymongo.errors import ConfigurationError, OperationFailure, PyMongoError

from wa_export.clock import as_utc, as_utc_or_none, to_millis
from wa_export.errors import ConfigError, MongoUnavailable, UnknownWorkspace
from wa_export.redaction import redact
from wa_export.settings import ID_FORM, Settings
from wa_export.units import count_noun, count_or_zero

SERVICE_NAME = "excel_export_scheduler"
MESSAGE_BATCH_SIZE = 2_000
CHAT_IDS_PER_QUERY = 5_000  # arrivals.in_chunks
MESSAGE_PROJECTION = {"chat_id": 1, "direction": 1, "is_ai_generated": 1, "content": 1, "timestamp": 1}
CHAT_PROJECTION = {"phone_number": 1, "customer_phone": 1}
# Servers that send no code (mongoeco, some proxies) still say it in words.
AUTH_FAILED_TEXT = re.compile(r"auth(entication)? failed|bad auth|sasl.*fail", re.IGNORECASE)
AUTH_REQUIRED_TEXT = re.compile(r"authentication required|requires authentication", re.IGNORECASE)
DATABASES_PROBED = 50

Index = tuple[str, list[tuple[str, int]]]
Document = dict[str, Any]
Documents = Collection[Document]


def supporting_indexes(arrival_field: str) -> list[Index]:
    """What the export's queries and `verify` rely on: `health` checks them, nothing creates them."""
    arrival_pass = [] if arrival_field == "_id" else [("messages", [(arrival_field, ASCENDING)])]
    return [
        ("chats", [("workspace_id", ASCENDING)]),
        *arrival_pass,
        ("messages", [("chat_id", ASCENDING), (arrival_field, ASCENDING)]),
        ("messages", [("chat_id", ASCENDING), ("timestamp", ASCENDING)]),
        ("export_logs", [("attachment_sha256", ASCENDING)]),
    ]


@dataclass(frozen=True)
class Workspace:
    id: str  # 24-hex string form of the ObjectId
    name: str
    status: str
    object_id: ObjectId
    # Setting name -> raw value of each configured document field (Settings.document_fields); a missing one is absent.
    document_values: Mapping[str, object] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class Chat:
    phone_number: object
    customer_phone: object


def authentication_problem(error: BaseException) -> str | None:
    if not isinstance(error, PyMongoError):
        return None
    details = getattr(error, "details", None)
    message = (str(details.get("errmsg") or "") if isinstance(details, dict) else "") or str(error)
    if getattr(error, "code", None) in (18, 8000) or AUTH_FAILED_TEXT.search(message):  # 8000: Atlas's "bad auth"
        return "MongoDB refused the credentials in MONGODB_URI (authentication failed); check the user name and password (percent-encoded in the URI) and authSource, the database the user was created in (often ?authSource=admin)."
    if AUTH_REQUIRED_TEXT.search(message):
        return "MongoDB requires a login: put the user name and password in MONGODB_URI, e.g. mongodb://user:password@host:27017/?authSource=admin."
    return None


def describe_mongo_error(error: BaseException, settings: Settings, *, query: bool = False) -> str:
    """One sentence without the URI's password; with `query` a refused query names the database to grant."""
    text = authentication_problem(error)
    if text is None and isinstance(error, ConfigurationError):
        text = f"MONGODB_URI cannot be used: {error}."
    elif text is None and query and isinstance(error, OperationFailure):
        detail = str(error.details.get("errmsg") if error.details else error)[:300]
        text = f"MongoDB refused the query ({detail}); check that the MONGODB_URI user may read database {settings.mongodb_database!r}."
    elif text is None:
        detail = str(error).split(", Timeout:")[0].split(" (configured timeouts")[0]
        text = f"MongoDB is unreachable ({detail[:300]}); check MONGODB_URI, that the server is running and that this host may connect to it."
    return redact(text, settings.secrets())


@contextmanager
def mongo_errors(settings: Settings, *, queries: bool = True) -> Iterator[None]:
    """Any MongoDB error is "MongoDB unreachable" (exit 3), also after the initial ping."""
    try:
        yield
    except PyMongoError as error:
        raise MongoUnavailable(describe_mongo_error(error, settings, query=queries)) from None


def connect(settings: Settings) -> MongoClient[Document]:
    """A client that fails within the configured timeout instead of pymongo's 30 s default."""
    timeout_ms = int(settings.mongodb_timeout_seconds * 1000)
    options: dict[str, Any] = dict(tz_aware=True, appname="wa-export", retryWrites=True, retryReads=True)
    options |= dict(serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms)
    with mongo_errors(settings, queries=False):
        return MongoClient(settings.mongodb_uri, socketTimeoutMS=max(timeout_ms * 12, 60_000), **options)


def parse_workspace_id(raw: str) -> ObjectId:
    if (object_id := as_object_id(raw.strip())) is None:
        raise UnknownWorkspace(f"{raw!r} is not a workspace id: expected {ID_FORM}.")
    return object_id


class Store:
    def __init__(self, client: MongoClient[Document], settings: Settings) -> None:
        self.client, self.settings = client, settings
        # The primary, whatever MONGODB_URI says: a lagging secondary would hide messages a cursor then skips for good.
        self.db = client.get_database(settings.mongodb_database, read_preference=ReadPreference.PRIMARY)
        self.workspaces, self.chats, self.messages = self.db["workspaces"], self.db["chats"], self.db["messages"]
        self.export_logs, self.system_logs = self.db["export_logs"], self.db["system_logs"]
        self.export_state: Documents = self.db["export_state"]

    @classmethod
    def open(cls, settings: Settings) -> Store:
        store = cls(connect(settings), settings)
        try:
            with mongo_errors(settings, queries=False):
                store.client.admin.command("ping")
        except MongoUnavailable:
            store.client.close()  # do not leave the client's monitor threads behind
            raise
        return store

    def close(self) -> None:
        self.client.close()

    def database_now(self) -> datetime:
        """The database server's clock (`hello.localTime`) at BSON precision, one for every host (docs/design.md)."""
        with mongo_errors(self.settings, queries=False):
            local_time = self.client.admin.command("hello").get("localTime")
        if not isinstance(local_time, datetime):
            raise MongoUnavailable(
                "MongoDB did not report its clock (hello.localTime); wa-export needs a MongoDB 4.4 or newer server."
            )
        return to_millis(as_utc(local_time))

    def _holds_workspaces(self, database: str) -> bool | None:  # None: we may not look
        try:
            return bool(self.client[database].list_collection_names(filter={"name": "workspaces"}))
        except OperationFailure:
            return None

    def workspaces_collection_problem(self) -> str | None:
        """The sentence for a MONGODB_DATABASE without a `workspaces` collection; None if it has one or we may not look."""
        if self._holds_workspaces(self.settings.mongodb_database) is not False:
            return None
        try:  # naming the databases that have one costs one command each; one we may not read is not named
            names = sorted(set(self.client.list_database_names()) - {"admin", "config", "local"})[:DATABASES_PROBED]
            elsewhere = ", ".join(name for name in names if self._holds_workspaces(name))
            where = f" (databases that have one: {elsewhere})" if elsewhere else " (no database on this server has one)"
        except OperationFailure:
            where = ""
        return f"MONGODB_DATABASE is {self.settings.mongodb_database!r}, but that database has no workspaces collection{where}; set MONGODB_DATABASE to the platform's database."

    def require_workspaces_collection(self) -> None:
        """ConfigError (exit 2) for a database that is not the platform's: nothing reads or writes there."""
        if (problem := self.workspaces_collection_problem()) is not None:
            raise ConfigError(problem)

    def active_workspaces(self) -> list[Workspace]:
        return self.list_workspaces().workspaces

    def workspaces_by_id(self, raw_ids: Sequence[str]) -> list[Workspace]:
        return self.list_workspaces(raw_ids).workspaces

    def list_workspaces(self, raw_ids: Sequence[str] | None = None) -> WorkspaceListing:
        """Every active workspace, or the named ones in order (any status); finding none checks the database."""
        fields = self.settings.document_fields()
        paths = set(fields.values())
        # A path below another projected one would be a path collision: the shorter one brings it along.
        projection = {"name": 1, "status": 1}
        projection |= {path: 1 for path in sorted(paths) if not any(path.startswith(f"{p}.") for p in paths)}
        if raw_ids is None:
            listing = one_per_id(self.workspaces.find({"status": "active"}, projection).sort("_id", ASCENDING), fields)
            if not listing.workspaces:
                self.require_workspaces_collection()
            return listing
        ids = [str(parse_workspace_id(raw)) for raw in raw_ids]
        listing = one_per_id(self.workspaces.find({"_id": {"$in": both_forms(map(ObjectId, ids))}}, projection), fields)
        found = {workspace.id: workspace for workspace in listing.workspaces}
        if missing := [id_ for id_ in ids if id_ not in found]:
            self.require_workspaces_collection()
            raise UnknownWorkspace(
                f"No workspace with id {', '.join(missing)} in database {self.settings.mongodb_database!r}; check the id (wa-export stats lists active workspaces)."
            )
        return WorkspaceListing([found[id_] for id_ in dict.fromkeys(ids)], listing.duplicates)

    def stored_twice(self) -> list[DuplicateWorkspace]:
        """Ids held by several documents: one query for the string `_id`s, one for the ObjectIds they spell."""
        projection = {"name": 1, "status": 1}
        strings = list(self.workspaces.find({"_id": {"$type": "string"}}, projection))
        spelled = [object_id for document in strings if (object_id := as_object_id(document["_id"])) is not None]
        if not spelled:
            return []
        documents = list(self.workspaces.find({"_id": {"$in": spelled}}, projection)) + strings
        return one_per_id(sorted(documents, key=lambda d: str(d["_id"]))).duplicates

    def missing_indexes(self) -> list[Index]:
        """Supporting indexes that are absent: a prefix match of an existing index counts as present."""
        names = ("chats", "messages", "export_logs")  # a stored 1.0 equals the wanted 1
        existing = {name: [list(index["key"].items()) for index in self.db[name].list_indexes()] for name in names}
        wanted = supporting_indexes(self.settings.export_arrival_field)
        return [(name, keys) for name, keys in wanted if not any(have[: len(keys)] == keys for have in existing[name])]


def open_store(settings: Settings) -> closing[Store]:
    return closing(Store.open(settings))


def field_at(document: Mapping[str, Any], path: str) -> object:
    value: object = document
    for segment in path.split("."):
        value = value.get(segment) if isinstance(value, Mapping) else None
    return value


# How a dataclass field is read from a stored document, by its type: a value of the wrong type reads as absent.
FIELD_READERS: dict[str, Callable[[object], Any]] = {
    "str": lambda value: value if isinstance(value, str) else "",
    "str | None": lambda value: value if isinstance(value, str) else None,
    "int": count_or_zero,
    "bool": lambda value: value is True,
    "int | None": lambda value: value if isinstance(value, int) and not isinstance(value, bool) else None,
    "datetime | None": as_utc_or_none,
    "ObjectId | None": lambda value: value if isinstance(value, ObjectId) else None,
    "Key | None": lambda value: value if isinstance(value, ObjectId | datetime) else None,
    "tuple[str, ...]": lambda value: tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else (),
}


def read_fields(kind: Any, stored: Mapping[str, Any], **named: Any) -> dict[str, Any]:
    """The fields of dataclass `kind` from a stored document, each by FIELD_READERS unless `named`."""
    return named | {f.name: FIELD_READERS[str(f.type)](stored.get(f.name)) for f in fields(kind) if f.name not in named}


def as_object_id(value: object) -> ObjectId | None:
    """An id stored as an ObjectId or as its 24-hex string form; anything else is no id."""
    if isinstance(value, str) and len(value) == 24 and ObjectId.is_valid(value):
        return ObjectId(value)
    return value if isinstance(value, ObjectId) else None


def both_forms(ids: Iterable[ObjectId]) -> list[object]:
    """Each id as an ObjectId and as its string, the two forms platform writers use."""
    return [form for object_id in ids for form in (object_id, str(object_id))]


@dataclass(frozen=True)
class DuplicateWorkspace:
    """One workspace id held by several `workspaces` documents, and the one the export uses."""

    id: str
    documents: tuple[tuple[str, str, str], ...]  # (`_id` type, name, status) of each, the one used first

    def sentence(self) -> str:
        """One clause an operator can act on (no final period: warnings and checks add their own)."""
        forms = [f"a {kind} _id ({name or 'unnamed'}, {state or 'no status'})" for kind, name, state in self.documents]
        (kind, name, _), others = self.documents[0], len(self.documents) - 1
        other = "document" if others == 1 else count_noun(others, "document")
        return f"workspace {self.id} is stored {count_noun(len(self.documents), 'time')} in the workspaces collection, with {' and '.join(forms)}: one tenant, so its messages are exported once, as the {kind} _id document ({name or 'unnamed'}); delete the other {other}"


@dataclass(frozen=True)
class WorkspaceListing:
    workspaces: list[Workspace]
    duplicates: list[DuplicateWorkspace] = field(default_factory=list)


def one_per_id(documents: Iterable[Document], fields: Mapping[str, str] | None = None) -> WorkspaceListing:
    """One Workspace per id, in order: a tenant stored both ways is one, its ObjectId document first, the rest duplicates."""
    by_id: dict[str, list[Document]] = {}
    for document in documents:
        by_id.setdefault(str(as_object_id(document["_id"]) or document["_id"]), []).append(document)
    listing = WorkspaceListing([])
    for workspace_id, group in by_id.items():
        group.sort(key=lambda document: not isinstance(document["_id"], ObjectId))  # stable: else the order read
        kinds = ["string" if isinstance(d["_id"], str) else type(d["_id"]).__name__ for d in group]
        seen = tuple(
            (kind, str(d.get("name") or ""), str(d.get("status") or "")) for kind, d in zip(kinds, group, strict=True)
        )
        first = group[0]
        values = {name: value for name, path in (fields or {}).items() if (value := field_at(first, path)) is not None}
        object_id = as_object_id(first["_id"]) or first["_id"]
        listing.workspaces.append(Workspace(workspace_id, seen[0][1], seen[0][2], object_id, values))
        if len(group) > 1:
            listing.duplicates.append(DuplicateWorkspace(workspace_id, seen))
    return listing
