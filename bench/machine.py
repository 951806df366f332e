"""What the machine was: printed into every results file, because absolute numbers mean little without it."""

from __future__ import annotations

import hashlib
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
from importlib import metadata
from typing import Any

__all__ = ["describe", "source_fingerprint"]


def source_fingerprint() -> str:
    """A short hash of every ``fastquartdb/**/*.py``: tells if the code changed during a run."""
    import fastquartdb

    root = os.path.dirname(os.path.abspath(fastquartdb.__file__))
    digest = hashlib.sha256()
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                digest.update(os.path.relpath(path, root).encode())
                with open(path, "rb") as fh:
                    digest.update(fh.read())
    return digest.hexdigest()[:12]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_gib() -> float | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _filesystem(path: str) -> str:
    """The filesystem type holding ``path`` (tmpfs makes fsync free: say so)."""
    try:
        best = ("", "unknown")
        real = os.path.realpath(path)
        with open("/proc/mounts") as fh:
            for line in fh:
                parts = line.split()
                mount, fstype = parts[1], parts[2]
                inside = real == mount or real.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) > len(best[0]):
                    best = (mount, fstype)
        return best[1]
    except OSError:
        return "unknown"


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        out = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def describe(tmp_root: str | None = None) -> dict[str, Any]:
    """CPU, memory, OS, Python, SQLite and library versions, and the code's git revision."""
    tmp = tmp_root or tempfile.gettempdir()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = []
    return {
        "nproc": usable,
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "ram_gib": _mem_total_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "python_impl": platform.python_implementation(),
        "sqlite": sqlite3.sqlite_version,
        "tmp_dir": tmp,
        "tmp_fs": _filesystem(tmp),
        "load_avg_at_start": load,
        "git_revision": _git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(dirty) if dirty is not None else None,
        "source_fingerprint": source_fingerprint(),
        "packages": {
            name: _version(name)
            for name in (
                "fastquartdb",
                "aiosqlite",
                "msgpack",
                "uvloop",
                "filelock",
                "SQLAlchemy",
                "psutil",
                "matplotlib",
            )
        },
    }
