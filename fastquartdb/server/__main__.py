"""``python -m fastquartdb.server``: the same as ``fqdb-server``."""

from .cli import run

run()
