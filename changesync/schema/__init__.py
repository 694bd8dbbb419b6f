"""Package data: ``events.json``, the JSON Schema of every SSE payload, served at ``GET /schema/events.json``.

Generated from ``changesync.payloads`` by ``python -m changesync.schema`` (``--check`` verifies it).
"""

from pathlib import Path

SCHEMA_PATH = Path(__file__).parent / "events.json"
