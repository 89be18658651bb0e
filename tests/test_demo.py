"""`wa-export demo`: the installed console script in a fresh directory."""

from __future__ import annotations

import email
import email.policy
import os
import signal
import socket
from pathlib import Path

import psutil

from helpers import attachments, parse_json, sheet_rows, start_demo
from seeding import run_cli
from servers import free_port

SERVER_MODULE = "wa_export.demo.servers"


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _mongo_servers_on(port: int) -> list[int]:
    """Pids of LocalMongoServer children (`python -m wa_export.demo.servers --port N`) on this port.

    Matched by port, not by name alone: other test runs on this machine have server children too.
    """
    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = process.info["cmdline"] or []
        if SERVER_MODULE in cmdline and str(port) in cmdline and _alive(process.info["pid"]):
            found.append(process.info["pid"])
    return found


def _hostile_operator_env(cwd: Path) -> dict[str, str]:
    """An operator environment and ./.env that would break (or misdirect) the demo if it read them."""
    (cwd / ".env").write_text("EXPORT_TIMEZONE=Not/A_Zone\nMONGODB_URI=not-a-uri\n")
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(cwd),
        "MONGODB_URI": f"mongodb://127.0.0.1:{free_port()}/?directConnection=true",
        "SMTP_SERVER": "smtp.invalid",
        "SMTP_PASSWORD": "operator-secret",
        "EXPORT_ALLOWED_EMAIL_DOMAINS": "operator.test",
        "WORKSPACE_64d000000000000000000a01_EMAIL": "real-customer@operator.test",
    }


def _port_is_closed(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_demo_exports_and_mails_in_a_fresh_directory(tmp_path):
    env = _hostile_operator_env(tmp_path)
    result = run_cli(["demo", "--json"], env, tmp_path, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    document = parse_json(result)

    exports, mail = tmp_path / "demo-out" / "exports", tmp_path / "demo-out" / "mail"
    workbooks = sorted(exports.rglob("*.xlsx"))
    emls = sorted(mail.glob("*.eml"))
    assert len(workbooks) >= 2 and len(emls) == len(workbooks)
    assert sorted(document["workbooks"]) == [str(path) for path in workbooks]
    assert document["out_dir"] == str(tmp_path / "demo-out")

    # Each mail carries one of the workbooks, byte for byte, and it opens.
    by_name = {path.name: path for path in workbooks}
    recipients = set()
    for eml in emls:
        message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
        recipients.update(address.strip() for address in message["To"].split(","))
        [(name, _, payload)] = attachments(message)
        assert payload == by_name[name].read_bytes()
        rows = sheet_rows(payload)
        assert len(rows) >= 10
    assert "real-customer@operator.test" not in recipients  # the operator's WORKSPACE_* was ignored
    contents = [row[2] for path in workbooks for row in sheet_rows(path)]
    assert any(text.startswith("=") for text in contents)  # a formula-looking message stays text
    assert any("مرحبا" in text for text in contents)
    assert {row[4] for path in workbooks for row in sheet_rows(path)} == {"received", "sent_via_ai", "sent_by_human"}
    assert document["run"]["trigger"] == "scheduled"
    assert [w["workspace_name"] for w in document["run"]["workspaces"]] == ["Café Olé 🌮 Ristorante", "Acme Support"]

    # Nothing left running: no server process on the demo's port, and its ports are closed.
    mongo_port = int(document["mongodb_uri"].split(":")[2].split("/")[0])
    assert _mongo_servers_on(mongo_port) == []
    assert _port_is_closed(mongo_port)
    assert _port_is_closed(int(document["smtp_server"].rsplit(":", 1)[1]))

    # Human output (not a TTY) says where everything went.
    again = run_cli(["demo"], env, tmp_path, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert str(exports) in again.stdout and str(mail) in again.stdout
    # ...and lists each workbook relative to the exports folder it names.
    listed = [line.strip() for line in again.stdout.splitlines() if line.startswith("  ") and line.endswith(".xlsx")]
    assert listed and all(not Path(name).is_absolute() and (exports / name).is_file() for name in listed)
    assert "operator-secret" not in again.stdout + again.stderr


def test_ctrl_c_stops_the_servers(tmp_path):
    process = start_demo(["--out", str(tmp_path / "out")], tmp_path)
    try:
        assert process.stdout is not None
        # Interrupt once both servers run ("MongoDB on ..."), before the export finished.
        while not (line := process.stdout.readline()).startswith("MongoDB on"):
            assert line, f"the demo ended before its servers ran: {process.communicate(timeout=30)}"
        servers = [child.pid for child in psutil.Process(process.pid).children() if SERVER_MODULE in child.cmdline()]
        assert servers, "no mongo server child found"
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1 and "Interrupted" in stderr and "Traceback" not in stderr
    assert [pid for pid in servers if _alive(pid)] == []


def test_without_the_demo_extra_it_says_what_to_install(tmp_path):
    # A mongoeco that cannot be imported stands in for Python < 3.13 / no demo extra.
    stub = tmp_path / "stub" / "mongoeco"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("raise ImportError('mongoeco needs Python 3.13')\n")
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "PYTHONPATH": str(stub.parent)}
    result = run_cli(["demo"], env, tmp_path)
    assert result.returncode == 2
    assert "pip install 'wa-export[demo]'" in result.stderr and "3.13" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "demo-out" / "exports").exists()
