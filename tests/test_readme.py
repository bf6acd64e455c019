"""The README is a short front page: its quick start works, it stays small, it holds one generated
demo block and it leads into docs/. (Links, stages, make targets and commands of every page are
checked by tests/test_docs.py and tests/test_docs_commands.py.)"""

import re

README_MAX_BYTES = 15_000


def test_quick_start_commands_exist(repo):
    readme = (repo / "README.md").read_text()
    makefile = (repo / "Makefile").read_text()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert re.search(r"^make demo\b", quick, re.M) and re.search(r"^make test\b", quick, re.M)
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    assert "make test" in (repo / ".ci" / "run").read_text()


def test_readme_is_a_front_page(repo):
    size = len((repo / "README.md").read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes; move detail into docs/"


def test_one_generated_demo_block(repo):
    readme = (repo / "README.md").read_text()
    assert readme.count("<!-- demo-results:start -->") == 1
    assert readme.count("<!-- demo-results:end -->") == 1
    assert readme.index("<!-- demo-results:start -->") < readme.index("<!-- demo-results:end -->")
    assert "docs/results.md" in readme


def test_readme_leads_into_every_docs_page(repo):
    readme = (repo / "README.md").read_text()
    for page in sorted((repo / "docs").glob("*.md")):
        assert f"(docs/{page.name})" in readme, page.name
    assert "(LICENSE)" in readme and "(CITATION.cff)" in readme
