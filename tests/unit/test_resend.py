"""Which requests a client may send again after its connection to the daemon was lost."""

from __future__ import annotations

import pytest

from fastquartdb.client.connection import SocketTransport
from fastquartdb.protocol import RESENDABLE_OPS, WRITE_OPS


@pytest.mark.parametrize("op", ["fetch", "count", "aggregate", "ping", "ensure_table"])
def test_reads_and_ensure_table_are_resent(op: str) -> None:
    # ensure_table compares the model with the live schema every time, so running it
    # again after a first run that did commit changes nothing: a worker starting while
    # the daemon restarts must not fail its init_engine with "outcome unknown".
    error = SocketTransport._lost_error({"op": op}, ConnectionResetError(104, "reset"))
    assert error.retryable is True  # type: ignore[attr-defined]
    assert "outcome is unknown" not in str(error)


@pytest.mark.parametrize("op", sorted(WRITE_OPS - RESENDABLE_OPS))
def test_other_writes_report_an_unknown_outcome(op: str) -> None:
    error = SocketTransport._lost_error({"op": op}, ConnectionResetError(104, "reset"))
    assert error.retryable is False  # type: ignore[attr-defined]
    assert "outcome is unknown" in str(error)


def test_a_request_never_sent_is_resent() -> None:
    error = SocketTransport._lost_error({"op": "insert"}, BrokenPipeError(32, "pipe"), sent=False)
    assert error.retryable is True  # type: ignore[attr-defined]
