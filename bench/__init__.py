"""Benchmarks: scripts that print a table (`python -m bench`). Never imported by the tests."""
