"""The docs are made from what was measured, and the front door stays a front door."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_benchmarks_page_is_generated_from_the_results(tmp_path):
    check = [sys.executable, str(ROOT / "benchmarks" / "report.py"), "--check"]
    assert subprocess.run(check, capture_output=True, text=True).returncode == 0
    # a page that differs from the results makes the check fail (an edited copy: the repository is not touched)
    page = tmp_path / "benchmarks.md"
    page.write_text((ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8").replace(
        "| figure | value |", "| figure | value (edited) |", 1), encoding="utf-8")
    stale = subprocess.run([*check, "--page", str(page)], capture_output=True, text=True)
    assert stale.returncode == 1 and "benchmarks.md is stale" in stale.stderr


def test_readme_is_a_front_door_whose_links_resolve():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 300
    for stale in ("this session", "this release", "last release", "old protocol"):
        assert stale not in readme.lower()
    targets = re.findall(r"\]\(((?:docs|experiments)/[^)#]+|CHANGELOG\.md)(?:#[^)]*)?\)", readme)
    assert len(targets) > 10
    assert not [t for t in targets if not (ROOT / t).exists()]


def test_code_cites_only_docs_that_live_in_the_repository():
    cited = {m for p in (ROOT / "georet").rglob("*.py")
             for m in re.findall(r"docs/[\w/.-]+\.md", p.read_text(encoding="utf-8"))}
    assert "docs/methods.md" in cited
    assert not [c for c in cited if not (ROOT / c).is_file()]
    bare = [p.name for p in (ROOT / "georet").rglob("*.py")
            if re.search(r"(?<!docs/)methods\.md", p.read_text(encoding="utf-8"))]
    assert not bare, f"cite docs/methods.md, not a methods.md outside the repository: {bare}"
