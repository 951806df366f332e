"""D1: dqlite writes through a per-host daemon against the direct dqlite client (issue 15).

The scenario is S1's load (4 processes x 16 tasks, each inserting single rows
with ``User.insert``, each acknowledged once committed) on a real 3-node
``dqlite-demo`` cluster on loopback, played two ways:

``dqlite``         every worker process is a direct dqlite client: ``init_engine(url)``, its
                   own connection to the leader, one dqlite transaction (one Raft round) per
                   insert.
``dqlite_daemon``  the workers talk to one ``fqdb-server dqlite://...`` on the host over a
                   Unix socket (``init_engine(url, socket=..., mode="daemon")``); the daemon
                   group-commits their writes into one dqlite transaction per batch.

What this module owns::

    DqliteCluster   the cluster: started (the tests' harness, tests/dqlite/cluster.py) on the
                    first D1 run, shared by every D1 run of the invocation (each on a fresh
                    database name), stopped by pid when the bench ends
    start_daemon    ``python -m fastquartdb.server URL --socket WORKDIR/fqdb.sock`` as a
                    BenchDaemon (stopped by pid by the runner like the file daemon)
    dqlite_missing  why D1 cannot run here (no ``dqlite-demo``), like ``wrk_missing`` for S8/S9
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from .daemon import BenchDaemon

if TYPE_CHECKING:
    from tests.dqlite.cluster import Cluster

__all__ = [
    "DQLITE_CONTENDERS",
    "DqliteCluster",
    "dqlite_missing",
    "start_daemon",
]

ROOT = Path(__file__).resolve().parents[1]

#: The contenders that run on the cluster instead of a file.
DQLITE_CONTENDERS = frozenset({"dqlite", "dqlite_daemon"})


def dqlite_missing() -> str | None:
    """Why D1 cannot run here, or None when ``dqlite-demo`` and ``dqlite`` are installed."""
    missing = [name for name in ("dqlite-demo", "dqlite") if shutil.which(name) is None]
    if missing:
        return (
            f"{' and '.join(missing)} not installed: apt-get install -y go-dqlite "
            "(or make bench-deps)"
        )
    return None


class DqliteCluster:
    """Three ``dqlite-demo`` nodes for every D1 run of one bench invocation.

    Started on the first :meth:`url` call (the nodes' data in a temporary
    directory under ``tmp_root``), stopped by pid (SIGTERM, SIGKILL after 10 s)
    by :meth:`close`, which the runner calls when the bench ends.
    """

    def __init__(self, tmp_root: str | None) -> None:
        self.tmp_root = tmp_root
        self._directory: str | None = None
        self._cluster: Cluster | None = None

    def url(self) -> str:
        """A ``dqlite://`` URL of a database no run has used yet (the cluster started if needed)."""
        if self._cluster is None:
            # The tests' harness: one way to start a cluster and to find its voters.
            if str(ROOT) not in sys.path:
                sys.path.insert(0, str(ROOT))
            from tests.dqlite.cluster import Cluster

            self._directory = tempfile.mkdtemp(prefix="fqdb-bench-dqlite-", dir=self.tmp_root)
            cluster = Cluster(Path(self._directory))
            try:
                cluster.start()
            except BaseException:
                cluster.stop()
                raise
            self._cluster = cluster
        return self._cluster.url()

    @property
    def pids(self) -> list[int]:
        """The nodes' pids (empty before the first run)."""
        return [] if self._cluster is None else [n.pid for n in self._cluster.nodes]

    def close(self) -> None:
        """Stop every node by pid and remove their data. Safe to call twice."""
        cluster, self._cluster = self._cluster, None
        try:
            if cluster is not None:
                cluster.stop()
        finally:
            if self._directory is not None:
                shutil.rmtree(self._directory, ignore_errors=True)
                self._directory = None


def start_daemon(url: str, workdir: str) -> BenchDaemon:
    """``fqdb-server URL --socket WORKDIR/fqdb.sock``, ready to serve.

    No ``--synchronous``: a dqlite commit is durable once a quorum of the Raft
    log has it, there is no ``PRAGMA synchronous`` to choose.

    Raises:
        RuntimeError: it exited, crashed or did not announce itself in time (the run fails).
    """
    log_path = os.path.join(workdir, "daemon.log")
    daemon = BenchDaemon(
        url,
        None,
        log_path,
        extra=["--socket", os.path.join(workdir, "fqdb.sock")],
    )
    return daemon.start()
