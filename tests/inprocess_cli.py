"""Run `wa-export ARGS` inside the test process, as the console script would run it in its own.

A fresh process costs ~0.3 s of interpreter start and imports; most tests only
need the command's output and exit code. `run_cli_in_process` calls the console
script's entry point (`wa_export.cli.app:main`, so `--json` usage errors and the
internal-error line behave as installed) with, for the duration of the call,
what a child process would get: exactly `env` as the environment, `cwd` as the
working directory (the app reads ./.env), `input` (or nothing) on stdin, fresh
stdout/stderr, the interpreter's default warning filters, and the call's log
records of WARNING and above on stderr. It returns a CompletedProcess like `run_cli`.

Not click's CliRunner: it pins the help width to 80 columns (a child process
follows COLUMNS) and invokes the click command rather than `main`.

Tests that need a real process (signals, --workers, faketime, a terminal, the
installed script or its start-up imports) use `run_cli` / the `cli_process` fixture.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import threading
import traceback
import types
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from subprocess import CompletedProcess
from typing import TextIO

from seeding import run_cli
from wa_export.cli.app import main

# WA_EXPORT_TEST_CLI=process runs every test's wa-export in a child process again (to compare the two).
IN_PROCESS = os.environ.get("WA_EXPORT_TEST_CLI", "inprocess") != "process"


class _Stream(io.TextIOWrapper):
    """A text stream over bytes, like a pipe to the parent: not a terminal, UTF-8."""

    def __init__(self, data: bytes = b"") -> None:
        super().__init__(
            io.BytesIO(data), encoding="utf-8", errors="backslashreplace", newline=None, write_through=True
        )

    def text(self) -> str:
        """What was written, read as subprocess.run(text=True) reads a pipe (universal newlines)."""
        self.flush()
        buffer = self.buffer
        assert isinstance(buffer, io.BytesIO)
        return buffer.getvalue().decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")


def run_cli_in_process(
    args: Sequence[str],
    env: Mapping[str, str],
    cwd: Path,
    timeout: float | None = None,  # accepted like run_cli's and ignored: pytest-timeout bounds the test
    input: str | None = None,
) -> CompletedProcess[str]:
    """`wa-export ARGS` in this process; see the module docstring for what it isolates."""
    stdin, stdout, stderr = _Stream((input or "").encode()), _Stream(), _Stream()
    with (
        _environment(env),
        _working_directory(cwd),
        _standard_streams(stdin, stdout, stderr),
        _fresh_process_logging(),
        _default_warnings(),
        _console_script(["wa-export", *args]),
    ):
        returncode = _call_main()
    return CompletedProcess(["wa-export", *args], returncode, stdout.text(), stderr.text())


def run_wa_export(
    args: Sequence[str],
    env: Mapping[str, str],
    cwd: Path,
    timeout: float = 120,
    input: str | None = None,
) -> CompletedProcess[str]:
    """`run_cli`'s interface for tests that need no real process: in this one, unless WA_EXPORT_TEST_CLI=process."""
    runner = run_cli_in_process if IN_PROCESS else run_cli
    return runner(args, env, cwd, timeout=timeout, input=input)


def _call_main() -> int:
    """main()'s exit code, as the interpreter would turn its end into one."""
    try:
        main()
    except SystemExit as done:
        code = done.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        print(code, file=sys.stderr)  # sys.exit("text"): the interpreter prints it and exits 1
        return 1
    except Exception:  # uncaught (WA_EXPORT_DEBUG=1): the traceback, exit 1; Ctrl-C still stops pytest
        traceback.print_exc(file=sys.stderr)
        return 1
    return 0


@contextmanager
def _environment(env: Mapping[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextmanager
def _working_directory(cwd: Path) -> Iterator[None]:
    saved = os.getcwd()
    os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(saved)


@contextmanager
def _standard_streams(stdin: TextIO, stdout: TextIO, stderr: TextIO) -> Iterator[None]:
    # The dunder streams too: shutil.get_terminal_size() (click's help width) asks sys.__stdout__.
    names = ("stdin", "stdout", "stderr", "__stdin__", "__stdout__", "__stderr__")
    saved = {name: getattr(sys, name) for name in names}
    for name, stream in zip(names, (stdin, stdout, stderr) * 2, strict=True):
        setattr(sys, name, stream)
    try:
        yield
    finally:
        for name, stream in saved.items():
            setattr(sys, name, stream)


@contextmanager
def _fresh_process_logging() -> Iterator[None]:
    """Log records of WARNING and above on stderr, as logging's last resort prints them in a new process.

    Only records of this call: the test's own servers (aiosmtpd) run on threads
    of this process that were there before the call, and their records are not
    the command's output.
    """
    caller = threading.get_ident()
    earlier = {thread.ident for thread in threading.enumerate()} - {caller}
    handler = logging.StreamHandler()  # sys.stderr now: the call's stream
    handler.setLevel(logging.WARNING)
    handler.addFilter(lambda record: record.thread not in earlier)
    root = logging.getLogger()
    saved_level = root.level
    root.setLevel(logging.WARNING)
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(saved_level)


@contextmanager
def _default_warnings() -> Iterator[None]:
    """The interpreter's default filters, each warning printed on stderr (pytest would collect it instead)."""

    def to_stderr(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    with warnings.catch_warnings():
        warnings.resetwarnings()
        warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")
        for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.filterwarnings("ignore", category=category, append=True)
        warnings.showwarning = to_stderr
        yield


@contextmanager
def _console_script(argv: list[str]) -> Iterator[None]:
    """sys.argv, and a __main__ that is a plain script: click names the program after argv[0], not `python -m pytest`."""
    saved_argv, saved_main = sys.argv, sys.modules["__main__"]
    sys.argv = argv
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.argv = saved_argv
        sys.modules["__main__"] = saved_main
