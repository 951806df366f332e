"""The long protocol-fuzzing soak behind ``make fuzz``.

Usage::

    .venv/bin/python -m tests.faults.fuzz_soak --minutes 30

Runs the generators of ``tests/faults/test_fuzz.py`` round after round, each
round with fresh random examples plus the deterministic op x field x type
sweep, against one real ``fqdb-server`` on a temporary file, until the time
is up. As in the tests, every case is followed by a health check (a
well-behaved client inserts a row and counts). Every ``--report`` seconds it
prints the case counts and the daemon's descriptors and RSS, and checks them
against the bounds of the tests. At the end: ``stats``, descriptors and RSS
against the baseline, ``PRAGMA integrity_check``, and the exceptions the
daemon logged.

Exit status: 0 if everything held, 1 on the first failing case (hypothesis
shrinks it and the smallest example is printed) or a bound exceeded.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.strategies import SearchStrategy

from tests.faults.test_fuzz import (
    FD_SLACK,
    RSS_BOUND_MIB,
    SOAK_CASES,
    FuzzDaemon,
    _proc_fds,
    _proc_rss_kib,
    run_sweep,
)
from tests.helpers import integrity


class Soak:
    """One soak run: the daemon, the clock and the counters."""

    def __init__(self, env: FuzzDaemon, seconds: float, examples: int, report: float) -> None:
        self.env = env
        self.deadline = time.monotonic() + seconds
        self.started = time.monotonic()
        self.examples = examples
        self.report_every = report
        self.next_report = time.monotonic() + report
        self.counts: Counter[str] = Counter()
        self.rounds = 0
        self.rss_max = env.rss_before

    def time_left(self) -> bool:
        return time.monotonic() < self.deadline

    def generator(
        self, name: str, strategy: SearchStrategy[Any], runner: Callable[[FuzzDaemon, Any], None]
    ) -> None:
        """Run one generator for up to ``examples`` new examples (fewer when time is up)."""

        @settings(
            max_examples=self.examples,
            deadline=None,
            database=None,
            phases=[Phase.generate, Phase.shrink],
            suppress_health_check=list(HealthCheck),
        )
        @given(strategy)
        def run(example: Any) -> None:
            if not self.time_left():
                return
            runner(self.env, example)
            self.counts[name] += 1

        run()

    def check_bounds(self) -> tuple[int, int]:
        """Descriptors back near the baseline, RSS within the bound; returns both."""
        env = self.env
        assert env.alive(), "the daemon died:\n" + "\n".join(list(env.log)[-30:])
        deadline = time.monotonic() + 10
        while (fds := _proc_fds(env.pid)) > env.fds_before + FD_SLACK:
            assert time.monotonic() < deadline, f"descriptors: {env.fds_before} -> {fds}"
            time.sleep(0.05)
        rss = _proc_rss_kib(env.pid)
        self.rss_max = max(self.rss_max, rss)
        assert rss - env.rss_before < RSS_BOUND_MIB * 1024, (
            f"RSS grew from {env.rss_before} KiB to {rss} KiB"
        )
        return fds, rss

    def report(self, force: bool = False) -> None:
        if not force and time.monotonic() < self.next_report:
            return
        self.next_report = time.monotonic() + self.report_every
        fds, rss = self.check_bounds()
        stats = self.env.health.stats()
        elapsed = time.monotonic() - self.started
        per_kind = " ".join(f"{name}={count}" for name, count in sorted(self.counts.items()))
        print(
            f"[{elapsed:7.0f}s] round {self.rounds}: {self.env.cases} connections, "
            f"{self.env.health.checks} health checks, daemon requests {stats['requests']}, "
            f"protocol errors {stats['protocol_errors']}, fds {fds}, RSS {rss} KiB | {per_kind}",
            flush=True,
        )

    def run(self) -> None:
        while self.time_left():
            self.rounds += 1
            for name, strategy, runner in SOAK_CASES:
                if not self.time_left():
                    break
                self.generator(name, strategy, runner)
                self.report()
            if self.time_left():
                self.counts["sweep requests"] += run_sweep(self.env)
                self.report()
            # The cases insert rows into 'fuzz' and fetch it whole: empty it every round so
            # that reply sizes, hence the daemon's peak memory, do not grow with the run.
            self.env.health.request({"op": "delete", "table": "fuzz", "all_rows": True})


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.faults.fuzz_soak",
        description="Fuzz a real fqdb-server for a long time, with health checks.",
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="how long (default 10)")
    parser.add_argument(
        "--examples", type=int, default=300, help="examples per generator per round (default 300)"
    )
    parser.add_argument(
        "--report", type=float, default=30.0, help="seconds between progress lines (default 30)"
    )
    parser.add_argument("--json", type=Path, help="also write the final figures to this file")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="fqdb-fuzz-soak-") as tmp:
        env = FuzzDaemon(Path(tmp))
        print(
            f"fuzzing fqdb-server pid {env.pid} on {env.db} for {args.minutes:g} min "
            f"(fds {env.fds_before}, RSS {env.rss_before} KiB at the start)",
            flush=True,
        )
        soak = Soak(env, args.minutes * 60, args.examples, args.report)
        failed = False
        figures: dict[str, Any] = {}
        try:
            soak.run()
            soak.report(force=True)
            fds, rss = soak.check_bounds()
            stats = env.health.stats()
            assert stats["clients"] == 1, stats
            assert integrity(env.db) == "ok"
            env.health.check()
            figures = {
                "minutes": args.minutes,
                "connections": env.cases,
                "health_checks": env.health.checks,
                "cases": dict(soak.counts),
                "closed_by_daemon": env.closed_by_daemon,
                "reply_timeouts": env.timeouts,
                "daemon_requests": stats["requests"],
                "daemon_errors": stats["errors"],
                "protocol_errors": stats["protocol_errors"],
                "fds_before": env.fds_before,
                "fds_after": fds,
                "rss_before_kib": env.rss_before,
                "rss_after_kib": rss,
                "rss_max_kib": soak.rss_max,
                "integrity_check": "ok",
                "daemon_tracebacks": dict(env.tracebacks),
            }
        except Exception:
            failed = True
            traceback.print_exc()
            print("last daemon log lines:\n" + "\n".join(list(env.log)[-30:]), file=sys.stderr)
        finally:
            code = env.stop()
        if code != 0:
            print(f"the daemon exited with {code} on SIGTERM", file=sys.stderr)
            failed = True
        if figures:
            figures["daemon_exit"] = code
            print(json.dumps(figures, indent=2))
            if args.json is not None:
                args.json.write_text(json.dumps(figures, indent=2) + "\n")
        print("FAILED" if failed else "OK", flush=True)
        return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
