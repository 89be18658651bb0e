"""`wa-export demo`: a real scheduled export against local MongoDB (mongoeco) and SMTP (aiosmtpd) servers, its
settings an explicit dictionary: the operator's environment and `.env` never point it at a real server."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import tempfile
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from importlib.resources import files
from pathlib import Path
from typing import Any

from bson import ObjectId

from wa_export.clock import utc_now
from wa_export.errors import UsageProblem
from wa_export.export import run as commands
from wa_export.export.results import ExportRequest, RunObserver, RunResult
from wa_export.settings import load_settings
from wa_export.store.arrivals import object_id_at
from wa_export.units import count_noun
from wa_export.workbook.naming import FOLDER_MARKER
from wa_export.workbook.publish import replace_file, unlink_quietly

ENV_FILE_NAME = ".env"
# The first line of the demo's .env: only a file that starts so is the demo's to replace or remove.
ENV_FILE_HEADER = "# wa-export demo: the settings of its local servers, valid while `demo --serve` runs."


def clear_demo_folder(out_dir: Path) -> None:
    """Remove an earlier demo's workbooks, emails and env file, or refuse (before removing anything) a folder
    holding anything a demo did not write: it may be someone's files."""

    def check(path: Path, written_by_a_demo: bool) -> Path:
        if not written_by_a_demo:
            raise UsageProblem(f"{out_dir} holds {path}, which no demo wrote: not emptied; pass another --out DIR.")
        return path

    env_file = out_dir / ENV_FILE_NAME
    found = [check(env_file, _first_line(env_file) == ENV_FILE_HEADER)] if os.path.lexists(env_file) else []
    found += [check(path, path.suffix == ".eml" and _plain_file(path)) for path in _entries(out_dir / "mail")]
    for folder in _entries(out_dir / "exports"):
        owner = _first_line(folder / FOLDER_MARKER).strip()
        check(folder, not folder.is_symlink() and folder.is_dir() and owner in {str(w["_id"]) for w in DEMO_WORKSPACES})
        for path in _entries(folder):
            check(path, _plain_file(path) and (path.suffix in (".xlsx", ".tmp") or path.name == FOLDER_MARKER))
        found.append(folder)
    for path in found:
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def _entries(folder: Path) -> list[Path]:
    if not folder.exists():
        return []
    if folder.is_symlink() or not folder.is_dir():
        raise UsageProblem(f"{folder} is not a folder a demo writes; pass another --out DIR.")
    return sorted(folder.iterdir())


def _first_line(path: Path) -> str:
    """The first line of a plain file (never through a symlink); "" for anything else."""
    return path.read_text("utf-8", "replace").partition("\n")[0] if _plain_file(path) else ""


def _plain_file(path: Path) -> bool:
    return not path.is_symlink() and path.is_file()


def serve_until_stopped(announce: Callable[[], None]) -> None:
    """Announce, then sleep until Ctrl-C (or SIGTERM, the same KeyboardInterrupt), the announcement inside the
    wait: a signal sent as soon as it says "ready" still ends it cleanly."""
    try:
        announce()
        while True:
            signal.pause()
    except KeyboardInterrupt:
        return


DEMO_DATABASE = "wa_export_demo"
DEMO_SENDER = "exports@example.com"
# Fixed ids: a second demo run into the same --out reuses the same workspace folders.
DEMO_WORKSPACES: list[dict[str, Any]] = [
    {"_id": ObjectId(f"64d000000000000000000a0{number}"), "name": name, "status": status, "email": email}
    for number, name, status, email in [
        (1, "Café Olé 🌮 Ristorante", "active", "orders@cafe-ole.example"),
        (2, "Acme Support", "active", "support-lead@acme.example,ops@acme.example"),
        (3, "Dormant Holdings", "inactive", "nobody@dormant.example"),
    ]
]


@dataclass
class DemoResult:
    out_dir: Path
    exports_dir: Path
    mail_dir: Path
    mongodb_uri: str
    smtp_server: str
    seeded: dict[str, int]
    run: RunResult
    workbooks: list[Path]
    emails: list[Path]
    # `--serve`: the servers' settings, and the .env file holding them while they run.
    environ: dict[str, str] = field(default_factory=dict)
    env_file: Path | None = None

    @property
    def exit_code(self) -> int:
        return self.run.exit_code

    def as_dict(self) -> dict[str, Any]:
        """Every field but `environ` (it holds the SMTP password); the JSON writer turns paths into text."""
        document = {item.name: getattr(self, item.name) for item in fields(self) if item.name != "environ"}
        return document | {"run": self.run.as_dict()}


def require_demo_dependencies() -> None:
    """Fail with one sentence, before starting anything, if the demo extra is missing."""
    missing = []
    for module in ("mongoeco.wire", "aiosmtpd.controller", "trustme"):
        with suppress(ImportError, ValueError):  # ImportError: a parent package that fails to import
            if importlib.util.find_spec(module) is not None:
                continue
        missing.append(module.split(".")[0])
    if missing:
        raise UsageProblem(
            f"The demo needs {', '.join(missing)}, which is not installed: run "
            "pip install 'wa-export[demo]' on Python 3.13 or newer (mongoeco needs 3.13)."
        )


def seed(db: Any, now: datetime) -> dict[str, int]:
    """The demo's workspaces, chats and messages, all inside the first scheduled window. conversations.txt: "workspace
    N" (1-based), "chat BUSINESS CUSTOMER", then per message "in" received, "ai" sent by the AI, "me" by a human."""
    db.workspaces.insert_many([{k: v for k, v in w.items() if k != "email"} for w in DEMO_WORKSPACES])
    chats: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    # The first window is [now - lag - interval, now - lag); the conversations sit in its middle.
    moment = now - timedelta(minutes=13)
    for line in files("wa_export.demo").joinpath("conversations.txt").read_text("utf-8").strip().splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "workspace":
            workspace_id = DEMO_WORKSPACES[int(rest) - 1]["_id"]
        elif kind == "chat":
            phones = dict(zip(("phone_number", "customer_phone"), rest.split(), strict=True))
            chats.append({"_id": ObjectId(), "workspace_id": workspace_id, **phones})
        else:
            moment += timedelta(seconds=7)
            direction = "incoming" if kind == "in" else "outgoing"
            message = {"chat_id": chats[-1]["_id"], "direction": direction, "is_ai_generated": kind == "ai"}
            # Arrived when written: the _id (the arrival order) carries the same moment.
            messages.append({"_id": object_id_at(moment), **message, "content": rest, "timestamp": moment})
    db.chats.insert_many(chats)
    db.messages.insert_many(messages)
    # The indexes `health` asks for, as an operator would create them.
    db.chats.create_index([("workspace_id", 1)])
    db.messages.create_index([("chat_id", 1), ("_id", 1)])
    db.messages.create_index([("chat_id", 1), ("timestamp", 1)])
    db.export_logs.create_index([("attachment_sha256", 1)])
    return {"workspaces": len(DEMO_WORKSPACES), "chats": len(chats), "messages": len(messages)}


def run_demo(
    out_dir: Path, observer: RunObserver, step: Callable[[str], None], serve: Callable[[DemoResult], None] | None
) -> DemoResult:
    """The demo in a fresh `out_dir`; with `serve`, the servers run on (their settings in `out_dir/.env`) until
    `serve(result)` returns."""
    require_demo_dependencies()
    from pymongo import MongoClient

    from wa_export.demo.servers import LocalMongoServer, LocalSmtpServer

    out_dir = out_dir.expanduser().absolute()
    exports_dir, mail_dir = out_dir / "exports", out_dir / "mail"
    clear_demo_folder(out_dir)
    try:
        mail_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as error:
        raise UsageProblem(f"Cannot create {mail_dir} ({error.strerror}); pass a writable --out DIR.") from None
    step("starting a local MongoDB-compatible server (mongoeco) and a local SMTP server")
    with LocalMongoServer() as mongo, LocalSmtpServer(eml_dir=mail_dir) as smtp:
        step(f"MongoDB on {mongo.uri}, SMTP with STARTTLS on {smtp.host}:{smtp.port}")
        with MongoClient[dict[str, Any]](mongo.uri, tz_aware=True) as client:
            seeded = seed(client[DEMO_DATABASE], utc_now())
        step(f"seeded {', '.join(count_noun(seeded[kind], kind[:-1]) for kind in ('workspaces', 'chats', 'messages'))}")
        environ = {
            "MONGODB_URI": mongo.uri,
            "MONGODB_DATABASE": DEMO_DATABASE,
            "MONGODB_TIMEOUT_SECONDS": "10",
            "SMTP_SERVER": smtp.host,
            "SMTP_PORT": str(smtp.port),
            "SMTP_USERNAME": smtp.username,
            "SMTP_PASSWORD": smtp.password,
            "SMTP_FROM": DEMO_SENDER,
            "SMTP_SECURITY": "starttls",
            "SMTP_CA_FILE": str(smtp.ca_cert_path),
            "EXPORT_DIR": str(exports_dir),
            "EXPORT_TIMEZONE": "UTC",
            # Active ones only: an address for the inactive tenant would be a warning on every command.
            **{f"WORKSPACE_{w['_id']}_EMAIL": w["email"] for w in DEMO_WORKSPACES if w["status"] == "active"},
        }
        # An empty env file stands in for ./.env, so a .env in the current directory is never read.
        with tempfile.NamedTemporaryFile(prefix="wa-export-demo-", suffix=".env") as empty:
            settings = load_settings(env_file=Path(empty.name), environ=environ)
        step("running a scheduled export (the same code path as `wa-export export`)")
        run = commands.export(settings, ExportRequest(), observer)
        workbooks = [Path(r.file_path) for r in run.workspaces if r.file_path]
        emails = sorted(mail_dir.glob("*.eml"))  # written before each 250, in a folder emptied before
        address = f"{smtp.host}:{smtp.port}"
        result = DemoResult(out_dir, exports_dir, mail_dir, mongo.uri, address, seeded, run, workbooks, emails)
        if serve is not None:
            result.environ, result.env_file = environ, out_dir / ENV_FILE_NAME
            lines = [ENV_FILE_HEADER, *(f"{name}={value}" for name, value in environ.items())]
            replace_file(result.env_file, "".join(f"{line}\n" for line in lines).encode())  # 0600: it holds a password
            try:
                serve(result)
            finally:  # its settings die with the servers
                unlink_quietly(result.env_file)
        return result
