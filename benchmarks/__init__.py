"""Benchmarks: see issue \"Benchmarks\"."""
