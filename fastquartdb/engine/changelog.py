"""The change log: every committed change of a captured table, written with the change.

A table is *captured* when its model says ``__changes__ = True`` (or ``init_engine``
names it): its ``ensure_table`` request carries ``"changes"``, and the engine puts
three SQLite triggers on it (``AFTER INSERT / UPDATE / DELETE``) that append a row
to ``_fqdb_changes``. A trigger runs inside the statement that fired it, so whoever
writes — a model call, ``insert_many``/``upsert_many``, raw SQL, the daemon, an
embedded process, the ``sqlite3`` shell — the change is logged in the writer's own
transaction: a rolled-back change is never logged, a committed one always is (it
is in the same WAL commit, so kill -9 cannot separate them). Tables nobody captures
have no trigger and cost nothing.

Tables in the database file (created with the first captured table; the ``_fqdb_``
prefix hides them from table lists, and raw SQL may read but never write them —
only the triggers may, see ``sandbox.py``)::

    _fqdb_changes        seq INTEGER PRIMARY KEY AUTOINCREMENT (never reused, in commit
                         order: one writer at a time), tbl, op ('insert' | 'update' |
                         'delete'), pk (JSON array), row (new values, JSON object; NULL
                         for a delete), old (old values for update/delete when asked)
    _fqdb_changes_state  one row: pruned, the highest seq retention has deleted
    _fqdb_changes_marks  seq -> at: every change up to seq had committed by unix time at

A row carries no time of its own (the clock, per row, cost more than the rest of the
trigger's JSON): the writer adds a *mark* with the batch that holds the tip, at most
every ``MARK_INTERVAL`` seconds, and pruning by age deletes up to the newest mark older
than the cutoff. A change is never pruned early: the mark that covers it is no older
than its commit (changes of other programs are covered by the next mark).

A BLOB value appears in ``row``/``old`` as ``{"$hex": "..."}`` (JSON has no bytes).

The writer's part, with its transaction (the seam it shares with request keys, see
``Engine._run_group``): :meth:`ChangeLog.flush` just before ``COMMIT`` prunes one
bounded step (age and size, at most every ``PRUNE_INTERVAL`` seconds) and reads
the tip; :meth:`ChangeLog.committed` just after hands a new tip to ``listener``
(the daemon pushes it to subscribed connections). Readers (``changes`` op,
:func:`read_changes`) need nothing but a read-only connection.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import Any

from ..protocol.errors import ChangesExpiredError, ValidationError, brief
from .schema import TableInfo, quote
from .statements import build_where

__all__ = [
    "DEFAULT_CHANGES_MAX_AGE",
    "DEFAULT_CHANGES_MAX_ROWS",
    "ChangeLog",
    "capture_mode",
    "read_changes",
]

#: Seconds a change is kept; older ones are pruned (7 days).
DEFAULT_CHANGES_MAX_AGE = 7 * 86_400.0
#: Most changes kept; the oldest go first.
DEFAULT_CHANGES_MAX_ROWS = 1_000_000
#: Seconds between two pruning passes.
PRUNE_INTERVAL = 1.0
#: Seconds between two time marks (the precision of pruning by age).
MARK_INTERVAL = 5.0
#: Rows one pruning pass deletes at most (a pass stays short inside an ordinary batch).
PRUNE_CHUNK = 5000
#: Most changes one ``changes`` read returns.
MAX_READ = 10_000
DEFAULT_READ = 500

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS _fqdb_changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
    "tbl TEXT NOT NULL, op TEXT NOT NULL, pk TEXT, row TEXT, old TEXT)",
    "CREATE TABLE IF NOT EXISTS _fqdb_changes_state (id INTEGER PRIMARY KEY CHECK (id = 1), "
    "pruned INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO _fqdb_changes_state (id, pruned) VALUES (1, 0)",
    "CREATE TABLE IF NOT EXISTS _fqdb_changes_marks (seq INTEGER PRIMARY KEY, at INTEGER NOT NULL)",
)
_TIP_SQL = "SELECT seq FROM sqlite_sequence WHERE name = '_fqdb_changes'"
_EXISTS_SQL = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_fqdb_changes'"
_OPS = ("insert", "update", "delete")
#: Columns of a ``changes`` result row.
COLUMNS = ["seq", "table", "op", "pk", "row", "old"]
# SQLite functions take at most 127 arguments: json_object gets this many pairs per call.
_PAIRS = 60


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _value(ref: str) -> str:
    # json_object refuses a BLOB ("JSON cannot hold BLOB values"): a trigger must never
    # make the user's write fail, so a blob is logged as {"$hex": ...} instead.
    return f"CASE WHEN typeof({ref}) = 'blob' THEN json_object('$hex', hex({ref})) ELSE {ref} END"


def _row_json(alias: str, info: TableInfo) -> str:
    # An INTEGER PRIMARY KEY (the rowid) holds only integers: no blob test for it.
    rowid = info.pk[0] if info.rowid_pk else None
    pairs = [
        (c, f"{alias}.{quote(c)}" if c == rowid else _value(f"{alias}.{quote(c)}"))
        for c in info.columns
    ]
    sql = "json_object(" + ", ".join(f"{_literal(c)}, {v}" for c, v in pairs[:_PAIRS]) + ")"
    for start in range(_PAIRS, len(pairs), _PAIRS):
        chunk = pairs[start : start + _PAIRS]
        paths = ", ".join(f"{_literal('$.' + quote(c))}, {v}" for c, v in chunk)
        sql = f"json_set({sql}, {paths})"
    return sql


def _pk_json(alias: str, info: TableInfo) -> str:
    if info.rowid_pk or not info.pk:
        key = quote(info.pk[0]) if info.pk else "rowid"
        return f"json_array({alias}.{key})"  # the rowid: always an integer
    refs = [f"{alias}.{quote(k)}" for k in info.pk]
    return "json_array(" + ", ".join(_value(r) for r in refs) + ")"


def trigger_name(table: str, op: str) -> str:
    """The name of the trigger that logs ``op`` on ``table``."""
    return f"_fqdb_changes_{table}_{op}"


def trigger_sql(info: TableInfo, op: str, old: bool) -> str:
    """The ``CREATE TRIGGER`` statement that logs ``op`` on table ``info``."""
    new_row = _row_json("NEW", info)
    old_row = _row_json("OLD", info) if old else "NULL"
    values = {
        "insert": (_pk_json("NEW", info), new_row, "NULL"),
        "update": (_pk_json("NEW", info), new_row, old_row),
        "delete": (_pk_json("OLD", info), "NULL", old_row),
    }[op]
    return (
        f"CREATE TRIGGER {quote(trigger_name(info.name, op))} AFTER {op.upper()} ON "
        f"{quote(info.name)} BEGIN INSERT INTO _fqdb_changes (tbl, op, pk, row, old) "
        f"VALUES ({_literal(info.name)}, '{op}', {', '.join(values)}); END"
    )


def capture_mode(value: object) -> bool | tuple[bool] | None:
    """The ``changes`` field of ``ensure_table``: None (leave as is), False (stop
    capturing), or ``(old,)`` (capture; ``old``: also log old values).

    Raises:
        ValidationError: anything but true/false/{"old": bool}.
    """
    if value is None:
        return None
    if value is False:
        return False
    if value is True:
        return (False,)
    if type(value) is dict and set(value) <= {"old"} and type(value.get("old", False)) is bool:
        return (bool(value.get("old", False)),)
    raise ValidationError(f"'changes' must be true, false or {{\"old\": true}}, got {brief(value)}")


class ChangeLog:
    """The change log of one writer connection (see the module docstring).

    Not thread-safe: used on the engine's thread, inside its write transactions;
    ``listener`` is called there too (the daemon's hands the tip to its loop).
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        #: Seconds a change is kept; older ones are pruned.
        self.max_age = DEFAULT_CHANGES_MAX_AGE
        #: Most changes kept.
        self.max_rows = DEFAULT_CHANGES_MAX_ROWS
        #: Called with the new tip after a COMMIT that logged changes.
        self.listener: Callable[[int], None] | None = None
        #: The highest seq committed, as far as this connection knows.
        self.tip = 0
        #: Changes pruned so far by this connection.
        self.pruned = 0
        self._staged_tip = 0
        # Whether the file has a change log (None: look at the next flush).
        self._active: bool | None = None
        self._next_prune = 0.0
        self._next_mark = 0.0
        self._marked = 0
        # conn.total_changes at the last flush: a batch that changed nothing skips it.
        self._changes_seen = -1

    # ------------------------------------------------------------ capture

    def forget_schema(self) -> None:
        """The schema may have changed: look again whether the file has a change log."""
        self._active = None

    def capture(self, info: TableInfo, mode: bool | tuple[bool]) -> bool:
        """Capture table ``info`` (``mode`` from :func:`capture_mode`), or stop (False).

        Runs inside the caller's transaction; replaces a trigger only when its text
        differs (a new column, old values asked), so a repeated ``ensure_table`` changes
        nothing. Returns whether the table is captured now.
        """
        conn = self.conn
        if mode is False:
            for op in _OPS:
                conn.execute(f"DROP TRIGGER IF EXISTS {quote(trigger_name(info.name, op))}")
            return False
        assert isinstance(mode, tuple)
        for sql in _SCHEMA:
            conn.execute(sql)
        self._active = True
        for op in _OPS:
            name = trigger_name(info.name, op)
            wanted = trigger_sql(info, op, mode[0])
            row = conn.execute(
                "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = ?", [name]
            ).fetchone()
            if row is not None and row[0] == wanted:
                continue
            conn.execute(f"DROP TRIGGER IF EXISTS {quote(name)}")
            conn.execute(wanted)
        return True

    # ------------------------------------------------------------ one transaction

    def begin(self) -> None:
        """A write transaction starts (nothing is staged: the triggers write the log)."""

    def flush(self) -> None:
        """Just before ``COMMIT``: prune one step if due, and read the tip.

        Nothing at all when the transaction changed no row (no statement for a batch of
        refused requests): only a change can have logged anything.
        """
        if self.conn.total_changes == self._changes_seen:
            return
        try:
            self._flush()
        finally:
            # After its own writes (pruning, a mark): they are not a reason to look again.
            self._changes_seen = self.conn.total_changes

    def _flush(self) -> None:
        active = self._active
        if active is None:
            active = self._active = self.conn.execute(_EXISTS_SQL).fetchone() is not None
        if not active:
            return
        now = time.monotonic()
        if now >= self._next_prune:
            self._next_prune = now + PRUNE_INTERVAL
            self._prune()
        row = self.conn.execute(_TIP_SQL).fetchone()
        tip = self._staged_tip = int(row[0]) if row is not None else 0
        if tip > self._marked and now >= self._next_mark:
            # Rounded up: the mark must not be older than this batch's commit.
            self.conn.execute(
                "INSERT OR REPLACE INTO _fqdb_changes_marks (seq, at) VALUES (?, ?)",
                [tip, int(time.time()) + 1],
            )
            self._marked = tip
            self._next_mark = now + MARK_INTERVAL

    def committed(self) -> None:
        """Just after ``COMMIT`` returned: a new tip goes to ``listener``."""
        tip = self._staged_tip
        if tip > self.tip:
            self.tip = tip
            if self.listener is not None:
                self.listener(tip)

    def _prune(self) -> None:
        """Delete the oldest changes past ``max_age`` or ``max_rows``: a bounded step."""
        conn = self.conn
        low_row = conn.execute("SELECT min(seq), max(seq) FROM _fqdb_changes").fetchone()
        if low_row is None or low_row[0] is None:
            return
        low, high = int(low_row[0]), int(low_row[1])
        cutoff = int(time.time() - self.max_age)
        # Marks rise with seq and with time: the newest one older than the cutoff.
        aged = conn.execute(
            "SELECT max(seq) FROM _fqdb_changes_marks WHERE at < ?", [cutoff]
        ).fetchone()[0]
        upto = min(int(aged), low + PRUNE_CHUNK - 1) if aged is not None else 0
        # seq has no gaps but those pruning made: high - low + 1 bounds the row count.
        excess = (high - low + 1) - int(self.max_rows)
        if excess > 0:
            upto = max(upto, low + min(excess, PRUNE_CHUNK) - 1)
        if upto < low:
            return
        self.pruned += conn.execute("DELETE FROM _fqdb_changes WHERE seq <= ?", [upto]).rowcount
        conn.execute("UPDATE _fqdb_changes_state SET pruned = max(pruned, ?) WHERE id = 1", [upto])
        conn.execute("DELETE FROM _fqdb_changes_marks WHERE seq < ?", [upto])


class _RowScope:
    """Filter names resolve to the logged row's values (new, or old for a delete)."""

    def __init__(self, info: TableInfo) -> None:
        self.info = info

    def resolve(self, name: object) -> str:
        column = self.info.check_column(name)
        return f"json_extract(coalesce(row, old), {_literal('$.' + quote(column))})"


def _seq(row: list[Any]) -> int:
    return int(row[0])


def _after(value: object) -> int | str | None:
    if value is None or value == "now" or (type(value) is int and value >= 0):
        return value
    raise ValidationError(
        f"'after' must be a seq (an integer >= 0), \"now\" or absent, got {brief(value)}"
    )


def read_changes(
    conn: sqlite3.Connection, req: dict[str, Any], table: Callable[[object], TableInfo]
) -> dict[str, Any]:
    """Answer a ``changes`` request: the logged changes after ``after``, oldest first.

    ``{"op": "changes", "after": seq | "now" | absent, "tables": [...], "where": ...,
    "limit": n}`` -> ``{"columns": COLUMNS, "rows": [[seq, table, op, pk, row, old]],
    "tip": seq, "pruned": seq}``; ``pk``, ``row`` and ``old`` are JSON text. ``where``
    (the wire filter of one table, on its columns) needs exactly one table.

    Raises:
        ChangesExpiredError: pruning removed changes after ``after``.
        ValidationError: a malformed field.
    """
    after = _after(req.get("after"))
    tables = req.get("tables")
    if tables is not None and (type(tables) is not list or not all(type(t) is str for t in tables)):
        raise ValidationError(f"'tables' must be a list of table names, got {brief(tables)}")
    limit = req.get("limit", DEFAULT_READ)
    if type(limit) is not int or not 0 <= limit <= MAX_READ:
        raise ValidationError(
            f"'limit' must be an integer from 0 to {MAX_READ}, got {brief(limit)}"
        )
    result: dict[str, Any] = {"columns": COLUMNS, "rows": [], "tip": 0, "pruned": 0}
    if after == "now" or limit == 0:
        try:
            tip_row = conn.execute(_TIP_SQL).fetchone()
        except sqlite3.OperationalError:  # no AUTOINCREMENT table at all yet
            tip_row = None
        result["tip"] = int(tip_row[0]) if tip_row is not None else 0
        return result
    params: list[Any] = [after or 0]
    inner = "SELECT seq, tbl, op, pk, row, old FROM _fqdb_changes WHERE seq > ?"
    if tables:
        inner += f" AND tbl IN ({', '.join('?' * len(tables))})"
        params.extend(tables)
    where = req.get("where")
    if where is not None:
        if not tables or len(tables) != 1:
            raise ValidationError("'where' on changes needs exactly one table in 'tables'")
        clause = build_where(_RowScope(table(tables[0])), where, params, "AND")
        if clause:  # " AND a OR b": parenthesised, or the OR would escape seq > ?
            inner += f" AND ({clause[len(' AND ') :]})"
    params.append(limit)
    # One statement, so one snapshot: the rows, the tip and the pruning horizon agree (a
    # tip read later could pass a change the rows never held). The LEFT JOIN gives one
    # row with the tip and horizon even when no change matches.
    sql = (
        f"SELECT ({_TIP_SQL}), (SELECT pruned FROM _fqdb_changes_state), c.* FROM (SELECT 1) "
        f"LEFT JOIN ({inner} ORDER BY seq LIMIT ?) AS c ON 1"
    )
    try:
        rows = conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc) and "_fqdb_changes" in str(exc):
            return result  # nothing was ever captured in this file
        raise
    tip, pruned = int(rows[0][0] or 0), int(rows[0][1] or 0)
    if type(after) is int and pruned > after:
        raise ChangesExpiredError(
            f"changes after seq {after} are no longer in the change log (retention pruned "
            f"it up to seq {pruned}): resync this consumer from the tables, then follow "
            f"from after='now' (or from after={pruned} to read what is retained)"
        )
    # In seq order already (the joined subquery's order); sorted anyway, as SQL does not
    # promise it (at most `limit` rows).
    result["rows"] = sorted((list(r[2:]) for r in rows if r[2] is not None), key=_seq)
    result["tip"] = tip
    result["pruned"] = pruned
    return result
