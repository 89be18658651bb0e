"""The deploy files ship in the package: in the wheel, printed and written by `wa-export deploy`,
and the commented env example names every setting with its default."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from inprocess_cli import run_wa_export
from seeding import cli_env, run_cli
from wa_export.commands.deploy import KINDS, all_files, deploy, shipped_files
from wa_export.errors import UsageProblem, WaExportError
from wa_export.settings import (
    RULES,
    WORKSPACE_VARIABLES,
    read_configuration,
    sending_problems,
    validate_environment,
    workspace_variable_name,
)

ROOT = Path(__file__).resolve().parent.parent
DEPLOY_FILES = ROOT / "src" / "wa_export" / "deploy_files"
ENV_EXAMPLE = DEPLOY_FILES / "env" / "env.example"
UNITS = DEPLOY_FILES / "systemd"
# `NAME=value` or `# NAME=value`: a setting line, active or commented out with its default.
BUILD_WHEEL = "import sys; from setuptools import build_meta; print(build_meta.build_wheel(sys.argv[1]))"
SETTING_LINE = re.compile(r"^(#\s?)?([A-Z][A-Za-z0-9_]*)=(.*)$")


def _repository_files() -> dict[str, bytes]:
    return {
        str(path.relative_to(DEPLOY_FILES.parent.parent)): path.read_bytes()
        for path in DEPLOY_FILES.rglob("*")
        if path.is_file()
    }


def test_the_built_wheel_contains_every_deploy_file_and_finds_them_installed(tmp_path):
    # The build backend itself, on a copy of the sources: offline, no build isolation, ~1 s.
    tree = tmp_path / "tree"
    shutil.copytree(ROOT / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tree / name)
    built = subprocess.run(
        [sys.executable, "-c", BUILD_WHEEL, str(tmp_path / "dist")],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert built.returncode == 0, built.stderr
    wheel = tmp_path / "dist" / built.stdout.strip().splitlines()[-1]
    expected = _repository_files()
    assert {"wa_export/deploy_files/systemd/wa-export.service", "wa_export/deploy_files/env/env.example"} <= set(
        expected
    )
    with zipfile.ZipFile(wheel) as archive:
        packed = {name: archive.read(name) for name in archive.namelist() if "/deploy_files/" in name}
        archive.extractall(tmp_path / "installed")
    assert packed == expected

    # Installed from that wheel (not this editable checkout), the package reads its own copies.
    listed = subprocess.run(
        [
            sys.executable,
            "-c",
            "from wa_export.commands.deploy import all_files; print(*(f.name for f in all_files()))",
        ],
        env={**os.environ, "PYTHONPATH": str(tmp_path / "installed")},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    assert sorted(listed.stdout.split()) == sorted(Path(name).name for name in expected)


def test_every_kind_and_every_file_name_prints_the_shipped_text():
    assert set(KINDS) == {path.name for path in DEPLOY_FILES.iterdir()}
    for kind in KINDS:
        files = shipped_files(kind)
        assert files and [file.name for file in files] == sorted(path.name for path in (DEPLOY_FILES / kind).iterdir())
        for file in files:
            assert file.text == (DEPLOY_FILES / kind / file.name).read_text(encoding="utf-8")
            assert shipped_files(file.name) == [file]
    assert len(all_files()) == len(_repository_files())


def test_an_unknown_name_is_one_sentence_naming_the_choices():
    with pytest.raises(UsageProblem) as refused:
        shipped_files("systemd-units")
    message = str(refused.value)
    assert message.count(".") >= 1 and "\n" not in message
    assert "'systemd-units'" in message and "systemd, cron, logrotate, env" in message and "wa-export.timer" in message


def test_writing_into_a_directory_makes_0644_files_whatever_the_umask(tmp_path):
    previous = os.umask(0o077)
    try:
        result = deploy("systemd", tmp_path)
    finally:
        os.umask(previous)
    assert sorted(path.name for path in result.written) == sorted(
        path.name for path in (DEPLOY_FILES / "systemd").iterdir()
    )
    for path in result.written:
        assert path.parent == tmp_path and path.stat().st_mode & 0o777 == 0o644
        assert path.read_text() == (DEPLOY_FILES / "systemd" / path.name).read_text()
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".")]  # no temp file left

    again = deploy("systemd", tmp_path)  # the same files again: nothing to do, not a conflict
    assert again.written == [] and len(again.unchanged) == len(result.written)


def test_a_differing_file_is_kept_unless_forced(tmp_path):
    unit = tmp_path / "wa-export.timer"
    unit.write_text("[Timer]\nOnCalendar=hourly\n")  # the operator's own edit
    with pytest.raises(UsageProblem) as refused:
        deploy("systemd", tmp_path)
    assert str(unit) in str(refused.value) and "--force" in str(refused.value)
    assert unit.read_text() == "[Timer]\nOnCalendar=hourly\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["wa-export.timer"]  # nothing else written either

    forced = deploy("systemd", tmp_path, overwrite=True)
    assert unit in forced.written and unit.read_text() == (DEPLOY_FILES / "systemd" / unit.name).read_text()


def test_a_missing_or_unwritable_directory_is_one_sentence(tmp_path):
    with pytest.raises(UsageProblem, match=r"is not a directory; create it first"):
        deploy("cron", tmp_path / "missing")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.geteuid() == 0:  # root writes anyway: make the target a directory instead of a file
        (locked / "wa-export.crontab").mkdir()
        with pytest.raises(WaExportError, match=r"Cannot write .*wa-export\.crontab \(.*\); run as a user who"):
            deploy("cron", locked, overwrite=True)
    else:
        with pytest.raises(WaExportError, match=r"Cannot write .*wa-export\.crontab \(Permission denied\)"):
            deploy("cron", locked)


def _setting_lines() -> list[tuple[bool, str, str]]:
    """(active, name, value) of every setting line of the env example."""
    found = []
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        match = SETTING_LINE.match(line)
        if match:
            found.append((match.group(1) is None, match.group(2), match.group(3)))
    return found


def test_the_env_example_names_every_setting_once_with_its_default_and_range():
    lines = _setting_lines()
    names = [name for _, name, _ in lines if workspace_variable_name(name) is None]
    missing = sorted({rule.variable for rule in RULES} - set(names))
    assert missing == [], f"add a commented line with its default for {missing} to {ENV_EXAMPLE}"
    assert sorted(names) == sorted(rule.variable for rule in RULES), f"{ENV_EXAMPLE}: a setting twice, or unknown"
    # One example line for each per-workspace variable (WORKSPACE_<ID>_EMAIL, ...), with a well-formed id.
    per_workspace = [workspace_variable_name(name) for _, name, _ in lines if workspace_variable_name(name)]
    assert all(workspace_id for workspace_id, _ in per_workspace)  # type: ignore[misc]
    suffixes = sorted(suffix for _, suffix in per_workspace)  # type: ignore[misc]
    assert suffixes == sorted(WORKSPACE_VARIABLES), f"one example WORKSPACE_<ID>_<SUFFIX> line each in {ENV_EXAMPLE}"
    for rule in RULES:
        active, _, value = next(line for line in lines if line[1] == rule.variable)
        if not active:  # commented out: exactly the default as a .env would write it
            assert value == rule.default, (rule.variable, value, rule.default)
        if rule.bounds is not None:  # the comment just above the line states the range `config` checks
            comment = _comment_above(rule.variable)
            for number in (rule.bounds.minimum, rule.bounds.maximum):
                assert f"{number:g}" in comment or str(int(number)) in comment, (rule.variable, number, comment)


def _comment_above(variable: str) -> str:
    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    index = next(number for number, line in enumerate(lines) if SETTING_LINE.match(line) and f"{variable}=" in line)
    comment: list[str] = []
    while index > 0 and lines[index - 1].startswith("# ") and not SETTING_LINE.match(lines[index - 1]):
        index -= 1
        comment.insert(0, lines[index])
    return " ".join(comment)


def test_the_env_example_as_written_is_a_valid_configuration(tmp_path):
    env_file = tmp_path / "env"
    env_file.write_text(ENV_EXAMPLE.read_text(encoding="utf-8"))
    settings, problems = validate_environment(read_configuration(env_file, {}))
    assert problems == [] and sending_problems(settings) == []
    assert settings.smtp_server == "smtp.example.com"


# --- the command ---


def _wa_export(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_wa_export(args, cli_env(cwd), cwd)


def test_deploy_prints_a_kind_or_one_file_exactly_as_shipped(tmp_path):
    cron = _wa_export(["deploy", "cron"], tmp_path)
    assert cron.returncode == 0, cron.stderr
    assert cron.stdout == (DEPLOY_FILES / "cron" / "wa-export.crontab").read_text()
    timer = _wa_export(["deploy", "wa-export.timer"], tmp_path)
    assert timer.stdout == (DEPLOY_FILES / "systemd" / "wa-export.timer").read_text()
    units = _wa_export(["deploy", "systemd"], tmp_path).stdout
    for path in (DEPLOY_FILES / "systemd").iterdir():
        assert f"# ---- {path.name} ----\n{path.read_text()}" in units + "\n"
    document = json.loads(_wa_export(["deploy", "env", "--json"], tmp_path).stdout)
    assert document["ok"] and document["files"][0]["text"] == ENV_EXAMPLE.read_text()


def test_deploy_to_a_directory_writes_refuses_a_change_and_forces(tmp_path):
    target = tmp_path / "units"
    target.mkdir()
    written = _wa_export(["deploy", "systemd", "--to", str(target)], tmp_path)
    assert written.returncode == 0, written.stderr
    assert f"wrote {target / 'wa-export.service'}" in written.stdout and "systemctl daemon-reload" in written.stdout
    assert sorted(path.name for path in target.iterdir()) == sorted(path.name for path in UNITS.iterdir())

    (target / "wa-export.timer").write_text("[Timer]\nOnCalendar=hourly\n")
    refused = _wa_export(["deploy", "systemd", "--to", str(target)], tmp_path)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.count("\n") == 1 and "--force" in refused.stderr
    forced = _wa_export(["deploy", "systemd", "--to", str(target), "--force"], tmp_path)
    assert forced.returncode == 0 and f"wrote {target / 'wa-export.timer'}" in forced.stdout
    assert (target / "wa-export.timer").read_text() == (UNITS / "wa-export.timer").read_text()


@pytest.mark.parametrize("args", [["deploy", "units"], ["deploy", "env", "--to", "missing-dir"]])
def test_deploy_mistakes_are_one_sentence_and_exit_2(args, tmp_path):
    result = _wa_export(args, tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("wa-export: ") and result.stderr.count("\n") == 1, result.stderr


def test_bash_completion_is_shown_and_completes_commands_and_deploy_names(tmp_path):
    shown = run_cli(["--show-completion", "bash"], cli_env(tmp_path), tmp_path, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "complete -o default -F _wa_export_completion wa-export" in shown.stdout
    assert "_WA_EXPORT_COMPLETE=complete_bash" in shown.stdout

    def complete(words: str) -> list[str]:
        env = {**cli_env(tmp_path), "_WA_EXPORT_COMPLETE": "complete_bash", "COMP_WORDS": words}
        env["COMP_CWORD"] = str(len(words.split()) - 1)
        result = run_cli([], env, tmp_path, timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stdout.split()

    assert complete("wa-export sta") == ["stats", "state"]
    assert complete("wa-export deploy sys") == ["systemd"]
    assert "--force" in complete("wa-export deploy systemd --")
