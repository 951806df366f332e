"""``fqdb-server --metrics``: Prometheus text from a real daemon under a real load.

A real ``fqdb-server`` serves metrics on an ephemeral loopback port; real client
processes (``tests/integration/load_client.py``) insert while this test scrapes
``/metrics`` with httpx and parses it with prometheus_client's own parser; after
the load, the counters must add up exactly to the requests the clients sent.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fastquartdb import AsyncDatabaseManager
from fastquartdb.server.metrics import check_metrics_address, parse_metrics_address
from tests.helpers import DaemonProcess
from tests.integration.load_client import Event

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

PROCESSES = 2
SECONDS = 1.5

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(client: httpx.Client, url: str) -> Samples:
    reply = client.get(url)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(reply.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def requests_by(samples: Samples) -> dict[tuple[str, str], float]:
    """(op, outcome) -> count, from fqdb_requests_total."""
    out = {}
    for (name, labels), count in samples.items():
        if name == "fqdb_requests_total":
            found = dict(labels)
            out[(found["op"], found["outcome"])] = count
    return out


def histogram(samples: Samples, name: str) -> tuple[list[float], float, float]:
    buckets = sorted(
        (float(dict(labels)["le"]), count)
        for (n, labels), count in samples.items()
        if n == f"{name}_bucket"
    )
    counts = [c for _, c in buckets]
    assert counts == sorted(counts), buckets  # cumulative
    assert buckets[-1][0] == float("inf")
    return counts, value(samples, f"{name}_count"), value(samples, f"{name}_sum")


def start_load(daemon: DaemonProcess, tmp_path: Path) -> list[tuple[subprocess.Popen[bytes], Path]]:
    loads = []
    for i in range(PROCESSES):
        out = tmp_path / f"load{i}.json"
        cmd = [sys.executable, "-m", "tests.integration.load_client", "insert"]
        cmd += ["--db", daemon.db, "--socket", daemon.socket or "", "--mode", "daemon"]
        cmd += ["--tasks", "4", "--rows", "1000000", "--seconds", str(SECONDS)]
        cmd += ["--prefix", f"p{i}", "--out", str(out)]
        loads.append((subprocess.Popen(cmd, cwd=Path(__file__).parents[2]), out))
    return loads


async def one_transaction(daemon: DaemonProcess) -> None:
    db = await AsyncDatabaseManager.init_engine(daemon.db, mode="daemon", socket=daemon.socket)
    try:
        async with db.transaction():
            await Event.insert({"key": "in-a-transaction", "worker": "test"})
    finally:
        await db.close()


def test_metrics_count_exactly_the_requests_sent(tmp_path: Path) -> None:
    db = str(tmp_path / "app.db")
    daemon = DaemonProcess(db, "--metrics", "127.0.0.1:0").start()
    loads = []
    try:
        assert daemon.proc is not None and daemon.proc.stdout is not None
        line = daemon.proc.stdout.readline().strip()
        assert line.startswith("fqdb-server: metrics on http://127.0.0.1:"), line
        url = line.rsplit(" ", 1)[1]
        assert url.endswith("/metrics") and not url.endswith(":0/metrics")
        with httpx.Client(timeout=10.0) as client:
            before = scrape(client, url)
            assert requests_by(before) == {}
            assert value(before, "fqdb_clients") == 0
            assert value(before, "fqdb_replication_enabled") == 0
            assert value(before, "fqdb_server_info", db=db, version=_version()) == 1

            loads = start_load(daemon, tmp_path)
            # During the load: scrape until both clients are connected and inserting.
            seen: list[Samples] = []
            deadline = time.monotonic() + 30
            while True:
                running = all(p.poll() is None for p, _ in loads)
                samples = scrape(client, url)
                seen.append(samples)
                inserted = requests_by(samples).get(("insert", "ok"), 0)
                if running and value(samples, "fqdb_clients") == PROCESSES and inserted > 0:
                    break
                assert running and time.monotonic() < deadline, "no scrape caught the load"
                time.sleep(0.01)
            for proc, _ in loads:
                assert proc.wait(60) == 0
            sent = 0
            for _, out in loads:
                report = json.loads(out.read_text())
                assert report["failures"] == {}, report["failures"]
                sent += len(report["acked"])
            asyncio.run(one_transaction(daemon))

            # After: wait until the daemon has seen every client leave.
            deadline = time.monotonic() + 10
            while value(after := scrape(client, url), "fqdb_clients") != 0:
                assert time.monotonic() < deadline, "clients never went to 0"
                time.sleep(0.02)
            stats = daemon.stats()
        final = requests_by(after)
        inserts_seen = [requests_by(s).get(("insert", "ok"), 0) for s in [*seen, after]]
        assert inserts_seen == sorted(inserts_seen)  # counters only grow
        assert 0 < inserts_seen[-2] < sent + 1 <= inserts_seen[-1]

        assert final[("insert", "ok")] == sent + 1  # the load's, and the transaction's one
        assert final[("begin", "ok")] == final[("commit", "ok")] == 1
        assert not [k for k in final if k[1] != "ok"], final
        connections = value(after, "fqdb_clients_connected_total")
        assert connections == PROCESSES + 1  # the loads and the transaction; stats() came later
        assert final[("hello", "ok")] == connections
        worker_ops = sum(n for (op, _), n in final.items() if op not in ("hello", "stats"))
        # The stats op counts the same requests, and every one ran in a counted batch (the
        # begin is the exception: it holds the writer instead of joining a batch).
        assert stats["requests"] == worker_ops
        counts, batches, batched = histogram(after, "fqdb_batch_size")
        assert batches == counts[-1] == stats["batches"]
        assert batched == worker_ops - 1
        assert stats["batch_max"] <= 256 and batched / batches >= 1
        counts, answered, seconds = histogram(after, "fqdb_request_latency_seconds")
        assert answered == counts[-1] == worker_ops and seconds > 0
        assert value(after, "fqdb_transactions_total") == stats["transactions"] == 1
        assert value(after, "fqdb_transaction_timeouts_total") == 0
        # No connection was lost: nothing resent, nothing answered from a record.
        assert value(after, "fqdb_writes_resent_total") == 0
        assert value(after, "fqdb_writes_deduplicated_total") == 0
        assert value(after, "fqdb_transaction_open") == 0
        assert value(after, "fqdb_queue_depth") == 0
        assert value(after, "fqdb_wal_bytes") > 0
        assert value(after, "fqdb_protocol_errors_total") == 0
        assert daemon.stop() == 0
    finally:
        for proc, _ in loads:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        daemon.kill()


def _version() -> str:
    from fastquartdb import __version__

    return __version__


def test_a_non_loopback_address_is_refused_unless_public(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "fastquartdb.server", str(tmp_path / "a.db")]
    proc = subprocess.run(
        [*cmd, "--metrics", "0.0.0.0:9464"], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 2
    assert "--metrics 0.0.0.0:9464 would publish" in proc.stderr
    assert "--metrics-public" in proc.stderr
    assert not (tmp_path / "a.db").exists()  # refused before anything started


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("9464", ("127.0.0.1", 9464)),
        ("[::1]:0", ("::1", 0)),
        ("localhost:9000", ("localhost", 9000)),
    ],
)
def test_metrics_addresses(text: str, expected: tuple[str, int]) -> None:
    assert parse_metrics_address(text) == expected
    assert check_metrics_address(text, public=False) == expected


@pytest.mark.parametrize("text", ["", "host:", ":80", "127.0.0.1:99999", "127.0.0.1:http"])
def test_malformed_metrics_addresses(text: str) -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_metrics_address(text)


def test_public_addresses_need_the_flag() -> None:
    with pytest.raises(ValueError, match="--metrics-public"):
        check_metrics_address("10.1.2.3:9464", public=False)
    with pytest.raises(ValueError, match="--metrics-public"):
        check_metrics_address("metrics.example.com:9464", public=False)
    assert check_metrics_address("10.1.2.3:9464", public=True) == ("10.1.2.3", 9464)


def test_without_prometheus_client_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "prometheus_client" else real(name, *a),
    )
    with pytest.raises(ValueError, match=r"pip install 'fastquartdb\[metrics\]'"):
        check_metrics_address("127.0.0.1:9464", public=False)
