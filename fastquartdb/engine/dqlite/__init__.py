"""The engine's dqlite driver: our own small asyncio client for dqlite's wire protocol.

The protocol's ops on a dqlite cluster's leader, with the engine's SQL and logic
(:mod:`.runner`, :mod:`.keyed`), the connection to the leader that follows
leader changes (:mod:`.leader`), and the group-commit writer a daemon runs on a
cluster (:mod:`.writer`). Used by the client's direct ``DqliteTransport`` and by
``fqdb-server dqlite://…``; it imports neither the client nor the server.
"""
