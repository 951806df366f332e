"""Write the golden frames: every ``NAME.json`` here becomes ``NAME.bin``.

``NAME.json`` is one protocol message written as JSON, with one extension:
a msgpack ``bin`` value (bytes) is written ``{"$bytes": "<hex>"}``. Map keys
keep the order they have in the JSON file, and that order is the order on the
wire, so the ``.bin`` is exactly what ``fastquartdb.protocol.encode_frame``
produces for the message: the 4-byte big-endian body length, then the body.

Usage (from the repository root)::

    .venv/bin/python protocol/golden/generate.py          # (re)write every .bin
    .venv/bin/python protocol/golden/generate.py --check  # exit 1 if any .bin is stale

The unit tests (``tests/unit/test_codec.py``) check both directions, so a
changed codec or a hand-edited ``.json`` without a regenerated ``.bin`` fails
the build.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from fastquartdb.protocol import encode_frame

GOLDEN = Path(__file__).resolve().parent


def from_json(value: Any) -> Any:
    """The message a JSON document stands for: ``{"$bytes": hex}`` becomes ``bytes``."""
    if isinstance(value, dict):
        if list(value) == ["$bytes"]:
            return bytes.fromhex(value["$bytes"])
        return {key: from_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [from_json(item) for item in value]
    return value


def frame_for(json_path: Path) -> bytes:
    """The exact frame bytes for the message in ``json_path``."""
    message = from_json(json.loads(json_path.read_text(encoding="utf-8")))
    if not isinstance(message, dict):
        raise SystemExit(f"{json_path.name}: a message must be a JSON object")
    return encode_frame(message)


def main(argv: list[str] | None = None) -> int:
    """Write (or with ``--check`` verify) one ``.bin`` per ``.json``; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a .bin is missing or stale"
    )
    args = parser.parse_args(argv)
    stale: list[str] = []
    sources = sorted(GOLDEN.glob("*.json"))
    for json_path in sources:
        bin_path = json_path.with_suffix(".bin")
        frame = frame_for(json_path)
        if bin_path.exists() and bin_path.read_bytes() == frame:
            continue
        stale.append(bin_path.name)
        if not args.check:
            bin_path.write_bytes(frame)
    orphans = sorted(p.name for p in GOLDEN.glob("*.bin") if not p.with_suffix(".json").exists())
    if args.check:
        for name in stale:
            print(f"stale or missing: {name}", file=sys.stderr)
        for name in orphans:
            print(f"no .json for: {name}", file=sys.stderr)
        return 1 if stale or orphans else 0
    for name in orphans:
        print(f"warning: {name} has no .json source", file=sys.stderr)
    print(f"{len(sources)} golden frames, {len(stale)} written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
