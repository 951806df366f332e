"""What the nodes of a dqlite cluster say about it: who leads, who answers, is there a quorum.

Asked on connections of their own (never the leader connection, which may be
stuck in a request), each bounded by a short timeout, all nodes at once. Used
to abandon a leader that stopped answering once the others elected a new one,
and to say in an error *why* no write goes through (an election, no quorum)
and what to do.
"""

from __future__ import annotations

import asyncio

from . import wire
from .connection import DqliteRequestError, NodeConnection, NodeUnavailable

__all__ = ["ask_leader", "describe"]


async def ask_leader(node: str, timeout: float) -> str | None:
    """Who ``node`` says leads (``""``: nobody yet), or None if it does not answer in time."""
    try:
        conn = await NodeConnection.connect(node, timeout)
    except NodeUnavailable:
        return None
    try:
        return (await asyncio.wait_for(conn.leader(), timeout)).address
    except (NodeUnavailable, DqliteRequestError, wire.WireError, asyncio.TimeoutError):
        return None
    finally:
        await conn.close()


async def describe(nodes: list[str], timeout: float = 1.0) -> tuple[bool, str]:
    """Whether every node answers and names one leader, and one sentence on the
    cluster's state now, saying what to do if it cannot write.

    The quorum is counted over ``nodes`` (the URL should list every voter).
    """
    answers = await asyncio.gather(*(ask_leader(n, timeout) for n in nodes))
    up = [n for n, a in zip(nodes, answers) if a is not None]
    down = [n for n, a in zip(nodes, answers) if a is None]
    leaders = sorted({a for a in answers if a})
    need = len(nodes) // 2 + 1
    silent = f" (not answering: {', '.join(down)})" if down else ""
    if len(up) < need:
        return False, (
            f"no quorum: {len(up)} of {len(nodes)} dqlite nodes answer{silent}; a cluster "
            f"of {len(nodes)} needs {need} to elect a leader and commit: start the stopped "
            f"nodes (or restore the cluster from a node's data)"
        )
    if not leaders:
        return False, (
            f"{len(up)} of {len(nodes)} dqlite nodes answer{silent} but none knows a leader: "
            f"an election is under way; retry in a few seconds"
        )
    healthy = not down and len(leaders) == 1
    return healthy, (
        f"{len(up)} of {len(nodes)} dqlite nodes answer{silent}; leader: {', '.join(leaders)}"
    )
