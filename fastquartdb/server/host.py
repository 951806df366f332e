"""What a client connection needs from the daemon that accepted it.

:class:`ConnectionHost` is the whole of it: the limits it enforces, the worker
it queues on, where it counts replies and latencies, and the few decisions only
the daemon can take (who may connect, the ``hello`` and ``stats`` results).
:class:`~fastquartdb.server.daemon.Daemon` implements it; the connection never
imports the daemon, so neither module's import needs the other (as hypercorn's
``TCPServer`` depends on a small interface, not on the whole server).

:class:`ConnectionCounters` holds the daemon-wide counters connections bump
(refusals, protocol errors, ``changes`` events); the daemon owns one and reads
it for ``stats`` and the metrics.
"""

from __future__ import annotations

from collections.abc import MutableMapping, MutableSequence, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..engine import BatchWorker
    from .config import ServerConfig

__all__ = ["ConnectionCounters", "ConnectionHost", "LatencyBuckets"]


@dataclass(slots=True)
class ConnectionCounters:
    """Daemon-wide counts of what happened on connections (shown by ``stats``)."""

    #: Connections refused (access or load) before ``hello``.
    refused: int = 0
    #: Connections closed for a framing or protocol error.
    protocol_errors: int = 0
    #: Connections closed for sending no ``hello`` in time.
    hello_timeouts: int = 0
    #: ``changes`` events sent, and those merged into a later one (a slow reader).
    events: int = 0
    events_merged: int = 0


class LatencyBuckets(Protocol):
    """The histogram of reply latencies (:class:`~fastquartdb.engine.histogram.Buckets`)."""

    def add_many(self, values: Sequence[float]) -> None: ...


class ConnectionHost(Protocol):
    """What :class:`~fastquartdb.server.connection.ClientConnection` uses of its daemon."""

    @property
    def config(self) -> ServerConfig:
        """The limits: frame, decoded, reply and unsent sizes; the hello timeout."""
        ...

    @property
    def worker(self) -> BatchWorker:
        """The worker requests are offered to."""
        ...

    @property
    def stopping(self) -> bool:
        """Shutting down: connections stop reading."""
        ...

    @property
    def counters(self) -> ConnectionCounters:
        """The daemon-wide counters a connection bumps."""
        ...

    @property
    def latencies(self) -> MutableSequence[float]:
        """Seconds from arrival to reply of recent requests (appended by the connection)."""
        ...

    @property
    def latency_buckets(self) -> LatencyBuckets:
        """The same latencies since start, bucketed."""
        ...

    @property
    def outcomes(self) -> MutableMapping[tuple[str, str], int]:
        """(op, "ok" or the error code) -> requests answered (bumped by the connection)."""
        ...

    def refuse_peer(self, peer: tuple[int, int, int] | None) -> str | None:
        """Why the peer may not connect, or None."""
        ...

    def refuse_load(self, peer: tuple[int, int, int] | None) -> str | None:
        """Why one more connection would be too many, or None."""
        ...

    def connection_opened(self, conn: Any) -> None:
        """``conn`` was accepted (counted, by its peer's uid too, for the client limits)."""
        ...

    def connection_closed(self, conn: Any) -> None:
        """``conn`` went away: forget it (and its subscription)."""
        ...

    def subscribe(self, conn: Any) -> None:
        """Send ``conn`` a ``changes`` event after each commit that logged changes."""
        ...

    def hello(self) -> dict[str, Any]:
        """The result of the ``hello`` op."""
        ...

    def stats(self) -> dict[str, Any]:
        """The result of the ``stats`` op."""
        ...
