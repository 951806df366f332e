"""``make run``: what it prints matches the README; a taken port is one clear line; PORT= works."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from examples.run import curl_lines
from tests.e2e.servers import ROOT

README = (ROOT / "README.md").read_text()


def test_readme_curl_lines_are_what_make_run_prints() -> None:
    quickstart = README.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    block = quickstart.split("It prints these lines to try:\n\n```\n", 1)[1].split("```", 1)[0]
    printed = [line.strip() for line in curl_lines("http://127.0.0.1:8000").splitlines()]
    assert block.strip().splitlines() == printed


def test_a_taken_port_is_one_line_naming_it_and_the_way_out(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [
                sys.executable,
                "examples/run.py",
                "--port",
                str(port),
                "--db",
                str(tmp_path / "x.db"),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"run.py: port {port} on 127.0.0.1 is taken (another server listens there); "
        f"choose another: make run PORT={port + 1} (or python examples/run.py --port {port + 1})"
    ]
    assert list(tmp_path.iterdir()) == []  # nothing started: no database, no daemon socket


def test_make_run_passes_port() -> None:
    done = subprocess.run(
        ["make", "-n", "run", "PORT=8001"], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert "examples/run.py --port 8001" in done.stdout
