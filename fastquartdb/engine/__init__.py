"""Requests to SQL and their execution on one sqlite connection; shared by daemon and embedded mode."""

from .config import DAEMON, EMBEDDED, EngineConfig
from .executor import LOCAL_READ_OPS, Engine, Outcome
from .readers import ReaderPool
from .resultcodes import error_for_code, translate_sqlite_error
from .runner import EngineThread
from .schema import TableInfo, check_identifier, quote
from .sqltypes import SqlType, parse_type
from .statements import OPERATORS, check_value
from .work import Session, WorkItem
from .worker import BatchWorker

__all__ = [
    "DAEMON",
    "EMBEDDED",
    "LOCAL_READ_OPS",
    "OPERATORS",
    "BatchWorker",
    "Engine",
    "EngineConfig",
    "EngineThread",
    "Outcome",
    "ReaderPool",
    "Session",
    "SqlType",
    "TableInfo",
    "WorkItem",
    "check_identifier",
    "check_value",
    "error_for_code",
    "parse_type",
    "quote",
    "translate_sqlite_error",
]
