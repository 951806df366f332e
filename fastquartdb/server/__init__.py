"""The daemon: ``fqdb-server`` owns one SQLite file and serves clients over a Unix socket."""

from .config import ServerConfig
from .daemon import Daemon, serve

__all__ = ["Daemon", "ServerConfig", "serve"]
