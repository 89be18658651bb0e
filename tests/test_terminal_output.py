"""Human output: an export run logs one greppable line per workspace, on a terminal (with progress bars) as under cron."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from rich.table import Table

from helpers import run_on_a_terminal, terminal_output
from seeding import add_chat, add_messages, add_workspace, utcnow
from wa_export.cli.render import Output, export_observer, render_cleanup, render_export, render_workers
from wa_export.commands.cleanup import CleanupFile, CleanupResult
from wa_export.export.run import RunResult, SilentObserver, WorkspaceResult
from wa_export.export.workers import WorkerOutcome, WorkersResult
from wa_export.settings import Settings, load_settings


def test_terminal_and_cron_get_the_same_workspace_line(mongo_db, make_env, cli, smtp_server, tmp_path):
    workspace_id = add_workspace(mongo_db, "Terminal Co")
    add_messages(
        mongo_db,
        add_chat(mongo_db, workspace_id),
        [{"content": f"secret text {i}", "timestamp": utcnow() - timedelta(minutes=3)} for i in range(3)],
    )
    env = make_env(**{f"WORKSPACE_{workspace_id}_EMAIL": "tty@terminal.test"})

    code, screen = run_on_a_terminal(["export", "--no-email", "--hours", "1"], env, str(tmp_path))
    assert code == 0, screen
    assert f"workspace={workspace_id}" in screen and "outcome=written" in screen, screen  # as cron gets it
    assert "Terminal Co" in screen
    assert "\x1b[" in screen  # styled for a terminal

    plain = cli(["export", "--no-email", "--hours", "1"], env=env)
    assert plain.returncode == 0
    assert "\x1b[" not in plain.stdout and "│" not in plain.stdout
    lines = plain.stdout.strip().splitlines()
    assert any(f"workspace={workspace_id}" in line and "outcome=written" in line for line in lines)
    for output in (screen, plain.stdout):
        assert "secret text" not in output and "+4915112345678" not in output  # counts only


# --- what an operator reads: ids and paths whole -------------------------------------------------

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
TABLE_RULES = set("│┃")


def test_an_80_column_terminal_shows_ids_and_paths_whole(mongo_db, make_env, tmp_path):
    long_name = "Acme Corporation International Holdings"
    acme = add_workspace(mongo_db, long_name)
    add_messages(
        mongo_db,
        add_chat(mongo_db, acme),
        [{"content": f"m{i}", "timestamp": utcnow() - timedelta(minutes=3)} for i in range(250)],
    )
    unconfigured = add_workspace(mongo_db, "Zeta Unconfigured")
    add_messages(mongo_db, add_chat(mongo_db, unconfigured), [{"content": "x", "timestamp": utcnow()}])
    env = make_env(**{f"WORKSPACE_{acme}_EMAIL": "team@acme.test"})

    code, screen = run_on_a_terminal(["export"], env, str(tmp_path), columns=80)
    assert code == 0, screen
    text = ANSI.sub("", screen).replace("\r", "")
    export_dir = tmp_path / "exports"
    [workbook] = list(export_dir.rglob("*.xlsx"))
    relative = str(workbook.relative_to(export_dir))
    for whole in (str(acme), str(unconfigured), relative, f"WORKSPACE_{unconfigured}_EMAIL"):
        assert whole in text, (whole, text)
    assert str(workbook) not in text  # paths relative to EXPORT_DIR, which is named once
    assert f"files in {export_dir}" in text
    assert "messages=250 " in text  # the count
    assert "outcome=skipped messages=– " in text  # never counted: not a misleading 0
    assert "orphaned messages not counted" not in text  # health says that, once


def test_cron_lines_name_files_relative_to_the_export_dir(mongo_db, make_env, cli, tmp_path):
    workspace_id = add_workspace(mongo_db, "Café Olé")
    add_messages(mongo_db, add_chat(mongo_db, workspace_id), [{"content": "hi", "timestamp": utcnow()}])
    result = cli(["export", "--no-email", "--hours", "1"], env=make_env())
    assert result.returncode == 0, result.stdout + result.stderr
    export_dir = tmp_path / "exports"
    [workbook] = list(export_dir.rglob("*.xlsx"))
    assert f"export run started: 1 workspace, files in {export_dir}" in result.stdout
    assert f"file={workbook.relative_to(export_dir)}" in result.stdout and str(workbook) not in result.stdout


# --- the same views rendered on a rich Console of a given width ------------------------------

EXPORT_DIR = Path("/srv/wa-export/exports")


def _settings() -> Settings:
    return load_settings(environ={"EXPORT_DIR": str(EXPORT_DIR), "EXPORT_TIMEZONE": "Asia/Kolkata"})


def _result(
    name: str, workspace_id: str, outcome: str, count: int, slug: str | None = None, reason: str | None = None
) -> WorkspaceResult:
    start = datetime(2026, 3, 1, 13, 0, tzinfo=UTC)
    file_path = str(EXPORT_DIR / slug / f"{slug}_whatsapp_messages_2026-03-01_18-45.xlsx") if slug else None
    return WorkspaceResult(
        workspace_id,
        name,
        outcome,
        reason=reason,
        window_start=start,  # type: ignore[arg-type]
        window_end=start + timedelta(minutes=15),
        message_count=count,
        file_path=file_path,
    )


def _run(*results: WorkspaceResult) -> RunResult:
    run = RunResult(run_id="host-1-abc", trigger="scheduled", dry_run=False, started_at=datetime.now(UTC))
    run.workspaces.extend(results)
    return run


def _logged(output: Any, *results: WorkspaceResult) -> None:
    """What the run's observer logs for these workspaces."""
    with export_observer(output, EXPORT_DIR) as observer:
        observer.run_started(len(results), "scheduled")
        for result in results:
            observer.workspace_finished(result)


def test_on_a_narrow_terminal_each_workspace_is_one_whole_line_with_its_relative_path() -> None:
    output, screen = terminal_output(80)
    acme = _result(
        "Acme Corporation International Holdings",
        "65a1b2c3d4e5f60718293a4b",
        "completed",
        1234,
        slug="acme_corporation_international_holdings",
    )
    beta = _result("Beta", "65a1b2c3d4e5f60718293a4c", "failed", 0, reason="not attempted: login refused")
    _logged(output, acme, beta)
    render_export(output, _run(acme, beta), _settings())
    text = ANSI.sub("", screen.getvalue())
    path = "acme_corporation_international_holdings/acme_corporation_international_holdings_whatsapp_messages_2026-03-01_18-45.xlsx"
    assert 'workspace=65a1b2c3d4e5f60718293a4b name="Acme Corporation International Holdings" outcome=completed' in text
    assert f"file={path}" in text and str(EXPORT_DIR / path) not in text
    assert "outcome=failed messages=– window=" in text and 'reason="not attempted: login refused"' in text
    assert f"files in {EXPORT_DIR}" in text
    assert "orphaned messages not counted" not in text and "1 failed, 1,234 messages" not in text


def _workers(*results: WorkspaceResult) -> WorkersResult:
    """What `--workers N` gathers: each child's --json document, one workspace each here."""
    outcomes = [WorkerOutcome(slot, 0, _run(result).as_dict()) for slot, result in enumerate(results)]
    return WorkersResult(count=len(results), started_at=0.0, finished_at=1.0, workers=outcomes)


@pytest.mark.parametrize("width", [80, 160])
def test_workers_on_a_terminal_log_each_workspace_as_a_single_run_does(width: int) -> None:
    results = [
        _result("Acme Corporation International Holdings", "65a1b2c3d4e5f60718293a4b", "completed", 7, slug="acme"),
        _result("Beta", "65a1b2c3d4e5f60718293a4c", "completed", 3, slug="beta"),
    ]
    single, single_screen = terminal_output(width)
    _logged(single, *results)
    workers, workers_screen = terminal_output(width)
    render_workers(workers, _workers(*results), _settings())

    def workspace_lines(screen: io.StringIO) -> list[str]:  # without the time stamp
        return [line.split(" ", 1)[1] for line in ANSI.sub("", screen.getvalue()).splitlines() if "workspace=" in line]

    assert workspace_lines(workers_screen) and workspace_lines(workers_screen) == workspace_lines(single_screen)
    assert f"files in {EXPORT_DIR}" in workers_screen.getvalue()  # where the relative file paths are


def test_workers_under_cron_name_the_folder_their_file_paths_are_in(capsys: pytest.CaptureFixture[str]) -> None:
    output = Output(json_output=False)
    render_workers(
        output, _workers(_result("Acme", "65a1b2c3d4e5f60718293a4b", "completed", 7, slug="acme")), _settings()
    )
    lines = capsys.readouterr().out.splitlines()
    assert any(line.endswith(f"files in {EXPORT_DIR}") for line in lines), lines
    assert any("file=acme/acme_whatsapp_messages_2026-03-01_18-45.xlsx" in line for line in lines), lines


def _id_table() -> Table:
    table = Table(title="ids")
    table.add_column("Workspace", overflow="fold")
    table.add_column("Note", overflow="fold", min_width=40)
    table.add_row("65a1b2c3d4e5f60718293a4b", "a note " * 10)
    return table


def test_a_table_that_would_split_an_id_becomes_plain_lines() -> None:
    output, screen = terminal_output(50)
    output.table(_id_table())
    lines = screen.getvalue().splitlines()
    assert not (TABLE_RULES | set("┏━")) & set("".join(lines))
    assert any(line.startswith("65a1b2c3d4e5f60718293a4b") for line in lines)  # whole, the row on one line

    output, screen = terminal_output(120)  # room enough: a rich table as before
    output.table(_id_table())
    assert "┃" in screen.getvalue() and "65a1b2c3d4e5f60718293a4b" in screen.getvalue()


def test_a_table_wider_than_the_terminal_becomes_plain_lines() -> None:
    # The minimum widths add up to more than 50 columns: rich would draw lines the terminal wraps.
    output, screen = terminal_output(50)
    output.table(_id_table())
    assert "┃" not in screen.getvalue() and len(screen.getvalue().splitlines()) == 3


def test_progress_counts_messages_on_a_second_line() -> None:
    console = Console(file=io.StringIO(), width=100, force_terminal=True, color_system=None)
    output = Output(json_output=False)
    output.console, output.interactive = console, True
    with export_observer(output) as observer:
        observer.run_started(3, "scheduled")
        observer.messages_exported("65a1b2c3d4e5f60718293a4b", 1000)
        observer.messages_exported("65a1b2c3d4e5f60718293a4b", 500)
        progress = observer.progress
        tasks = {task.description: task for task in progress.tasks}
        assert tasks["messages"].completed == 1500 and tasks["messages"].total is None
        assert tasks["scheduled export"].completed == 0
        rendered = io.StringIO()
        Console(file=rendered, width=100, color_system=None).print(progress.get_renderable())
        [messages_line] = [line for line in rendered.getvalue().splitlines() if line.startswith("messages")]
        assert "1,500" in messages_line
        assert any(line.startswith("scheduled export") and "0/3" in line for line in rendered.getvalue().splitlines())
    # Every observer the CLI hands to the run accepts the hook.
    SilentObserver().messages_exported("65a1b2c3d4e5f60718293a4b", 10)
    with export_observer(Output(json_output=False), EXPORT_DIR) as plain:
        plain.messages_exported("65a1b2c3d4e5f60718293a4b", 10)


def _cleanup(folder_names: list[str]) -> CleanupResult:
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    result = CleanupResult(export_dir=str(EXPORT_DIR), days=7, dry_run=True, cutoff=now, started_at=now)
    for name in folder_names:
        folder = EXPORT_DIR / name
        result.files.append(
            CleanupFile(
                str(folder / f"{name}_whatsapp_messages_2026-02-01_10-00.xlsx"),
                str(folder),
                "workbook",
                123_456,
                now - timedelta(days=30),
            )
        )
        result.folders_removed.append(str(folder))
    return result


def test_cleanup_on_a_terminal_logs_every_file_and_folder_whole() -> None:
    long_name = "acme_corporation_international_holdings_worldwide_and_partners"
    names = [long_name, *(f"folder{index:02}" for index in range(16))]
    output, screen = terminal_output(80)
    render_cleanup(output, _cleanup(names), _settings())
    text = screen.getvalue()
    for name in names:  # each on one line, the path whole, however narrow the terminal
        assert f" would delete workbook {name}/{name}_whatsapp_messages_2026-02-01_10-00.xlsx size=123456 " in text
        assert f" would remove empty folder {name}\n" in text
