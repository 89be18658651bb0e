"""The `wa-export` command line: each command parses its options, calls one library function, renders its result.
Exit codes: 0 ok, 1 some work failed, 2 usage or configuration error, 3 MongoDB unreachable.
Why this module is long: Typer builds every command, option and `--help` text from the declarations here."""

from __future__ import annotations

import importlib
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer import Argument, Option

# `--version` and `--help` stay fast (no pymongo, openpyxl, yagmail): each command imports what it uses in its body.
from wa_export.errors import ExitCode, UsageProblem, WaExportError

if TYPE_CHECKING:
    import threading

    from wa_export.cli.render import Output
    from wa_export.settings import Settings

app = typer.Typer(
    name="wa-export",
    help="Export every workspace's WhatsApp messages from MongoDB to Excel and email them.",
    no_args_is_help=True,
    add_completion=True,  # Tab completes commands, options and deploy's names
    pretty_exceptions_enable=False,
    # Plain click help: rich's would print "<bool>" after flags and read "[demo]" in a help text as markup.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _option(metavar: str, help: str, *names: str, **options: Any) -> Any:
    """An option that takes a value, shown as ``metavar`` in --help."""
    return Option(*names, metavar=metavar, help=help, **options)


EnvFileOption = Annotated[Path | None, _option("PATH", "Read settings from this .env file instead of ./.env.")]
JsonOption = Annotated[bool, Option("--json", help="Print one JSON document on stdout.")]
DryRunOption = Annotated[
    bool, Option("--dry-run", help="Say what would be done: no file, no email, no deletion, no database write.")
]
# Described in each command's docstring: typer's own line for it would read "WORKSPACE_ID <str>".
WorkspaceIdArgument = Annotated[str | None, Argument(metavar="WORKSPACE_ID", hidden=True)]
_global_env_file: Path | None = None


def _print_version(requested: bool) -> None:
    if requested:
        from importlib.metadata import PackageNotFoundError, version

        try:
            number = version("wa-export")
        except PackageNotFoundError:  # run from a source tree that was never installed
            from wa_export import __version__ as number
        typer.echo(f"wa-export {number}")
        raise typer.Exit(ExitCode.OK)


@app.callback()
def main_options(
    env_file: EnvFileOption = None,
    show_version: Annotated[
        bool, Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """wa-export: WhatsApp messages → Excel → email, for cron or a systemd timer."""
    global _global_env_file
    _global_env_file = env_file


def _run(
    json_output: bool, env_file: Path | None, body: Callable[[Any, Output], int], load: bool = True, warn: bool = True
) -> None:
    """Exit with `body`'s code, or turn an error the operator can cause into one sentence and its exit code."""
    from wa_export.cli.render import Output
    from wa_export.redaction import redact

    output, settings, secrets = Output(json_output), None, []
    try:
        if load:
            from wa_export.settings import load_settings

            settings = load_settings(env_file or _global_env_file)
            output.zone, secrets = settings.export_timezone, settings.secrets()
            for warning in settings.load_warnings if warn else ():
                output.stderr(f"warning: {warning}")  # stderr: in the cron log, and --json stays one document
        code = body(settings, output)
    except WaExportError as error:
        output.error(redact(str(error), secrets), error.exit_code)
        raise typer.Exit(error.exit_code) from None
    except KeyboardInterrupt:
        output.error("Interrupted.", ExitCode.FAILED)
        raise typer.Exit(ExitCode.FAILED) from None
    raise typer.Exit(code)


_COMMAND_MODULE = {"move": "state", "verify": "logs"}  # views whose command lives in another view's module


def _report(
    json_output: bool, env_file: Path | None, compute: Callable[[Any, Settings], Any], view: str, load: bool = True
) -> None:
    """Show what `compute` (given the module `wa_export.commands.<view>`) returns with `render_<view>`."""

    def body(settings: Settings, output: Output) -> int:
        from wa_export.cli import render

        command = importlib.import_module(f"wa_export.commands.{_COMMAND_MODULE.get(view, view)}")
        return output.show(compute(command, settings), getattr(render, f"render_{view}"), *([settings] if load else []))

    _run(json_output, env_file, body, load)


@contextmanager
def _on_sigterm(handler: Callable[[int, Any], None]) -> Iterator[None]:
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _stop_on_sigterm() -> Iterator[threading.Event]:
    """SIGTERM stops the run after the current workspace; its SMTP steps get a short grace."""
    import threading

    from wa_export.mail import transport

    stop = threading.Event()

    def request_stop(signum: int, frame: Any) -> None:
        stop.set()
        transport.stop_sends()

    try:
        with _on_sigterm(request_stop):
            yield stop
    finally:
        transport.clear_stop()


@app.command(short_help="Export messages: the scheduled run, or a manual export.")
def export(
    workspace: Annotated[
        list[str] | None, _option("ID", "Workspace id; repeat for several.", "--workspace", "-w")
    ] = None,
    hours: Annotated[float | None, _option("N", "Manual: export the last N hours.")] = None,
    since: Annotated[str | None, _option("TIME", "Manual: window start, ISO 8601 (naive = EXPORT_TIMEZONE).")] = None,
    until: Annotated[str | None, _option("TIME", "Manual: window end (exclusive), ISO 8601.")] = None,
    email: Annotated[
        list[str] | None, _option("ADDRESS", "Manual: send to this address instead of the configured ones.")
    ] = None,
    no_email: Annotated[bool, Option("--no-email", help="Write the files only; send nothing.")] = False,
    dry_run: DryRunOption = False,
    # range checked by export/workers.py, with --worker-slot's
    workers: Annotated[
        int, _option("N", "Scheduled runs: share the workspaces among N processes (e.g. one per CPU core).")
    ] = 1,
    worker_slot: Annotated[str | None, Option(hidden=True)] = None,
    metrics_file: Annotated[
        Path | None, _option("PATH", "Write the run's Prometheus metrics here (*.prom; wins over EXPORT_METRICS_FILE).")
    ] = None,
    json_output: JsonOption = False,
    env_file: EnvFileOption = None,
) -> None:
    """Export messages: a scheduled run (what arrived since each cursor), or with --hours/--since/--until/--email
    a manual run by message timestamp (default: last 24 hours) that never moves a cursor."""
    from wa_export.cli.render import export_observer, render_export, render_workers
    from wa_export.export import run as export_run
    from wa_export.metrics import RunRecorder

    def body(settings: Settings, output: Output) -> int:
        recorder.use(settings)  # an unusable --metrics-file stops here (exit 2), before any work
        request = export_run.build_export_request(
            settings,
            workspace_ids=workspace or (),
            hours=hours,
            since=since,
            until=until,
            email=email or (),
            no_email=no_email,
            dry_run=dry_run,
        )
        request = export_run.apply_worker_options(request, workers, worker_slot)
        recorder.trigger = request.trigger
        if workers > 1 and worker_slot is None:
            with _stop_on_sigterm() as stop:
                merged = export_run.export_in_workers(workers, request, env_file or _global_env_file, stop, settings)
            recorder.ran(merged, request)
            return output.show(merged, render_workers, settings, not no_email)
        with _stop_on_sigterm() as stop, export_observer(output, settings.export_dir) as observer:
            result = export_run.export(settings, request, observer, stop)
        recorder.ran(result, request)
        return output.show(result, render_export, settings, not no_email)

    manual = hours is not None or since is not None or until is not None or bool(email)
    # --dry-run writes no file; --workers children leave the metrics file to their parent.
    recorder = RunRecorder(
        metrics_file, trigger="manual" if manual else "scheduled", enabled=not dry_run and worker_slot is None
    )
    exit_code = int(ExitCode.FAILED)  # a crash, unless the command ends with its own code
    try:
        _run(json_output, env_file, body, warn=worker_slot is None)
    except typer.Exit as done:
        exit_code = int(done.exit_code)
        raise
    finally:  # the metrics file is written however the command ends (exit 0 to 3, a crash)
        if (warning := recorder.finish(exit_code)) is not None:
            typer.echo(f"wa-export: {warning}", err=True)  # stderr: a --json stdout stays one document


@app.command(short_help="Delete old workbooks and empty workspace folders.")
def cleanup(
    days: Annotated[
        int | None,
        _option("N", "Delete workbooks older than N days.  [default: EXPORT_CLEANUP_DAYS]"),
    ] = None,
    dry_run: DryRunOption = False,
    json_output: JsonOption = False,
    env_file: EnvFileOption = None,
) -> None:
    """Delete this tool's old workbooks and stale temp files in marked workspace folders, and empty folders."""
    _report(json_output, env_file, lambda command, settings: command.cleanup(settings, days, dry_run), "cleanup")


@app.command(short_help="Messages per day and status, exports made and failed.")
def stats(
    workspace_id: WorkspaceIdArgument = None,
    days: Annotated[int, _option("N", "Number of days, ending today.", min=1, max=366)] = 7,
    json_output: JsonOption = False,
    env_file: EnvFileOption = None,
) -> None:
    """Messages per day and status, and exports made/failed, over the last N days (EXPORT_TIMEZONE).

    With WORKSPACE_ID, that one workspace day by day; without it, all active ones."""
    _report(json_output, env_file, lambda command, settings: command.stats(settings, workspace_id, days), "stats")


@app.command(short_help="Recent exports, or the tool's events (--system).")
def logs(
    workspace_id: WorkspaceIdArgument = None,
    limit: Annotated[int, _option("N", "How many entries.", min=1, max=1000)] = 20,
    status: Annotated[
        str | None, _option("STATUS", "Only exports with this status: completed, failed or sending.")
    ] = None,
    system: Annotated[bool, Option("--system", help="Show this tool's system_logs events instead.")] = False,
    json_output: JsonOption = False,
    env_file: EnvFileOption = None,
) -> None:
    """Recent exports (export_logs) newest first, or the tool's events (--system); WORKSPACE_ID: only its exports."""
    _report(json_output, env_file, lambda command, s: command.logs(s, workspace_id, limit, status, system), "logs")


@app.command(short_help="Email an earlier export again, rebuilt from its recorded range.")
def resend(
    log_id: Annotated[str, Argument(metavar="LOG_ID", hidden=True)],
    to: Annotated[
        list[str] | None,
        _option("ADDRESS", "Send to this address instead (repeatable; EXPORT_ALLOWED_EMAIL_DOMAINS applies)."),
    ] = None,
    dry_run: DryRunOption = False,
    json_output: JsonOption = False,
    env_file: EnvFileOption = None,
) -> None:
    """Email again the workbook of export LOG_ID (as `wa-export logs` shows it), rebuilt from its recorded range,
    as a new export (subject [Re-sent]). Exit 1 for an unknown id or an export never delivered, 2 for a malformed id."""
    _report(json_output, env_file, lambda command, s: command.resend(s, log_id, to or (), dry_run=dry_run), "resend")


@app.command(short_help="Tell which recorded export a file is, by its SHA-256.")
def verify(
    file: Annotated[Path, Argument(metavar="FILE", hidden=True)],
    json_output: JsonOption = False,
    env_file: EnvFileOption = None,
) -> None:
    """Tell which recorded export FILE is (by its SHA-256): the workspace, when and to whom it was sent, its range.
    Exit 1 when no export of this file is recorded, 2 when FILE is missing or unreadable."""
    _report(json_output, env_file, lambda command, settings: command.verify(settings, file), "verify")


@app.command(short_help="Where each workspace's delivery stands; move one cursor.")
def state(
    workspace_id: WorkspaceIdArgument = None,
    move_to: Annotated[
        str | None,
        _option("TIME", "Move WORKSPACE_ID's cursor to this arrival time (ISO 8601, naive = EXPORT_TIMEZONE)."),
    ] = None,
    move_past: Annotated[
        str | None,
        _option("MESSAGE_ID", "Move WORKSPACE_ID's cursor just past this message (its _id): it alone is skipped."),
    ] = None,
    json_output: JsonOption = False,
    env_file: EnvFileOption = None,
) -> None:
    """Each workspace's cursor, messages waiting, lease and failures; move one cursor (logged).

    With WORKSPACE_ID, that one workspace with exact counts; without it, all active ones. A cursor moved back
    re-delivers from then on, forward skips what arrived before."""

    def compute(command: Any, settings: Settings) -> Any:
        if move_to is not None and move_past is not None:
            raise UsageProblem("--move-to and --move-past both move the cursor: give one of them.")
        if move_to is not None:
            return command.move_cursor(settings, workspace_id, move_to)
        if move_past is not None:
            return command.move_cursor_past(settings, workspace_id, move_past)
        return command.state(settings, workspace_id)

    _report(json_output, env_file, compute, "state" if move_to is None and move_past is None else "move")


@app.command("test-email", short_help="Send a test email through the configured SMTP server.")
def test_email(
    workspace: Annotated[
        str | None, _option("ID", "Send to this workspace's addresses, as an export finds them.", "--workspace", "-w")
    ] = None,
    to: Annotated[
        list[str] | None, _option("ADDRESS", "Send to this address (wins over --workspace); repeatable.")
    ] = None,
    json_output: JsonOption = False,
    env_file: EnvFileOption = None,
) -> None:
    """Send a test email with a tiny sample workbook; on failure name the failed step and exit 1."""
    _report(json_output, env_file, lambda command, s: command.send_test_email(s, workspace, to or ()), "test_email")


@app.command(short_help="Check MongoDB, SMTP, EXPORT_DIR, addresses and the schedule.")
def health(
    smtp_login: Annotated[
        bool, Option("--smtp-login", help="Also connect to the SMTP server, start TLS and log in.")
    ] = False,
    json_output: JsonOption = False,
    env_file: EnvFileOption = None,
) -> None:
    """Check MongoDB, SMTP, EXPORT_DIR, workspace addresses and folders, indexes and scheduled runs (exit 1 if any failed)."""
    _report(json_output, env_file, lambda command, s: command.run_health(s, smtp_login=smtp_login), "health")


@app.command("config", short_help="Show and validate the settings (no MongoDB, no SMTP).")
def config(json_output: JsonOption = False, env_file: EnvFileOption = None) -> None:
    """Show the effective settings, where each came from, and every invalid one (exit 2, or 1 for addresses only)."""
    _report(
        json_output, env_file, lambda command, _: command.config_report(env_file or _global_env_file), "config", False
    )


@app.command(short_help="A real export against local servers; nothing to configure.")
def demo(
    out: Annotated[Path, _option("DIR", "Where exports/ and mail/ are written.")] = Path("demo-out"),
    serve: Annotated[
        bool,
        Option(
            "--serve", help="Keep the servers running (Ctrl-C stops them) and write DIR/.env for the other commands."
        ),
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Run a real scheduled export against local MongoDB and SMTP servers; nothing to configure.

    Needs pip install 'wa-export[demo]' (Python 3.13+); ignores the environment and .env. With --serve the servers
    keep running until Ctrl-C, to try every other command on the demo's data: wa-export --env-file DIR/.env stats."""
    from wa_export.cli.render import export_observer, render_demo
    from wa_export.demo import run as demo_run

    def body(_: None, output: Output) -> int:
        def serving(result: Any) -> None:
            def ready() -> None:  # the servers are up: what they hold, how to try them
                output.show(result, render_demo)

            demo_run.serve_until_stopped(ready)

        # SIGTERM behaves like Ctrl-C, so `finally` blocks (server shutdown) still run.
        with _on_sigterm(signal.default_int_handler), export_observer(output) as observer:
            result = demo_run.run_demo(out, observer, output.line, serving if serve else None)
        if not serve:
            return output.show(result, render_demo)
        output.line("Stopped the demo's servers and removed their .env file.")
        return result.exit_code

    _run(json_output, None, body, load=False)


def _deploy_names(incomplete: str) -> list[str]:
    from wa_export.commands.deploy import KINDS, all_files

    return [name for name in [*KINDS, *(file.name for file in all_files())] if name.startswith(incomplete)]


@app.command(short_help="Print or write the systemd, cron, logrotate or env files.")
def deploy(
    # Described in the docstring: typer's own line for it would read "NAME <str>"; the usage line shows {a|b}.
    name: Annotated[str, Argument(metavar="systemd|cron|logrotate|env", hidden=True, autocompletion=_deploy_names)],
    to: Annotated[Path | None, _option("DIR", "Write the files into DIR (mode 0644) instead of printing them.")] = None,
    force: Annotated[
        bool, Option("--force", help="With --to: replace files whose content differs from the shipped ones.")
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Print the deploy files shipped in the package, or write them into DIR; reads no settings.

    systemd: the export, cleanup and health services with their timers; cron: the crontab; logrotate: rotation of
    the cron logs; env: every setting, commented, with its default; or one file's name, e.g. wa-export.timer."""
    _report(json_output, None, lambda command, _: command.deploy(name, to, force), "deploy", load=False)


def _main_with_json(args: list[str]) -> int:
    """Even a command-line parse error is one JSON document (outside standalone mode click raises it)."""
    from wa_export.cli.render import Output

    try:  # recent typer releases vendor click as typer._click
        from typer._click.exceptions import ClickException
    except ImportError:  # older typer depends on click itself
        from click.exceptions import ClickException  # type: ignore[no-redef]

    output = Output(json_output=True)
    try:
        code = app(args=args, prog_name="wa-export", standalone_mode=False)
    except ClickException as error:
        output.error(error.format_message(), error.exit_code)
        return error.exit_code
    except typer.Abort:
        output.error("Aborted.", ExitCode.FAILED)
        return ExitCode.FAILED
    return code if isinstance(code, int) else ExitCode.OK


def main() -> None:
    args = sys.argv[1:]
    try:
        if "--json" in args:
            sys.exit(_main_with_json(args))
        app()  # standalone: click renders usage errors and --help, and exits
    except Exception as error:  # a bug, not a user error: one line, details on request
        if os.environ.get("WA_EXPORT_DEBUG"):
            raise
        typer.echo(
            f"wa-export: internal error ({type(error).__name__}); rerun with WA_EXPORT_DEBUG=1 for details.", err=True
        )
        sys.exit(ExitCode.FAILED)
