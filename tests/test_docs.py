"""What a reader finds: a README front page that fits in 200 lines, links that lead
somewhere, and no references a reader cannot look up (issue numbers of this project's
tracker)."""

from __future__ import annotations

import re
import subprocess

from helpers import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "README.md"]
LINK = re.compile(r"\]\(([^)#\s]+)(#[^)\s]*)?\)")


def tracked_text_files() -> list[str]:
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [p for p in listed.splitlines() if p.endswith((".py", ".md", ".yaml", ".yml", ".ini", ".txt", ".json"))
            and not p.startswith("plots/") or p.endswith(".md")]


def test_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move detail to docs/"
    text = "\n".join(lines[:40])
    assert "dvc repro" in text and "pytest" in text, "the two commands come near the top"


def test_relative_links_lead_to_files():
    broken = []
    for doc in DOCS:
        for target, _ in LINK.findall(doc.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (doc.parent / target).exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target}")
    assert not broken, broken


def test_no_issue_numbers_anywhere():
    """The project's own tracker is not public: its issue numbers mean nothing to a reader.
    (Upstream references such as keras-team/keras#20585 are fine.)"""
    pattern = re.compile(r"\bissues? #?\d+\b|\(#\d+\)", re.IGNORECASE)
    found = [f"{path}: {m.group(0)}" for path in tracked_text_files()
             for m in pattern.finditer((ROOT / path).read_text(errors="replace"))]
    assert not found, found
