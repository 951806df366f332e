"""End-to-end tests: the example apps under real multi-worker servers and ``make run``."""
