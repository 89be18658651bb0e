"""The metrics file around `wa-export export`: its option, and the recorder that writes it at the very end.

Part of the CLI layer: the recorder (run_metrics.py) writes the file; this
module makes sure it runs however the command ends (exit 0 to 3, a crash) and
prints its one warning line when the file cannot be written.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from wa_export.errors import ExitCode

if TYPE_CHECKING:  # cli/app.py imports this module for MetricsFileOption: no MongoDB code at start-up
    from wa_export.run_metrics import RunRecorder

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
    """Yield the run's recorder; when the command ends (typer.Exit or a crash), write the metrics file.

    `manual`: the options make a manual run (the trigger label until the request
    is built); `enabled`: False for --dry-run and for --workers children.
    """
    from wa_export.run_metrics import RunRecorder

    recorder = RunRecorder(metrics_file, trigger="manual" if manual else "scheduled", enabled=enabled)
    try:
        yield recorder
    except typer.Exit as done:
        _finish(recorder, int(done.exit_code), json_output)
        raise
    except BaseException:
        _finish(recorder, ExitCode.FAILED, json_output)
        raise


def _finish(recorder: RunRecorder, exit_code: int, json_output: bool) -> None:
    from wa_export.cli.output import Output

    warning = recorder.finish(exit_code)
    if warning is not None:
        Output(json_output).stderr(warning)  # stderr: a --json stdout stays one document
