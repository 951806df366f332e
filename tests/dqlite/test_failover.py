"""SIGKILL the dqlite leader under a write load from three processes.

Every write carries a request key, so a write in flight when the leader dies is
resent to the new leader, which answers it from its record if the first send
committed: no error reaches the application, and every write is in the database
exactly once (the payload column is not unique, so a write run twice would be
two rows).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from fastquartdb import AsyncDatabaseManager

from .cluster import Cluster

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _read(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    # The last line may be half-written while the writer runs.
    out = []
    for line in lines:
        with contextlib.suppress(ValueError):
            out.append(json.loads(line))
    return out


def _wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


async def test_leader_sigkill_under_write_load(own_cluster: Cluster, tmp_path: Path) -> None:
    url = own_cluster.url("failover")
    stop = tmp_path / "stop"
    reports = [tmp_path / f"writer{i}.jsonl" for i in range(3)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.dqlite.writer", url, f"w{i}", str(reports[i]), str(stop)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    try:
        _wait_for(
            lambda: all(sum(r["ok"] for r in _read(p)) >= 100 for p in reports),
            60,
            "every writer to acknowledge 100 writes",
        )
        # Freeze both followers for a moment first, so the write holding the leader's lock
        # is surely waiting at its COMMIT when the leader dies (Cluster.kill_leader_at_commit).
        # BEGIN and the INSERTs run on the leader alone, so the writer gets to COMMIT
        # within the pause; there is nothing to wait for that the test can see.
        at_commit = own_cluster.kill_leader_at_commit()
        at_commit.pause()
        time.sleep(0.5)
        killed_at = time.time()
        at_commit.kill()
        _wait_for(
            lambda: all(
                sum(1 for r in _read(p) if r["ok"] and r["t"] > killed_at) >= 50 for p in reports
            ),
            60,
            "every writer to acknowledge 50 writes after the leader was killed",
        )
        resumed = [min(r["t"] for r in _read(p) if r["ok"] and r["t"] > killed_at) for p in reports]
        stop.touch()
        figures = []
        for proc in procs:
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
            figures.append(json.loads(out.splitlines()[-1]))
    finally:
        stop.touch()
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()

    outcomes = [r for p in reports for r in _read(p)]
    attempted = {r["key"] for r in outcomes}
    acknowledged = {r["key"] for r in outcomes if r["ok"]}
    errors = [r for r in outcomes if not r["ok"]]
    assert not errors, f"{len(errors)} errors reached the application: {errors[:3]}"
    assert len(outcomes) == len(attempted), "a write was acknowledged twice"
    assert all(f["failovers"] >= 1 for f in figures), figures  # every writer lost its leader
    resent = sum(f["resent"] for f in figures)
    deduplicated = sum(f["deduplicated"] for f in figures)
    assert resent >= 1, "no write was at its COMMIT when the leader died: nothing was resent"

    db = await AsyncDatabaseManager.init_engine(url)
    try:
        rows = await db.fetch_all("SELECT key FROM event")
    finally:
        await AsyncDatabaseManager.close()
    counts = Counter(row["key"] for row in rows)
    missing = sorted(acknowledged - counts.keys())
    duplicated = sorted(k for k, n in counts.items() if n > 1)
    unexpected = sorted(counts.keys() - acknowledged)
    assert not missing, f"acknowledged writes lost: {missing[:10]}"
    assert not duplicated, f"writes stored twice: {duplicated[:10]}"
    assert not unexpected, f"rows nobody wrote: {unexpected[:10]}"

    gap = max(resumed) - killed_at
    print(
        f"\nRELIABILITY dqlite leader SIGKILL: leader {at_commit.leader.address} (pid {at_commit.leader.pid}) killed "
        f"under 3 writer processes (followers paused 0.5 s before); writes resumed after {min(resumed) - killed_at:.2f} s "
        f"(first writer) / {gap:.2f} s (all); {len(acknowledged)} of {len(attempted)} writes "
        f"acknowledged, each present exactly once; errors to the application {len(errors)}, "
        f"lost {len(missing)}, duplicated {len(duplicated)}; {resent} resent with their keys, "
        f"{deduplicated} of them answered from the record (their first send had committed)"
    )
    assert os.path.exists(stop)


async def test_reads_follow_the_new_leader_and_a_lost_transaction_says_so(
    own_cluster: Cluster,
) -> None:
    from fastquartdb import BaseModel, Column
    from fastquartdb.protocol.errors import ConnectionLostError

    class Note(BaseModel):
        id = Column("INTEGER", primary_key=True)
        text = Column("TEXT")

    db = await AsyncDatabaseManager.init_engine(own_cluster.url())
    try:
        await Note.insert({"text": "before"})
        leader = own_cluster.leader()
        with pytest.raises(ConnectionLostError, match="rolled back"):
            async with db.transaction():
                await Note.insert({"text": "in a lost transaction"})
                leader.kill()
                await Note.insert({"text": "after the kill"})
        # A read is simply retried on the new leader.
        started = time.monotonic()
        assert await Note.fetch(columns=["text"]) == [{"text": "before"}]
        print(f"\nRELIABILITY dqlite read after leader loss: {time.monotonic() - started:.2f} s")
        assert db.transport.leader != leader.address  # type: ignore[attr-defined]
        assert await Note.insert({"text": "after"}) == 2
    finally:
        await AsyncDatabaseManager.close()


async def test_a_commit_lost_with_the_leader_is_resolved(own_cluster: Cluster) -> None:
    """A transaction's COMMIT in flight when the leader dies: resolved, never "unknown".

    Both followers are paused first, so the leader cannot finish the COMMIT: it is surely
    in flight when the leader is killed. Whether it committed depends on whether the
    paused followers had received its log entry (they usually have: it waits in their
    sockets, and the new leader commits it). The client asks the next leader with
    ``resolve``: committed, the transaction returns and its row is there once; not, it
    raises saying it was rolled back and the row is absent, for good.
    """
    from fastquartdb import BaseModel, Column
    from fastquartdb.protocol.errors import ConnectionLostError

    class Ledger(BaseModel):
        id = Column("INTEGER", primary_key=True)
        text = Column("TEXT")

    db = await AsyncDatabaseManager.init_engine(own_cluster.url())
    try:
        await Ledger.insert({"text": "before"})
        at_commit = own_cluster.kill_leader_at_commit()
        loop = asyncio.get_running_loop()

        outcome = "committed"
        try:
            async with db.transaction():
                await Ledger.insert({"text": "in doubt"})
                at_commit.pause()
                # The COMMIT below waits for a quorum that is paused; the leader dies then.
                loop.call_later(0.5, at_commit.kill)
        except ConnectionLostError as exc:
            assert "rolled back" in str(exc) and "nothing of it was written" in str(exc)
            outcome = "rolled back"
        assert db.transport.resent == 1  # type: ignore[attr-defined]  # resolved, once
        expected = ["before", "in doubt"] if outcome == "committed" else ["before"]
        rows = await Ledger.fetch(columns=["text"], order_by="id")
        assert [r["text"] for r in rows] == expected
        assert await Ledger.insert({"text": "after"}) > 0
        print(f"\nRELIABILITY dqlite COMMIT lost with the leader: resolved as {outcome}")
    finally:
        for node in own_cluster.nodes:
            if node.running:
                os.kill(node.pid, signal.SIGCONT)
        await AsyncDatabaseManager.close()
