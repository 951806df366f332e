"""Request keys: the writer's record of what it has done, so a resent write runs once.

Every write a client sends outside an interactive transaction carries a *request
key* (``"key": [client, seq]``, made by the client) or a caller's *idempotency
key* (``"idempotency_key": str``). The writer records ``key -> result`` in the
same transaction as the write, so the record exists if and only if the write
committed. A request whose key is recorded is answered from the record and not
run again; that is how a write resent after a lost connection — to a restarted
daemon, to embedded mode, which shares the file and so the records, or to a new
dqlite leader, which has them replicated — is executed at most once and
acknowledged exactly once.

Two tables in the database (the file, or the dqlite cluster's database; created
on the first keyed write)::

    _fqdb_requests     (client, seq) -> at, result          automatic keys
    _fqdb_idempotency  key -> at, digest, result             caller keys (+ index on at)

Cost, on the hot path: a first send of an automatic key is not looked up (no
other writer can know a key its client has never sent); its record is added
with the others of its batch by one ``executemany`` before ``COMMIT``. Only
resent requests (``"resent": true``) and caller keys are looked up. Should a
first send find its record already made — a daemon stopped past the client's
timeout resumes after the client resent elsewhere — the insert of the records
fails on the primary key, and :class:`KeyConflict` makes the engine run the batch
again, looking every key up.

Pruning, in small steps inside ordinary batches (never a long transaction):
a client reports in ``"acked"`` the lowest ``seq`` it still waits for, and its
records below it are deleted (bounded by what it has in flight); records older
than ``window`` (clients that died) go too, at most ``PRUNE_CHUNK`` per pass and
never on a pass where the wall clock jumped; caller keys are kept
``idempotency_window`` seconds, and at most ``idempotency_max`` of them.

A copy the client gave up on must never commit after its record is gone (a
stopped daemon resuming with the request still queued, after the client resent
it elsewhere and moved on): a keyed request carries ``"expires"`` (the client's
wall-clock deadline, with ``request_timeout``) and is refused, not run, once it
has passed; the records of resent requests (and tombstones) are kept out of the
``acked`` pruning, until their age; and the worker does not start a keyed request
whose connection was lost.

An interactive transaction's ``commit`` carries an automatic key too; it is
recorded just before ``COMMIT``. ``{"op": "resolve", "key": ...}`` asks whether a
key committed and, if it did not, records that it never will (a *tombstone*), so
a transaction whose commit reply was lost is resolved to committed or rolled
back, never unknown.

The logic does no I/O: each method that needs the database is a generator of
statements (:mod:`.steps`), run by a driver where the records are — the engine's
``sqlite3`` connection (:func:`.steps.run`) or a dqlite cluster's leader (the dqlite
transport's driver). The decisions and the SQL exist once, here. Per request:
:meth:`RequestKeys.begin` when the transaction starts; per request
:meth:`RequestKeys.expired`, then :meth:`RequestKeys.answer` (no I/O), then
:meth:`RequestKeys.lookup` only if :meth:`RequestKeys.needs_lookup`;
:meth:`RequestKeys.stage` after the write; :meth:`RequestKeys.flush` before
``COMMIT``, :meth:`RequestKeys.committed` after it. (The engine's hot path for a
first send is :meth:`RequestKeys.first_send`, :meth:`RequestKeys.seen` and
:meth:`RequestKeys.stage_first`: the same rules, without a method call per field.)
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from ..protocol.codec import decode_body, encode_body
from ..protocol.errors import (
    ConnectionLostError,
    IdempotencyKeyError,
    IntegrityError,
    OperationalError,
    RequestTimeoutError,
    ValidationError,
    brief,
)
from ..protocol.messages import check_idempotency_key
from .steps import Exec, ExecMany, Query, Steps

__all__ = [
    "DEFAULT_IDEMPOTENCY_MAX",
    "DEFAULT_IDEMPOTENCY_WINDOW",
    "DEFAULT_KEY_WINDOW",
    "ROLLED_BACK",
    "KeyConflict",
    "KeyStats",
    "RequestKeys",
    "digest",
    "parse_key",
]

#: Seconds an automatic key's record outlives its client's last word about it.
DEFAULT_KEY_WINDOW = 600.0
#: Seconds a caller's idempotency key is remembered (Stripe keeps them 24 hours).
DEFAULT_IDEMPOTENCY_WINDOW = 86_400.0
#: Most caller keys remembered; the oldest go first.
DEFAULT_IDEMPOTENCY_MAX = 1_000_000
#: Seconds between two passes of the time-based pruning.
PRUNE_INTERVAL = 10.0
#: Rows one pruning pass deletes at most per table (a pass stays short).
PRUNE_CHUNK = 2000
#: Largest ``seq`` / ``acked`` (SQLite's INTEGER is signed 64-bit).
MAX_SEQ = 2**63 - 1

#: A tombstone's result: this key never committed and never will.
ROLLED_BACK = b"\xc1rolled-back"

#: Request fields that are not its content (a resend differs in them, nothing else).
_TRANSPORT_FIELDS = frozenset(
    {"id", "key", "idempotency_key", "resent", "acked", "txn", "timeout", "expires"}
)

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS _fqdb_requests (client TEXT NOT NULL, seq INTEGER NOT NULL, "
    "at INTEGER NOT NULL, result BLOB, resent INTEGER NOT NULL DEFAULT 0, "
    "PRIMARY KEY (client, seq)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS _fqdb_idempotency (key TEXT PRIMARY KEY, "
    "at INTEGER NOT NULL, digest BLOB, result BLOB) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS _fqdb_idempotency_at ON _fqdb_idempotency (at)",
)

_INSERT_AUTO = "INSERT INTO _fqdb_requests (client, seq, at, result, resent) VALUES (?, ?, ?, ?, ?)"
_INSERT_CALLER = "INSERT INTO _fqdb_idempotency (key, at, digest, result) VALUES (?, ?, ?, ?)"
_SELECT_AUTO = "SELECT result FROM _fqdb_requests WHERE client = ? AND seq = ?"
_SELECT_CALLER = "SELECT digest, result FROM _fqdb_idempotency WHERE key = ?"


class KeyConflict(Exception):
    """A first send's record exists already: run the batch again, looking every key up."""


class KeyStats:
    """What the ``stats`` op reports about request keys (counted once a batch committed)."""

    __slots__ = ("deduplicated", "pruned", "recorded", "resent", "resolved")

    def __init__(self) -> None:
        #: Keyed requests answered from their record instead of being run again.
        self.deduplicated = 0
        #: Requests that arrived marked as resent after a lost connection.
        self.resent = 0
        #: Records written (one per keyed write that committed).
        self.recorded = 0
        #: Records deleted by pruning.
        self.pruned = 0
        #: ``resolve`` requests answered.
        self.resolved = 0

    def as_dict(self) -> dict[str, int]:
        """The counters by name."""
        return {name: getattr(self, name) for name in self.__slots__}


def _seq(value: object, what: str) -> int:
    if type(value) is not int or not 0 <= value <= MAX_SEQ:
        raise ValidationError(f"{what} must be an integer from 0 to 2**63-1, got {brief(value)}")
    return value


def parse_key(key: object) -> tuple[str, int]:
    """``(client, seq)`` of a well-formed request key.

    Raises:
        ValidationError: anything but ``[client id of 1-64 characters, 0 <= seq < 2**63]``.
    """
    if (
        type(key) is list
        and len(key) == 2
        and type(key[0]) is str
        and 0 < len(key[0]) <= 64
        and type(key[1]) is int
        and 0 <= key[1] <= MAX_SEQ
    ):
        return key[0], key[1]
    raise ValidationError(
        f"'key' must be [client, seq]: a client id (1-64 characters) and a request "
        f"number from 0 to 2**63-1, got {brief(key)}"
    )


def _idempotency_key(req: dict[str, Any]) -> str | None:
    key = req.get("idempotency_key")
    return None if key is None else check_idempotency_key(key)


def _canonical(value: Any) -> Any:
    if type(value) is dict:
        return [
            [str(k), _canonical(v)] for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))
        ]
    if type(value) is list:
        return [_canonical(v) for v in value]
    return value


def digest(req: dict[str, Any]) -> bytes:
    """What a request asks, independent of how it travelled and of its maps' key order."""
    content = {k: v for k, v in req.items() if k not in _TRANSPORT_FIELDS}
    return hashlib.blake2b(encode_body(_canonical(content)), digest_size=16).digest()


def _encode_result(result: Any) -> Any:
    # An int (what most writes return) is stored as itself; anything else packed.
    return result if type(result) is int else encode_body({"r": result})


def _decode_result(stored: Any) -> Any:
    return decode_body(stored)["r"] if isinstance(stored, bytes) else stored


def _never_committed() -> tuple[bool, Any]:
    return False, ConnectionLostError(
        "this request was resolved as never committed by its client; it was not run"
    )


class RequestKeys:
    """The records of one writer (see the module docstring).

    Holds no connection: the methods that need the database return
    :data:`~.steps.Steps` for the caller's driver to run. Not thread-safe: one
    writer's state (the staged records of its open transaction), used by one
    thread or task at a time, inside its write transactions. Counters reach
    :attr:`stats` only through :meth:`committed`, so a batch run again (or rolled
    back) is not counted twice.
    """

    def __init__(
        self,
        *,
        window: float = DEFAULT_KEY_WINDOW,
        idempotency_window: float = DEFAULT_IDEMPOTENCY_WINDOW,
        idempotency_max: int = DEFAULT_IDEMPOTENCY_MAX,
    ) -> None:
        self.window = window
        self.idempotency_window = idempotency_window
        self.idempotency_max = idempotency_max
        self.stats = KeyStats()
        self._ready = False
        # Records of the transaction being built: what COMMIT will make true.
        self._auto: list[tuple[str, int, int, Any, int]] = []
        self._caller: list[tuple[str, int, bytes, Any]] = []
        # Keys of this transaction -> (digest, result), so a key twice in one batch runs once.
        self._seen: dict[Any, tuple[bytes | None, Any]] = {}
        # This transaction's counts, added to stats by committed().
        self._counts = [0, 0, 0, 0]  # deduplicated, resent, pruned auto, pruned caller
        #: Look every key up, also first sends (after a KeyConflict; reset per batch).
        self.check_all = False
        # client -> lowest seq it still waits for, not yet applied.
        self._acks: dict[str, int] = {}
        self._next_prune = 0.0
        self._last_clocks = (time.monotonic(), time.time())
        # Caller keys in the table as far as this writer knows (others may add some:
        # the count then errs low, and the bound is kept a little later).
        self._caller_rows: int | None = None
        #: Wall-clock time the current transaction began (records' ``at``, ``expires``).
        self.now = time.time()

    # ------------------------------------------------------------ schema

    def ensure_tables(self) -> Steps[None]:
        """Create the record tables if missing (inside the caller's write transaction)."""
        if self._ready:
            return
        for sql in _SCHEMA:
            yield Exec(sql)
        self._ready = True

    def forget_schema(self) -> None:
        """A transaction was rolled back (its DDL with it): look for the tables again."""
        self._ready = False

    # ------------------------------------------------------------ one transaction

    def begin(self) -> None:
        """A write transaction starts: nothing staged yet."""
        self._auto.clear()
        self._caller.clear()
        self._seen.clear()
        self._counts = [0, 0, 0, 0]
        self.now = time.time()

    def expired(self, req: dict[str, Any], now: float | None = None) -> tuple[bool, Any] | None:
        """The refusal for a request whose client stopped waiting (``expires`` passed), or None.

        Its client has given up on this copy and may have resent it elsewhere: run now,
        it could run twice. Refused, it changes nothing (nobody is waiting for the reply).
        """
        expires = req.get("expires")
        if expires is None:
            return None
        if type(expires) not in (int, float):
            return False, ValidationError(f"'expires' must be a number, got {brief(expires)}")
        if expires >= (self.now if now is None else now):
            return None
        return False, RequestTimeoutError(
            "not run: its client stopped waiting for it ('expires' passed) and resends it "
            "with its request key"
        )

    def first_send(self, req: dict[str, Any]) -> tuple[str, int] | None:
        """``(client, seq)`` of a well-formed automatic key sent for the first time, which
        needs no lookup (the hot path: every plain write); None for anything else, which
        :meth:`answer` and :meth:`lookup` then handle."""
        if self.check_all or "resent" in req or "acked" in req or "idempotency_key" in req:
            return None
        key = req["key"]
        if type(key) is list and len(key) == 2:
            client, seq = key
            if (
                type(client) is str
                and type(seq) is int
                and 0 < len(client) <= 64
                and 0 <= seq <= MAX_SEQ
            ):
                return client, seq
        return None

    def seen(self, auto: tuple[str, int]) -> tuple[bool, Any] | None:
        """The outcome of ``auto`` if an earlier request of this transaction had that key."""
        seen = self._seen.get(auto)
        if seen is None:
            return None
        return _never_committed() if seen[1] == ROLLED_BACK else self._answer(seen[1])

    def stage_first(self, auto: tuple[str, int], result: Any) -> None:
        """:meth:`stage` for a key :meth:`first_send` returned. Not kept for :meth:`seen`:
        a resend of it in the same batch collides with it at :meth:`flush`, and the batch
        runs again with every key looked up (which stages through :meth:`stage`)."""
        self._auto.append((auto[0], auto[1], int(self.now), _encode_result(result), 0))

    def answer(self, req: dict[str, Any]) -> tuple[bool, Any] | None:
        """Without I/O: the outcome this transaction already holds for ``req``'s key, else None.

        Checks every key field, counts a resend and notes the client's ``acked``. Call
        it first for every keyed request; then :meth:`lookup` if :meth:`needs_lookup`.

        Raises:
            ValidationError: the key, ``acked`` or ``idempotency_key`` is malformed.
            IdempotencyKeyError: a caller key was used before for a different request.
        """
        if req.get("resent") is True:
            self._counts[1] += 1
        caller = _idempotency_key(req)
        if caller is not None:
            seen = self._seen.get(caller)
            return None if seen is None else self._check_caller(caller, seen, digest(req))
        auto = parse_key(req.get("key"))
        if "acked" in req:
            acked = _seq(req["acked"], "'acked'")
            if acked > self._acks.get(auto[0], -1):
                self._acks[auto[0]] = acked
        return self.seen(auto)

    def needs_lookup(self, req: dict[str, Any]) -> bool:
        """Whether ``req``'s record must be looked up: a resend, a caller key, or every
        key after a :class:`KeyConflict`. A first send is not (the hot path)."""
        return self.check_all or req.get("resent") is True or req.get("idempotency_key") is not None

    def lookup(self, req: dict[str, Any]) -> Steps[tuple[bool, Any] | None]:
        """The outcome to answer ``req`` with from its record, or None to run it
        (after :meth:`answer`, which checked the key).

        Raises:
            IdempotencyKeyError: a caller key was used before for a different request.
        """
        yield from self.ensure_tables()
        caller = _idempotency_key(req)
        if caller is not None:
            rows = yield Query(_SELECT_CALLER, [caller])
            if not rows:
                return None
            seen = (rows[0][0], _decode_result(rows[0][1]))
            return self._check_caller(caller, seen, digest(req))
        rows = yield Query(_SELECT_AUTO, parse_key(req.get("key")))
        if not rows:
            return None
        return (
            _never_committed()
            if rows[0][0] == ROLLED_BACK
            else self._answer(_decode_result(rows[0][0]))
        )

    def _check_caller(
        self, key: str, seen: tuple[bytes | None, Any], wanted: bytes
    ) -> tuple[bool, Any]:
        if seen[0] != wanted:
            raise IdempotencyKeyError(
                f"idempotency key {brief(key)} was already used for a different request; "
                "use a new key for a new request (a key may only repeat the same request)"
            )
        return self._answer(seen[1])

    def _answer(self, result: Any) -> tuple[bool, Any]:
        self._counts[0] += 1
        return True, result

    def stage(self, req: dict[str, Any], result: Any) -> None:
        """Record, with this transaction, that ``req`` (checked by :meth:`answer`)
        succeeded with ``result`` (no I/O: :meth:`flush` writes it)."""
        now = int(self.now)
        stored = _encode_result(result)
        caller = _idempotency_key(req)
        if caller is not None:
            wanted = digest(req)
            self._caller.append((caller, now, wanted, stored))
            self._seen[caller] = (wanted, result)
            return
        auto = parse_key(req.get("key"))
        self._auto.append((auto[0], auto[1], now, stored, int(req.get("resent") is True)))
        self._seen[auto] = (None, result)

    def resolve(self, req: dict[str, Any]) -> Steps[dict[str, Any]]:
        """Answer ``{"op": "resolve", "key": ...}``: committed (with the result) or not, ever.

        A key not recorded gets a tombstone (staged: :meth:`flush` writes it with the
        transaction), so the write it names can no longer commit anywhere (its own
        record would collide with it).
        """
        self.stats.resolved += 1
        if req.get("key") is None:
            raise ValidationError("resolve needs 'key': the [client, seq] of the request")
        auto = parse_key(req.get("key"))
        seen = self._seen.get(auto)
        if seen is None:
            yield from self.ensure_tables()
            rows = yield Query(_SELECT_AUTO, auto)
            if not rows:
                self._auto.append((auto[0], auto[1], int(self.now), ROLLED_BACK, 1))
                self._seen[auto] = (None, ROLLED_BACK)
                return {"committed": False}
            stored = rows[0][0]
            seen = (None, stored if stored == ROLLED_BACK else _decode_result(stored))
        if seen[1] == ROLLED_BACK:
            return {"committed": False}
        return {"committed": True, "result": seen[1]}

    def flush(self) -> Steps[None]:
        """Write the staged records (just before ``COMMIT``), and prune when it is time.

        Raises:
            KeyConflict: a first send's record exists already (see the module docstring).
        """
        if self._auto or self._caller:
            yield from self.ensure_tables()
            try:
                if self._auto:
                    yield ExecMany(_INSERT_AUTO, self._auto)
                if self._caller:
                    yield ExecMany(_INSERT_CALLER, self._caller)
            except IntegrityError:
                raise KeyConflict() from None
        if self._ready and (self._acks or time.monotonic() >= self._next_prune):
            yield from self._prune()

    def retry_after_conflict(self) -> OperationalError | None:
        """After a :class:`KeyConflict` (the transaction rolled back): None to run the
        batch again with every key looked up, or the error for all of it when it had
        already been looked up and still collided (never loop)."""
        if self.check_all:
            self.check_all = False
            return OperationalError("request keys collided twice in one batch")
        self.check_all = True
        return None

    def committed(self) -> None:
        """The transaction of :meth:`begin` committed: count what it did."""
        stats = self.stats
        dedup, resent, pruned, pruned_caller = self._counts
        stats.deduplicated += dedup
        stats.resent += resent
        stats.recorded += len(self._auto) + len(self._caller)
        stats.pruned += pruned + pruned_caller
        if self._caller_rows is not None:
            self._caller_rows += len(self._caller) - pruned_caller
        self.begin()

    def record_commit(self, req: dict[str, Any]) -> Steps[None]:
        """Record an interactive transaction's ``commit`` key, just before its ``COMMIT``.

        Raises:
            ValidationError: the key is malformed.
            RequestTimeoutError: the client stopped waiting for this commit.
            ConnectionLostError: the key was resolved as rolled back meanwhile (its
                client gave up on this connection); the caller rolls back.
        """
        auto = parse_key(req.get("key"))
        refused = self.expired(req, time.time())
        if refused is not None:
            raise refused[1]
        yield from self.ensure_tables()
        try:
            yield Exec(_INSERT_AUTO, [auto[0], auto[1], int(time.time()), None, 0])
        except IntegrityError:
            raise ConnectionLostError(
                "this transaction was resolved as rolled back by its client after a lost "
                "connection; it is rolled back"
            ) from None
        self.stats.recorded += 1

    # ------------------------------------------------------------ pruning

    def _prune(self) -> Steps[None]:
        """Delete what no client can ask about any more, a bounded amount per pass."""
        acks, self._acks = self._acks, {}
        pruned = 0
        for client, low in acks.items():
            # Not the records of resends, nor tombstones: a copy the client gave up on
            # may still come from a writer it left, and must find them (age prunes them).
            pruned += yield Exec(
                "DELETE FROM _fqdb_requests WHERE client = ? AND seq < ? AND resent = 0",
                [client, low],
            )
        mono, wall = time.monotonic(), time.time()
        if mono >= self._next_prune:
            self._next_prune = mono + PRUNE_INTERVAL
            last_mono, last_wall = self._last_clocks
            self._last_clocks = (mono, wall)
            # A wall clock that jumped ahead (a VM resumed, a clock step) would make every
            # record look old at once, also those whose resends are on their way: skip.
            if wall - last_wall <= (mono - last_mono) + 60.0:
                # Records of clients that died (no ack will ever come): few, old, in chunks.
                pruned += yield Exec(
                    "DELETE FROM _fqdb_requests WHERE (client, seq) IN (SELECT client, seq "
                    "FROM _fqdb_requests WHERE at < ? LIMIT ?)",
                    [int(wall - self.window), PRUNE_CHUNK],
                )
                self._counts[3] += yield from self._prune_caller(int(wall))
        self._counts[2] += pruned

    def _prune_caller(self, wall: int) -> Steps[int]:
        deleted: int = yield Exec(
            "DELETE FROM _fqdb_idempotency WHERE key IN (SELECT key FROM _fqdb_idempotency "
            "WHERE at < ? ORDER BY at LIMIT ?)",
            [wall - int(self.idempotency_window), PRUNE_CHUNK],
        )
        if self._caller_rows is None:
            counted = yield Query("SELECT count(*) FROM _fqdb_idempotency")
            # As before this batch: committed() adds its records and subtracts what it pruned.
            self._caller_rows = int(counted[0][0]) - len(self._caller) + deleted
        excess = self._caller_rows + len(self._caller) - deleted - self.idempotency_max
        if excess > 0:
            over: int = yield Exec(
                "DELETE FROM _fqdb_idempotency WHERE key IN (SELECT key FROM _fqdb_idempotency "
                "ORDER BY at LIMIT ?)",
                [min(excess, PRUNE_CHUNK)],
            )
            deleted += over
        return deleted
