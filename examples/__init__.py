"""Example apps: the same user CRUD API on Quart, FastAPI and aiohttp, and ``make run``.

Run them from the repository root, where ``examples`` is importable, e.g.
``hypercorn examples.quart_app:app -w 4`` or ``python examples/run.py``.
"""
