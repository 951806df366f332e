"""Daemon and embedded defaults come from one place: ``fastquartdb.engine.config``."""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import sys
from types import ModuleType

import pytest

from fastquartdb.client.manager import AsyncDatabaseManager
from fastquartdb.client.transports import EmbeddedTransport
from fastquartdb.engine import DAEMON, EMBEDDED, BatchWorker, Engine, EngineConfig, EngineThread
from fastquartdb.engine import config as engine_config
from fastquartdb.server import cli as server_cli
from fastquartdb.server.config import ServerConfig


def _defaults(func: object) -> dict[str, object]:
    params = inspect.signature(func).parameters  # type: ignore[arg-type]
    return {n: p.default for n, p in params.items() if p.default is not inspect.Parameter.empty}


def test_presets_are_frozen_engine_configs() -> None:
    assert isinstance(DAEMON, EngineConfig) and isinstance(EMBEDDED, EngineConfig)
    assert dataclasses.is_dataclass(EngineConfig)
    assert EngineConfig.__dataclass_params__.frozen  # type: ignore[attr-defined]


def test_server_config_defaults_come_from_the_daemon_preset() -> None:
    fields = {f.name: f.default for f in dataclasses.fields(ServerConfig)}
    for name in ("synchronous", "busy_timeout", "max_batch", "max_queue", "transaction_timeout"):
        assert fields[name] == getattr(DAEMON, name), name
    assert fields["statement_timeout"] == DAEMON.statement_timeout
    assert ServerConfig(db="x.db").transaction_idle_timeout == DAEMON.transaction_idle_timeout


def test_server_options_default_to_the_daemon_preset() -> None:
    args = server_cli._parser().parse_args(["x.db"])
    for name in ("synchronous", "max_batch", "max_queue", "transaction_timeout"):
        assert getattr(args, name) == getattr(DAEMON, name), name


def test_embedded_defaults_come_from_the_embedded_preset() -> None:
    worker = _defaults(BatchWorker.__init__)
    for name in ("max_batch", "max_queue", "transaction_timeout"):
        assert worker[name] == getattr(EMBEDDED, name), name
    for func in (
        EmbeddedTransport.open,
        EngineThread.open,
        Engine.connect,
        AsyncDatabaseManager.init_engine,
    ):
        got = _defaults(func)
        for name in ("synchronous", "busy_timeout", "transaction_timeout", "statement_timeout"):
            if name in got:
                assert got[name] == getattr(EMBEDDED, name), (func, name)


def _fresh(module: ModuleType, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Run ``module``'s file again as a new module (the original stays as it is)."""
    name = module.__name__ + "_probe"
    spec = importlib.util.spec_from_file_location(name, module.__file__)  # type: ignore[arg-type]
    assert spec is not None and spec.loader is not None
    fresh = importlib.util.module_from_spec(spec)
    fresh.__package__ = module.__package__
    monkeypatch.setitem(sys.modules, name, fresh)
    spec.loader.exec_module(fresh)
    return fresh


def test_a_changed_daemon_preset_changes_the_daemon_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Fails if ServerConfig or fqdb-server writes a default again as a number."""
    other = EngineConfig(
        synchronous="normal",
        busy_timeout=7.5,
        max_batch=17,
        max_queue=33,
        transaction_timeout=41.0,
        transaction_idle_timeout=3.0,
    )
    monkeypatch.setattr(engine_config, "DAEMON", other)
    monkeypatch.setattr(engine_config, "DAEMON_IDLE_TIMEOUT", 3.0)
    config = _fresh(sys.modules[ServerConfig.__module__], monkeypatch).ServerConfig(db="x.db")
    args = _fresh(server_cli, monkeypatch)._parser().parse_args(["x.db"])
    for name in ("synchronous", "busy_timeout", "max_batch", "max_queue", "transaction_timeout"):
        assert getattr(config, name) == getattr(other, name), name
        if name != "busy_timeout":
            assert getattr(args, name) == getattr(other, name), name
    assert config.transaction_idle_timeout == 3.0


def test_a_changed_embedded_preset_changes_the_embedded_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Fails if the worker, the connection or the embedded transport writes a number again."""
    from fastquartdb.client import manager, transports
    from fastquartdb.engine import connection, runner, worker

    other = EngineConfig(busy_timeout=7.5, max_batch=17, max_queue=33, transaction_timeout=41.0)
    monkeypatch.setattr(engine_config, "EMBEDDED", other)
    monkeypatch.setattr(engine_config, "DEFAULT_BUSY_TIMEOUT", other.busy_timeout)
    got = _defaults(_fresh(worker, monkeypatch).BatchWorker.__init__)
    for name in ("max_batch", "max_queue", "transaction_timeout"):
        assert got[name] == getattr(other, name), name
    got = _defaults(_fresh(transports, monkeypatch).EmbeddedTransport.open)
    assert got["busy_timeout"] == 7.5 and got["transaction_timeout"] == 41.0
    assert _defaults(_fresh(connection, monkeypatch).connect)["busy_timeout"] == 7.5
    assert _defaults(_fresh(runner, monkeypatch).EngineThread.open)["busy_timeout"] == 7.5
    fresh_manager = _fresh(manager, monkeypatch).AsyncDatabaseManager
    assert _defaults(fresh_manager.init_engine)["busy_timeout"] == 7.5
