"""The `test-email` command's output: where the test mail went, or the step that failed."""

from __future__ import annotations

from typing import TYPE_CHECKING

from wa_export.cli.output import Output

if TYPE_CHECKING:  # rendering only; keeps `wa-export export` from importing them
    from wa_export.commands.test_email import TestEmailResult
    from wa_export.settings import Settings


def render_test_email(output: Output, result: TestEmailResult, settings: Settings) -> None:
    if output.json_output:
        output.json(result.as_dict())
    to = ", ".join(result.recipients)
    if result.error is not None:
        # No address when the workspace's only one was refused: the reason names the variable.
        target = f" to {to}" if to else ""
        output.stderr(f"test email{target} failed at step {result.error.step}: {result.error}")
        return
    if not output.json_output:
        output.log(
            "INFO", f"test email sent to {to} via {result.server} ({result.security}) with {result.attachment} attached"
        )
