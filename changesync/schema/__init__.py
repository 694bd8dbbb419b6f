"""Package data: ``events.json``, the JSON Schema of every SSE payload, served at ``GET /schema/events.json``.

Generated from ``changesync.payloads``: ``python -m changesync.schema`` writes it, ``--check`` verifies it.
"""
