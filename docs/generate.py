"""Fill the generated blocks of the docs from the code that declares them.

    python docs/generate.py            # rewrite the blocks in place
    python docs/generate.py --check    # exit 1 when a block is out of date

A block is the text between ``<!-- generated: NAME -->`` and ``<!-- end -->`` in a page of ``docs/``.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

from changesync.metrics import Metrics
from changesync.resync import reference_table as resync_table
from changesync.routes import route_keys_table
from changesync.settings import reference_table as settings_table

DOCS = Path(__file__).resolve().parent
BLOCK = re.compile(r"(<!-- generated: (?P<name>[a-z ]+) -->\n)(?P<body>.*?)(<!-- end -->)", re.DOTALL)


def metrics_table() -> str:
    """Every metric the service exports, from its registry."""
    lines = ["| metric | type | labels | what it counts |", "| --- | --- | --- | --- |"]
    for metric in Metrics().catalogue:
        labels = ", ".join(f"`{label}`" for label in metric.labels)
        lines.append(f"| `{metric.name}` | {metric.kind} | {labels} | {metric.help} |")
    return "\n".join(lines)


GENERATORS: dict[str, Callable[[], str]] = {
    "settings": settings_table,
    "route keys": route_keys_table,
    "resync reasons": resync_table,
    "metrics": metrics_table,
}


def render(text: str) -> str:
    """``text`` with every generated block filled in afresh."""

    def fill(match: re.Match[str]) -> str:
        return match.group(1) + GENERATORS[match.group("name")]() + "\n" + match.group(4)

    return BLOCK.sub(fill, text)


def pages() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


def main(argv: list[str]) -> int:
    stale = []
    for page in pages():
        text = page.read_text(encoding="utf-8")
        fresh = render(text)
        if fresh != text:
            stale.append(page.name)
            if "--check" not in argv:
                page.write_text(fresh, encoding="utf-8")
    if stale and "--check" in argv:
        print("out of date: " + ", ".join(stale) + " (run: python docs/generate.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
