"""``python -m bench``: run the scenarios, print the tables, write ``bench/results/``.

Examples::

    python -m bench                      # everything, 3 interleaved repeats (~6 min)
    python -m bench --quick              # tiny sizes, one repeat: a smoke run (< 1 min)
    python -m bench --scenario S2        # one scenario alone (repeatable option)
    python -m bench --scenario S1 --contender daemon --sync full \\
        --profile-dir /tmp/prof --profile-daemon py-spy --profile-client --out /tmp/prof
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from typing import Any

from .contenders import CONTENDERS, unavailable
from .dqlite_daemon import dqlite_missing
from .machine import describe, source_fingerprint
from .report import MIB, print_tables, write_charts, write_json, write_markdown
from .results import METRICS, evaluate_targets, summarize
from .scenarios import FULL, QUICK, SCENARIOS, Case, Profiling, Runner, Scenario, scenarios_for
from .web import wrk_missing

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
COST_METRICS = (
    "peak_rss_mib",
    "daemon_cpu_s_per_10k",
    "client_cpu_s_per_10k",
    "total_cpu_s_per_10k",
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="FastQuartDB benchmarks: the daemon against per-process SQLite (issue 8).",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes and 1 repeat: a smoke run")
    parser.add_argument(
        "--scenario",
        action="append",
        type=str.upper,
        choices=SCENARIOS,
        help="run only this scenario (repeatable; S6 alone runs the S1 daemon cases it needs)",
    )
    parser.add_argument(
        "--repeats", type=int, help="interleaved repeats (default 3; 1 with --quick)"
    )
    parser.add_argument(
        "--out", default=DEFAULT_OUT, help="results directory (default bench/results)"
    )
    parser.add_argument(
        "--contender",
        action="append",
        choices=sorted(CONTENDERS),
        help="only these contenders (repeatable; for profiling: targets then go unjudged)",
    )
    parser.add_argument(
        "--sync", action="append", choices=("full", "normal"), help="only this S1 setting"
    )
    parser.add_argument("--seconds", type=float, help="override the duration of S1, S3, S5 runs")
    parser.add_argument(
        "--loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="event loop of the worker processes (the daemon always uses uvloop)",
    )
    parser.add_argument("--tmp", help="directory for the databases (default: the system temp dir)")
    parser.add_argument("--no-charts", action="store_true", help="skip the PNG charts")
    parser.add_argument(
        "--replot",
        action="store_true",
        help="run nothing: rebuild the tables, latest.md and the charts from OUT/latest.json",
    )
    parser.add_argument("--profile-dir", help="write profiles of the runs here")
    parser.add_argument(
        "--profile-daemon",
        choices=("cprofile", "py-spy", "py-spy-native"),
        help="profile the daemon (py-spy: all threads; -native: with C frames)",
    )
    parser.add_argument(
        "--profile-client", action="store_true", help="cProfile worker process 0 during the load"
    )
    return parser


def _plan(args: argparse.Namespace) -> tuple[dict[str, Scenario], list[str], dict[str, str]]:
    """The scenarios at their sizes, those selected, and those left out here -> why."""
    sizes = QUICK if args.quick else FULL
    if args.seconds:
        sizes = replace(
            sizes,
            s1_seconds=args.seconds,
            s3_seconds=args.seconds,
            s5_seconds=args.seconds,
            d1_seconds=args.seconds,
        )
    scenarios = scenarios_for(sizes)
    selected = [s for s in SCENARIOS if not args.scenario or s in args.scenario]
    skipped: dict[str, str] = {}
    why = wrk_missing()
    if why is not None and any(scenarios[s].workload == "web" for s in selected):
        _progress(f"skipping S8 and S9 (the web app under wrk): {why}")
        skipped.update((s, why) for s in selected if scenarios[s].workload == "web")
    why = dqlite_missing()
    if why is not None and "D1" in selected:
        _progress(f"skipping D1 (dqlite, direct and through a daemon): {why}")
        skipped["D1"] = why
    selected = [s for s in selected if s not in skipped]

    missing = unavailable()
    for name, why in missing.items():
        _progress(f"contender {name} left out: {why}")

    def keep(case: Case) -> bool:
        if args.contender and case.contender not in args.contender:
            return False
        if case.contender in missing:
            return False
        return not (args.sync and case.synchronous not in args.sync)

    for sid, scn in scenarios.items():
        scenarios[sid] = replace(scn, cases=tuple(c for c in scn.cases if keep(c)))
    return scenarios, selected, skipped


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _describe_run(case: Case, run: dict[str, Any], unit: str) -> str:
    if "error" in run:
        first = run["error"].strip().splitlines()[-1] if run["error"].strip() else "?"
        return f"FAILED: {first}"
    if "not_run" in run:
        return f"NOT RUN: {run['not_run']}"
    text = (
        f"{run['throughput']:,.0f} {unit}  p50 {run['p50_ms']:.3f} ms  p99 {run['p99_ms']:.2f} ms"
        f"  max {run['max_ms']:.1f} ms"
    )
    if run.get("errors"):
        text += f"  errors {run['error_kinds']}"
    if "daemon_stats" in run and "batch_mean" in run["daemon_stats"]:
        text += f"  batch mean {run['daemon_stats']['batch_mean']}"
    return text


def _play(runner: Runner, to_run: list[Scenario], repeats: int) -> dict[str, list[dict[str, Any]]]:
    """Every case of ``to_run`` ``repeats`` times, interleaved; case key -> its runs."""
    total = sum(len(s.cases) for s in to_run) * repeats
    done = 0
    runs: dict[str, list[dict[str, Any]]] = {}
    for scn in to_run:
        n = len(scn.cases)
        for repeat in range(repeats):
            # Interleaved: every contender once per repeat, each repeat starting one further on.
            order = [scn.cases[(i + repeat) % n] for i in range(n)]
            for case in order:
                done += 1
                run = runner.run(scn, case, repeat)
                runs.setdefault(case.key, []).append(run)
                _progress(
                    f"[{done}/{total}] {scn.id} r{repeat + 1} {case.label} {case.synchronous.upper()}: "
                    f"{_describe_run(case, run, scn.unit)}  ({run['wall_s']:.1f} s)"
                )
    return runs


def run_all(args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    """Run the selected scenarios, interleaving contenders, and return the results document."""
    began = time.monotonic()
    scenarios, selected, skipped = _plan(args)
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
    if repeats < 1:
        raise SystemExit("--repeats must be at least 1")
    profiling = Profiling(
        directory=args.profile_dir,
        daemon=args.profile_daemon,
        client=args.profile_client,
    )
    runner = Runner(tmp_root=args.tmp, loop=args.loop, profiling=profiling)
    machine = describe(args.tmp)

    # S6 is measured during S1's daemon runs; alone, it runs just those.
    to_run: list[Scenario] = []
    for sid in selected:
        scn = scenarios[sid]
        if scn.derived_from is None:
            to_run.append(scn)
    if "S6" in selected and "S1" not in selected:
        s1 = scenarios["S1"]
        to_run.insert(0, replace(s1, cases=tuple(c for c in s1.cases if c.contender == "daemon")))

    try:
        runs = _play(runner, to_run, repeats)
    finally:
        runner.close()  # D1's dqlite cluster, stopped by pid

    all_cases: dict[str, dict[str, Any]] = {}
    out_scenarios: dict[str, Any] = {}
    for sid in selected:
        scn = scenarios[sid]
        cases: dict[str, Any] = {}
        if scn.derived_from is None:
            for case in scn.cases:
                case_runs = sorted(runs.get(case.key, []), key=lambda r: r["repeat"])
                cases[case.key] = {
                    "contender": case.contender,
                    "label": case.label,
                    "synchronous": case.synchronous,
                    "runs": case_runs,
                    "summary": summarize(case_runs, METRICS),
                }
        else:
            cases = _cost_cases(scenarios["S1"], runs)
        all_cases.update(cases)
        out_scenarios[sid] = {
            "title": scn.title,
            "description": scn.description,
            "size": scn.size_text(),
            "unit": scn.unit,
            "workload": scn.workload,
            "processes": scn.processes,
            "tasks": scn.tasks,
            "contenders": list(dict.fromkeys(c["contender"] for c in cases.values())),
            "notes": _notes(sid),
            "cases": cases,
        }
    machine["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    machine["source_fingerprint_at_end"] = source_fingerprint()
    machine["source_changed_during_run"] = (
        machine["source_fingerprint_at_end"] != machine["source_fingerprint"]
    )
    if machine["source_changed_during_run"]:
        _progress("WARNING: fastquartdb's source changed during the run; results mix versions")
    return {
        "generated": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench", *map(shlex.quote, argv)]),
        "quick": bool(args.quick),
        "repeats": repeats,
        "loop": args.loop,
        "sizes": asdict(QUICK if args.quick else FULL),
        "elapsed_s": time.monotonic() - began,
        "machine": machine,
        "targets": evaluate_targets(all_cases, skipped),
        "skipped": skipped,
        "scenarios": out_scenarios,
    }


def _cost_cases(s1: Scenario, runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """S6 from S1's runs: daemon RSS and CPU, and every contender's CPU per 10k requests."""
    cases: dict[str, Any] = {}
    for case in sorted(s1.cases, key=lambda c: (c.contender != "daemon", c.synchronous)):
        source = sorted(runs.get(case.key, []), key=lambda r: r["repeat"])
        if not source:
            continue
        cost_runs = []
        for run in source:
            if "error" in run:
                cost_runs.append({"repeat": run["repeat"], "error": run["error"]})
                continue
            daemon_cpu = run.get("daemon_cpu_s_per_10k")
            entry = {
                "repeat": run["repeat"],
                "requests": run["requests"],
                "client_cpu_s_per_10k": run["client_cpu_s_per_10k"],
                "daemon_cpu_s_per_10k": daemon_cpu,
                "total_cpu_s_per_10k": run["client_cpu_s_per_10k"] + (daemon_cpu or 0.0),
            }
            if "peak_rss_bytes" in run:
                entry["peak_rss_bytes"] = run["peak_rss_bytes"]
                entry["peak_rss_mib"] = run["peak_rss_bytes"] / MIB
            cost_runs.append(entry)
        key = f"S6:{case.contender}:{case.synchronous}"
        cases[key] = {
            "contender": case.contender,
            "label": case.label,
            "synchronous": case.synchronous,
            "runs": cost_runs,
            "summary": summarize(cost_runs, COST_METRICS),
        }
    return cases


def _notes(sid: str) -> list[str]:
    notes = {
        "S1": [
            "aiosqlite: one connection per process shared by its 16 tasks, autocommit, one "
            "statement per insert. SQLAlchemy: default pool, one `engine.begin()` per insert.",
            "Every contender waits up to 5 s (busy_timeout) for another process's write lock; "
            "errors are requests that failed anyway (they count in latency, not throughput).",
            "daemon + Litestream: `fqdb-server --replicate file://DIR` (Litestream as the daemon's "
            "child, the daemon at wal_autocheckpoint=0); not part of any target.",
        ],
        "S2": [
            "fastquartdb: `User.fetch(filters={'id': pk})` (rows as dicts); aiosqlite: "
            "`execute_fetchall` (tuples); sqlite3: the same query on the loop's thread, no hop."
        ],
        "S4": [
            "fastquartdb: `User.insert_many(rows)` from a list of dicts (default chunk_size 1000, "
            "one transaction); sqlite3: `executemany` of tuples between BEGIN IMMEDIATE and COMMIT."
        ],
        "S3": [
            "fastquartdb reads run on each worker's own read-only connections (a point read "
            "inline on the event loop); 'readers=0' sends every read to the daemon, as before "
            "issue 18."
        ],
        "S7": [
            "fastquartdb: `User.fetch(filters={'id': [('BETWEEN', (lo, lo + 99))]})` on a reader "
            "thread, rows as dicts; aiosqlite: `execute_fetchall` (tuples)."
        ],
        "S8": [
            "`hypercorn examples.quart_app:app -w 4 -k uvloop` (daemon: FQDB_MODE=daemon; embedded: "
            "FQDB_MODE=embedded) against `hypercorn bench.web_app:app` (the two routes on plain "
            "aiosqlite); `wrk -t2 -c64 --latency -s bench/wrk_mix.lua`. Latency is wrk's."
        ],
        "D1": [
            "A 3-node dqlite-demo cluster on loopback (tests/dqlite/cluster.py), started once for "
            "the invocation and stopped by pid at its end; every run on a fresh database name.",
            "direct: `init_engine(url)` in each process, one dqlite transaction per insert. "
            "via fqdb-server: `fqdb-server dqlite://... --socket S` started for the run and "
            "stopped by pid, the workers on `init_engine(url, socket=S, mode='daemon')`.",
        ],
        "S6": [
            "Daemon peak RSS is the kernel's VmHWM of the fresh daemon process of each S1 run "
            "(sampled RSS as a cross-check in latest.json). CPU is user + system seconds of all "
            "threads over the load window, per 10,000 requests."
        ],
    }
    return notes.get(sid, [])


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the exit code (1 when a run failed)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    # Tests set FQDB_WIRE_CHECK (an extra encode/decode per request); a benchmark must not.
    os.environ.pop("FQDB_WIRE_CHECK", None)
    os.environ.pop("FQDB_SOCKET", None)
    if args.replot:
        with open(os.path.join(args.out, "latest.json")) as fh:
            data = json.load(fh)
    else:
        data = run_all(args, argv)
    os.makedirs(args.out, exist_ok=True)
    charts: dict[str, str] = {}
    if not args.no_charts:
        if importlib.util.find_spec("matplotlib") is None:
            _progress("charts skipped: matplotlib is not installed (pip install -e '.[bench]')")
        else:
            charts = write_charts(data, args.out)
    if not args.replot:
        write_json(data, os.path.join(args.out, "latest.json"))
    write_markdown(data, os.path.join(args.out, "latest.md"), charts)
    print_tables(data)
    print(f"results: {os.path.join(args.out, 'latest.json')}, latest.md, {len(charts)} chart(s)")
    failed = sum(
        case["summary"].get("runs_failed", 0)
        for info in data["scenarios"].values()
        for case in info["cases"].values()
    )
    if failed:
        print(f"{failed} run(s) failed: see 'error' in latest.json", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
