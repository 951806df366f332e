"""``Leader``: one connection to a dqlite cluster's leader, found again when the leader changes.

Whoever holds a :class:`Leader` runs one request at a time on :meth:`Leader.connection`
(dqlite answers one request per connection at a time) and calls :meth:`Leader.drop`
when the connection broke or the node stopped leading; the next
:meth:`Leader.connection` asks the nodes who leads now, for up to
``failover_timeout`` seconds. Used by the direct transport and by the daemon's
dqlite writer alike.
"""

from __future__ import annotations

import asyncio
import itertools
import time

from ...protocol.errors import DaemonUnavailableError, InterfaceError, ValidationError, brief
from . import cluster, wire
from .connection import DqliteRequestError, NodeConnection, NodeUnavailable, split_address

__all__ = ["URL_SCHEME", "Leader", "parse_dqlite_url"]

_client_ids = itertools.count(1)

URL_SCHEME = "dqlite://"


def parse_dqlite_url(url: str) -> tuple[list[str], str]:
    """``dqlite://h1:p1,h2:p2/app`` -> ``(["h1:p1", "h2:p2"], "app")``.

    Raises:
        ValidationError: not a dqlite URL with at least one ``host:port`` and a database name.
    """
    if not url.startswith(URL_SCHEME):
        raise ValidationError(f"a dqlite URL starts with {URL_SCHEME!r}, got {brief(url)}")
    hosts, _, database = url[len(URL_SCHEME) :].partition("/")
    nodes = [h.strip() for h in hosts.split(",") if h.strip()]
    if not nodes or not database or "/" in database:
        raise ValidationError(
            f"dqlite URL must look like dqlite://127.0.0.1:9001,127.0.0.1:9002/app, got {brief(url)}"
        )
    for node in nodes:
        try:
            split_address(node)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
    return nodes, database


class Leader:
    """The leader connection of one client of a cluster (see the module docstring)."""

    def __init__(
        self,
        nodes: list[str],
        database: str,
        *,
        connect_timeout: float = 2.0,
        failover_timeout: float = 20.0,
        read_timeout: float | None = 30.0,
    ) -> None:
        self.nodes = list(nodes)
        self.database = database
        self.connect_timeout = connect_timeout
        self.failover_timeout = failover_timeout
        #: The longest wait for one answer of the leader; ``None``: no limit. A leader
        #: that stops answering is abandoned sooner, as soon as another node names a
        #: new leader (see :meth:`_stalled`).
        self.read_timeout = read_timeout
        #: Most bytes of rows one query may bring (the daemon's ``--max-reply``); None: any.
        self.result_limit: int | None = None
        #: Times a new leader had to be found.
        self.failovers = 0
        #: Set by the owner when it closes: no reconnecting behind its back.
        self.closed = False
        # Where to look first for the leader: the one another node named last.
        self._hint: str | None = None
        self._conn: NodeConnection | None = None
        self._client_id = next(_client_ids)

    @property
    def address(self) -> str | None:
        """The address of the node requests go to now, if connected."""
        return None if self._conn is None or self._conn.closed else self._conn.address

    @property
    def current(self) -> NodeConnection | None:
        """The open leader connection, if any (never finds one)."""
        return self._conn if self._conn is not None and not self._conn.closed else None

    @property
    def probe_timeout(self) -> float:
        """How long a node is given to say who leads."""
        return min(self.connect_timeout, 1.0)

    async def describe(self) -> tuple[bool, str]:
        """Whether the cluster is healthy, and one sentence on its state (see :mod:`.cluster`)."""
        return await cluster.describe(self.nodes, self.probe_timeout)

    async def connection(self) -> NodeConnection:
        """The leader connection, finding the leader first if needed (the caller runs one
        request at a time on it).

        Raises:
            InterfaceError: the owner closed.
            DaemonUnavailableError: no leader within ``failover_timeout``; says why.
        """
        if self._conn is not None and not self._conn.closed:
            self._conn.result_limit = self.result_limit
            return self._conn
        if self.closed:
            # close() ran while this request waited: never reconnect behind the caller's back.
            raise InterfaceError("the database is closed; call init_engine() again")
        deadline = time.monotonic() + self.failover_timeout
        delay = 0.05
        problems: dict[str, str] = {}
        while True:
            for node in self._candidates():
                try:
                    conn = await self._try_leader(node)
                except (NodeUnavailable, DqliteRequestError, wire.WireError) as exc:
                    problems[node] = str(exc)
                    continue
                if conn is not None:
                    conn.stalled = self._stalled
                    conn.result_limit = self.result_limit
                    self._conn = conn
                    self._hint = None
                    return conn
                problems[node] = "knows no leader yet"
            if self.closed:
                raise InterfaceError("the database is closed; call init_engine() again")
            if time.monotonic() >= deadline:
                _, state = await self.describe()
                raise DaemonUnavailableError(
                    f"no dqlite leader among {', '.join(self.nodes)} within "
                    f"{self.failover_timeout:g} s: {state} ("
                    + "; ".join(f"{n}: {p}" for n, p in problems.items())
                    + ")"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)

    async def drop(self) -> None:
        """Close the leader connection (broken, or no longer the leader's)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    def _candidates(self) -> list[str]:
        # The leader another node named, else the last leader: usually still leading.
        first = self._hint or (self._conn.address if self._conn is not None else None)
        if first in self.nodes:
            return [first] + [n for n in self.nodes if n != first]
        return list(self.nodes)

    async def _stalled(self, conn: NodeConnection, waited: float) -> None:
        """The leader has not answered for ``waited`` s: give up on it if the cluster
        has elected another leader (a frozen node keeps its sockets open, so only the
        other nodes can tell), or past ``read_timeout``.

        Raises:
            NodeUnavailable: abandon the request (the caller fails over).
        """
        others = [n for n in self.nodes if n != conn.address]
        answers = await asyncio.gather(*(cluster.ask_leader(n, self.probe_timeout) for n in others))
        named = {a for a in answers if a and a != conn.address}
        if named:
            self._hint = sorted(named)[0]
            raise NodeUnavailable(
                f"dqlite leader {conn.address} did not answer for {waited:.1f} s and the "
                f"cluster elected {self._hint}"
            )
        if self.read_timeout is not None and waited >= self.read_timeout:
            raise NodeUnavailable(
                f"dqlite leader {conn.address} did not answer within read_timeout="
                f"{self.read_timeout:g} s"
            )

    async def _try_leader(self, node: str) -> NodeConnection | None:
        """Ask ``node`` who leads; return an open connection to the leader, or None."""
        conn = await NodeConnection.connect(node, self.connect_timeout)
        try:
            leader = await asyncio.wait_for(conn.leader(), self.connect_timeout)
        except asyncio.TimeoutError:  # accepted, never answered: a stopped node
            await conn.close()
            raise NodeUnavailable(f"dqlite node {node} did not answer in time") from None
        except BaseException:
            await conn.close()
            raise
        if not leader.address:
            await conn.close()
            return None
        if leader.address != node:
            await conn.close()
            conn = await NodeConnection.connect(leader.address, self.connect_timeout)
        try:
            # The node we reached must itself say it leads (a stale answer is possible mid-election).
            confirmed = await asyncio.wait_for(conn.leader(), self.connect_timeout)
            if confirmed.address != leader.address:
                await conn.close()
                return None
            await asyncio.wait_for(conn.register(self._client_id), self.connect_timeout)
            await asyncio.wait_for(conn.open_database(self.database), self.connect_timeout)
        except asyncio.TimeoutError:
            await conn.close()
            raise NodeUnavailable(f"dqlite node {conn.address} did not answer in time") from None
        except BaseException:
            await conn.close()
            raise
        return conn
