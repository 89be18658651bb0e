"""The `deploy` command's output: the shipped files as they are, or what was written where and what next."""

from __future__ import annotations

from typing import TYPE_CHECKING

from wa_export.cli.output import Output

if TYPE_CHECKING:  # rendering only
    from wa_export.commands.deploy import DeployResult

# After `--to DIR`: the commands that put the written files to use.
NEXT_STEPS = {
    "systemd": "Next: sudo systemctl daemon-reload && sudo systemctl enable --now "
    "wa-export.timer wa-export-cleanup.timer wa-export-health.timer",
    "cron": "Next, as root: crontab -u wa-export {directory}/wa-export.crontab",
    "logrotate": "Next: sudo logrotate -d /etc/logrotate.d/wa-export (a dry run of the rotation)",
    "env": "Next: copy env.example to your env file, fill in the placeholders, chmod 600 it, "
    "then run wa-export config --env-file FILE",
}


def render_deploy(output: Output, result: DeployResult) -> None:
    if output.json_output:
        output.json(result.as_dict())
        return
    if result.directory is None:
        # As shipped, ready for `> file` or `| sudo tee`; several files each after a header comment.
        for number, file in enumerate(result.files):
            if len(result.files) > 1:
                output.line(f"{'' if number == 0 else chr(10)}# ---- {file.name} ----")
            output.line(file.text.rstrip("\n"))
        return
    for path in result.written:
        output.line(f"wrote {path}")
    for path in result.unchanged:
        output.line(f"unchanged {path} (already as shipped)")
    kinds = {file.kind for file in result.files}
    if len(kinds) == 1:
        kind = kinds.pop()
        output.line(NEXT_STEPS[kind].format(directory=result.directory))
