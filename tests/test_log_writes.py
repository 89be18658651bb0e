"""Only store/logs.py writes export_logs and system_logs, so one module says how every entry looks."""

from __future__ import annotations

import ast
from pathlib import Path

SOURCE = Path(__file__).resolve().parent.parent / "src" / "wa_export"
LOGS_MODULE = SOURCE / "store" / "logs.py"
LOG_COLLECTIONS = ("export_logs", "system_logs")
WRITES = frozenset(
    {
        "insert_one",
        "insert_many",
        "update_one",
        "update_many",
        "replace_one",
        "find_one_and_update",
        "find_one_and_replace",
        "find_one_and_delete",
        "delete_one",
        "delete_many",
        "bulk_write",
    }
)


def log_writes(source: str, *, any_collection: bool = False) -> list[str]:
    """Each write call made on an expression that names a log collection (`store.system_logs.insert_one(...)`).

    `any_collection`: every write, for a module whose functions are handed a log collection.
    """
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in WRITES:
            target = ast.unparse(node.func.value)
            if any_collection or any(name in target for name in LOG_COLLECTIONS):
                found.append(f"line {node.lineno}: {target}.{node.func.attr}")
    return found


def _reads_logs(path: Path) -> bool:
    return path.parent.name == "store" and path.stem.endswith("logs")


def test_the_scan_sees_the_ways_a_log_collection_is_written():
    source = (
        "store.system_logs.insert_one({})\n"
        "db['export_logs'].update_many({}, {})\n"
        "ctx.store.export_logs.find_one_and_update(\n    {}, {}\n)\n"
        "store.export_logs.find({})\n"  # a read
        "store.export_state.update_one({}, {})\n"  # another collection
    )
    assert log_writes(source) == [
        "line 1: store.system_logs.insert_one",
        "line 2: db['export_logs'].update_many",
        "line 3: ctx.store.export_logs.find_one_and_update",
    ]
    assert log_writes("collection.insert_one({})", any_collection=True) == ["line 1: collection.insert_one"]


def test_no_module_but_store_logs_writes_export_logs_or_system_logs():
    modules = sorted(SOURCE.rglob("*.py"))
    assert LOGS_MODULE in modules
    offenders = {
        str(path.relative_to(SOURCE)): writes
        for path in modules
        if path != LOGS_MODULE
        # The other store modules of the log collections (their reads) take the collection as an argument.
        and (writes := log_writes(path.read_text(encoding="utf-8"), any_collection=_reads_logs(path)))
    }
    assert offenders == {}, f"write export_logs/system_logs through wa_export.store.logs: {offenders}"
