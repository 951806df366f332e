"""The socket path rule (protocol/address.py): long paths go to a private runtime directory."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from fastquartdb.protocol import default_socket_path
from fastquartdb.protocol.address import private_dir_problem, runtime_dir


def test_short_paths_sit_beside_the_database(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    assert default_socket_path(db, use_env=False) == f"{db}.sock"


def test_long_paths_use_the_runtime_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / ("x" * 120) / "app.db"
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    path = default_socket_path(db, use_env=False)
    assert os.path.dirname(path) == str(tmp_path) and path.endswith(".sock")
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    path = default_socket_path(db, use_env=False)
    # Never a predictable name in the shared temp directory itself: a directory of ours.
    assert os.path.dirname(path) == runtime_dir()
    assert runtime_dir() == os.path.join(tempfile.gettempdir(), f"fqdb-{os.getuid()}")


def test_private_dir_problem(tmp_path: Path) -> None:
    good = tmp_path / "good"
    good.mkdir(mode=0o700)
    assert private_dir_problem(str(good)) is None
    assert "does not exist" in str(private_dir_problem(str(tmp_path / "missing")))
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    assert "may be written by other users (mode 0777)" in str(private_dir_problem(str(shared)))
    link = tmp_path / "link"
    link.symlink_to(good)
    assert "not a directory" in str(private_dir_problem(str(link)))
    if os.geteuid() == 0:
        os.chown(good, 65534, 65534)
        assert "belongs to uid 65534" in str(private_dir_problem(str(good)))
