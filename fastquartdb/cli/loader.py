"""``fqdb insert``: records into a table in batches, or upserted on a unique key.

Records go as the engine's own ``insert_many`` requests (``upsert_many``
with ``--upsert``, whose conflict target the engine checks) of up to
:data:`BATCH_ROWS` consecutive records that name the same columns (so a
column a record leaves out gets its default, or keeps its value in an
upsert). One batch is one atomic unit on the daemon, which group-commits it
with everybody else's requests instead of holding the writer for the whole
file. No SQL is built here, so ``fqdb-server --no-raw-sql`` takes both.

When a batch fails, the loader finds the record that broke it, commits the
records before it (unless the whole load is one transaction, ``--atomic``),
and reports that record's line: after an error, everything before the named
line is in the table and nothing from it on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ..client import AsyncDatabaseManager
from ..protocol.errors import FQDBError, ValidationError
from .errors import CommandError
from .records import Record
from .values import ColumnValues

__all__ = ["BATCH_ROWS", "Loader", "check_upsert_key"]

#: Most records per request batch.
BATCH_ROWS = 500
#: Rough bound on one batch's size, well below the daemon's frame limit.
BATCH_BYTES = 4 << 20


async def check_upsert_key(db: AsyncDatabaseManager, table: str, text: str) -> tuple[str, ...]:
    """Check ``--upsert KEY`` (one column, or several comma-separated) with the engine itself:
    an ``upsert_many`` of no rows, which the engine refuses unless a PRIMARY KEY or UNIQUE
    index covers exactly those columns.

    Raises:
        CommandError: a column is unknown, or no unique key is exactly them.
    """
    key = tuple(part.strip() for part in text.split(","))
    request = {
        "op": "upsert_many",
        "table": table,
        "columns": list(key),
        "rows": [],
        "conflict": list(key),
    }
    try:
        await db.request(request)
    except FQDBError as exc:
        raise CommandError(f"--upsert {text}: {exc}") from None
    return key


def _size(values: Iterable[Any]) -> int:
    return sum(len(v) if isinstance(v, (str, bytes)) else 8 for v in values)


class Loader:
    """Writes records to one table; counts what is committed (or pending in ``--atomic``)."""

    def __init__(
        self,
        db: AsyncDatabaseManager,
        table: str,
        *,
        source: str,
        values: ColumnValues,
        text: bool = False,
        key: tuple[str, ...] | None = None,
        atomic: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        self.db = db
        self.table = table
        self.source = source
        self.values = values
        self.text = text
        self.key = key
        self.atomic = atomic
        self.rows = 0
        self._progress = progress

    async def load(self, records: Iterable[Record]) -> int:
        """Write every record; returns how many were written.

        Raises:
            CommandError: a record was refused, naming its line and what was written before it.
        """
        if self.atomic:
            async with self.db.transaction():
                await self._load(records)
        else:
            await self._load(records)
        return self.rows

    async def _load(self, records: Iterable[Record]) -> None:
        batch: list[Record] = []
        names: tuple[str, ...] = ()
        size = 0
        for record in records:
            try:
                # The models' own value checks, before anything of this record is sent.
                self.values.convert(record.values, text=self.text)
            except ValidationError as exc:
                if batch:
                    await self._write(batch)  # the promise: every record before it is written
                raise CommandError(
                    f"{self.source} {record.where}: {exc}; {self._outcome(self.rows)}"
                ) from None
            record_names = tuple(record.values)
            if batch and (record_names != names or len(batch) >= BATCH_ROWS or size >= BATCH_BYTES):
                await self._write(batch)
                batch, size = [], 0
            batch.append(record)
            names = record_names
            size += _size(record.values.values())
        if batch:
            await self._write(batch)

    async def _write(self, batch: list[Record]) -> None:
        try:
            await self._insert(batch)
        except _Failed as failed:
            done = self.rows + failed.index
            if not self.atomic and failed.index:
                # Keep the promise: everything before the failing record is written.
                await self._write(batch[: failed.index])
            record = batch[failed.index]
            raise CommandError(
                f"{self.source} {record.where}: {failed.error}; {self._outcome(done)}"
            ) from None
        self.rows += len(batch)
        if self._progress is not None:
            self._progress(batch[-1].done, self.rows)

    def _outcome(self, done: int) -> str:
        """What an error leaves in the table, once ``done`` records before it were written."""
        if self.atomic:
            return "nothing was written (--atomic)"
        if done == 0:
            return "nothing was written"
        return (
            "the row before it was written"
            if done == 1
            else f"the {done} rows before it were written"
        )

    def _request(self, columns: list[str], batch: list[Record]) -> dict[str, Any]:
        """The engine's ``insert_many`` (or ``upsert_many`` on the key) for ``batch``."""
        request: dict[str, Any] = {
            "op": "insert_many" if self.key is None else "upsert_many",
            "table": self.table,
            "columns": columns,
            "rows": [list(r.values.values()) for r in batch],
        }
        if self.key is not None:
            request["conflict"] = list(self.key)
        return request

    async def _insert(self, batch: list[Record]) -> None:
        columns = list(batch[0].values)
        request = self._request(columns, batch)
        try:
            await self.db.request(request)
        except FQDBError as exc:
            if len(batch) == 1:
                raise _Failed(0, exc) from None
            await self._find_failure(batch, columns, exc)

    async def _find_failure(
        self, batch: list[Record], columns: list[str], error: FQDBError
    ) -> None:
        """Raise :class:`_Failed` for the record that broke ``batch`` (which was undone).

        Replays the batch a record at a time inside a transaction (a savepoint under
        ``--atomic``) that is always rolled back, so a record clashing with an earlier one
        of the same batch is found too, and nothing is written twice.
        """
        try:
            async with self.db.transaction():
                for index, record in enumerate(batch):
                    try:
                        await self.db.request(self._request(columns, [record]))
                    except FQDBError as probe_error:
                        raise _Failed(index, probe_error) from None
                raise _Probe
        except _Probe:
            # Every record went in on its own: only the batch as a whole failed.
            raise _Failed(0, error) from None


class _Failed(Exception):
    """Record ``index`` of the batch failed with ``error``; the batch was undone."""

    def __init__(self, index: int, error: FQDBError) -> None:
        super().__init__(index, error)
        self.index = index
        self.error = error


class _Probe(Exception):
    """Raised inside a probe's transaction to undo it after it succeeded."""
