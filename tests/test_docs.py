"""The docs point at files that exist: every image a page shows, every local link."""

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_every_image_and_local_link_in_docs_exists():
    missing = []
    for page in sorted(DOCS.glob("*.md")):
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
            if "://" in target or target.startswith("#"):
                continue
            if not (page.parent / target.split("#")[0]).exists():
                missing.append(f"{page.name}: {target}")
    assert not missing, missing


def test_the_handout_has_no_unfilled_figure_slot():
    assert "FIGURE SLOT" not in (DOCS / "handout.md").read_text(encoding="utf-8")
