"""``Transaction``: ``async with db.transaction():`` and the per-task transaction it sets.

Owns the context variable that says which transaction (of which manager) the
current task is in, so model calls inside the block run in it without passing
anything around; nesting turns into savepoints. The manager sends the requests
(``begin``, ``commit``, ``rollback``) and forgets, on rollback, the tables created
inside (``_TxnState.created``).
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .manager import AsyncDatabaseManager, TableSource

__all__ = ["Transaction"]


class _TxnState:
    __slots__ = ("created", "id", "manager", "savepoints")

    def __init__(self, manager: AsyncDatabaseManager, txn_id: int) -> None:
        self.manager = manager
        self.id = txn_id
        self.savepoints = itertools.count(1)
        # Models whose table was created inside this transaction: forgotten on rollback.
        self.created: list[type[TableSource]] = []


_current_txn: contextvars.ContextVar[_TxnState | None] = contextvars.ContextVar(
    "fastquartdb_txn", default=None
)


class Transaction:
    """``async with db.transaction():`` — one IMMEDIATE transaction, or a savepoint when nested.

    Model calls made by this task (and tasks it starts) inside the block run
    in the transaction. Leaving normally commits; an exception, including
    cancellation, rolls back and propagates.
    """

    def __init__(self, manager: AsyncDatabaseManager) -> None:
        self._manager = manager
        self._state: _TxnState | None = None
        self._savepoint: str | None = None
        self._token: contextvars.Token[_TxnState | None] | None = None

    async def __aenter__(self) -> Transaction:
        manager = self._manager
        outer = _current_txn.get()
        if outer is not None and outer.manager is manager:
            state = outer
            self._savepoint = f"fqdb_sp{next(outer.savepoints)}"
            request: dict[str, Any] = {"op": "begin", "savepoint": self._savepoint, "txn": state.id}
        else:
            state = _TxnState(manager, next(manager._txn_ids))
            request = {"op": "begin", "txn": state.id}
        try:
            await manager._send(request)
        except BaseException:
            # A cancelled begin may still run later: make sure it is rolled back.
            await asyncio.shield(self._finish(state, commit=False))
            raise
        self._state = state
        self._token = _current_txn.set(state)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        state = self._state
        assert state is not None and self._token is not None
        _current_txn.reset(self._token)
        if exc_type is None:
            try:
                await self._finish(state, commit=True)
            except BaseException:
                await asyncio.shield(self._finish(state, commit=False, quiet=True))
                raise
        else:
            # Shielded: a cancelled task must still end its transaction.
            await asyncio.shield(self._finish(state, commit=False, quiet=True))

    async def _finish(self, state: _TxnState, *, commit: bool, quiet: bool = False) -> None:
        request: dict[str, Any] = {"op": "commit" if commit else "rollback", "txn": state.id}
        if self._savepoint is not None:
            request["savepoint"] = self._savepoint
        try:
            await self._manager._send(request)
        except Exception:
            if not quiet:
                raise
        if not commit and self._savepoint is None:
            self._manager._forget(state.created)
