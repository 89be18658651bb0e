"""Human output: a rich table on a terminal, plain log lines under cron (issue 2)."""

from __future__ import annotations

from datetime import timedelta

from helpers import run_on_a_terminal
from seeding import add_chat, add_messages, add_workspace, utcnow


def test_terminal_gets_a_table_and_cron_gets_plain_lines(mongo_db, make_env, cli, smtp_server, tmp_path):
    workspace_id = add_workspace(mongo_db, "Terminal Co")
    add_messages(mongo_db, add_chat(mongo_db, workspace_id),
                 [{"content": f"secret text {i}", "timestamp": utcnow() - timedelta(minutes=3)} for i in range(3)])
    env = make_env(**{f"WORKSPACE_{workspace_id}_EMAIL": "tty@terminal.test"})

    code, screen = run_on_a_terminal(["export", "--no-email", "--hours", "1"], env, str(tmp_path))
    assert code == 0, screen
    assert "┃" in screen or "│" in screen, screen  # a rich table
    assert "Terminal Co" in screen and "written" in screen
    assert "\x1b[" in screen  # styled for a terminal

    plain = cli(["export", "--no-email", "--hours", "1"], env=env)
    assert plain.returncode == 0
    assert "\x1b[" not in plain.stdout and "│" not in plain.stdout
    lines = plain.stdout.strip().splitlines()
    assert any(f"workspace={workspace_id}" in line and "outcome=written" in line for line in lines)
    for output in (screen, plain.stdout):
        assert "secret text" not in output and "+4915112345678" not in output  # counts only
