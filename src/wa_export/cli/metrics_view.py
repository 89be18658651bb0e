"""The `--metrics-file` option of `export`, and writing the file however the command ends (exit 0 to 3, a crash)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from wa_export.errors import ExitCode

if TYPE_CHECKING:  # cli/app.py imports this module for MetricsFileOption: no MongoDB code at start-up
    from wa_export.metrics import RunRecorder

MetricsFileOption = Annotated[
    Path | None,
    typer.Option(
        "--metrics-file",
        metavar="PATH",
        help="After the run, write a Prometheus textfile-collector file here (*.prom; wins over EXPORT_METRICS_FILE).",
        show_default=False,
    ),
]


@contextmanager
def recorded_run(metrics_file: Path | None, manual: bool, enabled: bool, json_output: bool) -> Iterator[RunRecorder]:
    """Yield the run's recorder and write its file when the command ends; `manual` is the trigger until known."""
    from wa_export.cli.output import Output
    from wa_export.metrics import RunRecorder

    recorder = RunRecorder(metrics_file, trigger="manual" if manual else "scheduled", enabled=enabled)
    exit_code = int(ExitCode.FAILED)  # a crash, unless the command ends normally or with its own code
    try:
        yield recorder
        exit_code = int(ExitCode.OK)
    except typer.Exit as done:
        exit_code = int(done.exit_code)
        raise
    finally:
        warning = recorder.finish(exit_code)
        if warning is not None:
            Output(json_output).stderr(warning)  # stderr: a --json stdout stays one document
