"""Every ```python block of README.md runs as written, embedded and through a real fqdb-server.

The rules, so that an example can never drift from the code:

* **Sections.** Blocks are grouped by the README's ``## `` sections (the text
  before the first ``##`` is a section too). Each section runs in a fresh
  namespace against a fresh database: ``data/mydb.sqlite`` (the README's own
  path) in an empty working directory. In daemon mode a real ``fqdb-server``
  subprocess serves that file and the database is opened with
  ``mode="daemon"``; in embedded mode it is opened embedded. A block's own
  ``init_engine("data/mydb.sqlite")`` then returns that same manager. No
  model of the test suite is registered meanwhile: the section's tables are
  the ones its own code defines.
* **Order.** The blocks of one section run in order in that one namespace, so a
  block may use what an earlier block of its section defined or inserted (the
  "Beyond CRUD" examples build on its first block's ``User``). Nothing is
  shared between sections: each defines the models it uses.
* **Imports.** The namespace starts with the README's opening import line
  (``from fastquartdb import ...``), which every section assumes; anything else
  a block uses it imports itself.
* **Await.** Each block runs as the body of an async function: top-level
  ``await``, ``async for`` and ``async with`` are fine.
* **Results in comments.** An expression statement followed by a comment that
  is a Python literal (on its last line, or alone on the next line) must
  evaluate to that literal: ``await User.count({"team": "red"})  # 2``.
* **Skipping.** A block preceded, on the line just above its fence, by
  ``<!-- fqdb: no-run (why) -->`` is not run (it needs a web server, a cluster).
"""

from __future__ import annotations

import ast
import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fastquartdb import AsyncDatabaseManager, Column
from tests.helpers import DaemonProcess

README = Path(__file__).resolve().parents[2] / "README.md"
NO_RUN = re.compile(r"^<!--\s*fqdb:\s*no-run\b.*-->\s*$")
DB = "data/mydb.sqlite"


class Block:
    """One ```python block: its source and where it starts in the README."""

    def __init__(self, section: str, line: int, source: str) -> None:
        self.section = section
        self.line = line
        self.source = source


def readme_blocks(text: str) -> list[Block]:
    """Every ```python block of ``text`` that is not marked no-run, in order."""
    blocks: list[Block] = []
    section = "(top)"
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            section = line[3:].strip()
        elif line.strip() == "```python":
            end = lines.index("```", i + 1)
            skipped = i > 0 and NO_RUN.match(lines[i - 1].strip())
            if not skipped:
                blocks.append(Block(section, i + 2, "\n".join(lines[i + 1 : end])))
            i = end
        i += 1
    return blocks


def sections(text: str) -> dict[str, list[Block]]:
    grouped: dict[str, list[Block]] = {}
    for block in readme_blocks(text):
        grouped.setdefault(block.section, []).append(block)
    return grouped


TEXT = README.read_text()
SECTIONS = sections(TEXT)
OPENING_IMPORT = next(
    line for line in readme_blocks(TEXT)[0].source.splitlines() if line.startswith("from ")
)


def _literal(comment: str) -> tuple[bool, Any]:
    text = comment.lstrip("#").strip()
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return False, None
    # "..." in a comment means "and so on": a sketch of the result, not the result.
    return "..." not in text, value


def _expected_results(source: str) -> dict[int, Any]:
    """Line number of an expression statement -> the literal its comment promises."""
    lines = source.splitlines()
    tree = ast.parse(source)
    promised: dict[int, Any] = {}
    for node in tree.body:
        if not isinstance(node, ast.Expr) or node.end_lineno is None:
            continue
        last = lines[node.end_lineno - 1]
        tail = last[node.end_col_offset :].strip() if node.end_col_offset is not None else ""
        candidates = [tail] if tail.startswith("#") else []
        if not candidates and node.end_lineno < len(lines):
            following = lines[node.end_lineno].strip()
            if following.startswith("#"):
                candidates.append(following)
        for comment in candidates:
            ok, value = _literal(comment)
            if ok:
                promised[node.lineno] = value
    return promised


def _checked(source: str, promised: dict[int, Any]) -> ast.Module:
    """``source`` with each promised expression wrapped in ``__check__(line, expr)``."""
    tree = ast.parse(source)
    for node in tree.body:
        if isinstance(node, ast.Expr) and node.lineno in promised:
            node.value = ast.Call(
                func=ast.Name("__check__", ast.Load()),
                args=[ast.Constant(node.lineno), node.value],
                keywords=[],
            )
    return ast.fix_missing_locations(tree)


async def run_block(block: Block, namespace: dict[str, Any]) -> None:
    promised = _expected_results(block.source)
    results: dict[int, Any] = {}

    def check(line: int, value: Any) -> Any:
        results[line] = value
        return value

    namespace["__check__"] = check
    code = compile(
        _checked(block.source, promised),
        f"README.md:{block.line}",
        "exec",
        flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
    )
    outcome = eval(code, namespace)
    if outcome is not None:  # a coroutine: the block awaits
        await outcome
    for line, value in promised.items():
        where = f"README.md:{block.line + line - 1}"
        assert results.get(line) == value, f"{where}: got {results.get(line)!r}, says {value!r}"


def test_the_rules_find_every_block() -> None:
    fences = TEXT.count("```python")
    skipped = sum(
        1
        for a, b in zip(TEXT.splitlines(), TEXT.splitlines()[1:])
        if NO_RUN.match(a) and b == "```python"
    )
    assert sum(len(blocks) for blocks in SECTIONS.values()) == fences - skipped
    assert skipped >= 1  # the dqlite cluster
    assert "Beyond CRUD" in SECTIONS and len(SECTIONS["Beyond CRUD"]) >= 5


@pytest.mark.parametrize("mode", ["embedded", "daemon"])
@pytest.mark.parametrize("section", list(SECTIONS))
async def test_readme_section_runs(
    section: str, mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    # Models other test modules defined at import (conftest restores them afterwards).
    AsyncDatabaseManager._models.clear()
    daemon = DaemonProcess(str(tmp_path / DB)).start() if mode == "daemon" else None
    try:
        db = await AsyncDatabaseManager.init_engine(DB, mode=mode)
        assert db.mode == mode
        namespace: dict[str, Any] = {"__name__": "readme"}
        exec(OPENING_IMPORT, namespace)
        for block in SECTIONS[section]:
            await run_block(block, namespace)
        assert AsyncDatabaseManager.get() is db  # no block switched databases
    finally:
        await AsyncDatabaseManager.close()
        if daemon is not None:
            assert daemon.stop() == 0


# ------------------------------------------------------------------ facts the prose states


def test_column_signature_line_matches_the_code() -> None:
    found = re.search(r"`(Column\([^`]*\))`", TEXT.split("## Models and columns", 1)[1])
    assert found, "the Column(...) signature line is gone from 'Models and columns'"
    shown = " ".join(found.group(1).split())
    params = list(inspect.signature(Column.__init__).parameters.values())[1:]
    actual = ", ".join(
        p.name if p.default is p.empty else f"{p.name}={p.default!r}" for p in params
    )
    assert shown == f"Column({actual})"


def test_stats_interval_is_one_sample_as_documented(tmp_path: Path) -> None:
    # The README says `fqdb stats` prints one record and exits; --interval is its window.
    assert "prints one record and\nexits: it does not repeat" in TEXT
    db = tmp_path / "app.db"
    daemon = DaemonProcess(str(db)).start()
    try:
        fqdb = os.path.join(os.path.dirname(sys.executable), "fqdb")
        cmd = [fqdb, "stats", str(db), "--interval", "0.2", "--json"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    finally:
        assert daemon.stop() == 0
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)  # exactly one JSON value: one record
    assert record["pid"] == daemon.pid
