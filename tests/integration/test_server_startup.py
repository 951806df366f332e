"""``fqdb-server`` on bad input: one line on stderr, exit status 1, nothing left behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.helpers import DaemonProcess


def _server(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "FQDB_SOCKET"}
    return subprocess.run(
        [sys.executable, "-m", "fastquartdb.server", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _refused(done: subprocess.CompletedProcess[str]) -> str:
    """The one stderr line of a refused start-up."""
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("fqdb-server: ")
    return lines[0]


def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    bad = tmp_path / "notadb.sql"
    bad.write_text("CREATE TABLE t (x);\n" * 50)
    line = _refused(_server(str(bad)))
    assert f"cannot serve {bad}: file is not a database" in line
    assert "name an SQLite database file" in line  # what to do
    assert _tree(tmp_path) == {"notadb.sql"}  # no lock file, no socket
    assert bad.read_text() == "CREATE TABLE t (x);\n" * 50


def test_a_directory(tmp_path: Path) -> None:
    directory = tmp_path / "some" / "directory"
    directory.mkdir(parents=True)
    line = _refused(_server(str(directory)))
    assert f"{directory} is a directory, not a database file" in line
    assert str(directory / "app.db") in line
    assert _tree(tmp_path) == {"some", "some/directory"}


def test_a_missing_directory_is_not_created(tmp_path: Path) -> None:
    db = tmp_path / "nonexistent" / "dir" / "x.db"
    line = _refused(_server(str(db)))
    missing = tmp_path / "nonexistent" / "dir"
    assert f"directory {missing} does not exist" in line
    assert f"mkdir -p {missing}" in line
    assert _tree(tmp_path) == set()


def test_a_failure_after_the_database_was_created_removes_it(tmp_path: Path) -> None:
    # The socket's directory is missing: found only after the new file was opened.
    db = tmp_path / "new.db"
    line = _refused(_server(str(db), "--socket", str(tmp_path / "missing" / "s.sock")))
    assert f"cannot serve {db}" in line
    assert _tree(tmp_path) == set()


def test_an_existing_database_and_lock_file_are_kept(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    DaemonProcess(str(db)).start().stop()
    before = _tree(tmp_path)
    assert {"app.db", "app.db.server.lock"} <= before
    _refused(_server(str(db), "--socket", str(tmp_path / "missing" / "s.sock")))
    assert _tree(tmp_path) == before


def test_help_shows_the_default_of_every_option() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "fastquartdb.server", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert done.returncode == 0
    options = re.findall(r"^  (--[a-z-]+)[^\n]*$", done.stdout, re.MULTILINE)
    entries = re.split(r"\n  (?=-)", done.stdout.split("options:", 1)[1])
    assert len(options) >= 12
    missing = [
        entry.split()[0]
        for entry in entries
        if entry.strip() and entry.split()[0] not in ("-h,", "--version")
        if "default" not in entry
    ]
    assert missing == [], f"no default shown for {missing}"
