"""Caretext benchmarks (issue #12): ``python bench/run.py``; see bench/README.md."""
