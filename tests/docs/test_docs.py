"""The README and docs/ stay true: generated tables current, links and anchors resolve, the first
screen says what a newcomer needs."""

from __future__ import annotations

import importlib.util
import re
import unicodedata
from pathlib import Path

import pytest

from changesync.metrics import Metrics
from changesync.resync import REASONS
from changesync.settings import DECLARATIONS

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
README = ROOT / "README.md"
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# README: what it is, the two commands, the picture, links; the reference lives in docs/.
README_MAX_LINES = 160
FIRST_SCREEN_LINES = 30


def generator():
    spec = importlib.util.spec_from_file_location("docs_generate", DOCS / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def anchors(path: Path) -> set[str]:
    """The anchors of a Markdown page's headings, as GitHub makes them."""
    found = set()
    in_code = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code or not line.startswith("#"):
            continue
        title = line.lstrip("#").strip().lower()
        slug = "".join(c for c in title if unicodedata.category(c)[0] in "LN" or c in " -_")
        found.add(slug.replace(" ", "-"))
    return found


class TestGenerated:
    def test_the_generated_tables_are_current(self):
        """Every generated block of docs/ equals what its declaration makes (run docs/generate.py)."""
        render = generator().render
        stale = [
            page.name for page in PAGES if render(page.read_text(encoding="utf-8")) != page.read_text(encoding="utf-8")
        ]
        assert stale == [], "out of date; run: python docs/generate.py"

    @pytest.mark.parametrize(
        ("page", "names"),
        [
            ("configuration.md", [f"`{key}`" for key in DECLARATIONS]),
            ("protocol.md", [f"`{reason}`" for reason in REASONS]),
            ("operations.md", [f"`{metric.name}`" for metric in Metrics().catalogue]),
        ],
    )
    def test_every_declared_name_is_documented(self, page, names):
        """Every setting, RESYNC reason and metric appears on its page."""
        text = (DOCS / page).read_text(encoding="utf-8")
        assert [name for name in names if name not in text] == []


class TestLinks:
    @pytest.mark.parametrize("page", [README, *PAGES], ids=lambda path: path.name)
    def test_local_links_and_anchors_resolve(self, page):
        """Every relative link points to an existing file, and every #anchor to a heading there."""
        broken = []
        for target in LINK.findall(page.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target):
                continue
            file_part, _, anchor = target.partition("#")
            destination = (page.parent / file_part).resolve() if file_part else page
            if not destination.exists() or (
                anchor and destination.suffix == ".md" and anchor not in anchors(destination)
            ):
                broken.append(target)
        assert broken == []

    def test_every_page_is_linked_from_the_readme(self):
        """A newcomer reaches every page of docs/ from the README."""
        readme = README.read_text(encoding="utf-8")
        assert [page.name for page in PAGES if f"(docs/{page.name})" not in readme] == []


class TestReadme:
    def test_it_stays_short(self):
        """The README is the first screen and the links; the reference lives in docs/."""
        assert len(README.read_text(encoding="utf-8").splitlines()) <= README_MAX_LINES

    def test_the_first_screen_has_the_two_commands_and_what_serve_needs(self):
        """The first screen holds the demo and test commands, and says serve needs auth or an explicit none."""
        first = "\n".join(README.read_text(encoding="utf-8").splitlines()[:FIRST_SCREEN_LINES])
        assert "changesync demo" in first and "&& pytest" in first
        assert "CHANGESYNC_AUTH_MODE=none" in first and "changesync serve" in first

    def test_it_says_why_not_motor(self):
        """The README says that Motor is deprecated and past its end of life."""
        text = README.read_text(encoding="utf-8")
        assert "Motor" in text and "deprecated" in text and "end of life" in text


def test_the_sample_events_are_shown_where_preview_is_described():
    """docs/examples/change-events.jsonl exists and docs/operations.md shows how to preview it."""
    assert (DOCS / "examples" / "change-events.jsonl").is_file()
    assert "changesync preview docs/examples/change-events.jsonl" in (DOCS / "operations.md").read_text(
        encoding="utf-8"
    )
