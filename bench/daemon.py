"""The daemon contender's server: a real ``fqdb-server`` subprocess, watched and stopped by pid.

While it runs, a sampler thread records its resident set size; at the end
``VmHWM`` (the kernel's own high-water mark) gives the true peak. CPU seconds
come from the kernel's per-process counters (user + system, all threads).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from typing import Any

import psutil

__all__ = ["BenchDaemon"]


def _vm_hwm(pid: int) -> int | None:
    """Peak resident set size of ``pid`` in bytes, from /proc (Linux), or None."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class BenchDaemon:
    """``python -m fastquartdb.server DB --synchronous S`` for one benchmark run.

    Args:
        db: the database file (or ``dqlite://`` URL) to serve.
        synchronous: ``"full"`` or ``"normal"``; None passes no ``--synchronous`` (dqlite).
        log_path: where the daemon's stderr goes.
        wrapper: a command prefix (``py-spy record -o x.svg --``) for profiling, or None.
        cprofile: write a cProfile of the daemon's main thread to this path, or None.
        extra: more ``fqdb-server`` options (``--replicate URL``).
    """

    def __init__(
        self,
        db: str,
        synchronous: str | None,
        log_path: str,
        *,
        wrapper: list[str] | None = None,
        cprofile: str | None = None,
        extra: list[str] | None = None,
    ) -> None:
        self.db = db
        self.extra = extra or []
        self.synchronous = synchronous
        self.log_path = log_path
        self.wrapper = wrapper or []
        self.cprofile = cprofile
        self.socket = ""
        self.proc: subprocess.Popen[str] | None = None
        self.pid = 0
        self.peak_rss_sampled = 0
        self._ps: psutil.Process | None = None
        self._stop_sampling = threading.Event()
        self._sampler: threading.Thread | None = None

    def start(self, timeout: float = 30.0) -> BenchDaemon:
        """Start the daemon and wait for its ready line.

        Raises:
            RuntimeError: it exited or did not announce itself within ``timeout``.
        """
        python = [sys.executable]
        if self.cprofile:
            python += ["-m", "cProfile", "-o", self.cprofile]
        cmd = [
            *self.wrapper,
            *python,
            "-m",
            "fastquartdb.server",
            self.db,
            *(["--synchronous", self.synchronous] if self.synchronous else []),
            "--log-level",
            "WARNING",
            *self.extra,
        ]
        env = {k: v for k, v in os.environ.items() if k != "FQDB_SOCKET"}
        env["PYTHONUNBUFFERED"] = "1"
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=env
            )
        stdout = self.proc.stdout
        assert stdout is not None
        found: list[str] = []

        def read_ready_line() -> None:
            # A wrapper (py-spy) may print its own lines first.
            for text in stdout:
                if text.startswith("fqdb-server: serving"):
                    found.append(text)
                    return

        reader = threading.Thread(target=read_ready_line, daemon=True)
        reader.start()
        reader.join(timeout)
        line = found[0] if found else ""
        if not line:
            self.kill()
            with open(self.log_path) as fh:
                err = fh.read()
            raise RuntimeError(f"fqdb-server did not start: {line!r}\n{err}")
        self.socket = line.split(" on ", 1)[1].rsplit(" (pid", 1)[0]
        # Under a wrapper (py-spy) the Popen pid is the wrapper's; the ready line has the server's.
        self.pid = int(line.rsplit("(pid ", 1)[1].rstrip(")\n "))
        self._ps = psutil.Process(self.pid)
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        return self

    def _sample(self) -> None:
        assert self._ps is not None
        while not self._stop_sampling.wait(0.02):
            try:
                rss = self._ps.memory_info().rss
            except psutil.Error:
                return
            self.peak_rss_sampled = max(self.peak_rss_sampled, rss)

    def cpu_seconds(self) -> float:
        """User + system CPU seconds the daemon has used so far (all its threads)."""
        assert self._ps is not None
        times = self._ps.cpu_times()
        return float(times.user + times.system)

    def usage(self) -> dict[str, Any]:
        """Peak RSS (bytes) now: the kernel's high-water mark, else the sampled maximum."""
        hwm = _vm_hwm(self.pid)
        return {
            "peak_rss_bytes": max(hwm or 0, self.peak_rss_sampled),
            "vm_hwm_bytes": hwm,
            "sampled_peak_rss_bytes": self.peak_rss_sampled,
        }

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM by pid, wait for a clean exit (SIGKILL after ``timeout``); returns the exit code."""
        self._stop_sampling.set()
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None and self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            code = proc.returncode
        self._close()
        return code

    def kill(self) -> None:
        """SIGKILL the server (and the wrapper, if any) by pid."""
        self._stop_sampling.set()
        proc = self.proc
        if proc is None:
            return
        for pid in {self.pid, proc.pid} - {0}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait()
        self._close()

    def _close(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        if self._sampler is not None:
            self._sampler.join()
            self._sampler = None
