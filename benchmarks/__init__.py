"""Benchmarks for changesync: ``python -m benchmarks.pipeline | fanout | idle | hub`` (see benchmarks/README.md).

Each prints a table and writes ``benchmarks/results/<name>.json``; ``--smoke`` runs a few seconds to
check that the benchmark works, never its figures.
"""
