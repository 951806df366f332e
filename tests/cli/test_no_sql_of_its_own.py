"""``fqdb`` holds no SQL of its own for what the engine knows (issue 15, "one engine").

Tables, columns, unique keys, affinities come from the engine's ``describe`` op and
writes are its ``insert_many``/``upsert_many``; ``fqdb query`` runs only the statement
the user typed. Read from the source (nothing is imported or run): every string literal
of ``fastquartdb/cli/*.py`` that is, or is part of, an SQL statement must be one of the
allowances below, each of which says why that command cannot be an engine op. An
allowance no longer used fails too, so the list stays exact.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

CLI = Path(__file__).resolve().parents[2] / "fastquartdb" / "cli"

#: A string piece that starts a statement (in capitals, as every statement here is written:
#: "values" and "end" are also words of messages and request keys) ...
_STATEMENT = re.compile(
    r"\s*(SELECT|INSERT|UPDATE|DELETE|REPLACE|PRAGMA|CREATE|ALTER|DROP|VACUUM|BEGIN|"
    r"COMMIT|END|ROLLBACK|SAVEPOINT|RELEASE|ATTACH|DETACH|ANALYZE|REINDEX|WITH|VALUES)\b"
)
#: ... or reads the schema, or builds a write, anywhere in it (in any case).
_SCHEMA_OR_WRITE = re.compile(
    r"sqlite_master|sqlite_schema|sqlite_temp_master|\bpragma_\w+\s*\(|\bON\s+CONFLICT\b|"
    r"\bINSERT\s+(OR\s+\w+\s+)?INTO\b|\bDELETE\s+FROM\b|\bUPDATE\s+\S+\s+SET\b|\bPRAGMA\s+\w+",
    re.IGNORECASE,
)

#: (module, literal) -> why that module may run it. All of them are in maintenance.py, which
#: works on the file itself (or on a new copy no engine serves yet), not through an engine.
ALLOWED: dict[tuple[str, str], str] = {
    ("maintenance.py", "SELECT count(*) FROM sqlite_master"): (
        "open_read_only() probes that a file is a database before anything uses it, so a "
        "text file fails at once as '<path>: file is not a database' (no engine yet)"
    ),
    ("maintenance.py", "BEGIN"): (
        "dump reads one snapshot with sqlite3's iterdump(): one read transaction on its own "
        "read-only connection to the file (no op dumps a file)"
    ),
    ("maintenance.py", "COMMIT"): "ends that read transaction of dump",
    ("maintenance.py", "PRAGMA journal_mode = DELETE"): (
        "backup makes its copy self-contained (no -wal), on the new file no engine serves"
    ),
    ("maintenance.py", "PRAGMA page_count"): (
        "backup and vacuum report the file's size in pages: a property of the file, not of a "
        "table the engine knows"
    ),
    ("maintenance.py", "PRAGMA page_size"): "vacuum reports the file's size in bytes",
    ("maintenance.py", "VACUUM"): (
        "vacuum rebuilds the file itself; no op does (the raw-SQL sandbox refuses VACUUM)"
    ),
    ("maintenance.py", "PRAGMA integrity_check"): (
        "restore checks the restored copy before it is renamed into place, when no engine "
        "serves it yet"
    ),
    (
        "maintenance.py",
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
    ): "restore reports how many tables the restored copy holds, before anything serves it",
    ("maintenance.py", "PRAGMA journal_mode = WAL"): (
        "restore leaves the new file in WAL mode, which a daemon expects to find"
    ),
}


def _docstrings(tree: ast.Module) -> set[int]:
    """ids of the docstring nodes: text about SQL, never run."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def _literals(path: Path) -> list[str]:
    """Every string literal of ``path`` but docstrings; adjacent literals are one (Python
    joins them), and an f-string's text pieces are literals too."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docs = _docstrings(tree)
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs
    ]


def _is_sql(text: str) -> bool:
    return bool(_STATEMENT.match(text) or _SCHEMA_OR_WRITE.search(text))


def test_the_cli_has_no_sql_but_its_maintenance() -> None:
    found = {
        (path.name, text)
        for path in sorted(CLI.glob("*.py"))
        for text in _literals(path)
        if _is_sql(text)
    }
    assert sorted(found - set(ALLOWED)) == [], "SQL in fastquartdb/cli: use an engine op"
    assert sorted(set(ALLOWED) - found) == [], "an allowance nothing uses any more"


def test_the_check_finds_what_the_cli_used_to_build() -> None:
    """The statements fqdb once built itself (its own upsert, its PRAGMA catalog) are caught,
    and words about SQL in help texts are not."""
    caught = [
        'INSERT INTO "customer" ("name", "age") VALUES (?, ?) ON CONFLICT ("name") DO UPDATE '
        'SET "age" = excluded."age"',
        " ON CONFLICT (",
        "SELECT m.name, p.name FROM sqlite_master AS m, pragma_table_info(m.name) AS p",
        "pragma_index_list(m.name) AS il",
        "PRAGMA table_info(",
        'DELETE FROM "t"',
        "select sql from sqlite_schema",
        "UPDATE t SET a = 1",
    ]
    assert [text for text in caught if not _is_sql(text)] == []
    passed = [
        "print the CREATE statements instead",
        "--upsert KEY: update the row whose key matches",
        "fqdb: unknown table",
        "inserted",
        "selected columns",
    ]
    assert [text for text in passed if _is_sql(text)] == []
