"""Benchmarks behind `disttrain bench ...`."""
