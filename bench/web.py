"""S8/S9: what users see. The Quart example under ``hypercorn -w 4``, driven by ``wrk``.

One run::

    hypercorn APP -w 4 -b 127.0.0.1:PORT   (its own session; FQDB_PATH/FQDB_MODE/FQDB_SOCKET)
    ─> poll GET /users/1 until it answers
    ─> wrk -t2 -c64 -d<seconds>s --latency -s bench/wrk_mix.lua   (the mix: FQDB_WRK_WRITES)
    ─> parse wrk's FQDB-WRK line ─> SIGTERM hypercorn by pid, wait

Contenders: ``daemon`` and ``embedded`` run ``examples.quart_app:app`` (FastQuartDB),
``aiosqlite`` runs ``bench.web_app:app`` (the same two routes on plain aiosqlite).
``wrk`` is the Debian package: a run without it fails with how to install it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

import psutil

if TYPE_CHECKING:
    from .scenarios import Scenario

__all__ = ["WEB_CONNECTIONS", "WEB_WORKERS", "WebRunFailed", "run_web", "wrk_missing"]

WEB_WORKERS = 4
WEB_CONNECTIONS = 64
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_APPS = {
    "daemon": "examples.quart_app:app",
    "embedded": "examples.quart_app:app",
    "aiosqlite": "bench.web_app:app",
}


class WebRunFailed(RuntimeError):
    """The web run could not finish; the message says why."""


def wrk_missing() -> str | None:
    """Why S8/S9 cannot run here, or None when ``wrk`` is installed."""
    if shutil.which("wrk") is None:
        return "wrk is not installed: apt-get install -y wrk (or make bench-deps)"
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_serving(url: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise WebRunFailed(f"hypercorn exited with {proc.returncode} before serving")
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if reply.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise WebRunFailed(f"hypercorn did not answer {url} within {timeout:g} s")


def _cpu(pid: int) -> float:
    """User + system seconds of ``pid`` and its children so far (hypercorn and its workers)."""
    total = 0.0
    with contextlib.suppress(psutil.Error):
        parent = psutil.Process(pid)
        for proc in [parent, *parent.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
    return total


def _parse_wrk(output: str) -> dict[str, float]:
    for line in output.splitlines():
        if line.startswith("FQDB-WRK "):
            return {k: float(v) for k, v in (part.split("=") for part in line.split()[1:])}
    raise WebRunFailed(f"wrk printed no result line:\n{output[-2000:]}")


def run_web(
    scenario: Scenario, contender: str, db: str, socket_path: str | None, workdir: str
) -> dict[str, Any]:
    """Serve the app for ``contender`` on ``db``, load it with wrk, return the run's metrics."""
    why = wrk_missing()
    if why is not None:
        raise WebRunFailed(why)
    port = _free_port()
    env = {
        **os.environ,
        "FQDB_PATH": db,
        "FQDB_MODE": "embedded" if contender == "embedded" else "daemon",
        "PYTHONPATH": ROOT,
    }
    if socket_path is not None:
        env["FQDB_SOCKET"] = socket_path
    log_path = os.path.join(workdir, "hypercorn.log")
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "hypercorn", _APPS[contender], "-w", str(scenario.processes),
             "-k", "uvloop", "-b", f"127.0.0.1:{port}"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_serving(f"{base}/users/1", server)
        cpu0 = _cpu(server.pid)
        wrk_env = {
            **os.environ,
            "FQDB_WRK_WRITES": str(scenario.write_ratio),
            "FQDB_WRK_ROWS": str(scenario.rows),
        }
        assert scenario.duration is not None
        seconds = max(1, round(scenario.duration))
        result = subprocess.run(
            ["wrk", "-t2", f"-c{scenario.tasks}", f"-d{seconds}s", "--latency",
             "-s", os.path.join(ROOT, "bench", "wrk_mix.lua"), base],
            capture_output=True, text=True, env=wrk_env, timeout=seconds + 60, check=False,
        )  # fmt: skip
        cpu = _cpu(server.pid) - cpu0
        if result.returncode != 0:
            raise WebRunFailed(f"wrk failed ({result.returncode}): {result.stderr[-2000:]}")
        wrk = _parse_wrk(result.stdout)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)  # the group we created, by its id
            server.wait()
    window = wrk["duration_us"] / 1e6
    errors = int(wrk["status_errors"] + wrk["socket_errors"])
    ok = int(wrk["requests"]) - int(wrk["status_errors"])
    return {
        "throughput": ok / window if window > 0 else float("nan"),
        "ok": ok,
        "requests": int(wrk["requests"]),
        "errors": errors,
        "error_kinds": {"status": int(wrk["status_errors"]), "socket": int(wrk["socket_errors"])},
        "window_s": window,
        "client_cpu_s": cpu,
        "processes": scenario.processes,
        "p50_ms": wrk["p50_us"] / 1000,
        "p99_ms": wrk["p99_us"] / 1000,
        "max_ms": wrk["max_us"] / 1000,
        "mean_ms": wrk["mean_us"] / 1000,
    }
