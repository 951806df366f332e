"""FastQuartDB benchmarks: the daemon against what users would pick instead.

Run ``python -m bench`` (see ``bench/README.md``). Benchmarks are not tests:
they print a table and write ``bench/results/``; the test suite only checks
that the quick run works, never what it measured.
"""
