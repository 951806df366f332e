"""A dqlite cluster as a transport: our own small asyncio client for dqlite's wire protocol."""

from .transport import DqliteTransport, parse_dqlite_url

__all__ = ["DqliteTransport", "parse_dqlite_url"]
