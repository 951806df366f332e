"""The client side: ``AsyncDatabaseManager`` and its transports."""

from .manager import AsyncDatabaseManager, Transaction
from .transports import EmbeddedTransport, Transport

__all__ = ["AsyncDatabaseManager", "EmbeddedTransport", "Transaction", "Transport"]
