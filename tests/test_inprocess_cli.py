"""The `cli` fixture runs wa-export in the test process: what it returns is what the installed script prints.

And what one in-process run leaves behind (a SIGTERM stop request, its signal
handler) does not reach the next one.
"""

from __future__ import annotations

import signal

import pytest

from conftest import Cli, MakeEnv


@pytest.mark.parametrize(
    ("args", "overrides"),
    [
        (["--version"], {}),
        (["export", "--hours", "abc"], {}),  # click's usage error on stderr, exit 2
        (["export", "--json", "--hours", "abc"], {}),  # main()'s JSON path for the same error
        (["config", "--json"], {}),  # settings from exactly the given env, and ./.env of the working directory
        (["config"], {"EXPORT_TIMEZONE": "Mars/Base"}),  # an invalid setting: exit 2, one line each
        (["export", "--help"], {"COLUMNS": "120"}),  # click's help follows COLUMNS
    ],
)
def test_in_process_run_prints_what_the_installed_script_prints(
    cli: Cli, cli_process: Cli, make_env: MakeEnv, tmp_path, args: list[str], overrides: dict[str, str]
) -> None:
    (tmp_path / ".env").write_text("EXPORT_CLEANUP_DAYS=11\n")
    env = make_env(**overrides)
    in_process, child = cli(args, env=env), cli_process(args, env=env)
    assert (in_process.returncode, in_process.stdout, in_process.stderr) == (
        child.returncode,
        child.stdout,
        child.stderr,
    )
    assert in_process.stdout or in_process.stderr  # each case prints something to compare


def test_config_reads_the_working_directorys_env_file_in_process(cli: Cli, make_env: MakeEnv, tmp_path) -> None:
    (tmp_path / ".env").write_text("EXPORT_CLEANUP_DAYS=11\n")
    result = cli(["config"], env=make_env(EXPORT_CLEANUP_DAYS=None))
    assert result.returncode == 0, result.stderr
    [line] = [line for line in result.stdout.splitlines() if "EXPORT_CLEANUP_DAYS" in line]
    assert "11" in line and ".env" in line, line


def test_a_sigterm_stops_only_the_run_it_arrived_in() -> None:
    # In a process the run ends with the process; in one that runs the CLI again
    # (these tests) the stop request and the handler must end with the run.
    from wa_export.cli.app import _stop_on_sigterm
    from wa_export.mail import transport as deadline

    previous = signal.getsignal(signal.SIGTERM)
    with _stop_on_sigterm() as stop:
        signal.raise_signal(signal.SIGTERM)
        assert stop.is_set()
        assert deadline._stop_requested_at is not None  # SMTP steps of this run get only the grace
    assert deadline._stop_requested_at is None
    assert signal.getsignal(signal.SIGTERM) is previous
