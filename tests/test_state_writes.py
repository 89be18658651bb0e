"""Every read and write of `export_state` lives in store/state.py: a scan of src/.

Cursors and leases are only safe while every write follows the same rules
(conditional on the lease, never over a live one, database time): one module
holds them all. The scan looks for the collection however it is reached: the
Store attribute, a variable holding it, `db["export_state"]` or
`get_collection("export_state")`, so a second writer cannot hide behind a name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "wa_export"
HOME = SRC / "store" / "state.py"
# Where Store opens the collection (`self.export_state = self.db["export_state"]`).
DEFINITION = SRC / "store" / "connection.py"
COLLECTION = "export_state"


def references(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, what) of every use of the collection: the attribute, or its name as a string constant."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == COLLECTION:
            found.append((node.lineno, f".{COLLECTION}"))
        elif isinstance(node, ast.Constant) and node.value == COLLECTION:
            found.append((node.lineno, repr(COLLECTION)))
    return found


def definition_lines(tree: ast.AST) -> set[int]:
    """The line(s) where Store assigns the attribute (`self.export_state: ... = self.db["export_state"]`)."""
    return {
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Attribute) and node.target.attr == COLLECTION
    }


def test_only_store_state_reaches_the_export_state_collection():
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        if path == HOME:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        allowed = definition_lines(tree) if path == DEFINITION else set()
        offenders += [
            f"{path.relative_to(SRC.parent)}:{line}: {what}" for line, what in references(tree) if line not in allowed
        ]
    assert not offenders, "export_state is reached outside store/state.py:\n" + "\n".join(offenders)


def test_the_scan_looks_at_the_right_files():
    """The home module reaches the collection, and Store's definition is one line."""
    assert references(ast.parse(HOME.read_text(encoding="utf-8")))
    assert len(definition_lines(ast.parse(DEFINITION.read_text(encoding="utf-8")))) == 1


@pytest.mark.parametrize(
    "source",
    [
        "store.export_state.update_one({}, {})",
        "collection = ctx.store.export_state\ncollection.insert_one({})",
        'store.db["export_state"].bulk_write([])',
        'db.get_collection("export_state").delete_many({})',
    ],
)
def test_the_scan_finds_a_writer_however_it_names_the_collection(source):
    assert references(ast.parse(source))
