"""``AsyncDatabaseManager``: the process-wide handle the models talk through.

``init_engine`` picks the transport (a daemon serving the file if one
answers, otherwise embedded), creates the tables of every model defined so
far, and installs the singleton that ``get()`` returns. Transactions are
tracked per task with a context variable (``transaction.py``), so model calls
inside ``async with db.transaction():`` run in it without passing anything around.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, Protocol

from ..engine.config import DEFAULT_BUSY_TIMEOUT, DEFAULT_SYNCHRONOUS
from ..engine.deadline import DEFAULT_STATEMENT_TIMEOUT
from ..protocol import KEYED_OPS, default_socket_path
from ..protocol.errors import (
    DaemonUnavailableError,
    InterfaceError,
    NotInitializedError,
    ValidationError,
)
from ..protocol.messages import check_idempotency_key
from .changes import DEFAULT_POLL_INTERVAL, Change, ChangeWatch, check_after, follow_changes
from .failover import FailoverTransport
from .keys import KeyIssuer
from .reads import DEFAULT_READERS, ReadRouter
from .rows import dict_rows
from .transaction import Transaction, _current_txn
from .transports import EmbeddedTransport, Transport

__all__ = ["AsyncDatabaseManager", "Transaction"]

_MODES = ("auto", "daemon", "embedded")

log = logging.getLogger("fastquartdb.client")


class TableSource(Protocol):
    """What the manager needs of a model class to create its table."""

    __tablename__: ClassVar[str]

    @classmethod
    def _table_request(cls) -> dict[str, Any]: ...


class AsyncDatabaseManager:
    """The process-wide database handle.

    Example::

        await AsyncDatabaseManager.init_engine("data/app.db", use_filelock=True)
        db = AsyncDatabaseManager.get()
        async with db.transaction():
            await User.insert({"username": "alice"})
        await AsyncDatabaseManager.close()
    """

    _instance: ClassVar[AsyncDatabaseManager | None] = None
    _init_lock: ClassVar[asyncio.Lock | None] = None
    #: Every model class defined so far, by table name (the models layer fills it).
    _models: ClassVar[dict[str, type[TableSource]]] = {}

    def __init__(
        self,
        path: str,
        transport: Transport,
        *,
        use_filelock: bool,
        router: ReadRouter | None = None,
        request_keys: bool = True,
        capture: Mapping[str, Any] | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
    ) -> None:
        self.path = path
        self.use_filelock = use_filelock
        #: The writer: where writes, DDL and transactions go (and reads, without local readers).
        self.transport = transport
        #: Decides where each request runs (:meth:`ReadRouter.route`).
        self.router = router if router is not None else ReadRouter(transport, None, "no readers")
        self._txn_ids = itertools.count(1)
        #: This process's request keys (see :mod:`.keys`): what makes a resent write run once.
        self.keys = KeyIssuer()
        self._keyed_ops = KEYED_OPS if request_keys else frozenset()
        self._ready: set[type[TableSource]] = set()
        self._pending: dict[type[TableSource], asyncio.Future[None]] = {}
        #: Tables init_engine(changes=...) captures: table -> the ensure_table "changes" value.
        self.capture: dict[str, Any] = dict(capture or {})
        self._poll_interval = poll_interval
        self._watch: ChangeWatch | None = None

    # ------------------------------------------------------------ lifecycle

    @classmethod
    async def init_engine(
        cls,
        path: str | os.PathLike[str],
        use_filelock: bool = False,
        *,
        mode: str = "auto",
        socket: str | None = None,
        synchronous: str = DEFAULT_SYNCHRONOUS,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        request_timeout: float | None = None,
        statement_timeout: float | None = DEFAULT_STATEMENT_TIMEOUT,
        connect_timeout: float = 5.0,
        readers: int | None = None,
        request_keys: bool = True,
        changes: Iterable[str] | Mapping[str, Any] | None = None,
        changes_max_age: float | None = None,
        changes_max_rows: int | None = None,
        changes_poll_interval: float = DEFAULT_POLL_INTERVAL,
    ) -> AsyncDatabaseManager:
        """Open ``path`` and make it the process's database.

        Args:
            path: the SQLite file (created if missing, with its directory).
            use_filelock: embedded mode runs every batch under a lock on ``<path>.lock``.
            mode: ``"auto"`` (a daemon if one serves ``path``, else embedded),
                ``"daemon"`` (a missing daemon is an error) or ``"embedded"``.
            socket: the daemon's socket, if not the default for ``path``.
            synchronous: embedded mode's ``PRAGMA synchronous`` (``"full"`` or ``"normal"``).
            busy_timeout: seconds to wait for another process's write lock.
            request_timeout: daemon mode: seconds to wait for a reply before
                ``RequestTimeoutError`` (default: wait as long as it takes).
            statement_timeout: embedded mode: seconds one request's statements may run
                before ``StatementTimeoutError`` (None: no limit). A daemon uses its own
                ``--statement-timeout``.
            connect_timeout: seconds to wait for the daemon to accept and answer
                ``hello``; a daemon that does not (stopped, overloaded) counts as absent:
                ``"auto"`` warns and runs embedded, ``"daemon"`` raises.
            readers: reader threads of this process's own read-only connections to the
                file (default 2, or ``FQDB_READERS``); reads outside a transaction run
                there, a point read inline. ``0`` sends every read to the writer.
            request_keys: give every write a request key, so that one in flight when the
                connection is lost is resent and runs once (README, "Exactly-once
                writes"). False (for measuring what keys cost) leaves such a write's
                outcome unknown: ``ConnectionLostError``.
            changes: tables whose changes are logged for change feeds, besides models
                that say ``__changes__ = True``: names, or ``{name: {"old": True}}`` to log
                old values too (README, "Change feeds").
            changes_max_age: embedded mode: seconds a change stays in the change log
                (default 7 days; a daemon uses its ``--changes-max-age``).
            changes_max_rows: embedded mode: most changes kept (default 1,000,000; a
                daemon uses its ``--changes-max-rows``).
            changes_poll_interval: seconds between two looks at the file for commits of
                other processes while a change feed waits (default 0.02).

        Returns:
            The manager, also available as ``AsyncDatabaseManager.get()``.

        Raises:
            InterfaceError: already initialised for a different file.
            DaemonUnavailableError: ``mode="daemon"`` and no daemon answers in time.
            TooManyClientsError: ``mode="daemon"`` and the daemon is at its connection limit.
            AccessDeniedError: ``mode="daemon"`` and the socket is served by another user.
        """
        fspath = os.fspath(path)
        # A dqlite:// URL names a cluster, not a file: mode "dqlite" (or "auto") and no path rules.
        is_url = fspath.startswith("dqlite://")
        if mode not in _MODES and mode != "dqlite":
            raise ValidationError(f"mode must be one of {', '.join(_MODES)}, got {mode!r}")
        readers = _reader_count(readers)
        if fspath != ":memory:" and not is_url:
            fspath = os.path.abspath(fspath)
        current = cls._instance
        if current is not None:
            if current.path == fspath:
                await current._ensure_all()
                return current
            raise InterfaceError(
                f"already initialised for {current.path!r}; call "
                f"AsyncDatabaseManager.close() before init_engine({fspath!r})"
            )
        if fspath != ":memory:" and not is_url:
            directory = os.path.dirname(fspath)
            if directory:
                os.makedirs(directory, exist_ok=True)
        capture = _capture_map(changes)
        transport = await _open_transport(
            fspath,
            use_filelock,
            mode=mode,
            socket=socket,
            synchronous=synchronous,
            busy_timeout=busy_timeout,
            request_timeout=request_timeout,
            statement_timeout=statement_timeout,
            connect_timeout=connect_timeout,
            changes_max_age=changes_max_age,
            changes_max_rows=changes_max_rows,
        )
        try:
            router = ReadRouter.open(transport, readers=readers, busy_timeout=busy_timeout)
        except BaseException:
            await transport.close()
            raise
        manager = cls(
            fspath,
            transport,
            use_filelock=use_filelock,
            router=router,
            request_keys=request_keys,
            capture=capture,
            poll_interval=changes_poll_interval,
        )
        cls._instance = manager
        try:
            await manager._ensure_all()
        except BaseException:
            cls._instance = None
            await manager._close()
            raise
        return manager

    @classmethod
    def get(cls) -> AsyncDatabaseManager:
        """The manager ``init_engine`` installed.

        Raises:
            NotInitializedError: ``init_engine`` has not run (or ``close`` ran since).
        """
        if cls._instance is None:
            raise NotInitializedError(
                "no database: await AsyncDatabaseManager.init_engine('path/to.db') first"
            )
        return cls._instance

    @classmethod
    def ready_for(cls, model: type[TableSource]) -> AsyncDatabaseManager | None:
        """The installed manager if ``model``'s table is ready on it, else None.

        The models' fast path: one check per request instead of awaiting
        :meth:`ensure_table`; on None they call :meth:`get` and :meth:`ensure_table`.
        """
        manager = cls._instance
        if manager is None or model not in manager._ready:
            return None
        return manager

    @classmethod
    def register(cls, model: type[TableSource]) -> None:
        """Record ``model`` (under its table name) for ``init_engine`` to create its table."""
        cls._models[model.__tablename__] = model

    @classmethod
    async def close(cls) -> None:
        """Finish pending requests, close the database and end its thread. Safe to call twice."""
        manager, cls._instance = cls._instance, None
        if manager is not None:
            await manager._close()

    async def _close(self) -> None:
        if self._watch is not None:
            await self._watch.close()
        try:
            await self.router.close()
        finally:
            await self.transport.close()

    @property
    def on_cluster(self) -> bool:
        """Whether the database is a dqlite cluster (directly, or through a per-host daemon)."""
        return self.path.startswith("dqlite://")

    @property
    def mode(self) -> str:
        """``"daemon"``, ``"embedded"`` or ``"dqlite"``: where requests run now."""
        return self.transport.mode

    def info(self) -> dict[str, Any]:
        """What requests run on now: ``{"mode": ..., "raw_sql": ...}``, and for a daemon its
        ``socket``, ``server`` and ``server_pid``."""
        return self.transport.info().as_dict()

    # ------------------------------------------------------------ requests

    async def _send(self, request: dict[str, Any]) -> Any:
        # Transaction control: always the writer's. A commit may carry DDL the local readers
        # must see from the next read on; a top-level commit carries a request key, so a
        # lost reply is resolved to committed or rolled back (see failover.py).
        commit = request.get("op") == "commit"
        keyed = commit and "savepoint" not in request and bool(self._keyed_ops)
        seq = self.keys.issue(request) if keyed else None
        try:
            return await self.transport.request(request)
        finally:
            if seq is not None:
                self.keys.done(seq)
            if commit:
                self.router.schema_may_have_changed()

    def request(self, request: dict[str, Any], *, raw_read: bool = False) -> Awaitable[Any]:
        """Send one protocol request, in the current task's transaction if any; await the
        result.

        Where it runs (a local reader or the writer) is :meth:`ReadRouter.route`'s call;
        ``raw_read`` marks raw SQL whose rows the caller reads (``fetch_all``). Not a
        coroutine itself (one frame less per read): the transaction a request belongs to is
        the one current when this is called, and a request refused fails when awaited.
        """
        state = _current_txn.get()
        if state is not None and state.manager is self:
            if "idempotency_key" in request:
                return _refused(
                    ValidationError(
                        "idempotency_key cannot be used inside db.transaction(): the "
                        "transaction commits or not as a whole; give the key to a write outside it"
                    )
                )
            request["txn"] = state.id
        elif (
            request.get("op") in self._keyed_ops
            and "idempotency_key" not in request
            and "key" not in request
        ):
            # A write outside a transaction: keyed, so a lost connection cannot leave its
            # outcome unknown (a caller's idempotency_key does the same job).
            return self._keyed(request, raw_read)
        return self.router.request(request, raw_read)

    async def _keyed(self, request: dict[str, Any], raw_read: bool) -> Any:
        keys = self.keys
        seq = keys.issue(request)
        try:
            return await self.router.request(request, raw_read)
        finally:
            keys.done(seq)

    async def stats(self) -> dict[str, Any]:
        """Figures of this process: where its reads ran, and the daemon's stats in daemon mode.

        Returns ``{"mode", "reads": {"local", "local_inline", "writer", "reader_threads",
        "local_reads", "why_not"}, "daemon": <the daemon's stats op> or None}``.
        """
        daemon = await self.transport.request({"op": "stats"}) if self.mode == "daemon" else None
        return {"mode": self.mode, "reads": self.router.stats(), "daemon": daemon}

    def transaction(self) -> Transaction:
        """An async context manager for a transaction (a savepoint when nested).

        Example::

            async with db.transaction():
                await Account.update({"balance": 90}, {"id": 1})
                await Account.update({"balance": 110}, {"id": 2})
        """
        return Transaction(self)

    async def execute(
        self,
        sql: str,
        params: Sequence[Any] | dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Run one raw SQL statement with bound parameters (always on the writer).

        Returns ``{"columns", "rows", "rowcount", "lastrowid"}``. The way to do
        what the model API does not; values are always bound, never spliced.
        The statement runs in the sandbox the README's "Raw SQL" section describes.

        Args:
            timeout: seconds this statement may run instead of the statement timeout
                (a daemon caps it at its ``--max-statement-timeout``).
            idempotency_key: the caller's key for this write: a second call with the same
                key and statement returns the first call's result and runs nothing.

        Raises:
            ValidationError: ``refused: ...`` when the sandbox refuses the statement.
            StatementTimeoutError: it ran past its deadline and was stopped.
        """
        request: dict[str, Any] = {"op": "execute", "sql": sql, "params": _params(params)}
        if timeout is not None:
            request["timeout"] = timeout
        if idempotency_key is not None:
            request["idempotency_key"] = check_idempotency_key(idempotency_key)
        result: dict[str, Any] = await self.request(request)
        return result

    async def fetch_all(
        self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Run a raw query and return its rows as dicts.

        Outside a transaction it runs on a local reader; a statement that writes
        is refused there and runs on the writer instead.
        """
        result = await self.request(
            {"op": "execute", "sql": sql, "params": _params(params)}, raw_read=True
        )
        return dict_rows(result["columns"], result["rows"])

    async def fetch_one(
        self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None
    ) -> dict[str, Any] | None:
        """Run a raw query and return its first row as a dict, or None."""
        rows = await self.fetch_all(sql, params)
        return rows[0] if rows else None

    # ------------------------------------------------------------ change feeds

    def changes(
        self,
        tables: Iterable[str] | None = None,
        after: int | str | None = None,
        *,
        where: list[Any] | None = None,
        convert: Callable[[Change], Change] | None = None,
    ) -> AsyncGenerator[Change, None]:
        """Follow the change log: every committed change of the captured ``tables`` (all
        captured tables when None), oldest first, then live ones as they commit.

        Args:
            after: the cursor: a ``Change.seq`` to resume after (an int, or its decimal
                text such as a ``Last-Event-ID``), ``"now"`` for new changes only, or None
                for everything the log retains.
            where: a wire filter on the row's columns (one table; ``Model.changes(filters=)``
                builds it).

        Example::

            async for change in db.changes(["user"], after="now"):
                print(change.seq, change.op, change.row)

        Raises:
            ChangesExpiredError: (while iterating) the cursor fell off the retained log.
            InterfaceError: the database is a dqlite cluster (README, "Change feeds").
        """
        if self.on_cluster:
            raise InterfaceError(
                "change feeds are not available on a dqlite cluster yet (README, 'Change "
                "feeds'); poll the tables, or run the daemon on a single host"
            )
        cursor = check_after(after)
        request: dict[str, Any] = {"op": "changes"}
        if tables is not None:
            request["tables"] = [_table_name(t) for t in tables]
        if where is not None:
            request["where"] = where
        if self._watch is None:
            path = None if self.path == ":memory:" else self.path
            self._watch = ChangeWatch(self.transport, path, self._poll_interval)
        return follow_changes(self.request, self._watch, request, cursor, convert)

    # ------------------------------------------------------------ tables

    async def ensure_table(self, model: type[TableSource]) -> None:
        """Create or migrate ``model``'s table once per manager (concurrent callers share the work)."""
        if model in self._ready:
            return
        pending = self._pending.get(model)
        if pending is not None:
            await asyncio.shield(pending)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending[model] = future
        request = model._table_request()
        if "changes" not in request and request.get("table") in self.capture:
            request["changes"] = self.capture[request["table"]]
        try:
            await self.request(request)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody else must
            raise
        else:
            self._ready.add(model)
            state = _current_txn.get()
            if state is not None and state.manager is self:
                state.created.append(model)
            future.set_result(None)
        finally:
            del self._pending[model]

    def _forget(self, models: Iterable[type[TableSource]]) -> None:
        self._ready.difference_update(models)

    async def _ensure_all(self) -> None:
        for model in list(self._models.values()):
            await self.ensure_table(model)


def _table_name(name: object) -> str:
    """A table name for a change feed: any non-empty string (the writer checks it)."""
    if type(name) is not str or not name:
        raise ValidationError(f"tables must be table names (strings), got {name!r}")
    return name


def _capture_map(changes: Iterable[str] | Mapping[str, Any] | None) -> dict[str, Any]:
    """``init_engine(changes=...)`` as table -> the ensure_table ``changes`` value."""
    if changes is None:
        return {}
    if isinstance(changes, str):
        raise ValidationError("changes must be a list of table names, not one string")
    if isinstance(changes, Mapping):
        return {_table_name(t): (v if v is not None else True) for t, v in changes.items()}
    return {_table_name(t): True for t in changes}


def _reader_count(readers: int | None) -> int:
    if readers is None:
        readers = int(os.environ.get("FQDB_READERS") or DEFAULT_READERS)
    if isinstance(readers, bool) or not isinstance(readers, int) or readers < 0:
        raise ValidationError(f"readers must be a non-negative integer, got {readers!r}")
    return readers


def _params(params: Sequence[Any] | dict[str, Any] | None) -> list[Any] | dict[str, Any]:
    if params is None:
        return []
    if isinstance(params, dict):
        return dict(params)
    if isinstance(params, (str, bytes)):
        raise ValidationError("params must be a sequence or a mapping, not a single string")
    return list(params)


async def _open_transport(
    path: str,
    use_filelock: bool,
    *,
    mode: str,
    socket: str | None,
    synchronous: str,
    busy_timeout: float,
    request_timeout: float | None,
    statement_timeout: float | None,
    connect_timeout: float,
    changes_max_age: float | None = None,
    changes_max_rows: int | None = None,
) -> Transport:
    embedded_options: dict[str, Any] = {
        "use_filelock": use_filelock,
        "synchronous": synchronous,
        "busy_timeout": busy_timeout,
        "statement_timeout": statement_timeout,
        "changes_max_age": changes_max_age,
        "changes_max_rows": changes_max_rows,
    }
    daemon_options: dict[str, Any] = {
        "request_timeout": request_timeout,
        "reconnect_window": 2.0,
        "probe_interval": 1.0,
        "connect_timeout": connect_timeout,
    }
    if path.startswith("dqlite://"):
        if mode == "embedded":
            raise ValidationError(
                "a dqlite:// URL runs on the cluster; mode='embedded' does not apply"
            )
        # A per-host daemon on the cluster (fqdb-server dqlite://...): always with
        # mode="daemon"; in "auto" when its socket is named or exists, else direct.
        sock = socket or default_socket_path(path)
        if mode == "daemon" or (mode == "auto" and (socket is not None or os.path.exists(sock))):
            try:
                return await FailoverTransport.start(
                    path, sock, allow_embedded=False, embedded_options={}, **daemon_options
                )
            except DaemonUnavailableError as exc:
                if mode == "daemon":
                    raise
                log.warning("not using the daemon for %s, going to the cluster: %s", path, exc)
        # Imported here: only applications that use dqlite pay for loading it.
        from .dqlite import DqliteTransport

        return await DqliteTransport.open(path, busy_timeout=busy_timeout)
    if mode == "dqlite":
        raise ValidationError(
            f"mode='dqlite' needs a dqlite://host:port,.../name URL, got {path!r}"
        )
    if mode == "embedded" or path == ":memory:":
        return await EmbeddedTransport.open(path, **embedded_options)
    return await FailoverTransport.start(
        path,
        socket or default_socket_path(path),
        allow_embedded=mode == "auto",
        embedded_options=embedded_options,
        **daemon_options,
    )


async def _refused(error: Exception) -> Any:
    """An awaitable that fails with ``error``: a refusal is its request's alone."""
    raise error
