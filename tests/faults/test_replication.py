"""Continuous backup with Litestream (``fqdb-server --replicate``), driven for real.

The daemon runs the ``litestream`` binary of the ``backup`` extra as its child;
these tests kill that child under a 4-process write load, let the daemon
restart it, stop the daemon, restore the replica with ``fqdb restore`` and
check that every acknowledged write is in the restored file exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fastquartdb.server.replication import ReplicationError, Replicator, find_litestream
from tests.helpers import DaemonProcess, event_rows, integrity, table_keys, wait_until

try:
    find_litestream()
except ReplicationError as exc:  # pragma: no cover - the backup extra is in make test
    pytest.skip(f"Litestream is not installed: {exc}", allow_module_level=True)

FQDB = str(Path(sys.executable).parent / "fqdb")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too: its parent has not reaped it yet.
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()[0] != "Z"


def _restore(replica: Path, dest: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FQDB, "restore", str(replica), str(dest), *extra],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _assert_all_acked_present(db: str, reports: list[dict]) -> int:
    keys = table_keys(db)
    assert len(keys) == len(set(keys)), "a key is present twice"
    acked = {k for r in reports for k in r["acked"]}
    missing = acked - set(keys)
    assert not missing, f"{len(missing)} acknowledged writes missing, e.g. {sorted(missing)[:5]}"
    assert integrity(db) == "ok"
    return len(acked)


def test_round_trip_and_stats(tmp_path: Path, clients) -> None:
    db = str(tmp_path / "app.db")
    replica = tmp_path / "replica"
    daemon = DaemonProcess(db, "--replicate", str(replica)).start()
    try:
        replication = daemon.stats()["replication"]
        assert replication["state"] == "running"
        assert replication["url"] == replica.as_uri()
        assert replication["restarts"] == 0 and _alive(replication["pid"])
        load = clients("insert", db, "--tasks", "8", "--rows", "40", "--prefix", "rt")
        report = load.report()
        assert not report["failures"] and report["modes"] == ["daemon"]
        shown = subprocess.run(
            [FQDB, "stats", db, "--json"], capture_output=True, text=True, timeout=60
        )
        assert shown.returncode == 0, shown.stderr
        record = json.loads(shown.stdout)
        assert record["replication"] == "running" and record["replica_url"] == replica.as_uri()
        # The daemon leaves checkpoints to Litestream: its WAL is not reset behind its back.
        assert record["wal_bytes"] > 0
    finally:
        assert daemon.stop() == 0
    assert not _alive(replication["pid"]), "litestream outlived the daemon"
    restored = tmp_path / "restored.db"
    done = _restore(replica, restored)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"restored {replica.as_uri()} to {restored} (")
    assert "integrity ok" in done.stdout
    assert _assert_all_acked_present(str(restored), [report]) == 8 * 40
    assert sorted(table_keys(str(restored))) == sorted(table_keys(db))


def test_litestream_killed_under_load_every_acked_row_restored(tmp_path: Path, clients) -> None:
    """Kill Litestream three times in the middle of a 4-process write load: the daemon
    restarts it each time and the replica still gets every acknowledged row.

    (A load this heavy restarts the WAL many times per outage, which makes Litestream
    take a full snapshot; the paced writer of the next test is what would lose rows.)
    """
    db = str(tmp_path / "app.db")
    replica = tmp_path / "replica"
    daemon = DaemonProcess(db, "--replicate", str(replica)).start()
    try:
        loads = [
            clients("insert", db, "--tasks", "16", "--rows", "100000", "--seconds", "9",
                    "--prefix", f"k{i}", *(("--readback",) if i % 2 else ()))
            for i in range(4)
        ]  # fmt: skip
        wait_until(lambda: event_rows(db) > 500, what="the load to start")
        for kill in range(3):
            pid = daemon.stats()["replication"]["pid"]
            os.kill(pid, signal.SIGKILL)
            wait_until(
                lambda kill=kill: (
                    daemon.stats()["replication"]["restarts"] == kill + 1
                    and daemon.stats()["replication"]["state"] == "running"
                ),
                what=f"the daemon to restart litestream (kill {kill + 1})",
            )
            time.sleep(1.0)  # writes keep coming while the new one catches up
        reports = [load.report() for load in loads]
        replication = daemon.stats()["replication"]
        assert replication["restarts"] == 3 and replication["state"] == "running"
    finally:
        assert daemon.stop() == 0
    acked = _assert_all_acked_present(db, reports)
    assert acked > 2000, f"too light a load to mean anything: {acked} writes"
    assert all(not r["failures"] for r in reports), [r["failures"] for r in reports]
    # Half the writers read every row back on their local readers meanwhile (issue 18):
    # readers beside Litestream never checkpoint, and they saw every acknowledged row.
    readers = [r for r in reports if r["reads"]["local"]]
    assert len(readers) == 2 and all(not r["unseen"] for r in readers)
    assert all(r["reads"]["local"] == len(r["acked"]) for r in readers)
    restored = tmp_path / "restored.db"
    started = time.monotonic()
    done = _restore(replica, restored)
    restore_s = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert _assert_all_acked_present(str(restored), reports) == acked
    assert len(table_keys(str(restored))) == len(table_keys(db))
    print(
        f"RELIABILITY B1: Litestream SIGKILLed 3 times under 4 x 16 writers, restarted by the "
        f"daemon each time; {acked} acknowledged, {len(table_keys(str(restored)))} restored, "
        f"0 missing, 0 duplicated; fqdb restore took {restore_s:.2f} s"
    )


def test_litestream_killed_just_before_a_checkpoint_loses_nothing(tmp_path: Path) -> None:
    """The conditions that lose committed rows with Litestream 0.5.17 when the writer
    checkpoints on its own (measured: 2-11 rows in every run): a paced writer (100 rows/s
    of ~300 bytes, no index) and Litestream killed when the WAL is just short of SQLite's
    1000-page autocheckpoint. A checkpoint during the outage would copy frames Litestream
    never saw into the file and restart the WAL; the restarted Litestream reads only the
    new WAL. The daemon checkpoints nothing while it replicates, so nothing is lost.
    """
    db = str(tmp_path / "app.db")
    replica = tmp_path / "replica"
    daemon = DaemonProcess(db, "--replicate", str(replica)).start()
    out = tmp_path / "acked.json"
    writer = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.faults.slow_writer",
            "--db",
            db,
            "--rate",
            "100",
            "--seconds",
            "16",
            "--out",
            str(out),
        ],
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        page = 4096  # SQLite's default page size, which the daemon keeps
        threshold = 32 + 960 * (24 + page)  # the WAL header and 960 frames
        wait_until(
            lambda: (daemon.stats()["replication"]["wal_bytes"] or 0) >= threshold,
            timeout=60,
            what="the WAL to near 1000 pages",
        )
        os.kill(daemon.stats()["replication"]["pid"], signal.SIGKILL)
        wait_until(lambda: daemon.stats()["replication"]["restarts"] == 1, what="the restart")
        assert writer.wait(60) == 0
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
        assert daemon.stop() == 0
    acked = json.loads(out.read_text())["acked"]
    assert len(acked) > 1000
    restored = tmp_path / "restored.db"
    done = _restore(replica, restored)
    assert done.returncode == 0, done.stderr
    with contextlib.closing(sqlite3.connect(restored)) as conn:
        keys = [k for (k,) in conn.execute("SELECT key FROM note")]
    assert len(keys) == len(set(keys))
    missing = set(acked) - set(keys)
    assert not missing, f"{len(missing)} acknowledged rows missing from the restore"
    assert integrity(str(restored)) == "ok"
    print(
        f"RELIABILITY B0: Litestream killed with the WAL at 960 pages under a paced writer; "
        f"{len(acked)} acknowledged, {len(keys)} restored, 0 missing"
    )


def test_daemon_killed_stopped_and_restarted_replica_catches_up(tmp_path: Path, clients) -> None:
    """Three daemon lives on one replica: killed (no sync, no checkpoint), stopped cleanly
    (sync, then the daemon's own final checkpoint), and a last one; all of it restores."""
    db = str(tmp_path / "app.db")
    replica = tmp_path / "replica"
    reports = []
    for life in ("killed", "stopped", "last"):
        daemon = DaemonProcess(db, "--replicate", str(replica)).start()
        child = daemon.stats()["replication"]["pid"]
        try:
            load = clients(
                "insert", db, "--tasks", "16", "--rows", "100", "--prefix", life, "--readback"
            )
            reports.append(load.report())
        finally:
            if life == "killed":
                daemon.kill()  # SIGKILL: no final sync, no checkpoint
            else:
                assert daemon.stop() == 0
        # The child goes with it (parent-death signal): no orphan beside the next one.
        wait_until(lambda child=child: not _alive(child), timeout=10, what="litestream to go")
    restored = tmp_path / "restored.db"
    done = _restore(replica, restored)
    assert done.returncode == 0, done.stderr
    assert _assert_all_acked_present(str(restored), reports) == 3 * 16 * 100
    print(
        "RELIABILITY B2: three daemon lives on one replica (SIGKILL, SIGTERM, SIGTERM): "
        "4,800 acknowledged, 4,800 restored"
    )


async def test_stopped_while_litestream_is_down_catches_up_once(tmp_path: Path) -> None:
    """The daemon stops while Litestream is between restarts: one ``replicate -once`` run
    copies the last commits before the checkpoint."""
    from fastquartdb.server.replication import Replicator

    db = str(tmp_path / "app.db")
    replica = tmp_path / "replica"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute("CREATE TABLE event (id INTEGER PRIMARY KEY, key TEXT UNIQUE)")
    replicator = Replicator(db, str(replica))
    await replicator.start()
    try:
        for n in range(200):
            conn.execute("INSERT INTO event (key) VALUES (?)", (f"a{n}",))
        assert replicator._proc is not None
        os.kill(replicator._proc.pid, signal.SIGKILL)
        while replicator.stats()["state"] != "restarting":
            await asyncio.sleep(0.01)
        for n in range(200):
            conn.execute("INSERT INTO event (key) VALUES (?)", (f"b{n}",))
    finally:
        await replicator.stop()
        conn.close()
    assert replicator.stats()["state"] == "stopped" and replicator.restarts == 0
    restored = tmp_path / "restored.db"
    done = await asyncio.to_thread(_restore, replica, restored)
    assert done.returncode == 0, done.stderr
    assert len(set(table_keys(str(restored)))) == 400


def test_sigterm_to_daemon_and_litestream_together_loses_nothing(tmp_path: Path, clients) -> None:
    """What systemd's default KillMode does: SIGTERM to every process of the unit at once.
    Litestream's own last sync may fail (and it still exits 0); the daemon's catch-up run
    copies what is missing."""
    db = str(tmp_path / "app.db")
    replica = tmp_path / "replica"
    daemon = DaemonProcess(db, "--replicate", str(replica)).start()
    load = clients(
        "insert", db, "--tasks", "16", "--rows", "100000", "--seconds", "4", "--prefix", "t"
    )
    wait_until(lambda: event_rows(db) > 2000, what="the load")
    child = daemon.stats()["replication"]["pid"]
    os.kill(daemon.pid, signal.SIGTERM)
    os.kill(child, signal.SIGTERM)
    assert daemon.stop() == 0
    report = load.report()
    assert report["acked"], report
    restored = tmp_path / "restored.db"
    done = _restore(replica, restored)
    assert done.returncode == 0, done.stderr
    assert _assert_all_acked_present(str(restored), [report]) == len(set(report["acked"]))


def test_litestream_that_cannot_be_restarted_is_retried(tmp_path: Path) -> None:
    """The binary vanishes (an upgrade moved it) while Litestream is down: the daemon keeps
    trying, says why in stats, and restarts it once the binary is back."""
    binary = tmp_path / "bin" / "litestream"
    binary.parent.mkdir()
    shutil.copy(find_litestream(), binary)
    db = str(tmp_path / "app.db")
    replica = tmp_path / "replica"
    env_before = os.environ.get("FQDB_LITESTREAM")
    os.environ["FQDB_LITESTREAM"] = str(binary)
    try:
        daemon = DaemonProcess(db, "--replicate", str(replica)).start()
    finally:
        if env_before is None:
            del os.environ["FQDB_LITESTREAM"]
        else:
            os.environ["FQDB_LITESTREAM"] = env_before
    try:
        aside = binary.with_name("litestream.moved")
        binary.rename(aside)
        os.kill(daemon.stats()["replication"]["pid"], signal.SIGKILL)
        wait_until(
            lambda: "cannot start" in (daemon.stats()["replication"]["last_error"] or ""),
            what="a failed restart",
        )
        assert daemon.stats()["replication"]["state"] == "restarting"
        aside.rename(binary)
        wait_until(
            lambda: (
                daemon.stats()["replication"]["state"] == "running"
                and daemon.stats()["replication"]["restarts"] == 1
            ),
            timeout=60,
            what="the restart once the binary is back",
        )
    finally:
        assert daemon.stop() == 0


def test_bad_replication_settings_are_clear_errors(tmp_path: Path) -> None:
    db = str(tmp_path / "app.db")
    base = [sys.executable, "-m", "fastquartdb.server", db]

    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*base, *args], capture_output=True, text=True, timeout=60, env=env or dict(os.environ)
        )

    unknown = run("--replicate", "nosuch://bucket/app")
    assert unknown.returncode == 1
    assert "fqdb-server: litestream could not replicate" in unknown.stderr
    assert "nosuch://bucket/app" in unknown.stderr
    relative = run("--replicate", "file://backups")
    assert relative.returncode == 1
    assert "write file:///absolute/path" in relative.stderr
    missing = run(
        "--replicate", str(tmp_path / "r"), env={**os.environ, "FQDB_LITESTREAM": "/no/ls"}
    )
    assert missing.returncode == 1
    assert "FQDB_LITESTREAM=/no/ls is not an executable file" in missing.stderr
    read_only = run("--replicate", str(tmp_path / "r"), "--read-only")
    assert read_only.returncode == 2 and "drop --read-only" in read_only.stderr
    # A URL whose host part is really a relative path (it would write to /x).
    host = run("--replicate", "file://relative/x")
    assert host.returncode == 1 and "write file:///absolute/path" in host.stderr
    assert not os.path.exists("/x")
    # A replica Litestream cannot write: Litestream starts (and only logs), so the daemon
    # must see it fail one sync and stop, promptly, with Litestream's own words.
    started = time.monotonic()
    forbidden = run("--replicate", "/proc/forbidden/replica")
    took = time.monotonic() - started
    print(
        f"\nRELIABILITY --replicate /proc/forbidden/replica: exit {forbidden.returncode} in {took:.1f} s"
    )
    assert forbidden.returncode == 1, forbidden.stderr
    assert "cannot write the replica file:///proc/forbidden/replica" in forbidden.stderr
    assert "mkdir /proc/forbidden" in forbidden.stderr  # Litestream's words
    assert took < 15, "Litestream's 30 s of shutdown retries were not skipped"
    # None of these left a daemon's socket, Litestream's state or a Litestream behind.
    assert not os.path.exists(db + ".sock")
    assert not os.path.exists(tmp_path / ".app.db-litestream")
    private = Replicator(os.path.realpath(db), str(tmp_path / "r"))._private_name()
    assert not os.path.exists(private)
    leftovers = subprocess.run(["pgrep", "-f", private], capture_output=True)
    assert leftovers.returncode == 1, leftovers.stdout


def test_restore_errors(tmp_path: Path) -> None:
    replica = tmp_path / "replica"
    empty = _restore(replica, tmp_path / "x.db")
    assert empty.returncode == 1 and empty.stderr.startswith("fqdb: litestream could not restore")
    assert not (tmp_path / "x.db").exists()
    db = str(tmp_path / "app.db")
    daemon = DaemonProcess(db, "--replicate", str(replica)).start()
    try:
        dest = tmp_path / "copy.db"
        dest.write_text("keep me")
        exists = _restore(replica, dest)
        assert (
            exists.returncode == 1 and "exists; choose a new path or pass --force" in exists.stderr
        )
        served = _restore(replica, Path(db), "--force")
        assert served.returncode == 1 and "an fqdb-server serves" in served.stderr
        assert dest.read_text() == "keep me"  # a refused restore loses nothing
    finally:
        assert daemon.stop() == 0
    dest.chmod(0o640)
    Path(str(dest) + "-wal").write_bytes(b"a stale WAL of the old file")
    forced = _restore(replica, dest, "--force")
    assert forced.returncode == 0, forced.stderr
    # The replaced file keeps its mode; the old file's WAL is gone with it.
    assert dest.stat().st_mode & 0o777 == 0o640
    assert not Path(str(dest) + "-wal").exists()
    assert integrity(str(dest)) == "ok"
    fresh = tmp_path / "fresh.db"
    assert _restore(replica, fresh).returncode == 0
    assert fresh.stat().st_mode & 0o777 == 0o600  # the data, readable by nobody else
    assert not [p.name for p in tmp_path.iterdir() if ".restoring-" in p.name]
