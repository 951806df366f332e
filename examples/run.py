"""``make run``: ``fqdb-server`` and the Quart example under hypercorn, from one command.

1. Starts ``fqdb-server DB`` (``python -m fastquartdb.server``) and waits for
   its ready line.
2. Starts ``hypercorn examples.quart_app:app -w 4`` with its workers pointed
   at that daemon (``FQDB_PATH``, ``FQDB_SOCKET``, ``FQDB_MODE=daemon``) and
   waits until the app answers.
3. Prints curl lines to try, then waits.

Ctrl-C or SIGTERM stops hypercorn first (its workers finish their requests
and close their database connections), then the daemon by pid with SIGTERM
(it answers what is queued, commits, checkpoints and removes its socket).
The exit code is 0 after a clean stop, 1 if either process failed.

Both children run in their own process groups: a terminal's Ctrl-C reaches
only this script, which then stops them in that order, instead of reaching
the daemon at the same moment as the web workers that still use it.

If the port is taken, it says so and exits 1 before starting anything
(``make run PORT=8001`` chooses another).

Usage::

    python examples/run.py [--port 8000] [--db data/app.db] [--workers 4]
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import signal
import socket as socketlib
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from fastquartdb.protocol import default_socket_path

ROOT = Path(__file__).resolve().parents[1]
APP = "examples.quart_app:app"
READY_PREFIX = "fqdb-server: serving"


class Child:
    """A subprocess in a new session (its own process group), stopped by its pid."""

    def __init__(
        self,
        name: str,
        cmd: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        stdout: int | None = None,
    ) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            list(cmd), cwd=ROOT, env=env, stdout=stdout, start_new_session=True, text=True
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float) -> int:
        """SIGTERM the process, wait for it; SIGKILL its group if it takes longer than ``timeout``.

        Whatever is left in its process group afterwards (a worker its parent
        failed to reap) is killed too, so nothing outlives this script.
        """
        if self.running():
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            print(f"run.py: {self.name} did not stop within {timeout:g} s; killing it", flush=True)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            code = self.proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        return code


class Stop:
    """Set by SIGINT/SIGTERM and polled by the main loop.

    The handler only sets a flag: an Event's lock or a print could deadlock or
    raise if the signal arrives while the main thread holds them.
    """

    def __init__(self) -> None:
        self.signal: str | None = None
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._handle)

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signal = self.signal or signal.Signals(signum).name


def port_taken(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be bound (taken, or not an address here), or None if it can.

    Checked before anything starts, so that a taken port is one clear line
    instead of hypercorn's traceback after the daemon is already up.
    """
    probe = socketlib.socket(socketlib.AF_INET6 if ":" in host else socketlib.AF_INET)
    try:
        # As hypercorn binds it: a port in TIME_WAIT is not "taken".
        probe.setsockopt(socketlib.SOL_SOCKET, socketlib.SO_REUSEADDR, 1)
        probe.bind((host, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return f"port {port} on {host} is taken (another server listens there)"
        return f"cannot listen on {host}:{port}: {exc.strerror or exc}"
    finally:
        probe.close()
    return None


def start_daemon(db: str, socket: str, stop: Stop, timeout: float) -> tuple[Child, bool]:
    """Start fqdb-server and wait for its ready line; returns the child and whether it is ready."""
    daemon = Child(
        "fqdb-server",
        [sys.executable, "-m", "fastquartdb.server", db, "--socket", socket],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    ready = threading.Event()

    def echo() -> None:
        # Echo the daemon's stdout (its ready line) and keep its pipe drained.
        assert daemon.proc.stdout is not None
        for line in daemon.proc.stdout:
            print(line, end="", flush=True)
            if line.startswith(READY_PREFIX):
                ready.set()

    threading.Thread(target=echo, name="fqdb-server-stdout", daemon=True).start()
    deadline = time.monotonic() + timeout
    while not ready.is_set():
        if stop.requested or not daemon.running() or time.monotonic() > deadline:
            return daemon, False
        time.sleep(0.05)
    return daemon, True


def wait_until_serving(url: str, server: Child, stop: Stop, timeout: float) -> bool:
    """Poll ``url`` until it answers 200; False if the server died, a stop came, or time ran out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.running() and not stop.requested:
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if reply.status == 200:
                    return True
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.1)
    return False


def curl_lines(base: str) -> str:
    """The commands the README shows, for this server's address."""
    json_header = "-H 'content-type: application/json'"
    return "\n".join(
        [
            f"""  curl -s -X POST {base}/users {json_header} -d '{{"username": "alice", "age": 30}}'""",
            f"""  curl -s -X POST {base}/users {json_header} -d '{{"username": "bob", "age": 17}}'""",
            f"  curl -s '{base}/users?min_age=18'",
            f"  curl -s {base}/users/1",
            f"""  curl -s -X PATCH {base}/users/1 {json_header} -d '{{"age": 31}}'""",
            f"  curl -s -X DELETE {base}/users/2 -o /dev/null -w '%{{http_code}}\\n'",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the daemon and the app until SIGINT/SIGTERM; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--db", default="data/app.db", help="the SQLite file (default: %(default)s)"
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s)"
    )
    parser.add_argument(
        "--port", type=int, default=8000, help="port to bind (default: %(default)s)"
    )
    parser.add_argument("--workers", type=int, default=4, help="hypercorn workers (default: 4)")
    args = parser.parse_args(argv)

    taken = port_taken(args.host, args.port)
    if taken:
        print(
            f"run.py: {taken}; choose another: make run PORT={args.port + 1} "
            f"(or python examples/run.py --port {args.port + 1})",
            file=sys.stderr,
        )
        return 1
    stop = Stop()
    db = os.path.abspath(args.db)
    # fqdb-server creates a missing file but never a missing directory; data/ is ours to make.
    os.makedirs(os.path.dirname(db), exist_ok=True)
    socket = default_socket_path(db)
    daemon, ready = start_daemon(db, socket, stop, timeout=30)
    if not ready:
        code = daemon.stop(timeout=20)
        if stop.requested:
            return 0 if code == 0 else 1
        print(f"run.py: fqdb-server did not start (exit code {code})", file=sys.stderr)
        return 1

    base = f"http://{args.host}:{args.port}"
    bind = f"{args.host}:{args.port}"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "FQDB_PATH": db,
        "FQDB_SOCKET": socket,
        # This script started the daemon: a worker that cannot reach it should fail, not
        # quietly run embedded.
        "FQDB_MODE": "daemon",
    }
    hypercorn = Child(
        "hypercorn",
        [sys.executable, "-m", "hypercorn", APP, "-w", str(args.workers), "-b", bind],
        env=env,
    )
    print(
        f"hypercorn: {APP} with {args.workers} workers on {base} (pid {hypercorn.pid})", flush=True
    )
    serving = wait_until_serving(f"{base}/users?limit=1", hypercorn, stop, timeout=60)
    failed = not serving and not stop.requested
    if serving:
        print(f"\nFastQuartDB example: {base} -> 4 hypercorn workers -> fqdb-server -> {db}")
        print(f"Try:\n{curl_lines(base)}\nCtrl-C stops both.\n", flush=True)
        while not stop.requested:
            if not hypercorn.running() or not daemon.running():
                failed = True
                break
            time.sleep(0.1)

    if stop.requested:
        print(f"\nrun.py: {stop.signal}: stopping hypercorn, then fqdb-server", flush=True)
    web_code = hypercorn.stop(timeout=30)
    daemon_code = daemon.stop(timeout=30)
    for name, code in (("hypercorn", web_code), ("fqdb-server", daemon_code)):
        if code != 0:
            failed = True
            print(f"run.py: {name} exited with code {code}", file=sys.stderr)
    if failed:
        return 1
    print("run.py: stopped cleanly", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
