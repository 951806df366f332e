"""The benchmark harness still runs: ``python -m bench --quick`` end to end.

Benchmarks are not tests: this checks that every scenario ran every contender
and produced numbers, never what the numbers are.

``make test`` installs no bench extra (matplotlib, SQLAlchemy, py-spy: hundreds of
MB): without it the harness leaves the SQLAlchemy contender and the charts out and
says so, and this test checks exactly that; with it (``make bench`` installed it)
they are expected too. S8/S9 need ``wrk`` and D1 ``dqlite-demo``: without them the
bench skips those scenarios and their targets say "not run" with the reason.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

EXPECTED = {
    "S1": {
        "daemon",
        "daemon_writer_reads",
        "daemon_nokeys",
        "daemon_replicate",
        "embedded",
        "embedded_filelock",
        "aiosqlite",
        "sqlalchemy",
    },
    "S2": {"daemon", "embedded", "aiosqlite", "sqlite3"},
    "S3": {"daemon", "daemon_writer_reads", "embedded", "aiosqlite"},
    "S4": {"daemon", "embedded", "sqlite3"},
    "S5": {"daemon", "embedded", "aiosqlite"},
    "S7": {"daemon", "embedded", "aiosqlite"},
    "S10": {"daemon", "daemon_changes"},
    "S11": {"daemon_changes"},
    "S12": {"daemon_changes"},
}
HAVE_SQLALCHEMY = importlib.util.find_spec("sqlalchemy") is not None
HAVE_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
if not HAVE_SQLALCHEMY:
    EXPECTED["S1"].discard("sqlalchemy")
# S8/S9 need wrk (the Debian package); without it the bench skips them and says why.
WEB = {"S8", "S9"} if shutil.which("wrk") else set()
if WEB:
    EXPECTED.update({sid: {"daemon", "embedded", "aiosqlite"} for sid in WEB})
TARGETS = {"T1", "T2", "T3", "T4", "T5a", "T5b", "T6", "T7", "T8"}
TARGETS |= {"R1a", "R1b", "R2", "R3a", "R3b", "R4a", "R4b", "R5"}
TARGETS |= {"K1", "K2"}
TARGETS |= {"R6a", "R6b"}
#: Targets of scenarios that cannot run here: reported, with the verdict "not run".
NOT_RUN = set() if WEB else {"R6a", "R6b"}
TARGETS |= {"C1", "C2a", "C2b"}
# D1 needs dqlite-demo (Debian's go-dqlite); without it the bench skips it and says why.
DQLITE = {"D1"} if shutil.which("dqlite-demo") and shutil.which("dqlite") else set()
if DQLITE:
    EXPECTED["D1"] = {"dqlite", "dqlite_daemon"}
TARGETS |= {"DQ1"}
#: Scenarios run at synchronous=NORMAL only (the change-feed latency: the write is not measured).
NORMAL_ONLY = {"S11", "S12"}


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_quick_benchmark_runs_and_reports_everything(tmp_path: Path) -> None:
    out = tmp_path / "results"
    env = {k: v for k, v in os.environ.items() if k not in ("FQDB_WIRE_CHECK", "FQDB_SOCKET")}
    env["MPLBACKEND"] = "Agg"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out), "--tmp", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=390,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "Targets" in proc.stdout
    assert "Backup: after each S1 'daemon + Litestream' run" in proc.stdout
    left_out = "contender sqlalchemy left out: sqlalchemy is not installed"
    assert (left_out in proc.stderr) is not HAVE_SQLALCHEMY, proc.stderr[-3000:]
    no_charts = "charts skipped: matplotlib is not installed"
    assert (no_charts in proc.stderr) is not HAVE_MATPLOTLIB, proc.stderr[-3000:]

    data = json.loads((out / "latest.json").read_text())
    assert set(data["scenarios"]) == {"S1", "S2", "S3", "S4", "S5", "S6", "S7", *WEB} | {
        "S10",
        "S11",
        "S12",
        *DQLITE,
    }
    for sid, contenders in EXPECTED.items():
        cases = data["scenarios"][sid]["cases"]
        assert {c["contender"] for c in cases.values()} == contenders, sid
        settings = {"full", "normal"} if sid == "S1" else {"full"}
        if sid in NORMAL_ONLY:
            settings = {"normal"}
        if sid == "D1":
            settings = {"raft"}  # dqlite: no PRAGMA synchronous, a Raft quorum
        assert {c["synchronous"] for c in cases.values()} == settings, sid
        for key, case in cases.items():
            assert case["runs"], key
            for run in case["runs"]:
                assert "error" not in run, (key, run.get("error"))
                for metric in ("throughput", "p50_ms", "p99_ms", "max_ms"):
                    assert _number(run[metric]), (key, metric, run[metric])
                assert run["ok"] > 0, key
                if sid in NORMAL_ONLY:
                    assert run["missing"] == 0, (key, run)  # every feed got every change
                if case["contender"] == "daemon_replicate":
                    # Every row the daemon committed came back from the Litestream replica.
                    assert run["restored_rows"] == run["rows_in_db"] >= run["ok"], (key, run)
            for metric in ("throughput", "p50_ms", "p99_ms", "max_ms"):
                assert _number(case["summary"][metric]["median"]), (key, metric)

    cost = data["scenarios"]["S6"]["cases"]
    assert {c["contender"] for c in cost.values()} == EXPECTED["S1"]
    for key, case in cost.items():
        assert _number(case["summary"]["total_cpu_s_per_10k"]["median"]), key
        if case["contender"] == "daemon":
            assert _number(case["summary"]["peak_rss_mib"]["median"]), key
            assert _number(case["summary"]["daemon_cpu_s_per_10k"]["median"]), key

    verdicts = {t["id"]: t for t in data["targets"]}
    assert set(verdicts) == TARGETS
    not_run = NOT_RUN | (set() if DQLITE else {"DQ1"})
    for tid, target in verdicts.items():
        if tid in not_run:
            assert target["verdict"] == "not run" and target["value"] is None, tid
            continue
        assert _number(target["value"]), tid
        assert target["verdict"] in ("met", "missed"), tid
    if not DQLITE:
        assert "skipping D1" in proc.stderr, proc.stderr[-3000:]
        assert "dqlite-demo" in verdicts["DQ1"]["reason"], verdicts["DQ1"]

    machine = data["machine"]
    assert machine["nproc"] >= 1 and machine["sqlite"] and machine["python"]
    markdown = (out / "latest.md").read_text()
    assert "## Targets" in markdown and "## S6" in markdown
    for name in ("S1", "S2", "S3", "S4", "S5", "S6", "summary"):
        if HAVE_MATPLOTLIB:
            assert (out / f"{name}.png").stat().st_size > 0, name
        else:
            assert not (out / f"{name}.png").exists(), name
