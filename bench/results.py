"""From raw measurements to the numbers we report: per run, per case, per target.

A *run* is one contender once (one repeat); a *case* is a contender in a
scenario (with its ``synchronous`` setting) over all repeats. Per run we keep
throughput, latency percentiles and CPU; per case the median and min-max of
each over the repeats. Targets compare medians of two cases of the *same*
invocation: the machine is noisy, ratios measured together are what count.

A run that could not be played here (``{"not_run": why}``) is neither a result
nor a failure: a target that needs it says "not run", with the reason.
"""

from __future__ import annotations

import math
import statistics
from array import array
from dataclasses import dataclass
from typing import Any

__all__ = [
    "METRICS",
    "TARGETS",
    "Target",
    "evaluate_targets",
    "percentile",
    "run_metrics",
    "summarize",
]

#: Metrics summarised per case (median, min, max over repeats).
METRICS = ("throughput", "p50_ms", "p99_ms", "max_ms")


def percentile(sorted_values: list[int] | list[float], q: float) -> float:
    """Nearest-rank percentile ``q`` (0-100) of an ascending list; NaN when empty."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def _latency_stats(ns: list[int]) -> dict[str, float]:
    ns.sort()
    return {
        "p50_ms": percentile(ns, 50) / 1e6,
        "p99_ms": percentile(ns, 99) / 1e6,
        "max_ms": (ns[-1] / 1e6) if ns else math.nan,
        "mean_ms": (sum(ns) / len(ns) / 1e6) if ns else math.nan,
    }


def run_metrics(workers: list[dict[str, Any]], unit_per_op: int = 1) -> dict[str, Any]:
    """Aggregate the reports of every worker process of one run.

    Throughput is successful requests (times ``unit_per_op``, e.g. rows per
    bulk call) divided by the window from the first process's start to the
    last one's end.
    """
    ok = sum(w["ok"] for w in workers)
    errors: dict[str, int] = {}
    for w in workers:
        for name, n in w["errors"].items():
            errors[name] = errors.get(name, 0) + n
    window_s = (max(w["end_ns"] for w in workers) - min(w["start_ns"] for w in workers)) / 1e9
    by_kind: dict[str, list[int]] = {}
    for w in workers:
        for kind, raw in w["latency_ns"].items():
            values = array("q")
            values.frombytes(raw)
            by_kind.setdefault(kind, []).extend(values)
    everything = [v for values in by_kind.values() for v in values]
    requests = len(everything)
    metrics: dict[str, Any] = {
        "throughput": (ok * unit_per_op) / window_s if window_s > 0 else math.nan,
        "ok": ok,
        "requests": requests,
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "window_s": window_s,
        "client_cpu_s": sum(w["cpu_s"] for w in workers),
        "processes": len(workers),
        **_latency_stats(everything),
    }
    kinds = {kind: values for kind, values in by_kind.items() if values}
    if len(kinds) > 1:
        metrics["by_kind"] = {
            kind: {"requests": len(values), **_latency_stats(values)}
            for kind, values in kinds.items()
        }
    return metrics


def summarize(runs: list[dict[str, Any]], metrics: tuple[str, ...] = METRICS) -> dict[str, Any]:
    """Median and min-max over the successful runs of a case, for each metric."""
    summary: dict[str, Any] = {}
    good = [r for r in runs if "error" not in r and "not_run" not in r]
    for name in metrics:
        values = [r[name] for r in good if isinstance(r.get(name), (int, float))]
        values = [v for v in values if not math.isnan(v)]
        if values:
            summary[name] = {
                "median": statistics.median(values),
                "min": min(values),
                "max": max(values),
            }
        else:
            summary[name] = {"median": math.nan, "min": math.nan, "max": math.nan}
    summary["runs_ok"] = len(good)
    summary["runs_failed"] = sum(1 for r in runs if "error" in r)
    not_run = [r["not_run"] for r in runs if "not_run" in r]
    if not_run:
        summary["runs_not_run"] = len(not_run)
        summary["not_run"] = not_run[0]
    summary["errors"] = sum(int(r.get("errors", 0)) for r in good)
    return summary


@dataclass(frozen=True)
class Target:
    """``numerator / denominator`` (or an absolute value) compared with ``bound``."""

    id: str
    scenario: str
    text: str
    metric: str
    numerator: str
    denominator: str | None
    bound: float
    #: ``">="``: the ratio must reach the bound; ``"<="``: it must stay under it.
    sense: str
    #: Divide the value by this before comparing (absolute targets: bytes -> MiB).
    scale: float = 1.0


#: The targets of issues 8 (T), 18 (R) and 14 (K). Case names are ``scenario:contender:synchronous``.
TARGETS: tuple[Target, ...] = (
    Target("T1", "S1", "S1 FULL throughput: daemon ≥ 4x plain aiosqlite per process",
           "throughput", "S1:daemon:full", "S1:aiosqlite:full", 4.0, ">="),
    Target("T2", "S1", "S1 NORMAL throughput: daemon ≥ 1.2x plain aiosqlite per process",
           "throughput", "S1:daemon:normal", "S1:aiosqlite:normal", 1.2, ">="),
    Target("T3", "S1", "S1 FULL throughput: daemon ≥ 5x embedded with use_filelock=True",
           "throughput", "S1:daemon:full", "S1:embedded_filelock:full", 5.0, ">="),
    Target("T4", "S1", "S1 FULL p99 latency: daemon ≤ 0.3x plain aiosqlite's p99",
           "p99_ms", "S1:daemon:full", "S1:aiosqlite:full", 0.3, "<="),
    Target("T5a", "S2", "S2 p50: daemon ≤ 1.3x plain aiosqlite",
           "p50_ms", "S2:daemon:full", "S2:aiosqlite:full", 1.3, "<="),
    Target("T5b", "S2", "S2 p50: embedded ≤ 1.2x plain aiosqlite",
           "p50_ms", "S2:embedded:full", "S2:aiosqlite:full", 1.2, "<="),
    Target("T6", "S4", "S4 rows/s: daemon ≥ 0.4x plain sqlite3 executemany",
           "throughput", "S4:daemon:full", "S4:sqlite3:full", 0.4, ">="),
    Target("T7", "S6", "S6: daemon peak RSS ≤ 60 MiB",
           "peak_rss_bytes", "S6:daemon:full", None, 60.0, "<=", 1024 * 1024),
    Target("T8", "S1", "S1 NORMAL throughput: embedded + filelock ≥ 0.5x plain aiosqlite per process",
           "throughput", "S1:embedded_filelock:normal", "S1:aiosqlite:normal", 0.5, ">="),
    # Issue 18: one writer, many readers.
    Target("R1a", "S3", "S3 point reads 4x16: daemon ≥ 1.0x plain aiosqlite per process",
           "throughput", "S3:daemon:full", "S3:aiosqlite:full", 1.0, ">="),
    Target("R1b", "S3", "S3 point reads 4x16: embedded ≥ 1.0x plain aiosqlite per process",
           "throughput", "S3:embedded:full", "S3:aiosqlite:full", 1.0, ">="),
    Target("R2", "S2", "S2 serial point read p50: daemon ≤ 0.5x plain aiosqlite",
           "p50_ms", "S2:daemon:full", "S2:aiosqlite:full", 0.5, "<="),
    Target("R3a", "S5", "S5 90/10 FULL throughput: daemon ≥ 1.5x plain aiosqlite per process",
           "throughput", "S5:daemon:full", "S5:aiosqlite:full", 1.5, ">="),
    Target("R3b", "S5", "S5 90/10 FULL p99: daemon ≤ 0.3x plain aiosqlite",
           "p99_ms", "S5:daemon:full", "S5:aiosqlite:full", 0.3, "<="),
    Target("R4a", "S1", "S1 FULL writes: daemon ≥ 0.95x the daemon with readers=0 (T1 kept)",
           "throughput", "S1:daemon:full", "S1:daemon_writer_reads:full", 0.95, ">="),
    Target("R4b", "S1", "S1 NORMAL writes: daemon ≥ 0.95x the daemon with readers=0 (T2 kept)",
           "throughput", "S1:daemon:normal", "S1:daemon_writer_reads:normal", 0.95, ">="),
    Target("R5", "S7", "S7 100-row range reads 4x16: daemon ≥ 1.2x plain aiosqlite per process",
           "throughput", "S7:daemon:full", "S7:aiosqlite:full", 1.2, ">="),
    Target("R6a", "S8", "S8 web 90/10 (hypercorn -w 4, wrk -c64): daemon ≥ 1.0x the aiosqlite app",
           "throughput", "S8:daemon:full", "S8:aiosqlite:full", 1.0, ">="),
    Target("R6b", "S9", "S9 web 50/50 (hypercorn -w 4, wrk -c64): daemon ≥ 1.3x the aiosqlite app",
           "throughput", "S9:daemon:full", "S9:aiosqlite:full", 1.3, ">="),
    # Issue 14: exactly-once writes.
    Target("K1", "S1", "S1 FULL writes with request keys ≥ 0.9x the same run without keys",
           "throughput", "S1:daemon:full", "S1:daemon_nokeys:full", 0.9, ">="),
    Target("K2", "S1", "S1 NORMAL writes with request keys ≥ 0.9x the same run without keys",
           "throughput", "S1:daemon:normal", "S1:daemon_nokeys:normal", 0.9, ">="),
    # Issue 16: change feeds.
    Target("C1", "S10", "S10 FULL writes: change capture on ≥ 0.85x capture off (daemon)",
           "throughput", "S10:daemon_changes:full", "S10:daemon:full", 0.85, ">="),
    Target("C2a", "S11", "S11 send-to-feed p99, 100 feeds in 4 processes ≤ 5 ms (daemon)",
           "p99_ms", "S11:daemon_changes:normal", None, 5.0, "<="),
    Target("C2b", "S12", "S12 send-to-feed p99, 100 subscribed connections ≤ 5 ms (daemon)",
           "p99_ms", "S12:daemon_changes:normal", None, 5.0, "<="),
    # Issue 15: dqlite through a per-host daemon.
    Target("DQ1", "D1", "D1 dqlite writes 4x16: through fqdb-server ≥ 10x the direct dqlite client",
           "throughput", "D1:dqlite_daemon:raft", "D1:dqlite:raft", 10.0, ">="),
)  # fmt: skip


def _case_runs(cases: dict[str, dict[str, Any]], key: str) -> list[dict[str, Any]] | None:
    case = cases.get(key)
    return None if case is None else case["runs"]


def _median(runs: list[dict[str, Any]], metric: str) -> float:
    values = [
        r[metric] for r in runs if "error" not in r and isinstance(r.get(metric), (int, float))
    ]
    return statistics.median(values) if values else math.nan


def _not_run(runs: list[dict[str, Any]] | None) -> str | None:
    """Why a case was not run here: every one of its runs says ``not_run``; else None."""
    if runs and all("not_run" in r for r in runs):
        return str(runs[0]["not_run"])
    return None


def evaluate_targets(
    cases: dict[str, dict[str, Any]], skipped: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Every target with its measured value, verdict and the per-repeat spread.

    ``cases`` maps ``scenario:contender:synchronous`` to ``{"runs": [...]}``.
    A ratio target's value is the ratio of the two medians; ``per_repeat``
    pairs repeat r of one with repeat r of the other (they ran side by side).
    ``skipped`` maps a scenario left out of the run to why (``dqlite-demo``
    missing): its targets are "not run" with that ``reason``, as are those of a
    case whose every run was not run.
    """
    skipped = skipped or {}
    verdicts = []
    for target in TARGETS:
        entry: dict[str, Any] = {
            "id": target.id,
            "scenario": target.scenario,
            "target": target.text,
            "bound": target.bound,
            "sense": target.sense,
        }
        num_runs = _case_runs(cases, target.numerator)
        den_runs = _case_runs(cases, target.denominator) if target.denominator else None
        reason = skipped.get(target.scenario) or _not_run(num_runs) or _not_run(den_runs)
        if num_runs is None or (target.denominator and den_runs is None) or reason:
            entry.update(value=None, met=None, verdict="not run")
            if reason:
                entry["reason"] = reason
            verdicts.append(entry)
            continue
        if target.denominator is None:
            values = [
                r[target.metric] / target.scale
                for r in num_runs
                if "error" not in r and r.get(target.metric) is not None
            ]
            value = statistics.median(values) if values else math.nan
            entry["per_repeat"] = values
        else:
            assert den_runs is not None
            value = _median(num_runs, target.metric) / _median(den_runs, target.metric)
            paired = [
                a[target.metric] / b[target.metric]
                for a, b in zip(num_runs, den_runs)
                if "error" not in a
                and "error" not in b
                and a.get(target.metric) is not None
                and b.get(target.metric)
            ]
            entry["per_repeat"] = paired
        if math.isnan(value):
            entry.update(value=None, met=None, verdict="no data")
        else:
            met = value >= target.bound if target.sense == ">=" else value <= target.bound
            entry.update(value=value, met=met, verdict="met" if met else "missed")
        verdicts.append(entry)
    return verdicts
