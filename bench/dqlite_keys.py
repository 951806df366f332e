"""What request keys cost on a dqlite cluster: single-row insert throughput, keys on and off.

``python -m bench.dqlite_keys [--procs 4] [--seconds 5] [--rounds 2]`` starts a real
3-node ``dqlite-demo`` cluster on loopback (the tests' harness), then runs rounds of
``--procs`` writer processes, each inserting single rows one at a time for
``--seconds``, alternately with ``init_engine(url)`` and ``init_engine(url,
request_keys=False)``, each round on a fresh database. It prints writes/s per round
and the ratio of the medians, and writes them to ``bench/results/dqlite_keys.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


async def _writer(url: str, keys: bool, seconds: float, start_at: float) -> int:
    from fastquartdb import AsyncDatabaseManager, BaseModel, Column

    class Note(BaseModel):
        id = Column("INTEGER", primary_key=True)
        payload = Column("TEXT", nullable=False)

    await AsyncDatabaseManager.init_engine(url, request_keys=keys)
    try:
        await asyncio.sleep(max(0.0, start_at - time.time()))
        end = time.monotonic() + seconds
        done = 0
        while time.monotonic() < end:
            await Note.insert({"payload": f"p{done}"})
            done += 1
        return done
    finally:
        await AsyncDatabaseManager.close()


def _round(url: str, keys: bool, procs: int, seconds: float) -> float:
    start_at = time.time() + 1.5  # every process connected before the clock starts
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.dqlite_keys",
                "--child",
                url,
                str(int(keys)),
                str(seconds),
                str(start_at),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(procs)
    ]
    total = 0
    for child in children:
        out, _ = child.communicate(timeout=seconds + 60)
        if child.returncode != 0:
            raise SystemExit(f"a writer failed (exit {child.returncode})")
        total += int(out.split()[-1])
    return total / seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        url, keys, seconds, start_at = args.child
        print(asyncio.run(_writer(url, keys == "1", float(seconds), float(start_at))))
        return 0

    sys.path.insert(0, str(ROOT))
    from tests.dqlite.cluster import Cluster

    figures: dict[str, list[float]] = {"keys": [], "no keys": []}
    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(Path(tmp)).start()
        try:
            for n in range(args.rounds):
                for name, keys in (("keys", True), ("no keys", False)):
                    rate = _round(cluster.url(f"b{n}{int(keys)}"), keys, args.procs, args.seconds)
                    figures[name].append(rate)
                    print(f"round {n + 1} {name:8} {rate:8.0f} writes/s", flush=True)
        finally:
            cluster.stop()
    keyed, plain = (statistics.median(figures[k]) for k in ("keys", "no keys"))
    print(
        f"{args.procs} processes x single-row inserts, 3-node dqlite: keys {keyed:.0f}/s, "
        f"no keys {plain:.0f}/s (medians of {args.rounds}); keys/no keys = {keyed / plain:.2f}"
    )
    out = ROOT / "bench" / "results" / "dqlite_keys.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"procs": args.procs, "seconds": args.seconds, **figures}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
