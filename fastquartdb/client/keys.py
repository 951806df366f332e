"""Request keys on the client side: every write outside a transaction gets one.

A key is ``[client, seq]``: ``client`` is random per manager (16 bytes, base64),
``seq`` counts this manager's keyed requests. The writer records each key with
its write (see ``engine/requestkeys.py``), so when a connection is lost the
failover layer resends the write with the same key and the writer answers from
its record if the first send committed. Every ``ACK_EVERY`` keys a request also
carries ``"acked"``: the lowest ``seq`` still waiting for its reply, below which
the writer may forget this client's records.
"""

from __future__ import annotations

import base64
import os
from typing import Any

__all__ = ["ACK_EVERY", "KeyIssuer"]

#: How often (in keyed requests) the client tells the writer what it may forget.
ACK_EVERY = 64


class KeyIssuer:
    """Hands out this process's request keys and knows which are still in flight."""

    __slots__ = ("_next", "_open", "client")

    def __init__(self) -> None:
        #: This manager's id in every key it issues.
        self.client = base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()
        self._next = 0
        self._open: set[int] = set()

    def issue(self, request: dict[str, Any]) -> int:
        """Give ``request`` the next key; call :meth:`done` with the result once it has a reply."""
        seq = self._next
        self._next = seq + 1
        request["key"] = [self.client, seq]
        self._open.add(seq)
        if seq % ACK_EVERY == 0:
            request["acked"] = min(self._open)
        return seq

    def done(self, seq: int) -> None:
        """The request of ``seq`` has its answer (a result or an error): its record may go.

        (The writer keeps the records of resent requests anyway, until their age: a copy
        of one may still come from a writer this client gave up on.)
        """
        self._open.discard(seq)
