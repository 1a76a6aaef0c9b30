"""Fuzz targets for memd: the RESP parser and command dispatch (driven by benchmarks/fuzz.py)."""
