"""`wa-export --version` and `--help` start fast: they import no database, workbook or mail code.

Each command imports what it uses in its own body (cli/app.py). A fresh
interpreter per case: in the test process these modules are long loaded.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from seeding import cli_executable

# The heavy libraries a run needs and start-up does not (numpy comes with openpyxl).
HEAVY_MODULES = (
    "pymongo",
    "bson",
    "openpyxl",
    "numpy",
    "yagmail",
    "prometheus_client",
    "asyncio",
    "wa_export.settings",
)

_PROBE = """
import json, sys
from wa_export.cli.app import main
heavy = json.loads(sys.argv[2])
sys.argv = ["wa-export", *json.loads(sys.argv[1])]
code = None
try:
    main()
except SystemExit as done:
    code = done.code
print(json.dumps({"exit_code": code, "heavy": sorted(m for m in heavy if m in sys.modules)}))
"""


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["export", "--help"], ["state", "--help"]])
def test_version_and_help_import_no_heavy_module(args: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(args), json.dumps(HEAVY_MODULES)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert report == {"exit_code": 0, "heavy": []}


def test_console_script_prints_the_version() -> None:
    result = subprocess.run(
        [str(cli_executable()), "--version"], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("wa-export ")
