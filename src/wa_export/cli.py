"""The `wa-export` command line: parses options, calls `commands`, renders results.

No business logic lives here. Human output uses rich (a progress bar and tables
on a terminal, plain log lines otherwise, e.g. under cron); `--json` prints one
JSON document on stdout. Exit codes: 0 ok, 1 some work failed, 2 usage or
configuration error, 3 MongoDB unreachable.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer

from . import commands
from .config import ConfigError, Settings, load_settings, redact
from .exporter import SmtpNotConfigured
from .mongo import MongoUnavailable, UnknownWorkspace
from .output import Output

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_MONGO = 0, 1, 2, 3

app = typer.Typer(
    name="wa-export",
    help="Export every workspace's WhatsApp messages from MongoDB to Excel and email them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

EnvFileOption = Annotated[
    Path | None,
    typer.Option("--env-file", help="Read settings from this .env file instead of ./.env.", show_default=False),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]

T = TypeVar("T")
_global_env_file: Path | None = None


@app.callback()
def main_options(env_file: EnvFileOption = None) -> None:
    """wa-export: WhatsApp messages → Excel → email, for cron or a systemd timer."""
    global _global_env_file
    _global_env_file = env_file


def _settings(env_file: Path | None) -> Settings:
    return load_settings(env_file or _global_env_file)


@contextmanager
def _handled(output: Output, settings_holder: list[Settings]) -> Iterator[None]:
    """Turn the errors an operator can cause into one sentence and the right exit code."""
    secrets = settings_holder[0].secrets() if settings_holder else []
    try:
        yield
    except typer.Exit:
        raise
    except (ConfigError, commands.UsageProblem, UnknownWorkspace, SmtpNotConfigured) as error:
        _fail(output, redact(str(error), secrets), EXIT_USAGE)
    except MongoUnavailable as error:
        _fail(output, redact(str(error), secrets), EXIT_MONGO)
    except KeyboardInterrupt:
        _fail(output, "Interrupted.", EXIT_FAILED)


def _fail(output: Output, message: str, code: int) -> NoReturn:
    output.error(message, code)
    raise typer.Exit(code)


def _run(json_output: bool, env_file: Path | None, body: Callable[[Settings, Output], int]) -> None:
    output = Output(json_output)
    holder: list[Settings] = []
    with _handled(output, holder):
        settings = _settings(env_file)
        holder.append(settings)
    with _handled(output, holder):
        code = body(settings, output)
        raise typer.Exit(code)


@contextmanager
def _stop_on_sigterm() -> Iterator[threading.Event]:
    """SIGTERM (systemd stop, kill) lets the current workspace finish, then stops the run."""
    stop = threading.Event()

    def request_stop(signum: int, frame: Any) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, request_stop)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGTERM, previous)


@app.command()
def export(
    workspace: Annotated[
        list[str] | None, typer.Option("--workspace", "-w", help="Workspace id; repeat for several.")
    ] = None,
    hours: Annotated[float | None, typer.Option(help="Manual: export the last N hours.")] = None,
    since: Annotated[str | None, typer.Option(help="Manual: window start, ISO 8601 (naive = EXPORT_TIMEZONE).")] = None,
    until: Annotated[str | None, typer.Option(help="Manual: window end (exclusive), ISO 8601.")] = None,
    email: Annotated[
        list[str] | None, typer.Option("--email", help="Manual: send to this address instead of the configured ones.")
    ] = None,
    no_email: Annotated[bool, typer.Option("--no-email", help="Write the files only; send nothing.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count only: no file, no email, no database writes.")
    ] = False,
    json_output: JsonOption = False,
    env_file: EnvFileOption = None,
) -> None:
    """Export messages: a scheduled run over all active workspaces, or a manual export.

    Without --hours/--since/--until/--email this is a scheduled run: each workspace
    exports [watermark, now - EXPORT_LAG_SECONDS) and the watermark moves only after
    the email was accepted. With any of them it is a manual run (default: last 24
    hours) that never moves the watermark.
    """

    def body(settings: Settings, output: Output) -> int:
        request = commands.build_export_request(
            settings,
            workspace_ids=workspace or (),
            hours=hours,
            since=since,
            until=until,
            email=email or (),
            no_email=no_email,
            dry_run=dry_run,
        )
        with _stop_on_sigterm() as stop, output.export_observer() as observer:
            result = commands.export(settings, request, observer, stop)
        output.export_result(result, settings)
        return result.exit_code

    _run(json_output, env_file, body)


def main() -> None:
    # Library code raises; this is the one place that decides what a user sees.
    try:
        app()
    except SystemExit:
        raise
    except Exception as error:  # a bug, not a user error: one line, details on request
        if os.environ.get("WA_EXPORT_DEBUG"):
            raise
        print(
            f"wa-export: internal error ({type(error).__name__}); rerun with WA_EXPORT_DEBUG=1 for details.",
            file=sys.stderr,
        )
        sys.exit(EXIT_FAILED)


if __name__ == "__main__":
    main()


__all__ = ["app", "main", "json"]
