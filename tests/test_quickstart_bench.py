"""bench/quickstart.py (the quick start's times on fresh clones) on a throwaway repository whose Makefile
stands in for the real one, and the README block docs-results renders from its output."""

import subprocess
import sys

import pytest

from ssmttm.report import docs

MAKEFILE = """CORES ?= 1
setup:
\tmkdir -p .venv
\ttest -d .numba-seed && test "$$SSMTTM_NUMBA_SEED" = "$(CURDIR)/.numba-seed"
demo:
\tmkdir -p results/tables
\techo "{table}" > results/tables/variants.md
test:
\t@echo "5 passed, 1 skipped in 0.1s"
test-fast:
\t@echo "4 passed in 0.1s"
"""


def _repo(tmp_path, table="same on every core count"):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "Makefile").write_text(MAKEFILE.format(table=table), encoding="utf-8")
    for cmd in (["init", "-q"], ["add", "Makefile"],
                ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "fake project"]):
        subprocess.run(["git", "-C", str(repo), *cmd], check=True)
    return repo


@pytest.fixture
def bench(repo):
    def run(fake, tmp_path, *args):
        return subprocess.run([sys.executable, str(repo / "bench" / "quickstart.py"), "--repo", str(fake),
                               "--workdir", str(tmp_path / "work"), *args], capture_output=True, text=True)
    return run


def test_times_every_command_on_fresh_clones_and_checks_the_tables_across_cores(bench, tmp_path):
    fake = _repo(tmp_path)
    r = bench(fake, tmp_path, "--demo-cores", "1", "2", "--test-cores", "1")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0].startswith("machine: ") and lines[1].startswith("protocol: ") and "rounds=1" in lines[1]
    assert "byte-identical across CORES 1 2" in r.stdout and "5 passed" in r.stdout
    figures = dict(kv.split("=") for kv in lines[-1].split())
    assert set(figures) == {"cores", "test_cores", "make_demo_s", "make_demo_setup_s", "make_demo_cores2_s",
                            "make_demo_cores2_setup_s", "make_test_s", "make_test_setup_s", "make_test_fast_s"}
    assert figures["cores"] == "1" and figures["test_cores"] == "1"
    for name in ("demo-cores1", "demo-cores2", "test"):  # kept: --workdir
        assert (tmp_path / "work" / name / ".venv").is_dir()


def test_tables_that_differ_across_cores_fail_the_bench(bench, tmp_path):
    fake = _repo(tmp_path, table="$(CORES)")
    r = bench(fake, tmp_path, "--demo-cores", "1", "2", "--test-cores", "0")
    assert r.returncode != 0 and "variants.md" in r.stderr
    assert "make_demo_s=" not in r.stdout  # no figures from a failed check


def test_a_failing_command_ends_the_bench_with_its_log(bench, tmp_path):
    fake = _repo(tmp_path)
    (fake / "Makefile").write_text(MAKEFILE.format(table="t").replace('@echo "5 passed', '@exit 3 # "'),
                                   encoding="utf-8")
    subprocess.run(["git", "-C", str(fake), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "x"],
                   check=True)
    r = bench(fake, tmp_path, "--demo-cores", "--test-cores", "1")
    assert r.returncode != 0 and "make test CORES=1 failed" in r.stderr and "exit 2" in r.stderr


SAVED = """machine: Some CPU, 2 cores, Linux, python 3.11.7, torch 2.13.0+cpu, device cpu, 2026-12-07
protocol: one run per command, each from a fresh git clone ...; rounds=1
make demo CORES=2 (abc1234): 7 min 0 s (setup 2 min 0 s, then 5 min 0 s; DAG 4 min 50 s by Snakemake's log)
cores=2 test_cores=2 make_demo_s=420 make_demo_setup_s=120 make_demo_dag_s=290 make_demo_cores4_s=400 \
make_demo_cores4_setup_s=118 make_test_s=600 make_test_setup_s=119 make_test_fast_s=170
"""


def test_readme_block_states_each_time_its_setup_and_the_goal(tmp_path):
    (tmp_path / "quickstart.py").write_text("", encoding="utf-8")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "quickstart.txt").write_text(SAVED, encoding="utf-8")
    block = docs.quickstart_block(tmp_path / "results")
    assert "| `make demo` | 7 min 0 s | 2 min 0 s | ≤ 6 min |" in block
    assert "| `make test` | 10 min 0 s | 1 min 59 s | ≤ 8 min |" in block
    assert "ready) | 2 min 50 s | — | ≤ 3 min |" in block
    assert "on 2026-12-07 (Some CPU, 2 cores" in block and "`make demo` at CORES=2" in block
    assert "The demo's DAG alone took 4 min 50 s" in block and "`make demo CORES=4` took 6 min 40 s" in block
    # the ratios table leaves it out (it compares nothing)
    assert "quickstart" not in docs.readme_bench_block(tmp_path / "results")


def test_readme_says_when_it_was_never_measured(tmp_path):
    (tmp_path / "results").mkdir()
    assert "Not measured yet" in docs.quickstart_block(tmp_path / "results")
