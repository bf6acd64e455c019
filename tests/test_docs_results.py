"""The generated blocks of README.md and docs/: rendering, and staleness of the committed text."""

from __future__ import annotations

import datetime as dt
import json
import math

import pytest

from ssmttm.report import docs

VARIANTS_MD = """# Variant comparison (tiny, 200 steps, 3 seeds)

| System | Experiment | Variant | FD (log-mel) ↓ | tempo acc. ↑ | key acc. ↑ | drums acc. ↑ | Seeds |
|---|---|---|---:|---:|---:|---:|---:|
| ground truth | ground_truth |  | 161 | 1.00 | 0.750 | 1.00 | 1 |
| generated | simba_k1 | prefix-simba | 443 ± 1 | 0.417 ± 0.289 | 0 ± 0 | 0 ± 0 | 3 |
| published | musicgen_small | musicgen-small |  |  |  |  |  |

Footnote.
"""

LOG = """Building DAG of jobs...
Provided cores: 2
Rules claiming more threads will be scaled down.
[Sun Dec  6 22:33:48 2026]
rule demo_mirror:
1 of 3 steps (33%) done
[Sun Dec  6 22:41:50 2026]
3 of 3 steps (100%) done
"""


# What the val_loss rule writes (ssmttm.report.valloss.final_summary) for two experiments x 3 seeds with known
# values: simba 5.0/5.1/5.2 (mean 5.1, sd 0.1), transformer 5.3/5.5/5.7 (mean 5.5, sd 0.2).
T2 = 4.302652729749464  # t(0.975, 2)
H_A, H_B = T2 * 0.1 / math.sqrt(3), T2 * 0.2 / math.sqrt(3)  # 0.2484, 0.4968
H_D = 0.4155  # Welch: t(0.975, 50/17) x sqrt(0.01/3 + 0.04/3), rounded
VAL_LOSS = {
    "level": 0.95, "statistic": "mean ± 95 % Student t-interval over seeds", "difference": "Welch",
    "studies": {
        "curves": {
            "title": "Prefix SiMBA vs Cross Transformer", "step": 200,
            "experiments": [
                {"experiment": "simba_k1", "variant": "prefix-simba", "step": 200, "n_seeds": 3, "seeds": [0, 1, 2],
                 "mean": 5.1, "sd": 0.1, "half_width": H_A, "ci_low": 5.1 - H_A, "ci_high": 5.1 + H_A,
                 "flops_6nd": 6.8e10},
                {"experiment": "transformer_k1", "variant": "cross-transformer", "step": 200, "n_seeds": 3,
                 "seeds": [0, 1, 2], "mean": 5.5, "sd": 0.2, "half_width": H_B, "ci_low": 5.5 - H_B,
                 "ci_high": 5.5 + H_B, "flops_6nd": 6.96e10},
            ],
            "differences": [{"a": "simba_k1", "b": "transformer_k1", "diff": -0.4, "ci_low": -0.4 - H_D,
                             "ci_high": -0.4 + H_D, "df": 50 / 17}],
        },
        "stages": {
            "title": "Two-stage vs single-stage", "step": 200,
            "experiments": [
                {"experiment": "simba_k4", "variant": "prefix-simba", "step": 200, "n_seeds": 1, "seeds": [0],
                 "mean": 6.3227, "sd": None, "half_width": None, "ci_low": None, "ci_high": None, "flops_6nd": None},
            ],
            "differences": [],
        },
    },
}
CURVES_LINE = ("- Validation loss at step 200 (held-out cross-entropy, no label smoothing): prefix-simba (simba_k1) "
               "5.10 ± 0.25 vs cross-transformer (transformer_k1) 5.50 ± 0.50 (mean ± 95 % t-interval over 3 seeds); "
               "difference −0.40, 95 % Welch CI [−0.82, 0.02], includes 0. "
               "Figure: `results/plots/val_loss/curves.png`.")


def _tables(tmp_path, variants=VARIANTS_MD, val_loss=VAL_LOSS):
    (tmp_path / "variants.md").write_text(variants, encoding="utf-8")
    if val_loss is not None:
        (tmp_path / docs.VAL_LOSS_FILE).write_text(json.dumps(val_loss), encoding="utf-8")
    return tmp_path


def test_summary_keeps_the_named_columns_in_order(tmp_path):
    block = docs.readme_block(_tables(tmp_path), None)
    lines = docs.table_lines(block)
    assert lines[0] == "| " + " | ".join(docs.SUMMARY_COLUMNS) + " |"
    assert lines[1] == "|---|---|---:|---:|---:|---:|"
    assert lines[3] == "| simba_k1 | prefix-simba | 443 ± 1 | 0.417 ± 0.289 | 0 ± 0 | 0 ± 0 |"
    assert len(lines) == 5  # the published row has none of these metrics; then the validation-loss line


def test_readme_states_the_ssm_vs_transformer_validation_loss_with_its_intervals(tmp_path):
    """The README line: each system's mean ± 95 % t half width, the difference and its Welch interval, from
    the summary the pipeline wrote; it is a bullet line, so the staleness tests compare it."""
    lines = docs.table_lines(docs.readme_block(_tables(tmp_path), None))
    assert lines[-1] == CURVES_LINE
    # the other sign reads the same way, and an interval that excludes 0 says so
    flipped = json.loads(json.dumps(VAL_LOSS))
    d = flipped["studies"]["curves"]["differences"][0]
    d.update(diff=0.4, ci_low=0.1, ci_high=0.7)
    line = docs.table_lines(docs.readme_block(_tables(tmp_path, val_loss=flipped), None))[-1]
    assert "difference 0.40, 95 % Welch CI [0.10, 0.70], excludes 0." in line


def test_readme_needs_the_validation_loss_summary(tmp_path):
    with pytest.raises(docs.DocsError, match="val_loss.json: missing"):
        docs.readme_block(_tables(tmp_path, val_loss=None), None)
    empty = {"studies": {"curves": {"title": "", "step": None, "experiments": [], "differences": []}}}
    with pytest.raises(docs.DocsError, match="no validation loss for study 'curves'"):
        docs.readme_block(_tables(tmp_path, val_loss=empty), None)


def test_results_page_lists_every_studys_validation_loss():
    section = docs.val_loss_section(VAL_LOSS)
    lines = docs.table_lines(section)
    assert lines[0] == "#### Validation loss over seeds (mean ± 95 % t-interval)"
    assert lines[3] == "| curves | simba_k1 | prefix-simba | 200 | 6.80e+10 | 3 | 5.10 ± 0.25 | [4.85, 5.35] |"
    assert lines[4] == (
        "| curves | transformer_k1 | cross-transformer | 200 | 6.96e+10 | 3 | 5.50 ± 0.50 | [5.00, 6.00] |")
    assert lines[5] == "| stages | simba_k4 | prefix-simba | 200 |  | 1 | 6.32 (1 seed, no interval) |  |"
    assert lines[6] == "- curves, simba_k1 − transformer_k1: −0.40, 95 % Welch CI [−0.82, 0.02], includes 0."
    assert "t(0.975, n − 1)·sd/√n" in lines[7] and "Welch" in lines[7]


def test_results_block_ends_with_the_validation_loss(tmp_path):
    block = docs.results_block(_tables(tmp_path), None, ("variants",))
    assert block.index("#### Variant comparison") < block.index("#### Validation loss over seeds")
    assert docs.table_lines(block)[-2] == (
        "- curves, simba_k1 − transformer_k1: −0.40, 95 % Welch CI [−0.82, 0.02], includes 0.")


def test_demo_blocks_end_with_the_listening_tests_mos_tables(tmp_path):
    """results/listening/<test>/results/{mos,pairwise}.md beside results/tables: the README gets the MOS table
    and its first note, docs/results.md both tables with their notes; no listening results, no section."""
    (tmp_path / "tables").mkdir()
    tables = _tables(tmp_path / "tables")
    assert "Listening test" not in docs.readme_block(tables, None)
    out = tmp_path / "listening" / "demo" / "results"
    out.mkdir(parents=True)
    (out / "mos.md").write_text("# Listening test demo: mean opinion scores\n\n| System | OVL (95 % CI) |\n|---|---|\n"
                                "| a | 3.00 [2.50, 3.50] |\n\n- Scripted raters.\n- 5 raters kept.\n", encoding="utf-8")
    (out / "pairwise.md").write_text("# Listening test demo: pairwise differences\n\n| Question | A |\n|---|---|\n"
                                     "| OVL | a |\n", encoding="utf-8")
    readme = docs.readme_block(tables, None)
    assert readme.endswith("| System | OVL (95 % CI) |\n|---|---|\n| a | 3.00 [2.50, 3.50] |\n\n- Scripted raters.")
    assert "Listening test `demo`" in readme and "5 raters kept" not in readme
    results = docs.results_block(tables, None, ("variants",))
    assert results.index("#### Validation loss over seeds") < results.index("# Listening test demo: mean opinion")
    assert results.endswith("| OVL | a |") and "- 5 raters kept." in results


def test_number_format_follows_the_interval():
    assert docs.mean_ci({"mean": 5.123456, "half_width": 0.0312, "n_seeds": 3}) == "5.123 ± 0.031"
    assert docs.mean_ci({"mean": 5.1, "half_width": 1.3, "n_seeds": 3}) == "5.10 ± 1.30"
    assert docs.difference({"diff": -0.0004, "ci_low": -0.0010, "ci_high": 0.0002}) == (
        "−0.0004, 95 % Welch CI [−0.0010, 0.0002], includes 0")


def test_a_missing_column_is_named(tmp_path):
    _tables(tmp_path, variants=VARIANTS_MD.replace("drums acc. ↑", "drums ↑"))
    with pytest.raises(docs.DocsError, match="drums acc"):
        docs.readme_block(tmp_path, None)


def test_run_summary_from_the_newest_complete_log(tmp_path):
    (tmp_path / "2026-12-06T223347.1.snakemake.log").write_text(LOG, encoding="utf-8")
    (tmp_path / "2026-12-07T090000.1.snakemake.log").write_text("Building DAG of jobs...\nNothing to be done.\n")
    run = docs.last_complete_run(tmp_path)
    assert run == docs.RunSummary(dt.datetime(2026, 12, 6, 22, 33, 48), 482.0, 2, 3)
    assert run.sentence() == "Generated by `make demo` on 2026-12-06 (2 CPU cores, 3 jobs in 8 min 2 s, from Snakemake's log)."
    assert docs.last_complete_run(tmp_path / "none") is None


def test_demo_block_records_the_cpu_numerics_and_masks_only_numbers():
    """The block names the CPU numerics it was made with (read back exactly), and the cross-CPU
    comparison masks numbers and sha256 prefixes but keeps names with digits, rows and columns."""
    sentence = docs.when_sentence(None, "Some CPU; avx2+fma; torch 2.13.0+cpu, ATen CPU capability AVX2")
    assert docs.block_numerics(f"intro\n{sentence}\n| a | b |") == (
        "Some CPU; avx2+fma; torch 2.13.0+cpu, ATen CPU capability AVX2")
    assert docs.block_numerics("Generated by `make demo` on 2026-12-06.") is None
    rows = ["| simba_k4† | prefix-simba (κ 4) | 505 ± 8† | 0.0067 | -0.0333 | 1.85e+11 |",
            "- KL (PaSST): checkpoint passt_tiny.pt (sha256 279d6bbdcb1d), 32000.0 Hz"]
    assert docs.numbers_masked(rows) == ["| simba_k4† | prefix-simba (κ #) | # ± #† | # | # | # |",
                                         "- KL (PaSST): checkpoint passt_tiny.pt (sha256 #), # Hz"]
    other = ["| simba_k4† | prefix-simba (κ 4) | 499 ± 3† | 0.0071 | -0.0312 | 1.85e+11 |", rows[1]]
    assert docs.numbers_masked(other) == docs.numbers_masked(rows)
    assert docs.numbers_masked(["- a − b: −0.0004, 95 % Welch CI [−0.0010, 0.0002], includes 0"]) == (
        docs.numbers_masked(["- a − b: 0.0031, 95 % Welch CI [0.0010, 0.0052], excludes 0"]))
    renamed = ["| simba_k1† | prefix-simba (κ 4) | 505 ± 8† | 0.0067 | -0.0333 | 1.85e+11 |", rows[1]]
    assert docs.numbers_masked(renamed) != docs.numbers_masked(rows)


def test_replace_block_needs_one_marker_pair():
    text = "a\n<!-- x:start -->\nold\n<!-- x:end -->\nb\n"
    assert docs.replace_block(text, "x", "new") == "a\n<!-- x:start -->\n\nnew\n\n<!-- x:end -->\nb\n"
    with pytest.raises(docs.DocsError, match="where.md"):
        docs.replace_block("no markers", "x", "new", "where.md")
    with pytest.raises(docs.DocsError):
        docs.replace_block(text + text, "x", "new")


@pytest.mark.parametrize("page", ["docs/performance.md", "README.md"])
def test_committed_bench_block_matches_the_saved_outputs(repo, page):
    """docs/performance.md and README.md show exactly what bench/results/*.txt hold (run
    `.venv/bin/python -m ssmttm docs-results --tables-dir none`, or `make docs-results` after the demo)."""
    path = repo / page
    new = docs.render(repo, None, repo / ".snakemake" / "log")[path]
    assert docs.extract_block(path.read_text(encoding="utf-8"), docs.BENCH) == docs.extract_block(new, docs.BENCH), (
        f"{page} is stale against bench/results/: run `make docs-results`")


def test_every_saved_bench_output_follows_the_protocol(repo):
    """First line the machine, second the protocol, last key=value figures (bench/_protocol.py)."""
    outputs = docs.read_bench_outputs(repo / "bench" / "results")
    for b in outputs:
        assert b.machine.startswith("machine: ") and b.lines[1].startswith("protocol: ")
        assert all("=" in kv for kv in b.figures)
        assert (repo / "bench" / f"{b.script}.py").exists()


BENCH_OUT = """machine: Some CPU, 2 cores, Linux, python 3.11.7, torch 2.13.0+cpu, device cpu, 2026-12-07
protocol: threads=2 (torch.set_num_threads); 1 warm-up call(s) per side, then 5 rounds ...
  round 1 ssm: 1.000 s
  round 1 transformer: 2.000 s
ssm / transformer (per round): 0.500 [0.450–0.550] over 5 rounds
ratio=0.500 rounds=5
"""


def _bench_dir(tmp_path, text=BENCH_OUT, name="speed"):
    (tmp_path / "bench" / "results").mkdir(parents=True, exist_ok=True)
    (tmp_path / "bench" / f"{name}.py").write_text("", encoding="utf-8")
    (tmp_path / "bench" / "results" / f"{name}.txt").write_text(text, encoding="utf-8")
    return tmp_path / "bench" / "results"


def test_a_second_machine_keeps_its_own_row_and_section(tmp_path):
    """`<bench>@<machine>.txt`: the same bench's output from another CPU, shown beside the first."""
    _bench_dir(tmp_path, BENCH_OUT.replace("ratio=", "ssm_over_tr="))
    other = BENCH_OUT.replace("Some CPU", "Other CPU").replace("ratio=0.500", "ssm_over_tr=0.900")
    bench_dir = _bench_dir(tmp_path, other, name="speed@other-cpu")
    assert [b.script for b in docs.read_bench_outputs(bench_dir)] == ["speed", "speed"]
    readme = docs.readme_bench_block(bench_dir)
    assert "[`bench/speed.py`](docs/performance.md#speed) | 2026-12-07: Some CPU" in readme
    assert ("[`bench/speed.py`](docs/performance.md#speedother-cpu) | 2026-12-07: Other CPU, 2 cores, Linux, python "
            "3.11.7, torch 2.13.0+cpu, device cpu, 2026-12-07 | `ssm_over_tr=0.900` |") in readme
    assert "### speed@other-cpu\n\n`python bench/speed.py`" in docs.bench_block(bench_dir)
    (bench_dir / "speed@Other CPU.txt").write_text(other, encoding="utf-8")
    with pytest.raises(docs.DocsError, match="not named <bench>.txt or <bench>@<machine>.txt"):
        docs.read_bench_outputs(bench_dir)


def test_bench_block_states_date_machine_and_the_output_without_round_lines(tmp_path):
    block = docs.bench_block(_bench_dir(tmp_path))
    assert ("| `python bench/speed.py` | 2026-12-07: Some CPU, 2 cores, Linux, python 3.11.7, torch 2.13.0+cpu, "
            "device cpu, 2026-12-07 | `ratio=0.500` `rounds=5` |") in block
    assert "### speed" in block and "0.500 [0.450–0.550] over 5 rounds" in block
    assert "round 1 ssm" not in block  # progress lines stay in the saved file
    readme = docs.readme_bench_block(_bench_dir(tmp_path, BENCH_OUT.replace("ratio=", "ssm_over_tr=")))
    assert "[`bench/speed.py`](docs/performance.md#speed)" in readme and "round 1" not in readme
    assert "`ssm_over_tr=0.500` |" in readme and "rounds=5" not in readme  # the ratios alone


@pytest.mark.parametrize("text, why", [
    ("ratio=1\n", "line"),
    ("x\nprotocol: p\nratio=1\n", "machine line"),
    ("machine: m, 2026-12-07\nfigures follow\nratio=1\n", "protocol line"),
    (BENCH_OUT.replace("ratio=0.500 rounds=5", "ratio 0.5"), "key=value"),
])
def test_a_bench_output_outside_the_protocol_is_refused(tmp_path, text, why):
    with pytest.raises(docs.DocsError, match=why):
        docs.bench_block(_bench_dir(tmp_path, text))
