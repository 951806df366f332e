"""Reading a result set under a size limit, so a huge result fails alone and early.

The daemon sends each result in one reply frame and caps it (``--max-reply``).
Checking only the encoded frame would come too late: the rows would already
be in memory (a 1.2 GB result once made the daemon 4.6 GB). So rows are read
in chunks and each chunk's encoded size is added up as it arrives; past the
limit the request fails with :class:`ResultTooLargeError` and the rows read
so far are dropped. Without a limit (embedded mode) this is ``fetchall()``.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from ..protocol.codec import encoded_size
from ..protocol.errors import ResultTooLargeError

__all__ = ["fetch_rows"]

#: Rows read per step when a limit applies: big enough that measuring costs little ...
CHUNK_ROWS = 512
#: ... after a first small step that tells how large the rows are.
FIRST_CHUNK_ROWS = 16


def fetch_rows(cursor: sqlite3.Cursor, limit: int | None, what: str) -> list[Any]:
    """All rows of ``cursor``, or :class:`ResultTooLargeError` once they exceed ``limit`` bytes.

    Args:
        cursor: an executed cursor.
        limit: the most encoded bytes the rows may take; ``None``: no limit.
        what: the op, for the message.
    """
    if limit is None:
        return cursor.fetchall()
    rows: list[Any] = []
    size = 0
    step = FIRST_CHUNK_ROWS
    while True:
        chunk = cursor.fetchmany(step)
        if not chunk:
            return rows
        size += encoded_size(chunk)
        # The next chunk may bring at most about a quarter of what is left, judging by
        # the rows so far: rows of 100 KB blobs are read a few at a time, not 512.
        average = max(1, size // (len(rows) + len(chunk)))
        step = max(1, min(CHUNK_ROWS, (limit - size) // (4 * average)))
        if size > limit:
            # Reset the statement now: left half-read it would keep the batch's COMMIT from
            # running ("SQL statements in progress") and sink every request with it.
            cursor.close()
            raise ResultTooLargeError(
                f"the result of {what} is larger than the daemon's reply limit of {limit} "
                f"bytes (--max-reply) after {len(rows) + len(chunk)} rows; fetch fewer rows "
                "(limit=, fewer columns=) or stream them with Model.iterate()"
            )
        rows.extend(chunk)
