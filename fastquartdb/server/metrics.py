"""``fqdb-server --metrics HOST:PORT``: the daemon's counters in Prometheus text format.

What it costs the daemon: nothing per request beyond the plain counters it
keeps anyway (``Daemon.outcomes``, ``Daemon.latency_buckets``,
``WorkerStats.batch_sizes``: a dict increment and a bisect). No
``prometheus_client`` call is on the hot path: a custom collector reads those
counters when Prometheus scrapes, and prometheus_client's own HTTP server
answers ``GET /metrics`` in its own thread, never on the daemon's event loop.

Reading from another thread is safe without a lock because every read is one
step under the GIL (a ``len``, an int attribute, a ``dict``/``list`` copy of
counters whose keys are strings); a request counted meanwhile shows in the
next scrape. Nothing here ever writes to the daemon.

The exporter is off by default and listens on loopback unless the operator
also passes ``--metrics-public``: the metrics name the database file and the
shape of its traffic, which is nobody else's business.

Metrics (all prefixed ``fqdb_``)::

    requests_total{op,outcome}     requests answered, by op and "ok" or the error code
    request_latency_seconds        histogram: arrival to reply
    batch_size                     histogram: requests per group commit
    queue_depth                    requests waiting for the worker
    clients                        connected clients
    clients_connected_total        connections accepted (refused ones included)
    clients_refused_total          connections refused (peer credentials)
    protocol_errors_total          connections closed for a malformed frame
    transactions_total             interactive transactions begun
    transaction_timeouts_total     transactions rolled back by a timeout
    transaction_open               1 while an interactive transaction holds the writer
    wal_bytes                      size of the -wal file
    replication_enabled            1 when the daemon runs Litestream
    replication_state{state}       1 for Litestream's current state
    replication_restarts_total     Litestream restarts
    uptime_seconds                 since the daemon started
    server_info{version,db}        constant 1
"""

from __future__ import annotations

import importlib.util
import ipaddress
import logging
import os
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .._version import __version__
from ..engine.histogram import Buckets

if TYPE_CHECKING:
    from .daemon import Daemon

__all__ = ["MetricsExporter", "check_metrics_address", "parse_metrics_address"]

log = logging.getLogger("fastquartdb.server")

_INSTALL = "pip install 'fastquartdb[metrics]'"
#: Litestream states the supervisor goes through (replication.py), one-hot in the metrics.
_REPLICATION_STATES = ("starting", "running", "restarting", "stopped")


def parse_metrics_address(text: str) -> tuple[str, int]:
    """``"127.0.0.1:9464"``, ``"[::1]:9464"``, ``"localhost:9464"`` or ``"9464"`` -> (host, port).

    A bare port listens on 127.0.0.1; port 0 picks a free one.

    Raises:
        ValueError: not HOST:PORT, or the port is out of range.
    """
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "127.0.0.1", text
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not host or not 0 <= port <= 65535:
        raise ValueError(
            f"--metrics wants HOST:PORT such as 127.0.0.1:9464 (or a port alone), got {text!r}"
        )
    return host, port


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_metrics_address(text: str, public: bool) -> tuple[str, int]:
    """Parse ``--metrics`` and refuse a non-loopback address unless ``public``.

    Raises:
        ValueError: the address is malformed, not loopback without ``public``, or
            prometheus_client is not installed; the message says what to do.
    """
    host, port = parse_metrics_address(text)
    if not public and not is_loopback(host):
        raise ValueError(
            f"--metrics {text} would publish the daemon's metrics beyond this machine; "
            "bind to 127.0.0.1 (and let Prometheus scrape through a tunnel or a local agent), "
            "or add --metrics-public if that is what you want"
        )
    if importlib.util.find_spec("prometheus_client") is None:
        raise ValueError(f"--metrics needs prometheus_client, which is not installed: {_INSTALL}")
    return host, port


class DaemonCollector:
    """A prometheus_client collector over a daemon's own counters (see the module docstring)."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def describe(self) -> list[Any]:
        # No up-front description: registering must not call collect() (that would read
        # the daemon from the main thread before it serves).
        return []

    def collect(self) -> Iterator[Any]:
        """The metric families, read from the daemon's counters now."""
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            InfoMetricFamily,
        )

        daemon = self.daemon
        stats = daemon.worker.stats
        keys = daemon.worker.thread.engine.keys.stats
        requests = CounterMetricFamily(
            "fqdb_requests", "Requests answered, by op and outcome", labels=["op", "outcome"]
        )
        for (op, outcome), count in sorted(dict(daemon.outcomes).items()):
            requests.add_metric([op, outcome], count)
        yield requests
        yield _histogram(
            "fqdb_request_latency_seconds",
            "Seconds from a request's arrival to its reply",
            daemon.latency_buckets,
        )
        yield _histogram("fqdb_batch_size", "Requests per group-commit batch", stats.batch_sizes)
        gauges: list[tuple[str, str, float]] = [
            ("fqdb_queue_depth", "Requests waiting for the worker", daemon.worker.depth),
            ("fqdb_clients", "Connected clients", len(daemon.connections)),
            ("fqdb_transaction_open", "1 while a transaction holds the writer",
             int(daemon.worker.holder is not None)),
            ("fqdb_uptime_seconds", "Seconds since the daemon started",
             time.monotonic() - daemon.started),
            ("fqdb_wal_bytes", "Size of the database's -wal file", _wal_bytes(daemon.config.db)),
        ]  # fmt: skip
        for name, text, value in gauges:
            yield GaugeMetricFamily(name, text, value=value)
        counters: list[tuple[str, str, float]] = [
            ("fqdb_clients_connected", "Connections accepted", daemon.clients_total),
            ("fqdb_clients_refused", "Connections refused", daemon.counters.refused),
            ("fqdb_protocol_errors", "Connections closed for a malformed frame",
             daemon.counters.protocol_errors),
            ("fqdb_transactions", "Interactive transactions begun", stats.transactions),
            ("fqdb_transaction_timeouts", "Transactions rolled back by a timeout",
             stats.txn_timeouts),
            ("fqdb_writes_resent", "Keyed writes that arrived resent after a lost connection",
             keys.resent),
            ("fqdb_writes_deduplicated", "Keyed writes answered from their record, not run again",
             keys.deduplicated),
        ]  # fmt: skip
        for name, text, value in counters:
            yield CounterMetricFamily(name, text, value=value)
        yield from self._replication(GaugeMetricFamily, CounterMetricFamily)
        info = InfoMetricFamily("fqdb_server", "The daemon's version and database")
        info.add_metric([], {"version": __version__, "db": daemon.config.db})
        yield info

    def _replication(self, gauge: Any, counter: Any) -> Iterator[Any]:
        replicator = self.daemon.replicator
        yield gauge(
            "fqdb_replication_enabled",
            "1 when the daemon runs Litestream (--replicate)",
            value=int(replicator is not None),
        )
        if replicator is None:
            return
        stats = replicator.stats()
        states = gauge("fqdb_replication_state", "Litestream's state", labels=["state"])
        for state in _REPLICATION_STATES:
            states.add_metric([state], int(stats["state"] == state))
        yield states
        yield counter("fqdb_replication_restarts", "Litestream restarts", value=stats["restarts"])


def _histogram(name: str, text: str, buckets: Buckets) -> Any:
    from prometheus_client.core import HistogramMetricFamily

    counts, total = buckets.snapshot()
    cumulative: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip((*buckets.bounds, float("inf")), counts):
        running += count
        cumulative.append(("+Inf" if bound == float("inf") else repr(float(bound)), running))
    return HistogramMetricFamily(name, text, buckets=cumulative, sum_value=total)


def _wal_bytes(db: str) -> int:
    try:
        return os.stat(db + "-wal").st_size
    except OSError:
        return 0


class MetricsExporter:
    """prometheus_client's HTTP server on its own thread, serving one daemon's collector."""

    def __init__(self, daemon: Daemon, host: str, port: int) -> None:
        from prometheus_client import CollectorRegistry, start_http_server

        # A registry of our own: nothing of the process default (its gc and platform
        # collectors) runs at each scrape, and two daemons in one test process do not mix.
        registry = CollectorRegistry(auto_describe=False)
        registry.register(DaemonCollector(daemon))
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=registry)
        except OSError as exc:
            raise OSError(
                exc.errno,
                f"cannot listen for --metrics on {host}:{port}: {exc.strerror or exc}; "
                "choose another port",
            ) from None
        bound = self._server.server_address
        self.host, self.port = str(bound[0]), int(bound[1])
        shown = f"[{self.host}]" if ":" in self.host else self.host
        #: Where Prometheus scrapes.
        self.url = f"http://{shown}:{self.port}/metrics"
        log.info("metrics on %s", self.url)

    def stop(self) -> None:
        """Stop serving and wait for the server thread."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
