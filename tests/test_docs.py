"""The documentation pages say only what exists: links, anchors, stages, make targets, rules,
benchmarks, reference sections, the licence and the citation file.

Commands in code blocks are dry-run by tests/test_docs_commands.py; this module holds the cheap
static checks.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest
import yaml

from ssmttm.cli import STAGES

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PAGE_IDS = [str(p.relative_to(REPO)) for p in PAGES]

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def _text(page: Path) -> str:
    return page.read_text(encoding="utf-8")


def _prose(text: str) -> str:
    """The page without fenced code blocks (links and headings inside code do not count)."""
    return FENCE.sub("", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    s = re.sub(r"`|\*\*|\[|\]\([^)]*\)", "", heading.strip()).lower()
    s = "".join(c for c in s if c in " -_" or unicodedata.category(c)[0] in "LN")
    return s.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found, seen = set(), {}
    for line in _prose(_text(page)).splitlines():
        m = re.match(r"#{1,6} (.+)", line)
        if m:
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    return found


def code_spans_and_lines(text: str) -> list[str]:
    """Inline code spans plus every line of fenced code blocks."""
    parts = re.findall(r"`([^`\n]+)`", _prose(text))
    for block in FENCE.findall(text):
        parts += block.splitlines()[1:-1]
    return parts


def makefile_targets() -> set[str]:
    return set(re.findall(r"^([A-Za-z][\w-]*):", (REPO / "Makefile").read_text(), re.M))


def defined_rules() -> set[str]:
    text = "\n".join(p.read_text() for p in (REPO / "rules").glob("*.smk")) + (REPO / "Snakefile").read_text()
    return set(re.findall(r"^rule (\w+):", text, re.M))


def test_the_pages_exist():
    names = {p.name for p in PAGES}
    for name in ("README.md", "user-guide.md", "reproduction.md", "ARCHITECTURE.md", "performance.md",
                 "results.md", "reference.md"):
        assert name in names, name


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_relative_links_and_anchors_resolve(page):
    for target in LINK.findall(_prose(_text(page))):
        if re.match(r"[a-z]+://|mailto:", target):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        assert dest.exists(), f"{page.name}: link to missing file {target}"
        if anchor and dest.suffix == ".md":
            assert anchor in anchors(dest), f"{page.name}: link to missing heading {target}"


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_no_internal_notes_file_and_no_issue_numbers(page):
    text = _text(page)
    assert "REFERENCE" not in text, f"{page.name} cites the internal REFERENCE notes; cite docs/reference.md"
    hit = re.search(r"\bissues?[ -]?#?\d+", text, re.I)
    assert hit is None, f"{page.name}: tracker wording {hit.group(0)!r}"


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_stages_make_targets_and_bench_scripts_exist(page):
    text = _text(page)
    for stage in re.findall(r"python -m ssmttm ([a-z][a-z0-9-]*)", text):
        assert stage in STAGES, f"{page.name}: no stage {stage!r} in ssmttm/cli.py"
    targets = makefile_targets()
    for snippet in code_spans_and_lines(text):
        m = re.match(r"\s*make ([A-Za-z][\w-]*)", snippet)
        if m:
            assert m.group(1) in targets, f"{page.name}: `make {m.group(1)}` is not a Makefile target"
    for script in re.findall(r"\bbench/[\w.]+\.py", text):
        assert (REPO / script).exists(), f"{page.name}: {script} does not exist"


def test_stage_table_names_real_rules_and_stages():
    guide = _text(REPO / "docs" / "user-guide.md")
    rules = defined_rules()
    table = [line for line in guide.splitlines() if line.startswith("| ") and "python -m ssmttm" in line]
    assert len(table) >= 20
    for line in table:
        cells = line.split(" | ")
        for rule in re.findall(r"`(\w+)`", cells[1]):
            assert rule in rules, rule
    named = re.findall(r"\(`(\w+)`\)", guide)
    assert named and set(named) <= rules


def test_every_benchmark_is_documented():
    perf = _text(REPO / "docs" / "performance.md")
    for script in sorted((REPO / "bench").glob("*.py")):
        if script.name.startswith("_"):  # helpers shared by the benches, not benches
            continue
        assert f"bench/{script.name}" in perf, script.name
    assert perf.count("<!-- bench-results:start -->") == 1 and perf.count("<!-- bench-results:end -->") == 1


def test_results_page_holds_one_block_and_one_explanation():
    results = _text(REPO / "docs" / "results.md")
    assert results.count("<!-- demo-results:start -->") == 1 and results.count("<!-- demo-results:end -->") == 1
    assert results.index("<!-- demo-results:start -->") < results.index("<!-- demo-results:end -->")
    # the † explanation appears once, however many tables the block holds
    assert len(re.findall(r"^- † ", results, re.M)) <= 1


def _reference_sections() -> set[int]:
    ref = _text(REPO / "docs" / "reference.md")
    return {int(n) for n in re.findall(r"^## (\d+)\. ", ref, re.M)}


def test_reference_sections_are_numbered_one_to_six():
    # Code comments and table footnotes cite these numbers; renumbering breaks them.
    assert _reference_sections() == {1, 2, 3, 4, 5, 6}


def test_every_reference_citation_points_to_a_section():
    """`docs/reference.md §N` / `section N` (or the older `REFERENCE.md section N`, same numbering)
    anywhere in the repository's text must name a section that exists."""
    sections = _reference_sections()
    cite = re.compile(r"(?:reference\.md|REFERENCE(?:\.md)?)[ ,]*(?:§|sections?)?\s*(\d+)(?:\s*(?:-|and|,)\s*(\d+))?",
                      re.I)
    files = [*PAGES]
    for folder, pattern in (("ssmttm", "*.py"), ("rules", "*.smk"), ("rules", "*.yaml"), ("tests", "*.py"),
                            ("bench", "*.py")):
        files += sorted((REPO / folder).rglob(pattern))
    files += [REPO / "config.yaml", *sorted((REPO / "config").glob("*.yaml"))]
    for f in files:
        for m in cite.finditer(f.read_text(encoding="utf-8")):
            for n in filter(None, m.groups()):
                assert int(n) in sections, f"{f.relative_to(REPO)}: {m.group(0)!r} cites a missing section"


def test_license_is_mit():
    text = _text(REPO / "LICENSE")
    assert text.startswith("MIT License")
    assert "Copyright (c) 2026 the ssmttm authors" in text
    assert "license = { text = \"MIT\" }" in (REPO / "pyproject.toml").read_text()


def test_citation_file_has_the_required_keys():
    """The required keys of the Citation File Format 1.2.0 schema, and the paper as preferred citation.

    (`cffconvert --validate -i CITATION.cff` checks the full schema; it is not a project dependency.)
    """
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text(encoding="utf-8"))
    assert cff["cff-version"] == "1.2.0"
    for key in ("message", "title", "authors"):
        assert cff.get(key), key
    assert cff["license"] == "MIT"
    assert all("name" in a or "family-names" in a for a in cff["authors"])
    pref = cff["preferred-citation"]
    for key in ("type", "title", "authors"):
        assert pref.get(key), key
    assert pref["title"] == "Training-Efficient Text-to-Music Generation with State-Space Modeling"
    assert [a["family-names"] for a in pref["authors"]] == ["Lee", "Hsieh", "Chen", "Tsai", "Yang"]
    assert pref["year"] == 2026
    assert "2601.14786" in pref["url"] and any("2601.14786" in i["value"] for i in pref["identifiers"])
