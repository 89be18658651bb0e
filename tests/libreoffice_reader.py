"""LibreOffice as an independent reader of password-protected workbooks.

``libreoffice_rows(path, password)`` (called from the tests, any Python) runs this file as a script
with the system interpreter (/usr/bin/python3, which has LibreOffice's ``uno`` bridge from the Debian
package python3-uno; `./dev` installs it with libreoffice-calc-nogui). The script starts a headless
soffice with a private profile, opens the workbook through UNO with the password, and prints every
row of every sheet after the header as the text LibreOffice displays. Without the password, or with a
wrong one, LibreOffice opens nothing and the result has no rows.

The password goes to the script on stdin, never on a command line. The script and its soffice run in
a process group of their own, which is killed when the script ends or its time is up: no soffice is
left behind.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

SYSTEM_PYTHON = "/usr/bin/python3"
DEFAULT_TIMEOUT = 120.0  # seconds; a first start with a fresh profile takes a few on a loaded machine


@dataclass(frozen=True)
class LibreOfficeResult:
    rows: list[tuple[str, ...]]
    opened: bool  # False: LibreOffice refused to open the file (no or wrong password)
    error: str
    profile: str  # the private profile directory: every soffice of this read had it on its command line


class LibreOfficeTimeout(TimeoutError):
    def __init__(self, message: str, profile: str) -> None:
        super().__init__(message)
        self.profile = profile


def displayed(row: tuple[Any, ...]) -> tuple[str, ...]:
    """A row read with openpyxl as LibreOffice displays it: text as is, time stamps in the sheet's format."""
    return tuple(
        "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S") if isinstance(value, datetime) else str(value)
        for value in row
    )


def libreoffice_rows(path: Path, password: str | None, *, timeout: float = DEFAULT_TIMEOUT) -> LibreOfficeResult:
    """Open ``path`` in headless LibreOffice (with ``password``, if given) and return its data rows."""
    profile = Path(tempfile.mkdtemp(prefix="wa-export-lo-profile-"))
    request = json.dumps({"path": str(path.resolve()), "password": password, "profile": str(profile)})
    # A session of its own: the script and every soffice process it starts share one process group.
    process = subprocess.Popen(
        [SYSTEM_PYTHON, str(Path(__file__).resolve())],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(request, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(process.pid)
        process.communicate()
        raise LibreOfficeTimeout(f"LibreOffice did not read {path.name} within {timeout:g} s", str(profile)) from None
    finally:
        _kill_group(process.pid)
        shutil.rmtree(profile, ignore_errors=True)
    if process.returncode != 0 or not stdout.strip():
        raise RuntimeError(f"the LibreOffice reader failed (exit {process.returncode}): {stderr.strip()[-2000:]}")
    answer = json.loads(stdout.strip().splitlines()[-1])
    return LibreOfficeResult([tuple(row) for row in answer["rows"]], answer["opened"], answer["error"], str(profile))


def processes_of(result: LibreOfficeResult | LibreOfficeTimeout) -> list[int]:
    """The live (non-zombie) processes of that read: none once ``libreoffice_rows`` returned or timed out."""
    import psutil

    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        command = " ".join(process.info["cmdline"] or ())
        if result.profile in command and process.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(process.pid)
    return found


def _kill_group(group: int, bound: float = 10.0) -> None:
    """SIGKILL every process of ``group`` until none is left (a process forking meanwhile is caught next round)."""
    import psutil

    deadline = time.monotonic() + bound
    while left := [process.pid for process in psutil.process_iter() if _alive_in_group(process, group)]:
        if time.monotonic() > deadline:
            raise RuntimeError(f"LibreOffice processes {left} outlived SIGKILL")
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def _alive_in_group(process: Any, group: int) -> bool:
    import psutil

    try:
        return bool(os.getpgid(process.pid) == group and process.status() != psutil.STATUS_ZOMBIE)
    except (ProcessLookupError, psutil.NoSuchProcess):
        return False


# ----------------------------------------------------------------------------- the script (system Python + uno)


def _connect(profile: Path, deadline: float) -> tuple[subprocess.Popen[bytes], Any]:
    import uno  # type: ignore[import-not-found]

    pipe_name = f"wa_export_lo_{os.getpid()}"
    soffice = subprocess.Popen(
        [
            shutil.which("soffice") or "soffice",
            "--headless",
            "--invisible",
            "--nologo",
            "--norestore",
            "--nodefault",
            "--nolockcheck",
            f"-env:UserInstallation={profile.as_uri()}",
            f"--accept=pipe,name={pipe_name};urp;StarOffice.ComponentContext",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    local = uno.getComponentContext()
    resolver = local.ServiceManager.createInstanceWithContext("com.sun.star.bridge.UnoUrlResolver", local)
    while True:
        try:
            context = resolver.resolve(f"uno:pipe,name={pipe_name};urp;StarOffice.ComponentContext")
            break
        except Exception:  # NoConnectException until soffice listens
            if time.monotonic() > deadline or soffice.poll() is not None:
                raise
            time.sleep(0.25)
    desktop = context.ServiceManager.createInstanceWithContext("com.sun.star.frame.Desktop", context)
    return soffice, desktop


def _property(name: str, value: Any) -> Any:
    from com.sun.star.beans import PropertyValue  # type: ignore[import-not-found]

    prop = PropertyValue()
    prop.Name, prop.Value = name, value
    return prop


def _sheet_rows(document: Any) -> list[list[str]]:
    rows: list[list[str]] = []
    sheets = document.getSheets()
    for index in range(sheets.getCount()):
        sheet = sheets.getByIndex(index)
        cursor = sheet.createCursor()
        cursor.gotoEndOfUsedArea(False)
        last_column, last_row = cursor.getRangeAddress().EndColumn, cursor.getRangeAddress().EndRow
        if last_row < 1:
            continue
        data = sheet.getCellRangeByPosition(0, 1, last_column, last_row).getDataArray()
        for row_offset, values in enumerate(data):
            row = []
            for column, value in enumerate(values):
                if isinstance(value, float):  # a number (the time stamps): the text the cell's format shows
                    value = sheet.getCellByPosition(column, row_offset + 1).getString()
                row.append(value)
            rows.append(row)
    return rows


def _script() -> int:
    from pathlib import Path as _Path

    import uno

    request = json.loads(sys.stdin.read())
    deadline = time.monotonic() + 90
    soffice, desktop = _connect(_Path(request["profile"]), deadline)
    answer: dict[str, Any] = {"rows": [], "opened": False, "error": ""}
    try:
        properties = [_property("Hidden", True), _property("ReadOnly", True)]
        if request["password"] is not None:
            properties.append(_property("Password", request["password"]))
        url = uno.systemPathToFileUrl(request["path"])
        try:
            document = desktop.loadComponentFromURL(url, "_blank", 0, tuple(properties))
        except Exception as exc:  # a wrong or missing password: LibreOffice refuses to load
            document = None
            answer["error"] = type(exc).__name__
        if document is not None:
            answer["opened"] = True
            try:
                answer["rows"] = _sheet_rows(document)
            finally:
                document.close(True)
        elif not answer["error"]:
            answer["error"] = "not loaded"
    finally:
        try:
            desktop.terminate()
        except Exception:  # the bridge drops as soffice exits
            pass
        try:
            soffice.wait(timeout=15)
        except subprocess.TimeoutExpired:
            soffice.kill()
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(_script())
