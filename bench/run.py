"""wa-export speed and memory bench: our export path against the alternatives.

    .venv/bin/python bench/run.py                      # 10k, 100k, 1M rows (~10 min), writes bench/RESULTS.md
    .venv/bin/python bench/run.py --quick              # 10k, 50k: a fast check, prints only
    .venv/bin/python bench/run.py --sizes 100000 --contenders ours,openpyxl

Input: realistic message documents (and their chats) are generated once per size,
``bson.encode``d and stored as batches of ``mongo.MESSAGE_BATCH_SIZE`` documents,
exactly the bytes a MongoDB cursor batch carries. Every contender reads the same
batches and decodes them with the client's codec options (``tz_aware``), the way
pymongo hands documents over, so decoding is part of every contender's time.

Contenders, each in its own fresh subprocess (peak RSS is the child's own
``ru_maxrss``, not polluted by the others or by data generation):

* ``ours``       - ``rows.message_rows`` -> ``WorkbookWriter.append_many`` -> ``commit``
* ``encrypted``  - ``ours`` committed with a workbook password (ECMA-376 Agile, AES-256), as for a
                   workspace with one: side by side with ``ours``, the cost of encryption
* ``pandas``     - the original service: every row in a list of dicts, a DataFrame,
                   ``to_excel(engine="openpyxl")``
* ``openpyxl``   - bare openpyxl write-only: the same rows mapped to plain tuples
                   (naive local datetimes, no sanitising) and ``ws.append``
* ``xlsxwriter`` - XlsxWriter ``constant_memory`` with the same tuples

Time is measured inside the child from the first batch read to the closed file
(interpreter start-up and imports excluded). ``--repeat N`` runs every contender N times,
interleaved, and keeps each one's median run: a fairer side-by-side on a busy machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import bson
from bson import ObjectId
from bson.codec_options import CodecOptions

# Encryption's cost is judged on a 100k-row export (--sizes 100000), where its per-row cost shows.
ENCRYPTION_TARGET_ROWS = 100_000

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
ZONE = "Europe/Berlin"  # a zone with DST, so time conversion is really exercised
WORKSPACE_ID = "65f0c0ffee0000000000beef"
CONTENDERS = ("ours", "encrypted", "pandas", "openpyxl", "xlsxwriter")
BENCH_PASSWORD = "bench-Workbook-Pa55"  # the encrypted contender's password (bench only)
from wa_export.workbook.writer import HEADER

CHILD_TIMEOUT = 1500  # seconds; pandas at 1M rows is the slow one


def batch_size() -> int:
    from wa_export.store import connection as mongo

    return mongo.MESSAGE_BATCH_SIZE


def codec_options() -> CodecOptions:
    """What the driver decodes messages with: the client's options (tz_aware) or mongo's own."""
    from wa_export.store import connection as mongo

    options = getattr(mongo, "MESSAGE_CODEC_OPTIONS", None)
    return options if options is not None else CodecOptions(tz_aware=True)


# ----------------------------------------------------------------------------- data

_PHRASES = [
    "Hello, I would like to know the status of my order",
    "Hi! Your order #{n} has been shipped and will arrive tomorrow.",
    "Can you send me the invoice again please?",
    "Sure, here is the link: https://example.com/i/{n}",
    "Danke für Ihre Nachricht, wir melden uns in Kürze.",
    "¿Cuál es el horario de atención?",
    "Our opening hours are Mon–Fri 9:00–18:00 🕘",
    "Thanks!! 🙏😊",
    "مرحبا، هل يمكنني تغيير عنوان التسليم؟",
    "您好，请问可以退货吗？",
    "ok",
    "The payment of 49,90 € failed, please try another card.",
    "=SUM(A1:A9) is what my spreadsheet shows",
    "- item one\n- item two\n- item three",
    "I'll call you back in 5 minutes",
]


def _content(rng: random.Random, n: int) -> Any:
    roll = rng.random()
    if roll < 0.01:
        return None  # missing content happens
    if roll < 0.012:
        return 12345  # non-text content happens too
    parts = rng.randint(1, 4)
    return " ".join(rng.choice(_PHRASES).format(n=n) for _ in range(parts))


def generate(rows: int, directory: Path, seed: int = 20240501) -> dict[str, Any]:
    """Write chats.bson and messages.batches (length-prefixed batches of BSON documents)."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    workspace = ObjectId(WORKSPACE_ID)
    chat_count = max(5, min(20_000, rows // 40))
    chats = []
    with open(directory / "chats.bson", "wb") as handle:
        for index in range(chat_count):
            chat = {
                "_id": ObjectId(),
                "workspace_id": workspace,
                "phone_number": f"+1555{index % 7:07d}",
                "customer_phone": f"+49151{rng.randrange(10**8):08d}",
            }
            chats.append(chat["_id"])
            handle.write(
                bson.encode(
                    {"_id": chat["_id"], "phone_number": chat["phone_number"], "customer_phone": chat["customer_phone"]}
                )
            )
    start = dt.datetime(2024, 3, 30, 12, 0, tzinfo=dt.UTC)  # spans the 2024-03-31 DST change
    step_ms = max(1, (3 * 86_400_000) // max(rows, 1))
    size = batch_size()
    written = 0
    with open(directory / "messages.batches", "wb") as handle:
        while written < rows:
            count = min(size, rows - written)
            chunks = []
            for offset in range(count):
                number = written + offset
                direction = "incoming" if rng.random() < 0.5 else "outgoing"
                document = {
                    "_id": ObjectId(),
                    "chat_id": chats[rng.randrange(chat_count)],
                    "direction": direction,
                    "is_ai_generated": direction == "outgoing" and rng.random() < 0.6,
                    "content": _content(rng, number),
                    "timestamp": start + dt.timedelta(milliseconds=number * step_ms + rng.randrange(step_ms)),
                }
                chunks.append(bson.encode(document))
            data = b"".join(chunks)
            handle.write(struct.pack("<I", len(data)))
            handle.write(data)
            written += count
    return {"rows": rows, "chats": chat_count, "bytes": (directory / "messages.batches").stat().st_size}


def read_chats(directory: Path) -> dict[ObjectId, Any]:
    from wa_export.store.connection import Chat

    data = (directory / "chats.bson").read_bytes()
    return {doc["_id"]: Chat(doc.get("phone_number"), doc.get("customer_phone")) for doc in bson.decode_all(data)}


def message_batches(directory: Path) -> Iterator[list[dict[str, Any]]]:
    """Decoded batches, one ``decode_all`` per cursor batch, as the driver does."""
    options = codec_options()
    with open(directory / "messages.batches", "rb") as handle:
        while True:
            head = handle.read(4)
            if not head:
                return
            (length,) = struct.unpack("<I", head)
            yield bson.decode_all(handle.read(length), options)


def messages(directory: Path) -> Iterator[dict[str, Any]]:
    for batch in message_batches(directory):
        yield from batch


# ----------------------------------------------------------------------------- contenders


def _plain_rows(directory: Path, zone: Any) -> Iterator[tuple[Any, ...]]:
    """The minimal mapping the baselines get: same columns, naive local datetimes, no sanitising."""
    chats = read_chats(directory)
    for message in messages(directory):
        chat = chats.get(message.get("chat_id"))
        if chat is None:
            continue
        if message.get("direction") == "incoming":
            status, sender, receiver = "received", chat.customer_phone, chat.phone_number
        else:
            status = "sent_via_ai" if message.get("is_ai_generated") is True else "sent_by_human"
            sender, receiver = chat.phone_number, chat.customer_phone
        ts = message["timestamp"]
        if not isinstance(ts, dt.datetime):
            ts = ts.as_datetime()  # DatetimeMS, if the codec options ask for it
        yield (sender, receiver, message.get("content"), ts.astimezone(zone).replace(tzinfo=None), status, WORKSPACE_ID)


def run_ours(directory: Path, out: Path, zone: Any) -> int:
    from wa_export.workbook.writer import WorkbookWriter

    return _write_rows(WorkbookWriter, directory, out, zone)


def _write_rows(writer_class: Any, directory: Path, out: Path, zone: Any, password: str | None = None) -> int:
    """rows.py -> `writer_class` -> committed workbook: our export path, with either of our writers."""
    from wa_export.export.rows import RowStats, message_rows

    chats = read_chats(directory)
    stats = RowStats()
    with writer_class(out, zone) as writer:
        writer.append_many(message_rows(messages(directory), chats, WORKSPACE_ID, stats))
        if password is None:
            writer.commit()
        else:
            writer.commit(password=password)
        return int(writer.rows_written)


def run_encrypted(directory: Path, out: Path, zone: Any) -> int:
    """ "ours" committed with a workbook password, as a protected workspace's export: the file is encrypted."""
    from wa_export.workbook.writer import WorkbookWriter

    return _write_rows(WorkbookWriter, directory, out, zone, BENCH_PASSWORD)


def run_pandas(directory: Path, out: Path, zone: Any) -> int:
    import pandas as pd

    # The original: the whole result in memory as dicts, then one DataFrame.
    chats = read_chats(directory)
    records = []
    for message in list(messages(directory)):
        chat = chats.get(message.get("chat_id"))
        if chat is None:
            continue
        incoming = message.get("direction") == "incoming"
        records.append(
            {
                "Sender Phone Number": chat.customer_phone if incoming else chat.phone_number,
                "Receiver Phone Number": chat.phone_number if incoming else chat.customer_phone,
                "Message Content": message.get("content", ""),
                "Timestamp": message["timestamp"].astimezone(zone).replace(tzinfo=None),
                "Status": "received"
                if incoming
                else ("sent_via_ai" if message.get("is_ai_generated") else "sent_by_human"),
                "Workspace ID": WORKSPACE_ID,
            }
        )
    frame = pd.DataFrame(records, columns=list(HEADER))
    frame.to_excel(out, index=False, sheet_name="WhatsApp Messages", engine="openpyxl")
    return len(frame)


def run_openpyxl(directory: Path, out: Path, zone: Any) -> int:
    from openpyxl import Workbook

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("WhatsApp Messages")
    sheet.append(HEADER)
    count = 0
    append = sheet.append
    for row in _plain_rows(directory, zone):
        append(row)
        count += 1
    workbook.save(out)
    return count


def run_xlsxwriter(directory: Path, out: Path, zone: Any) -> int:
    import xlsxwriter

    workbook = xlsxwriter.Workbook(str(out), {"constant_memory": True})
    sheet = workbook.add_worksheet("WhatsApp Messages")
    date_format = workbook.add_format({"num_format": "yyyy-mm-dd hh:mm:ss"})
    sheet.write_row(0, 0, HEADER)
    row_number = 0
    write_row, write_datetime = sheet.write_row, sheet.write_datetime
    for sender, receiver, content, ts, status, workspace in _plain_rows(directory, zone):
        row_number += 1
        write_row(row_number, 0, (sender, receiver, content))
        write_datetime(row_number, 3, ts, date_format)
        write_row(row_number, 4, (status, workspace))
    workbook.close()
    return row_number


def run_scheduled(directory: Path, out: Path, zone: Any) -> int:
    """Like "ours", with the writer a scheduled export uses (the template writer, where the tree has one)."""
    try:
        from wa_export.workbook.template import TemplateWorkbookWriter as Writer
    except ImportError:  # a tree from before the template writer (bench/scale.py's "before")
        from wa_export.workbook.writer import WorkbookWriter as Writer  # type: ignore[assignment]

    return _write_rows(Writer, directory, out, zone)


RUNNERS = {
    "ours": run_ours,
    "encrypted": run_encrypted,
    "pandas": run_pandas,
    "openpyxl": run_openpyxl,
    "xlsxwriter": run_xlsxwriter,
    "scheduled": run_scheduled,
}


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def run_contender(name: str, directory: Path, out: Path) -> dict[str, Any]:
    """Run one contender in this process; the core the subprocesses (and the smoke test) call."""
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(ZONE)
    runner = RUNNERS[name]
    baseline = peak_rss_bytes()
    started, cpu_started = time.perf_counter(), time.process_time()
    rows = runner(directory, out, zone)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    return {
        "contender": name,
        "rows": rows,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "rows_per_second": rows / seconds if seconds else 0.0,
        "peak_rss": peak_rss_bytes(),
        "rss_before": baseline,
        "file_bytes": out.stat().st_size,
    }


def _child(name: str, directory: Path, out: Path) -> None:
    if name in ("ours", "scheduled", "encrypted"):
        import wa_export.export.rows
        import wa_export.workbook.writer

        if name == "encrypted":
            import wa_export.workbook.encryption

        if name == "scheduled":
            try:
                import wa_export.workbook.template
            except ImportError:
                pass
    elif name == "pandas":
        import openpyxl
    elif name == "openpyxl":
        import openpyxl  # noqa: F401
    elif name == "xlsxwriter":
        import xlsxwriter  # noqa: F401
    import wa_export.store.connection  # noqa: F401

    print(json.dumps(run_contender(name, directory, out)))


def run_in_subprocess(name: str, directory: Path, out: Path, timeout: float = CHILD_TIMEOUT) -> dict[str, Any]:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        name,
        "--data",
        str(directory),
        "--out",
        str(out),
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"contender": name, "error": f"timed out after {timeout:.0f} s"}
    finally:
        if out.exists():
            out.unlink()
    if done.returncode != 0:
        return {"contender": name, "error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- report


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median time (an error if any run failed), so one disturbed run does not decide."""
    failed = [run for run in runs if "error" in run]
    if failed:
        return failed[0]
    ordered = sorted(runs, key=lambda run: float(run["seconds"]))
    return {**ordered[len(ordered) // 2], "runs": len(runs)}


def machine_info() -> dict[str, str]:
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = []
    for package in (
        "pymongo",
        "openpyxl",
        "lxml",
        "msoffcrypto-tool",
        "pandas",
        "numpy",
        "xlsxwriter",
        "mongoeco",
        "psutil",
    ):
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            pass
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        memory_text = f"{memory:.0f} GiB RAM"
    except (ValueError, OSError):
        memory_text = "RAM unknown"
    return {
        "cpu": f"{os.cpu_count()} cores, {model}, {memory_text}",
        "python": f"{platform.python_implementation()} {platform.python_version()} on {platform.platform()}",
        "libraries": ", ".join(versions),
        "batch": f"MESSAGE_BATCH_SIZE={batch_size()}, codec options: {codec_options()!r}",
    }


def _mb(value: float) -> str:
    return f"{value / 2**20:.0f}"


def table(results: dict[int, dict[str, dict[str, Any]]]) -> list[str]:
    lines = [
        "| rows | contender | time (s) | rows/s | peak RSS (MB) | vs ours |",
        "|---:|---|---:|---:|---:|---|",
    ]
    for size, by_name in results.items():
        ours = by_name.get("ours", {})
        for name, result in by_name.items():
            if "error" in result:
                lines.append(f"| {size:,} | {name} | – | – | – | {result['error']} |")
                continue
            relation = ""
            if name == "encrypted" and ours.get("seconds"):
                relation = f"{(result['seconds'] / ours['seconds'] - 1) * 100:+.0f} % time vs ours"
            elif name != "ours" and ours.get("seconds"):
                relation = f"ours is {result['seconds'] / ours['seconds']:.2f}× faster"
            lines.append(
                f"| {size:,} | {name} | {result['seconds']:.2f} | {result['rows_per_second']:,.0f} | "
                f"{_mb(result['peak_rss'])} | {relation} |"
            )
    return lines


def targets(results: dict[int, dict[str, dict[str, Any]]]) -> list[str]:
    def get(size: int, name: str) -> dict[str, Any] | None:
        result = results.get(size, {}).get(name)
        return result if result and "error" not in result else None

    lines = []
    for size in results:
        ours, pandas, bare, encrypted = (get(size, name) for name in ("ours", "pandas", "openpyxl", "encrypted"))
        if ours and pandas:
            ratio = ours["rows_per_second"] / pandas["rows_per_second"]
            verdict = "met" if ratio >= 2.0 else "NOT met"
            lines.append(f"- {size:,} rows: ours / pandas rows/s = **{ratio:.2f}×** (target ≥ 2.0×: {verdict})")
        if ours and bare:
            ratio = ours["seconds"] / bare["seconds"]
            verdict = "met" if ratio <= 1.15 else "NOT met"
            lines.append(
                f"- {size:,} rows: ours time / bare openpyxl time = **{ratio:.2f}** (target ≤ 1.15: {verdict})"
            )
        if ours and encrypted:
            ratio = encrypted["seconds"] / ours["seconds"]
            verdict = "met" if ratio <= 1.30 else "NOT met"
            if size < ENCRYPTION_TARGET_ROWS:  # the key derivation's fixed ~0.1 s dominates a small export
                verdict = f"the target applies from {ENCRYPTION_TARGET_ROWS:,} rows; {verdict} here"
            lines.append(
                f"- {size:,} rows: encrypted time / ours time = **{ratio:.2f}** (encryption adds at most 30 %,"
                f" target ≤ 1.30: {verdict}); peak RSS {_mb(encrypted['peak_rss'])} MB vs {_mb(ours['peak_rss'])} MB"
            )
    sizes = sorted(results)
    big = get(sizes[-1], "ours") if sizes else None
    if big:
        verdict = "met" if big["peak_rss"] <= 150 * 2**20 else "NOT met"
        lines.append(
            f"- peak RSS of ours at {sizes[-1]:,} rows = **{_mb(big['peak_rss'])} MB** (target ≤ 150 MB: {verdict})"
        )
    if len(sizes) >= 2:
        small = get(sizes[-2], "ours")
        if small and big:
            ratio = big["peak_rss"] / small["peak_rss"]
            verdict = "met" if ratio <= 1.3 else "NOT met"
            lines.append(
                f"- RSS({sizes[-1]:,}) / RSS({sizes[-2]:,}) of ours = **{ratio:.2f}** (target ≤ 1.3: {verdict})"
            )
    return lines


def encryption_notes(results: dict[int, dict[str, dict[str, Any]]]) -> list[str]:
    """File sizes of the side-by-side, and what the memory figures mean."""
    lines = ["", "Notes:", ""]
    for size, by_name in results.items():
        plain, encrypted = by_name.get("ours", {}), by_name.get("encrypted", {})
        if "file_bytes" in plain and "file_bytes" in encrypted:
            lines.append(
                f"- {size:,} rows: workbook {plain['file_bytes'] / 2**20:.2f} MB plain, {encrypted['file_bytes'] / 2**20:.2f} MB "
                "encrypted (the OLE container adds a few KB; the attachment limit applies to the encrypted size)."
            )
    lines.append(
        "- The file is encrypted in 4 KiB segments straight to disk: the peak RSS difference is the cryptography "
        "libraries' import, not a copy of the workbook (tests/test_workbook_encryption.py bounds the allocations "
        "while encrypting a 20 MB file below 2 MB; msoffcrypto-tool's own `encrypt` allocates 3× the file)."
    )
    return lines


def write_section(path: Path, name: str, body: str) -> None:
    """Replace (or append) the section between this script's markers; other sections stay."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = (
        path.read_text()
        if path.exists()
        else "# wa-export bench results\n\nGenerated by the scripts in `bench/`; each section says how it was produced.\n"
    )
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=None, help="comma list of row counts (default 10000,100000,1000000)")
    parser.add_argument("--quick", action="store_true", help="10k and 50k rows; prints only unless --results is given")
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--repeat", type=int, default=1, help="runs per contender, interleaved; the median is kept")
    parser.add_argument(
        "--results", type=Path, default=None, help=f"markdown file to update (default {RESULTS} for full runs)"
    )
    parser.add_argument("--child", choices=sorted(RUNNERS), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        _child(args.child, args.data, args.out)
        return 0

    sizes = [int(s) for s in (args.sizes or ("10000,50000" if args.quick else "10000,100000,1000000")).split(",")]
    names = [n.strip() for n in args.contenders.split(",") if n.strip()]
    unknown = set(names) - set(CONTENDERS)
    if unknown:
        parser.error(f"unknown contender(s): {', '.join(sorted(unknown))}")
    results_path = args.results if args.results is not None else (None if args.quick else RESULTS)
    command = "python bench/run.py" + (" " + " ".join(sys.argv[1:]) if argv is None and len(sys.argv) > 1 else "")

    info = machine_info()
    for key, value in info.items():
        print(f"{key}: {value}")
    results: dict[int, dict[str, dict[str, Any]]] = {}
    work = Path(tempfile.mkdtemp(prefix="wa-export-bench-"))
    try:
        for size in sizes:
            data = work / f"data-{size}"
            started = time.perf_counter()
            generated = generate(size, data)
            print(
                f"\n{size:,} rows: generated {generated['chats']:,} chats, {generated['bytes'] / 2**20:.0f} MB of BSON "
                f"in {time.perf_counter() - started:.1f} s",
                flush=True,
            )
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
            for _ in range(max(1, args.repeat)):
                for name in names:
                    runs[name].append(run_in_subprocess(name, data, work / f"{name}-{size}.xlsx"))
            results[size] = {name: median_run(found) for name, found in runs.items()}
            for name, result in results[size].items():
                if "error" in result:
                    print(f"  {name:<10} ERROR {result['error']}", flush=True)
                else:
                    print(
                        f"  {name:<10} {result['seconds']:8.2f} s {result['rows_per_second']:>10,.0f} rows/s "
                        f"peak RSS {_mb(result['peak_rss']):>5} MB",
                        flush=True,
                    )
            shutil.rmtree(data, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print()
    rows = table(results)
    ratio_lines = targets(results)
    print("\n".join(rows))
    print()
    print("\n".join(ratio_lines))
    if results_path is not None:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        # The side-by-side of encryption alone gets its own section, so it does not replace the full comparison.
        encryption_only = set(names) == {"ours", "encrypted"}
        section = "run.py encryption" if encryption_only else "run.py"
        heading = (
            "## Password-protected export vs plain, side by side (`bench/run.py`)"
            if encryption_only
            else "## Export path vs pandas, bare openpyxl and XlsxWriter (`bench/run.py`)"
        )
        body = "\n".join(
            [
                heading,
                "",
                f"Command: `{command}` ({stamp})",
                "",
                f"- Machine: {info['cpu']}",
                f"- Python: {info['python']}",
                f"- Libraries: {info['libraries']}",
                f"- Input: {info['batch']}; every contender decodes the same BSON batches; time zone {ZONE}.",
                "- Each contender runs in a fresh subprocess; time is from the first batch to the closed file,"
                " peak RSS is the child's `ru_maxrss` (includes the interpreter and imported libraries)."
                + (f" Each figure is the median of {args.repeat} interleaved runs." if args.repeat > 1 else ""),
                "",
                *rows,
                "",
                "Targets:",
                "",
                *ratio_lines,
                *(encryption_notes(results) if encryption_only else []),
            ]
        )
        write_section(results_path, section, body)
        print(f"\nwrote {results_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
