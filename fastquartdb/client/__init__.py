"""The client side: ``AsyncDatabaseManager`` and its transports."""

from .changes import Change
from .manager import AsyncDatabaseManager, Transaction
from .transports import EmbeddedTransport, Transport

__all__ = ["AsyncDatabaseManager", "Change", "EmbeddedTransport", "Transaction", "Transport"]
