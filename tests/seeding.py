"""Test helpers: write the platform's schema and run the installed CLI.

Keep each test's data small: mongoeco's insert cost grows with collection size,
so a few hundred documents per test in a fresh database.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bson import ObjectId
from pymongo.database import Database


class _Missing:
    """Sentinel: a field given as MISSING is left out of the document (messy real data)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


def utcnow() -> datetime:
    """Aware UTC now, truncated to milliseconds: BSON dates have no finer precision,
    so a value written and read back compares equal."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def object_id_at(moment: datetime) -> ObjectId:
    """A fresh, unique ObjectId whose embedded time is `moment` (to the second): a message "arrived" then."""
    return ObjectId(ObjectId.from_datetime(_check_timestamp(moment)).binary[:4] + ObjectId().binary[4:])


def _clean(doc: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in doc.items() if value is not MISSING}


def _check_timestamp(value: Any) -> Any:
    # A naive datetime would silently be stored as if it were UTC; in tests
    # that hides exactly the timezone bugs we want to catch.
    if isinstance(value, datetime) and value.tzinfo is None:
        raise ValueError("seeding timestamps must be timezone-aware")
    return value


def add_workspace(db: Database[Any], name: str, status: str = "active", _id: ObjectId | None = None) -> ObjectId:
    doc = _clean({"_id": _id or ObjectId(), "name": name, "status": status})
    db.workspaces.insert_one(doc)
    return doc["_id"]


def add_chat(
    db: Database[Any],
    workspace_id: ObjectId,
    phone_number: Any = "+15550001111",
    customer_phone: Any = "+4915112345678",
    **extra: Any,
) -> ObjectId:
    doc = _clean(
        {
            "_id": ObjectId(),
            "workspace_id": workspace_id,
            "phone_number": phone_number,
            "customer_phone": customer_phone,
            **extra,
        }
    )
    db.chats.insert_one(doc)
    return doc["_id"]


def arrival_id(moment: datetime | None = None) -> ObjectId:
    """A new ObjectId as the platform's writer makes one for a message written at `moment` (default: now).

    The arrival order of messages is their `_id`, which embeds the writer's clock
    at insert: seeded data "arrived" when its timestamp says, never in the future.
    """
    now = utcnow()
    written = now if moment is None or moment > now else moment
    return ObjectId(int(written.timestamp()).to_bytes(4, "big") + os.urandom(8))


def settle_arrivals(ids: Sequence[Any] = ()) -> None:
    """Wait until the second of every given ObjectId (default: the current second) is over.

    A scheduled window ends at a whole second (an ObjectId holds seconds), so a
    message is in the next run's window once the second it arrived in has passed.
    """
    seconds = [value.generation_time.timestamp() for value in ids if isinstance(value, ObjectId)]
    latest = max(seconds) if seconds else time.time()
    delay = int(latest) + 1.02 - time.time()
    if delay > 0:
        time.sleep(delay)


def message_doc(
    chat_id: ObjectId,
    *,
    direction: Any = "incoming",
    content: Any = "hello",
    timestamp: datetime | None = None,
    is_ai_generated: Any = False,
    **extra: Any,
) -> dict[str, Any]:
    """A `messages` document; pass MISSING for any field to leave it out.

    Its `_id` says it arrived at its timestamp (or now, for a timestamp that is no date
    or in the future); pass `_id=ObjectId()` for a message that arrives late.
    """
    stamp = timestamp if timestamp is not None else utcnow()
    return _clean(
        {
            "_id": arrival_id(stamp if isinstance(stamp, datetime) else None),
            "chat_id": chat_id,
            "direction": direction,
            "is_ai_generated": is_ai_generated,
            "content": content,
            "timestamp": _check_timestamp(stamp),
            **extra,
        }
    )


def add_message(
    db: Database[Any],
    chat_id: ObjectId,
    *,
    direction: Any = "incoming",
    content: Any = "hello",
    timestamp: datetime | None = None,
    is_ai_generated: Any = False,
    **extra: Any,
) -> ObjectId:
    doc = message_doc(
        chat_id,
        direction=direction,
        content=content,
        timestamp=timestamp,
        is_ai_generated=is_ai_generated,
        **extra,
    )
    db.messages.insert_one(doc)
    settle_arrivals([doc["_id"]])
    return doc["_id"]


def add_arrived(db: Database[Any], chat_id: Any, moment: datetime, content: str, **extra: Any) -> ObjectId:
    """A message that arrived at `moment` (its _id), with that timestamp unless one is given; no waiting."""
    extra.setdefault("timestamp", moment)
    document = message_doc(chat_id, content=content, _id=object_id_at(moment), **extra)
    db.messages.insert_one(document)
    return document["_id"]


def add_messages(db: Database[Any], chat_id: ObjectId, specs: Sequence[Mapping[str, Any]]) -> list[ObjectId]:
    """Insert many messages with one insert_many; each spec is message_doc's keywords."""
    docs = [message_doc(chat_id, **dict(spec)) for spec in specs]
    if not docs:
        return []
    db.messages.insert_many(docs)
    settle_arrivals([doc["_id"] for doc in docs])
    return [doc["_id"] for doc in docs]


def seed_workspace(
    db: Database[Any],
    name: str,
    contents: Sequence[str],
    *,
    minutes_ago: float = 5,
    content_size: int = 0,
    **chat: Any,
) -> ObjectId:
    """One active workspace, one chat (`chat`: add_chat's fields), `contents` as messages a few minutes old,
    each padded with `content_size` characters."""
    workspace_id = add_workspace(db, name)
    chat_id = add_chat(db, workspace_id, **chat)
    start = utcnow() - timedelta(minutes=minutes_ago)
    padding = "x" * content_size
    add_messages(
        db,
        chat_id,
        [
            {"content": text + (" " + padding if padding else ""), "timestamp": start + timedelta(milliseconds=index)}
            for index, text in enumerate(contents)
        ],
    )
    return workspace_id


# ----------------------------------------------------------------------------- CLI


SMTP_FROM = "exports@wa-export.test"  # the sender every test environment configures

# Inherited variables worth keeping for the CLI; everything else (in particular any
# MONGODB_*, SMTP_*, EXPORT_*, WORKSPACE_* of the developer's shell) is left out so
# a test only ever sees the configuration it built.
_PASSTHROUGH = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "TEMP", "TMP")


def cli_env(home: Path, *layers: Mapping[str, Any]) -> dict[str, str]:
    """PATH, locale and temp folders of this process, HOME=`home`, then each layer in turn (None removes a variable)."""
    env = {key: os.environ[key] for key in _PASSTHROUGH if key in os.environ}
    env["HOME"] = str(home)
    for layer in layers:
        for key, value in layer.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = str(value)
    return env


def cli_executable() -> Path:
    """The installed `wa-export` console script of the venv running the tests."""
    bindir = Path(sys.executable).parent
    for name in ("wa-export", "wa-export.exe"):
        if (bindir / name).exists():
            return bindir / name
    raise FileNotFoundError(f"wa-export console script not found next to {sys.executable}")


def run_cli(
    args: Sequence[str],
    env: Mapping[str, str],
    cwd: Path,
    timeout: float = 120,
    input: str | None = None,
    **options: Any,
) -> subprocess.CompletedProcess[str]:
    """Run `wa-export ARGS` exactly as a user would: separate process, own env and cwd.

    `options` go to subprocess.run (e.g. `preexec_fn`).
    """
    return subprocess.run(
        [str(cli_executable()), *args],
        env=dict(env),
        cwd=os.fspath(cwd),
        timeout=timeout,
        text=True,
        capture_output=True,
        input=input,
        stdin=subprocess.DEVNULL if input is None else None,
        **options,
    )


def start_cli(args: Sequence[str], env: Mapping[str, str], cwd: Path, **options: Any) -> subprocess.Popen[str]:
    """Start `wa-export ARGS` in the background, stdout and stderr piped; `options` go to subprocess.Popen."""
    return subprocess.Popen(
        [str(cli_executable()), *args],
        env=dict(env),
        cwd=os.fspath(cwd),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        **options,
    )
