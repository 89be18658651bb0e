"""`wa-export demo`: a real scheduled export against local servers, nothing to configure.

It starts mongoeco's MongoDB wire server and an aiosmtpd server (STARTTLS with a
throw-away CA, AUTH) on free loopback ports, seeds three workspaces with
realistic, entirely fictional conversations, and runs `commands.export` -- the
production code path -- with settings built from an explicit dictionary, so the
operator's environment and any `.env` (MONGODB_*, SMTP_*, WORKSPACE_*) can never
point the demo at a real database or mail server. Both servers are stopped in a
`finally`, also on Ctrl-C.
"""

from __future__ import annotations

import importlib.util
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bson import ObjectId

from wa_export.clock import utc_now
from wa_export.errors import ExitCode, UsageProblem
from wa_export.export import run as commands
from wa_export.export.context import ExportRequest
from wa_export.export.results import RunObserver, RunResult
from wa_export.settings import Settings, load_settings
from wa_export.store.arrivals import object_id_at

DEMO_DATABASE = "wa_export_demo"
DEMO_SENDER = "exports@example.com"
# Fixed ids: a second demo run into the same --out reuses the same workspace folders.
DEMO_WORKSPACES: list[dict[str, Any]] = [
    {
        "_id": ObjectId("64d000000000000000000a01"),
        "name": "Café Olé 🌮 Ristorante",
        "status": "active",
        "email": "orders@cafe-ole.example",
    },
    {
        "_id": ObjectId("64d000000000000000000a02"),
        "name": "Acme Support",
        "status": "active",
        "email": "support-lead@acme.example,ops@acme.example",
    },
    {
        "_id": ObjectId("64d000000000000000000a03"),
        "name": "Dormant Holdings",
        "status": "inactive",
        "email": "nobody@dormant.example",
    },
]


class DemoUnavailable(UsageProblem):
    """The `demo` extra is not installed (or Python is older than 3.13); exit 2."""


@dataclass
class DemoResult:
    out_dir: Path
    exports_dir: Path
    mail_dir: Path
    mongodb_uri: str
    smtp_address: str
    seeded: dict[str, int]
    run: RunResult
    workbooks: list[Path] = field(default_factory=list)
    emails: list[Path] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return self.run.exit_code

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.exit_code == ExitCode.OK,
            "exit_code": self.exit_code,
            "out_dir": str(self.out_dir),
            "exports_dir": str(self.exports_dir),
            "mail_dir": str(self.mail_dir),
            "mongodb_uri": self.mongodb_uri,
            "smtp_server": self.smtp_address,
            "seeded": self.seeded,
            "workbooks": [str(path) for path in self.workbooks],
            "emails": [str(path) for path in self.emails],
            "run": self.run.as_dict(),
        }


def require_demo_dependencies() -> None:
    """Fail with one sentence, before starting anything, if the demo extra is missing."""
    missing = []
    for module in ("mongoeco.wire", "aiosmtpd.controller", "trustme"):
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(module.split(".")[0])
    if missing:
        raise DemoUnavailable(
            f"The demo needs {', '.join(missing)}, which is not installed: run "
            "pip install 'wa-export[demo]' on Python 3.13 or newer (mongoeco needs 3.13)."
        )


# --------------------------------------------------------------------------- data


def _conversations() -> dict[ObjectId, list[tuple[str, str, list[tuple[str, bool, str]]]]]:
    """Per workspace: (business number, customer number, [(direction, ai, text)]). All numbers are fictional."""
    cafe, acme, dormant = (w["_id"] for w in DEMO_WORKSPACES)
    return {
        cafe: [
            (
                "+15550100001",
                "+15550123401",
                [
                    ("incoming", False, "Hola! Do you have a table for 4 tonight at 8?"),
                    ("outgoing", True, "¡Hola! Yes, we have a table for 4 at 20:00. Shall I book it under your name?"),
                    ("incoming", False, "Yes please, name is Zoë Müller"),
                    ("outgoing", True, "Done ✅ Table for 4 at 20:00 for Zoë Müller. ¡Hasta luego!"),
                    ("incoming", False, "Can we bring a dog? 🐕"),
                    ("outgoing", False, "Of course, dogs are welcome on the terrace. — Jordi (manager)"),
                ],
            ),
            (
                "+15550100001",
                "+15550123402",
                [
                    ("incoming", False, "مرحبا، هل لديكم خيارات نباتية؟"),
                    ("outgoing", True, "مرحبا! نعم، لدينا عدة أطباق نباتية. هل تود رؤية القائمة؟"),
                    ("incoming", False, "نعم من فضلك"),
                    ("outgoing", False, "Here is our menu: https://cafe-ole.example/menu — Jordi"),
                ],
            ),
            (
                "+15550100002",
                "+15550123403",
                [
                    ("incoming", False, '=HYPERLINK("http://evil.example","click")'),
                    ("outgoing", True, "Sorry, I did not understand that. How can I help you today?"),
                    ("incoming", False, "+1 for the paella, best in town!"),
                    ("outgoing", False, "Thank you so much! 🥘"),
                ],
            ),
        ],
        acme: [
            (
                "+15550200001",
                "+15550223401",
                [
                    ("incoming", False, "Hi, my order #A-1042 hasn't arrived yet"),
                    ("outgoing", True, "I'm sorry to hear that. Let me check order #A-1042 for you."),
                    ("outgoing", True, "Your parcel is with the courier and should arrive tomorrow before 12:00."),
                    ("incoming", False, "That's too late, I need it today"),
                    (
                        "outgoing",
                        False,
                        "Hi, this is Sam from Acme. I've upgraded you to same-day delivery at no cost.",
                    ),
                    ("incoming", False, "Thank you Sam!"),
                ],
            ),
            (
                "+15550200001",
                "+15550223402",
                [
                    ("incoming", False, "How do I reset my password?"),
                    ("outgoing", True, "Go to Settings → Security → Reset password. You'll get an email with a link."),
                    ("incoming", False, "Didn't get the email"),
                    (
                        "outgoing",
                        True,
                        "Please check your spam folder. If it is not there, I'll connect you with an agent.",
                    ),
                    ("incoming", False, "Not in spam either"),
                    ("outgoing", False, "Hi, Priya here. I've sent the reset link again manually, please check now."),
                    ("incoming", False, "Got it, thanks 👍"),
                ],
            ),
            (
                "+15550200002",
                "+15550223403",
                [
                    ("incoming", False, "-- cancel my subscription --"),
                    ("outgoing", True, "I can help with that. Can you confirm the email address on the account?"),
                    ("incoming", False, "@acme.example account, the one ending in 77"),
                    ("outgoing", False, "Thanks, your subscription is cancelled. Sorry to see you go! — Sam"),
                ],
            ),
        ],
        dormant: [
            (
                "+15550300001",
                "+15550323401",
                [
                    ("incoming", False, "Is anyone there?"),
                    ("outgoing", True, "This workspace is inactive and is not exported."),
                ],
            ),
        ],
    }


def seed(db: Any, now: datetime) -> dict[str, int]:
    """Write the demo workspaces, chats and messages; messages fall inside the first scheduled window."""
    db.workspaces.insert_many([{k: v for k, v in w.items() if k != "email"} for w in DEMO_WORKSPACES])
    chats: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    # The first window is [now - lag - interval, now - lag); the conversation sits in the middle of it.
    moment = now - timedelta(minutes=13)
    for workspace_id, conversations in _conversations().items():
        for business, customer, lines in conversations:
            chat_id = ObjectId()
            chats.append(
                {"_id": chat_id, "workspace_id": workspace_id, "phone_number": business, "customer_phone": customer}
            )
            for direction, ai, text in lines:
                moment += timedelta(seconds=7)
                # Arrived when written: the _id (the arrival order) carries the same moment.
                messages.append(
                    {
                        "_id": object_id_at(moment),
                        "chat_id": chat_id,
                        "direction": direction,
                        "is_ai_generated": ai,
                        "content": text,
                        "timestamp": moment,
                    }
                )
    db.chats.insert_many(chats)
    db.messages.insert_many(messages)
    # The indexes `health` asks for, as an operator would create them.
    db.chats.create_index([("workspace_id", 1)])
    db.messages.create_index([("chat_id", 1), ("_id", 1)])
    db.messages.create_index([("chat_id", 1), ("timestamp", 1)])
    return {"workspaces": len(DEMO_WORKSPACES), "chats": len(chats), "messages": len(messages)}


def demo_environment(mongodb_uri: str, smtp: Any, exports_dir: Path) -> dict[str, str]:
    env = {
        "MONGODB_URI": mongodb_uri,
        "MONGODB_DATABASE": DEMO_DATABASE,
        "MONGODB_TIMEOUT_SECONDS": "10",
        "SMTP_SERVER": smtp.host,
        "SMTP_PORT": str(smtp.port),
        "SMTP_USERNAME": smtp.username or "",
        "SMTP_PASSWORD": smtp.password or "",
        "SMTP_FROM": DEMO_SENDER,
        "SMTP_SECURITY": "starttls",
        "SMTP_CA_FILE": str(smtp.ca_cert_path),
        "EXPORT_DIR": str(exports_dir),
        "EXPORT_TIMEZONE": "UTC",
    }
    for workspace in DEMO_WORKSPACES:
        env[f"WORKSPACE_{workspace['_id']}_EMAIL"] = workspace["email"]
    return env


def demo_settings(environ: dict[str, str]) -> Settings:
    # An empty env file stands in for ./.env, so a .env in the current directory is never read.
    with tempfile.TemporaryDirectory(prefix="wa-export-demo-") as tmp:
        empty = Path(tmp) / "demo.env"
        empty.write_text("")
        return load_settings(env_file=empty, environ=environ)


# --------------------------------------------------------------------------- the run


def run_demo(
    out_dir: Path,
    observer: RunObserver | None = None,
    on_step: Callable[[str], None] | None = None,
) -> DemoResult:
    require_demo_dependencies()
    from pymongo import MongoClient

    from wa_export.demo.mongo_server import LocalMongoServer
    from wa_export.demo.smtp_server import LocalSmtpServer

    step = on_step or (lambda text: None)
    out_dir = out_dir.expanduser().absolute()
    exports_dir, mail_dir = out_dir / "exports", out_dir / "mail"
    try:
        mail_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as error:
        raise UsageProblem(
            f"Cannot create {mail_dir} ({error.strerror or error}); pass a writable --out DIR."
        ) from None
    emails_before = set(mail_dir.glob("*.eml"))

    mongo = LocalMongoServer()
    smtp = LocalSmtpServer(tls="starttls", eml_dir=mail_dir)
    try:
        step("starting a local MongoDB-compatible server (mongoeco) and a local SMTP server")
        mongo.start()
        smtp.start()
        step(f"MongoDB on {mongo.uri}, SMTP with STARTTLS on {smtp.host}:{smtp.port}")
        client: MongoClient[dict[str, Any]] = MongoClient(mongo.uri, tz_aware=True)
        try:
            client.drop_database(DEMO_DATABASE)  # the in-memory server is new, but be explicit
            seeded = seed(client[DEMO_DATABASE], utc_now())
        finally:
            client.close()
        step(f"seeded {seeded['workspaces']} workspaces, {seeded['chats']} chats, {seeded['messages']} messages")
        settings = demo_settings(demo_environment(mongo.uri, smtp, exports_dir))
        step("running a scheduled export (the same code path as `wa-export export`)")
        run = commands.export(settings, ExportRequest(), observer)
        if run.count("completed"):
            smtp.wait_for_messages(run.count("completed"), timeout=10)
        return DemoResult(
            out_dir=out_dir,
            exports_dir=exports_dir,
            mail_dir=mail_dir,
            mongodb_uri=mongo.uri,
            smtp_address=f"{smtp.host}:{smtp.port}",
            seeded=seeded,
            run=run,
            workbooks=[Path(r.file_path) for r in run.workspaces if r.file_path],
            emails=sorted(set(mail_dir.glob("*.eml")) - emails_before),
        )
    finally:
        # Also on Ctrl-C: no server outlives the demo.
        smtp.stop()
        mongo.stop()


__all__ = ["DEMO_WORKSPACES", "DemoResult", "DemoUnavailable", "require_demo_dependencies", "run_demo"]
