"""MongoDB access: the connection, the collections, the workspace list (reads of messages and chats: arrivals.py)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId
from pymongo import ASCENDING, MongoClient, ReadPreference
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import ConfigurationError, OperationFailure, PyMongoError

from wa_export.clock import as_utc, to_millis
from wa_export.errors import ConfigError, MongoUnavailable, UnknownWorkspace
from wa_export.redaction import redact
from wa_export.settings import ID_FORM, Settings
from wa_export.units import count_noun

SERVICE_NAME = "excel_export_scheduler"
MESSAGE_BATCH_SIZE = 2_000
CHAT_IDS_PER_QUERY = 5_000  # arrivals.in_chunks
MESSAGE_PROJECTION = {"chat_id": 1, "direction": 1, "is_ai_generated": 1, "content": 1, "timestamp": 1}
CHAT_PROJECTION = {"phone_number": 1, "customer_phone": 1}

Index = tuple[str, list[tuple[str, int]]]


def supporting_indexes(arrival_field: str) -> list[Index]:
    """The indexes the export queries and `verify` rely on (`health` checks them; nothing creates them on the platform's data)."""
    if arrival_field == "_id":
        arrival = [("messages", [("chat_id", ASCENDING), ("_id", ASCENDING)])]
    else:
        arrival = [
            ("messages", [(arrival_field, ASCENDING)]),  # the pass over the arrival range
            ("messages", [("chat_id", ASCENDING), (arrival_field, ASCENDING)]),
        ]
    return [
        ("chats", [("workspace_id", ASCENDING)]),  # a workspace's chats
        *arrival,
        ("messages", [("chat_id", ASCENDING), ("timestamp", ASCENDING)]),  # manual windows and stats
        ("export_logs", [("attachment_sha256", ASCENDING)]),  # `verify`: which export a file is
    ]


# Servers that send no code (mongoeco, some proxies) still say it in words.
AUTH_FAILED_TEXT = re.compile(r"auth(entication)? failed|bad auth|sasl.*fail", re.IGNORECASE)
AUTH_REQUIRED_TEXT = re.compile(r"authentication required|requires authentication", re.IGNORECASE)
# Naming the databases that do have a workspaces collection costs one command per database.
DATABASES_PROBED = 50


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
    """The sentence for a refused or missing login, recognised by code and by message; None otherwise."""
    if not isinstance(error, PyMongoError):
        return None
    details = getattr(error, "details", None)
    message = (str(details.get("errmsg") or "") if isinstance(details, dict) else "") or str(error)
    if getattr(error, "code", None) in (18, 8000) or AUTH_FAILED_TEXT.search(message):  # 8000: Atlas's "bad auth"
        return (
            "MongoDB refused the credentials in MONGODB_URI (authentication failed); check the user name and "
            "password (percent-encoded in the URI) and authSource, the database the user was created in "
            "(often ?authSource=admin)."
        )
    if AUTH_REQUIRED_TEXT.search(message):
        return (
            "MongoDB requires a login: put the user name and password in MONGODB_URI, "
            "e.g. mongodb://user:password@host:27017/?authSource=admin."
        )
    return None


def describe_mongo_error(error: BaseException, settings: Settings) -> str:
    """One sentence for an operator, with any password from the URI removed."""
    text = authentication_problem(error)
    if text is None and isinstance(error, ConfigurationError):
        text = f"MONGODB_URI cannot be used: {error}."
    elif text is None:
        detail = str(error).split(", Timeout:")[0].split(" (configured timeouts")[0]
        text = (
            f"MongoDB is unreachable ({detail[:300]}); check MONGODB_URI, that the server is running "
            "and that this host may connect to it."
        )
    return redact(text, settings.secrets())


def connect(settings: Settings) -> MongoClient[dict[str, Any]]:
    """A client that fails within the configured timeout instead of pymongo's 30 s default."""
    timeout_ms = int(settings.mongodb_timeout_seconds * 1000)
    try:
        return MongoClient(
            settings.mongodb_uri,
            tz_aware=True,
            appname="wa-export",
            serverSelectionTimeoutMS=timeout_ms,
            connectTimeoutMS=timeout_ms,
            socketTimeoutMS=max(timeout_ms * 12, 60_000),
            retryWrites=True,
            retryReads=True,
        )
    except PyMongoError as error:
        raise MongoUnavailable(describe_mongo_error(error, settings)) from None


def parse_workspace_id(raw: str) -> ObjectId:
    try:
        return ObjectId(raw.strip())
    except (InvalidId, TypeError):
        raise UnknownWorkspace(f"{raw!r} is not a workspace id: expected {ID_FORM}.") from None


class Store:
    """The collections wa-export reads and writes, on one database."""

    def __init__(self, client: MongoClient[dict[str, Any]], settings: Settings) -> None:
        self.client = client
        self.settings = settings
        # The primary, whatever MONGODB_URI says: a lagging secondary would hide messages a cursor then skips for good.
        self.db: Database[dict[str, Any]] = client.get_database(
            settings.mongodb_database, read_preference=ReadPreference.PRIMARY
        )
        self.workspaces: Collection[dict[str, Any]] = self.db["workspaces"]
        self.chats: Collection[dict[str, Any]] = self.db["chats"]
        self.messages: Collection[dict[str, Any]] = self.db["messages"]
        self.export_logs: Collection[dict[str, Any]] = self.db["export_logs"]
        self.system_logs: Collection[dict[str, Any]] = self.db["system_logs"]
        self.export_state: Collection[dict[str, Any]] = self.db["export_state"]

    @classmethod
    def open(cls, settings: Settings) -> Store:
        store = cls(connect(settings), settings)
        try:
            store.ping()
        except MongoUnavailable:
            store.close()  # do not leave the client's monitor threads behind
            raise
        return store

    def close(self) -> None:
        self.client.close()

    def ping(self) -> None:
        try:
            self.client.admin.command("ping")
        except PyMongoError as error:
            raise MongoUnavailable(describe_mongo_error(error, self.settings)) from None

    def database_now(self) -> datetime:
        """The database server's clock (`hello.localTime`) at BSON precision, one for every host (docs/design.md)."""
        try:
            reply = self.client.admin.command("hello")
        except PyMongoError as error:
            raise MongoUnavailable(describe_mongo_error(error, self.settings)) from None
        local_time = reply.get("localTime")
        if not isinstance(local_time, datetime):
            raise MongoUnavailable(
                "MongoDB did not report its clock (hello.localTime); wa-export needs a MongoDB 4.4 or newer server."
            )
        return to_millis(as_utc(local_time))

    def workspaces_collection_problem(self) -> str | None:
        """The sentence for a MONGODB_DATABASE without a `workspaces` collection; None if it has one or we may not look."""
        try:
            if self.db.list_collection_names(filter={"name": "workspaces"}):
                return None
        except OperationFailure:
            return None  # not permitted to list collections: no verdict
        elsewhere = self._databases_with_workspaces()
        where = f" (databases that have one: {', '.join(elsewhere)})" if elsewhere else ""
        if elsewhere == []:
            where = " (no database on this server has one)"
        return (
            f"MONGODB_DATABASE is {self.settings.mongodb_database!r}, but that database has no workspaces collection"
            f"{where}; set MONGODB_DATABASE to the platform's database."
        )

    def require_workspaces_collection(self) -> None:
        """ConfigError (exit 2) for a database that is not the platform's: nothing reads or writes there."""
        problem = self.workspaces_collection_problem()
        if problem is not None:
            raise ConfigError(problem)

    def _databases_with_workspaces(self) -> list[str] | None:
        """Databases on this server holding a `workspaces` collection; None when we may not list databases."""
        try:
            names = self.client.list_database_names()
        except OperationFailure:
            return None
        found: list[str] = []
        for name in [name for name in sorted(names) if name not in ("admin", "config", "local")][:DATABASES_PROBED]:
            try:
                if self.client[name].list_collection_names(filter={"name": "workspaces"}):
                    found.append(name)
            except OperationFailure:
                continue  # a database this user may not read is simply not named
        return found

    def active_workspaces(self) -> list[Workspace]:
        return self.list_workspaces().workspaces

    def workspaces_by_id(self, raw_ids: Sequence[str]) -> list[Workspace]:
        return self.list_workspaces(raw_ids).workspaces

    def list_workspaces(self, raw_ids: Sequence[str] | None = None) -> WorkspaceListing:
        """Every active workspace, or the named ones in the order given (any status; an unknown one raises
        UnknownWorkspace); finding none asks whether this is the platform's database at all (ConfigError if not)."""
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
        object_ids = [parse_workspace_id(raw) for raw in raw_ids]
        forms = [form for object_id in object_ids for form in (object_id, str(object_id))]
        listing = one_per_id(self.workspaces.find({"_id": {"$in": forms}}, projection), fields)
        found = {workspace.id: workspace for workspace in listing.workspaces}
        missing = [str(object_id) for object_id in object_ids if str(object_id) not in found]
        if missing:
            self.require_workspaces_collection()
            raise UnknownWorkspace(
                f"No workspace with id {', '.join(missing)} in database {self.settings.mongodb_database!r}; "
                "check the id (wa-export stats lists active workspaces)."
            )
        ordered = {str(object_id): found[str(object_id)] for object_id in object_ids}
        return WorkspaceListing(list(ordered.values()), listing.duplicates)

    def stored_twice(self) -> list[DuplicateWorkspace]:
        """Every workspace id held by more than one document (any status), for `health`: only a string `_id` can
        repeat an ObjectId one, so one query for the string ids, then one for what they spell."""
        projection = {"name": 1, "status": 1}
        strings = list(self.workspaces.find({"_id": {"$type": "string"}}, projection))
        spelled = [object_id for document in strings if (object_id := as_object_id(document["_id"])) is not None]
        if not spelled:
            return []
        documents = list(self.workspaces.find({"_id": {"$in": spelled}}, projection)) + strings
        return one_per_id(sorted(documents, key=lambda d: str(d["_id"]))).duplicates

    def missing_indexes(self) -> list[Index]:
        """Supporting indexes that are absent: a prefix match of an existing index counts as present."""

        def keys(index: Mapping[str, Any]) -> list[tuple[str, object]]:
            return [(field, int(order) if isinstance(order, (int, float)) else order) for field, order in index.items()]

        existing = {
            name: [keys(index["key"]) for index in self.db[name].list_indexes()]
            for name in ("chats", "messages", "export_logs")
        }
        wanted = supporting_indexes(self.settings.export_arrival_field)
        return [(name, keys) for name, keys in wanted if not any(have[: len(keys)] == keys for have in existing[name])]


def field_at(document: Mapping[str, Any], path: str) -> object:
    """The value at a dotted path, or None when a part is missing or not a sub-document."""
    value: object = document
    for segment in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(segment)
    return value


def text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def as_object_id(value: object) -> ObjectId | None:
    """An id stored as an ObjectId or as its 24-hex string form; anything else is no id."""
    if isinstance(value, str) and len(value) == 24 and ObjectId.is_valid(value):
        return ObjectId(value)
    return value if isinstance(value, ObjectId) else None


@dataclass(frozen=True)
class DuplicateWorkspace:
    """One workspace id held by several `workspaces` documents, and the one the export uses."""

    id: str
    documents: tuple[tuple[str, str, str], ...]  # (`_id` type, name, status) of each, the one used first

    def sentence(self) -> str:
        """One clause an operator can act on (no final period: warnings and checks add their own)."""
        forms = " and ".join(
            f"a {kind} _id ({name or 'unnamed'}, {status or 'no status'})" for kind, name, status in self.documents
        )
        kind, name, _ = self.documents[0]
        others = len(self.documents) - 1
        return (
            f"workspace {self.id} is stored {count_noun(len(self.documents), 'time')} in the workspaces collection, with {forms}: "
            f"one tenant, so its messages are exported once, as the {kind} _id document ({name or 'unnamed'}); "
            f"delete the other {'document' if others == 1 else count_noun(others, 'document')}"
        )


@dataclass(frozen=True)
class WorkspaceListing:
    workspaces: list[Workspace]
    duplicates: list[DuplicateWorkspace] = field(default_factory=list)


def one_per_id(documents: Iterable[dict[str, Any]], fields: Mapping[str, str] | None = None) -> WorkspaceListing:
    """One Workspace per id (the `_id` as an ObjectId or its 24-hex string), in the documents' order: a tenant
    stored both ways is one workspace (its chats name it either way), the ObjectId document first, others duplicates."""
    by_id: dict[str, list[dict[str, Any]]] = {}
    for document in documents:
        by_id.setdefault(str(as_object_id(document["_id"]) or document["_id"]), []).append(document)
    listing = WorkspaceListing([])
    for workspace_id, group in by_id.items():
        group.sort(key=lambda document: not isinstance(document["_id"], ObjectId))  # stable: else the order read
        first = group[0]
        listing.workspaces.append(
            Workspace(
                workspace_id,
                _name(first),
                str(first.get("status", "")),
                as_object_id(first["_id"]) or first["_id"],
                {name: value for name, path in (fields or {}).items() if (value := field_at(first, path)) is not None},
            )
        )
        if len(group) > 1:
            kinds = ["string" if isinstance(d["_id"], str) else type(d["_id"]).__name__ for d in group]
            seen = tuple((kind, _name(d), str(d.get("status", ""))) for kind, d in zip(kinds, group, strict=True))
            listing.duplicates.append(DuplicateWorkspace(workspace_id, seen))
    return listing


def _name(document: dict[str, Any]) -> str:
    name = document.get("name")
    return name if isinstance(name, str) else ("" if name is None else str(name))


@contextmanager
def open_store(settings: Settings) -> Iterator[Store]:
    store = Store.open(settings)
    try:
        yield store
    finally:
        store.close()


@contextmanager
def mongo_errors(settings: Settings) -> Iterator[None]:
    """A connection lost after the initial ping is still "MongoDB unreachable" (exit 3)."""
    try:
        yield
    except OperationFailure as error:
        if authentication_problem(error) is not None:
            raise MongoUnavailable(describe_mongo_error(error, settings)) from None
        detail = redact(str(error.details.get("errmsg") if error.details else error)[:300], settings.secrets())
        raise MongoUnavailable(
            f"MongoDB refused the query ({detail}); check that the MONGODB_URI user may read "
            f"database {settings.mongodb_database!r}."
        ) from None
    except PyMongoError as error:
        raise MongoUnavailable(describe_mongo_error(error, settings)) from None
