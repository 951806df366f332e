"""The daemon: ``fqdb-server`` owns one SQLite file and serves clients over a Unix socket."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import ServerConfig

if TYPE_CHECKING:
    from .daemon import Daemon, serve

__all__ = ["Daemon", "ServerConfig", "serve"]


def __getattr__(name: str) -> Any:
    # Imported on first use, so that importing one submodule (say server.connection)
    # does not load the daemon.
    if name in ("Daemon", "serve"):
        from . import daemon

        return getattr(daemon, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
