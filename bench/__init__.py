"""Benchmarks run by hand (not tests): `python -m bench.run` (or `make bench`). See bench/README.md."""
