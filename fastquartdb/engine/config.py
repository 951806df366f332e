"""The writer's settings and their one set of defaults: :class:`EngineConfig`.

Daemon and embedded mode both build an :class:`~fastquartdb.engine.runner.EngineThread`
and a :class:`~fastquartdb.engine.worker.BatchWorker`; every default they (and the
signatures of ``Engine.connect``, ``EngineThread.open``, ``ReaderPool``, the client's
``init_engine``) use is read from here, never written again as a number.

The two modes differ on purpose in two settings, so there is one preset per mode:

* ``max_queue``: the daemon serves many clients' connections, each pipelining, so it
  queues more (8192, ``--max-queue`` in docs/DEPLOY.md) than one process (4096).
* ``transaction_idle_timeout``: a daemon's interactive transaction blocks every other
  client, so one idle for 10 s (or ``transaction_timeout`` if shorter) is rolled back
  (``--transaction-idle-timeout``); in embedded mode the holder is the process itself
  and the idle limit is the ``transaction_timeout`` (None below).
"""

from __future__ import annotations

from dataclasses import dataclass

from .deadline import DEFAULT_STATEMENT_TIMEOUT


@dataclass(frozen=True)
class EngineConfig:
    """Settings of one writer: its connection, its queue and its transactions.

    Attributes:
        synchronous: ``PRAGMA synchronous`` (``"full"`` or ``"normal"``).
        busy_timeout: seconds to wait for another process's write lock.
        max_batch: most requests per group commit.
        max_queue: requests waiting for the writer before backpressure.
        transaction_timeout: seconds an interactive transaction may stay open.
        transaction_idle_timeout: seconds it may wait for its holder's next request
            (None: ``transaction_timeout``; the daemon caps it at ``transaction_timeout``).
        statement_timeout: every request's deadline in seconds (None: none).
    """

    synchronous: str = "full"
    busy_timeout: float = 5.0
    max_batch: int = 256
    max_queue: int = 4096
    transaction_timeout: float = 30.0
    transaction_idle_timeout: float | None = None
    statement_timeout: float | None = DEFAULT_STATEMENT_TIMEOUT


#: Embedded mode: the process's own worker (``EmbeddedTransport.open``).
EMBEDDED = EngineConfig()
#: Daemon mode (``ServerConfig``, ``fqdb-server`` options): see the module docstring.
DAEMON_IDLE_TIMEOUT = 10.0
DAEMON = EngineConfig(max_queue=8192, transaction_idle_timeout=DAEMON_IDLE_TIMEOUT)

#: The defaults both modes share, for signatures that take one setting.
DEFAULT_BUSY_TIMEOUT = EMBEDDED.busy_timeout
DEFAULT_SYNCHRONOUS = EMBEDDED.synchronous
DEFAULT_MAX_BATCH = EMBEDDED.max_batch
DEFAULT_TRANSACTION_TIMEOUT = EMBEDDED.transaction_timeout
