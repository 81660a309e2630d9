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


def test_every_relative_link_of_the_docs_resolves():
    """Links and images in every page (README, CHANGELOG, docs/, experiments' and benchmarks' READMEs)
    point at files that exist, relative to the page that holds them."""
    pages = [ROOT / "README.md", ROOT / "CHANGELOG.md", *ROOT.glob("docs/**/*.md"),
             *ROOT.glob("experiments/**/README.md"), *ROOT.glob("benchmarks/**/*.md")]
    assert len(pages) > 15
    broken, checked = [], 0
    for page in pages:
        text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)  # code is not a link
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            path = target.split("#", 1)[0]
            if not path or re.match(r"[a-z]+:", path):  # an anchor in the page, or a URL
                continue
            checked += 1
            if not (page.parent / path).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert checked > 100
    assert not broken, "\n".join(broken)


def test_cli_and_api_references_are_generated_from_the_code(tmp_path):
    """docs/reference/ says what the code says: a changed option or signature without its page fails."""
    check = subprocess.run([sys.executable, str(ROOT / "docs" / "make_reference.py"), "--check"],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import make_reference
    finally:
        sys.path.remove(str(ROOT / "docs"))
    cli = make_reference.cli_page()
    assert "## georet doctor" in cli and "--repair" in cli and "--max-pending" in cli
    assert "### `georet.search.GeoIndex`" in make_reference.api_page()
