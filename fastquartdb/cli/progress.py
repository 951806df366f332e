"""A one-line progress bar on stderr for ``fqdb insert`` of large files.

Drawn only when stderr is a terminal and the file is at least
:data:`MIN_BYTES` long, so pipes, logs and small files never see control
characters. Redrawn at most ten times a second; the line is finished with a
newline when the import ends, whether it succeeded or not.
"""

from __future__ import annotations

import time
from typing import TextIO

__all__ = ["MIN_BYTES", "ProgressBar"]

#: Files smaller than this load too fast for a bar to help.
MIN_BYTES = 1 << 20

_WIDTH = 30
_INTERVAL = 0.1


class ProgressBar:
    """Progress of ``total`` units (bytes, or items of a JSON array) on ``stream``."""

    def __init__(self, stream: TextIO, total: int, *, label: str, enabled: bool) -> None:
        self.stream = stream
        self.total = max(total, 1)
        self.label = label
        self.enabled = enabled
        self._last_draw = 0.0
        self._drawn = False

    @classmethod
    def for_file(cls, stream: TextIO, size: int | None, *, label: str) -> ProgressBar:
        """A bar for a file of ``size`` bytes (None: not a regular file), shown if it helps."""
        enabled = size is not None and size >= MIN_BYTES and _isatty(stream)
        return cls(stream, size or 0, label=label, enabled=enabled)

    def update(self, done: int, rows: int, *, force: bool = False) -> None:
        """Show ``done`` of ``total`` units and the rows written so far."""
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last_draw < _INTERVAL:
            return
        self._last_draw = now
        fraction = min(max(done / self.total, 0.0), 1.0)
        filled = int(fraction * _WIDTH)
        bar = "#" * filled + "-" * (_WIDTH - filled)
        self.stream.write(f"\r{self.label} [{bar}] {fraction * 100:5.1f}%  {rows:,} rows")
        self.stream.flush()
        self._drawn = True

    def finish(self, done: int, rows: int) -> None:
        """Draw the final state (after a successful import)."""
        if self.enabled:
            self.update(done, rows, force=True)

    def close(self) -> None:
        """End the bar's line so that what follows (a summary, an error) starts clean."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
