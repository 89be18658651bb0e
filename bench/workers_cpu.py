"""`--workers` when the cost is our own code.

    .venv/bin/python bench/workers_cpu.py [--workspaces 20] [--messages 5000] [--repeats 3]

The test MongoDB (mongoeco, a pure-Python server on the same two cores) cannot
hold "many workspaces with a few thousand messages each": its inserts slow down
with collection size (bench/RESULTS.md), and while serving a run its own CPU is
the bottleneck. So this bench runs the part of a scheduled run that is our code
- BSON batches as the driver hands them over → `rows.message_rows` →
`WorkbookWriter` → a committed workbook, once per workspace - split over N
processes exactly as `--workers N` splits a run (`workers.slot_share`, one
process per share), and compares the wall time of N = 1 and N = 2.

Results go to bench/RESULTS.md (section `workers-cpu`).
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import RESULTS, generate, machine_info, run_ours, write_section
from wa_export.export.workers import slot_share

ZONE = ZoneInfo("Europe/Berlin")


def export_share(data: Path, out: Path, workspaces: int, slot: tuple[int, int]) -> None:
    """One worker: every workspace of its share, each one a full workbook."""
    for index in slot_share(list(range(workspaces)), slot):
        run_ours(data, out / f"workspace_{index}.xlsx", ZONE)


def timed_run(data: Path, workspaces: int, workers: int) -> float:
    out = Path(tempfile.mkdtemp(prefix="wa-export-workers-"))
    try:
        context = multiprocessing.get_context("spawn")  # fresh interpreters, like `--workers` children
        processes = [
            context.Process(target=export_share, args=(data, out, workspaces, (slot, workers)))
            for slot in range(workers)
        ]
        started = time.perf_counter()
        for process in processes:
            process.start()
        for process in processes:
            process.join()
        elapsed = time.perf_counter() - started
        if any(process.exitcode != 0 for process in processes):
            raise SystemExit("a worker failed")
        if len(list(out.glob("*.xlsx"))) != workspaces:
            raise SystemExit("missing workbooks")
        return elapsed
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspaces", type=int, default=20)
    parser.add_argument("--messages", type=int, default=5000, help="messages per workspace")
    parser.add_argument("--repeats", type=int, default=3, help="runs per worker count (alternating)")
    parser.add_argument("--no-results", action="store_true", help="print only")
    args = parser.parse_args(argv)

    data = Path(tempfile.mkdtemp(prefix="wa-export-workers-data-"))
    try:
        generate(args.messages, data)
        times: dict[int, list[float]] = {1: [], 2: []}
        for round_number in range(args.repeats):
            for workers in (1, 2) if round_number % 2 == 0 else (2, 1):
                times[workers].append(timed_run(data, args.workspaces, workers))
                print(f"round {round_number + 1}: --workers {workers}: {times[workers][-1]:.2f} s", flush=True)
    finally:
        shutil.rmtree(data, ignore_errors=True)

    one, two = statistics.median(times[1]), statistics.median(times[2])
    info = machine_info()
    lines = [
        "## `--workers` when the cost is our own code (`bench/workers_cpu.py`)",
        "",
        f"Command: `python bench/workers_cpu.py --workspaces {args.workspaces} --messages {args.messages} "
        f"--repeats {args.repeats}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}); "
        f"machine: {info['cpu']}; {info['python']}.",
        "",
        f"{args.workspaces} workspaces × {args.messages:,} messages, each exported from BSON batches to a "
        "committed workbook, split over N processes with `workers.slot_share` as `--workers N` does "
        "(no database: mongoeco cannot hold this data set, see above).",
        "",
        "| workers | wall (s), median | runs (s) |",
        "|---:|---:|---|",
        *(f"| {n} | {statistics.median(times[n]):.2f} | {', '.join(f'{t:.2f}' for t in times[n])} |" for n in (1, 2)),
        "",
        f"Speed-up of `--workers 2` over `--workers 1`: **{one / two:.2f}×**.",
    ]
    print("\n".join(lines))
    if not args.no_results:
        write_section(RESULTS, "workers-cpu", "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
