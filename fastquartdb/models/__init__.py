"""The user API: ``BaseModel`` and ``Column``."""

from .columns import Column
from .model import BaseModel

__all__ = ["BaseModel", "Column"]
