"""``docs-results``: paste the numbers README.md and docs/ show from what the pipeline and benches wrote.

Nothing in a generated block is typed by hand. Each block sits between two HTML comments,
``<!-- NAME:start -->`` and ``<!-- NAME:end -->``:

- ``README.md`` ``demo-results``: when and where the demo ran (date, cores, jobs and wall time of
  the last complete Snakemake run, read from ``.snakemake/log/``), a short table: the variant
  comparison's key columns, and one line: the curves study's validation loss (Prefix SiMBA against
  Cross Transformer) with its 95 % t-intervals over seeds and the Welch interval of the difference;
- ``docs/results.md`` ``demo-results``: every study table and the claims, as the ``tables`` and
  ``claims`` rules wrote them (``results/tables/<study>.md``), then every study's validation loss at
  its matched step (``results/tables/val_loss.json``, written by the ``val_loss`` rule,
  :mod:`ssmttm.report.valloss`);
- both demo blocks end with the listening tests' MOS tables (``results/listening/<test>/results/``,
  written by the ``listening_results`` rule; the README the MOS table, docs/results.md with the
  pairwise table and the notes);
- ``docs/performance.md`` ``bench-results``: for each ``bench/results/<name>.txt`` (the saved output
  of ``python bench/<name>.py`` under the protocol of ``bench/_protocol.py``: the machine line first,
  the protocol line second, ``key=value`` figures last), a table row (date, machine, figures) and the
  output itself without its per-round lines; ``README.md`` ``bench-results``: the table alone (the
  benches that compare sides: their ratios). A figure that depends on the CPU is kept per machine:
  ``bench/results/<name>@<machine>.txt`` is the same bench's output from another machine (saved by
  hand: ``make bench`` writes ``<name>.txt``), with a row and a section of its own;
- ``README.md`` ``quickstart-times``: how long ``make demo`` and ``make test`` took on fresh clones, from
  ``bench/results/quickstart.txt`` (``python bench/quickstart.py``), with the project's goals.

Tests render the blocks again and compare them with the committed text, so a table that no longer
matches what the code produces fails: the bench block always (``tests/test_docs_results.py``), the
demo blocks after the demo pipeline test has run the whole DAG (``tests/test_pipeline_demo.py``).
``--tables-dir none`` renders the bench blocks alone (no demo run needed).
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import re
from dataclasses import dataclass
from pathlib import Path

from ssmttm import io, logs
from ssmttm.errors import SsmttmError

DEMO, BENCH, QUICK = "demo-results", "bench-results", "quickstart-times"
QUICKSTART = "quickstart"  # bench/quickstart.py: make demo / make test on fresh clones (times, no ratios)
# The quick start's goals on the 2-core build machine (seconds): make demo, make test, make test-fast.
QUICKSTART_GOALS = {"make_demo_s": 6 * 60, "make_test_s": 8 * 60, "make_test_fast_s": 3 * 60}
STUDIES = ("variants", "curves", "scaling_down", "stages", "claims")
SUMMARY_STUDY = "variants"
SUMMARY_COLUMNS = ("Experiment", "Variant", "FD (log-mel) ↓", "tempo acc. ↑", "key acc. ↑", "drums acc. ↑")
VAL_LOSS_FILE = "val_loss.json"  # written by the val_loss rule (ssmttm.report.valloss) beside the tables
VAL_LOSS_STUDY = "curves"  # the README's SSM-vs-Transformer sentence: Prefix SiMBA vs Cross Transformer
MINUS = "−"  # U+2212: a signed difference reads as one in prose and tables


def minutes_seconds(seconds: float | str) -> str:
    """``'13 min 9 s'``: how the docs write a wall time (a run, a bench's seconds figure)."""
    m, s = divmod(round(float(seconds)), 60)
    return f"{m} min {s} s"


class DocsError(SsmttmError, ValueError):
    """A docs file without its markers, or a table without the columns the summary needs."""


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def extract_block(text: str, name: str, where: str = "") -> str:
    start, end = markers(name)
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise DocsError(f"{where or 'text'}: expected one {start} ... {end} pair")
    return text.split(start, 1)[1].split(end, 1)[0]


def replace_block(text: str, name: str, body: str, where: str = "") -> str:
    extract_block(text, name, where)  # checks the markers
    start, end = markers(name)
    head, rest = text.split(start, 1)
    return f"{head}{start}\n\n{body.strip()}\n\n{end}{rest.split(end, 1)[1]}"


def table_lines(block: str) -> list[str]:
    """The lines of a block that carry results (headings, table rows, notes), without the sentence that
    says when and where they were made: what a staleness test compares."""
    return [ln.rstrip() for ln in block.splitlines() if ln.startswith(("|", "#", "- "))]


# --- the demo's tables -----------------------------------------------------------------------------

def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def select_columns(md: str, columns: tuple[str, ...], where: str, strip_marks: bool = False) -> str:
    """The first pipe table of ``md`` with only ``columns`` (by header text), in that order; rows whose
    cells after the first two are all empty (e.g. published rows without these metrics) are left out.
    ``strip_marks`` drops the † a row name carries for its pipeline-check metrics (for a selection of
    measured columns only)."""
    lines = md.splitlines()
    first = next((i for i, ln in enumerate(lines) if ln.startswith("|")), None)
    if first is None or first + 1 >= len(lines):
        raise DocsError(f"{where}: no Markdown table")
    header = _cells(lines[first])
    missing = [c for c in columns if c not in header]
    if missing:
        raise DocsError(f"{where}: no column {missing} (columns: {header})")
    idx = [header.index(c) for c in columns]
    align = _cells(lines[first + 1])
    out = ["| " + " | ".join(columns) + " |", "|" + "|".join(align[i] for i in idx) + "|"]
    for ln in lines[first + 2:]:
        if not ln.startswith("|"):
            break
        row = _cells(ln)
        if not any(row[i] for i in idx[2:]):
            continue
        if strip_marks:
            row = [c.rstrip("†") for c in row]
        out.append("| " + " | ".join(row[i] for i in idx) + " |")
    return "\n".join(out)


def study_markdown(tables_dir: Path, name: str) -> str:
    """A study's Markdown as the rule wrote it, headings demoted to fit under a page section."""
    path = Path(tables_dir) / f"{name}.md"
    if not path.exists():
        raise DocsError(f"{path}: missing (run `make demo` first)")
    md = path.read_text(encoding="utf-8").strip()
    return re.sub(r"^# ", "#### ", md, flags=re.M)


@dataclass(frozen=True)
class RunSummary:
    """The last complete Snakemake run: when it started, its cores, its jobs and its wall time."""

    started: dt.datetime
    seconds: float
    cores: int | None
    jobs: int

    def sentence(self) -> str:
        cores = f"{self.cores} CPU cores, " if self.cores else ""
        return (f"Generated by `make demo` on {self.started:%Y-%m-%d} ({cores}{self.jobs} jobs in "
                f"{minutes_seconds(self.seconds)}, from Snakemake's log).")


_STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
_DONE = re.compile(r"^(\d+) of (\d+) steps \(100%\) done$")


def last_complete_run(log_dir: Path) -> RunSummary | None:
    """Read Snakemake's run logs (newest first) and summarise the newest run that finished every job."""
    for path in sorted(Path(log_dir).glob("*.snakemake.log"), reverse=True):
        stamps, jobs, cores = [], None, None
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if m := _STAMP.match(line.strip()):
                stamps.append(dt.datetime.strptime(" ".join(m.group(1).split()), "%a %b %d %H:%M:%S %Y"))
            elif m := _DONE.match(line.strip()):
                jobs = int(m.group(2))
            elif line.startswith("Provided cores:"):
                cores = int(line.split(":", 1)[1])
        if jobs and len(stamps) >= 2:
            return RunSummary(stamps[0], (stamps[-1] - stamps[0]).total_seconds(), cores, jobs)
    return None


NUMERICS = "CPU numerics (the same numbers come back on a machine that shares them): "
_NUMERICS_RE = re.compile(re.escape(NUMERICS) + r"`([^`]+)`")


def when_sentence(run: RunSummary | None, numerics: str | None = None) -> str:
    """When and where the demo ran, and the CPU numerics its numbers belong to (:mod:`ssmttm.machine`,
    of the machine that renders the block: ``make demo && make docs-results`` runs both on one)."""
    from ssmttm import machine

    when = run.sentence() if run else "Generated from `results/tables/` by `make docs-results`."
    return f"{when} {NUMERICS}`{numerics or machine.numerics()}`."


def block_numerics(block: str) -> str | None:
    """The CPU numerics a generated demo block records (None for a block written before they were)."""
    m = _NUMERICS_RE.search(block)
    return m.group(1) if m else None


_NUMBER_RE = re.compile(r"(?<![\w.])[-+\u2212]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?(?![\w.])|\b[0-9a-f]{12}\b"
                        r"|\b(?:in|ex)cludes\b")


def numbers_masked(lines: list[str]) -> list[str]:
    """``lines`` with every number (its sign too), 12-digit sha256 prefix and an interval's
    "includes"/"excludes" replaced by ``#``: what must match across CPUs (the tables' rows, columns,
    systems, notes), where the digits themselves need not."""
    return [_NUMBER_RE.sub("#", ln) for ln in lines]


def readme_block(tables_dir: Path, run: RunSummary | None) -> str:
    when = when_sentence(run)
    table = select_columns(study_markdown(tables_dir, SUMMARY_STUDY), SUMMARY_COLUMNS,
                           str(Path(tables_dir) / f"{SUMMARY_STUDY}.md"), strip_marks=True)
    val = val_loss_bullet(load_val_loss(tables_dir), VAL_LOSS_STUDY, str(Path(tables_dir) / VAL_LOSS_FILE))
    listening = listening_readme(tables_dir)
    return (f"{when} Variant comparison (tiny models, mean ± sd over seeds; the full tables and how to "
            f"read them: [docs/results.md](docs/results.md)):\n\n{table}\n\n"
            f"Validation loss of the SSM against the Transformer (the curves study):\n\n{val}"
            + (f"\n\n{listening}" if listening else ""))


# --- the validation loss over seeds (results/tables/val_loss.json) ---------------------------------

def load_val_loss(tables_dir: Path) -> dict:
    """The val_loss rule's summary (:func:`ssmttm.report.valloss.final_summary`)."""
    path = Path(tables_dir) / VAL_LOSS_FILE
    if not path.exists():
        raise DocsError(f"{path}: missing (run `make demo` first)")
    data = io.read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("studies"), dict):
        raise DocsError(f"{path}: no 'studies' object")
    return data


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _decimals(half, value: float) -> int:
    """Two significant digits of an interval's half width (2 to 4 decimals); without an interval,
    three significant digits of the value."""
    if _finite(half) and half > 0:
        return max(2, min(4, 1 - math.floor(math.log10(half))))
    return 2 if not _finite(value) or value == 0 else max(2, min(4, 2 - math.floor(math.log10(abs(value)))))


def _num(x: float, d: int) -> str:
    return f"{x:.{d}f}".replace("-", MINUS)


def mean_ci(e: dict) -> str:
    """'5.98 ± 0.27' (mean ± 95 % t half width), or '6.32 (1 seed, no interval)'."""
    d = _decimals(e.get("half_width"), e["mean"])
    if not _finite(e.get("half_width")):
        return f"{_num(e['mean'], d)} ({e['n_seeds']} seed, no interval)"
    return f"{_num(e['mean'], d)} ± {_num(e['half_width'], d)}"


def difference(x: dict) -> str:
    """'−0.11, 95 % Welch CI [−0.61, 0.39], includes 0' for a pair of experiments."""
    lo, hi = x.get("ci_low"), x.get("ci_high")
    if not (_finite(lo) and _finite(hi)):
        return f"{_num(x['diff'], _decimals(None, x['diff']))}, no interval (a side has one seed)"
    d = _decimals((hi - lo) / 2, x["diff"])
    verdict = "includes 0" if lo <= 0 <= hi else "excludes 0"
    return f"{_num(x['diff'], d)}, 95 % Welch CI [{_num(lo, d)}, {_num(hi, d)}], {verdict}"


def _system(e: dict) -> str:
    return f"{e['variant']} ({e['experiment']})" if e.get("variant") else e["experiment"]


def val_loss_bullet(summary: dict, study: str, where: str) -> str:
    """One bullet line: the study's experiments' validation loss at its matched step with their
    intervals, and the difference of every pair (a line the staleness tests compare)."""
    s = summary["studies"].get(study)
    if not s or not s.get("experiments"):
        raise DocsError(f"{where}: no validation loss for study {study!r}")
    exps = s["experiments"]
    ns = {e["n_seeds"] for e in exps}
    seeds = f"over {ns.pop()} seeds" if len(ns) == 1 else "over seeds, " + ", ".join(
        f"{e['experiment']} n = {e['n_seeds']}" for e in exps)
    systems = " vs ".join(f"{_system(e)} {mean_ci(e)}" for e in exps)
    by_name = len(s["differences"]) > 1
    diffs = "; ".join((f"{x['a']} {MINUS} {x['b']}: " if by_name else "difference ") + difference(x)
                      for x in s["differences"])
    return (f"- Validation loss at step {s['step']} (held-out cross-entropy, no label smoothing): {systems} "
            f"(mean ± 95 % t-interval {seeds}){'; ' + diffs if diffs else ''}. "
            f"Figure: `results/plots/val_loss/{study}.png`.")


def val_loss_section(summary: dict, studies: tuple[str, ...] = STUDIES) -> str:
    """docs/results.md's validation-loss table (every study, at its matched step), the pairwise
    differences and how both are computed."""
    names = [s for s in studies if s in summary["studies"]] + sorted(set(summary["studies"]) - set(studies))
    rows = ["| Study | Experiment | Variant | Step | 6ND FLOPs | Seeds | Validation loss | 95 % CI |",
            "|---|---|---|---:|---:|---:|---:|---:|"]
    notes = []
    for name in names:
        s = summary["studies"][name]
        for e in s["experiments"]:
            d = _decimals(e.get("half_width"), e["mean"])
            ci = f"[{_num(e['ci_low'], d)}, {_num(e['ci_high'], d)}]" if _finite(e.get("ci_low")) else ""
            flops = f"{e['flops_6nd']:.2e}" if _finite(e.get("flops_6nd")) else ""
            rows.append(f"| {name} | {e['experiment']} | {e.get('variant') or ''} | {s['step']} | {flops} | "
                        f"{e['n_seeds']} | {mean_ci(e)} | {ci} |")
        notes += [f"- {name}, {x['a']} {MINUS} {x['b']}: {difference(x)}." for x in s["differences"]]
    notes.append("- Validation loss: cross-entropy per token (nats) on the held-out split, without label smoothing, "
                 "at each study's matched step (its `step`, else the last step every run of the study validated at). "
                 "Mean ± t(0.975, n − 1)·sd/√n over seeds (a 95 % Student t-interval; none with one seed); "
                 "differences are first minus second experiment in the study's order, with a 95 % Welch t-interval. "
                 "Curves over training: `results/plots/val_loss/<study>.png`.")
    return ("#### Validation loss over seeds (mean ± 95 % t-interval)\n\n" + "\n".join(rows) + "\n\n"
            + "\n".join(notes))


def _split_notes(md: str) -> tuple[list[str], list[str]]:
    """A study's Markdown as (heading and table lines, its bullet notes)."""
    body, notes = [], []
    for ln in md.splitlines():
        (notes if ln.startswith("- ") else body).append(ln)
    while body and not body[-1].strip():
        body.pop()
    return body, notes


def results_block(tables_dir: Path, run: RunSummary | None, studies: tuple[str, ...] = STUDIES) -> str:
    """Every study table; a note that several tables carry (the † explanation, how values are
    summarised) is written once at the end instead of under each table."""
    when = when_sentence(run)
    split = [_split_notes(study_markdown(tables_dir, s)) for s in studies]
    counts: dict[str, int] = {}
    for _, notes in split:
        for n in dict.fromkeys(notes):
            counts[n] = counts.get(n, 0) + 1
    shared = [n for n in counts if counts[n] > 1]
    parts = [when]
    for body, notes in split:
        own = [n for n in notes if counts[n] == 1]
        parts.append("\n".join(body) + ("\n\n" + "\n".join(own) if own else ""))
    if shared:
        parts.append("#### Notes to every table above\n\n" + "\n".join(shared))
    parts.append(val_loss_section(load_val_loss(tables_dir), studies))
    listening = listening_results(tables_dir)
    if listening:
        parts.append(listening)
    return "\n\n".join(parts)


# --- the listening tests (results/listening/<test>/results/) ---------------------------------------

def listening_tables(tables_dir: Path) -> list[tuple[str, str, str]]:
    """(test, mos.md, pairwise.md) of every listening test with results beside the tables
    (``results/listening/<test>/results/``), by test name."""
    root = Path(tables_dir).parent / "listening"
    out = []
    for mos in sorted(root.glob("*/results/mos.md")):
        pairwise = mos.with_name("pairwise.md")
        out.append((mos.parent.parent.name, mos.read_text(encoding="utf-8").strip(),
                    pairwise.read_text(encoding="utf-8").strip() if pairwise.is_file() else ""))
    return out


def listening_readme(tables_dir: Path) -> str:
    """The README's lines: each test's MOS table and its first note (who rated), or nothing."""
    parts = []
    for test, mos, _ in listening_tables(tables_dir):
        body, notes = _split_notes(mos)
        table = "\n".join(ln for ln in body if ln.startswith("|"))
        parts.append(f"Listening test `{test}` (MOS with 95 % bootstrap intervals; [docs/listening.md]"
                     f"(docs/listening.md)):\n\n{table}" + (f"\n\n{notes[0]}" if notes else ""))
    return "\n\n".join(parts)


def listening_results(tables_dir: Path) -> str:
    """docs/results.md's section: every test's MOS and pairwise tables with their notes, or nothing."""
    parts = [f"{mos}\n\n{pairwise}".strip() for _, mos, pairwise in listening_tables(tables_dir)]
    return "\n\n".join(parts)


# --- the benches -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class BenchOutput:
    """One saved bench output (``bench/results/<name>.txt``): what ``bench/_protocol.py`` makes every bench
    print: the machine line first, the protocol line second, ``key=value`` figures last."""

    name: str
    lines: tuple[str, ...]

    @property
    def script(self) -> str:
        """The bench's name: ``backbone_speed`` for ``backbone_speed.txt`` and ``backbone_speed@amd-epyc.txt``."""
        return self.name.split("@", 1)[0]

    @property
    def anchor(self) -> str:
        """The id GitHub gives the section ``### <name>`` (lower case, only letters, digits, - and _ kept)."""
        return re.sub(r"[^a-z0-9_-]", "", self.name.lower())

    @property
    def machine(self) -> str:
        return self.lines[0].strip()

    @property
    def date(self) -> str:
        m = re.search(r"(\d{4}-\d{2}-\d{2})\s*$", self.machine)
        return m.group(1) if m else "(no date)"

    @property
    def figures(self) -> list[str]:
        return self.lines[-1].split()

    def body(self) -> list[str]:
        """The output without its per-round progress lines (``  round 3 ssm_d256: ...``; they stay in
        the saved file)."""
        return [ln for ln in self.lines if not _ROUND.match(ln)]


_ROUND = re.compile(r"^\s*round \d+ ")
_FIGURE = re.compile(r"^[a-z][a-z0-9_]*=\S+$")


def read_bench_outputs(bench_dir: Path) -> list[BenchOutput]:
    """Every ``bench_dir/*.txt``, checked to follow the bench protocol (a bench saved before it, or by
    hand, is refused with the command that remakes it)."""
    out = []
    for path in sorted(Path(bench_dir).glob("*.txt")):
        lines = tuple(ln.rstrip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip())
        if not re.fullmatch(r"[a-z][a-z0-9_]*(@[a-z0-9][a-z0-9-]*)?", path.stem):
            raise DocsError(f"{path}: not named <bench>.txt or <bench>@<machine>.txt (lower case, digits, _ and -)")
        b = BenchOutput(path.stem, lines)
        if not (Path(bench_dir).parent / f"{b.script}.py").exists():
            raise DocsError(f"{path}: no bench/{b.script}.py made it")
        redo = f"rerun it: make bench BENCHES={b.script}"
        if len(lines) < 3:
            raise DocsError(f"{path}: {len(lines)} line(s); a bench prints its machine, its protocol and its figures ({redo})")
        if not lines[0].startswith("machine: "):
            raise DocsError(f"{path}: the first line is not the machine line ({redo})")
        if not lines[1].startswith("protocol: "):
            raise DocsError(f"{path}: no protocol line after the machine line: saved before bench/_protocol.py ({redo})")
        bad = [kv for kv in lines[-1].split() if not _FIGURE.match(kv)]
        if bad:
            raise DocsError(f"{path}: the last line is not key=value figures: {bad[:3]} ({redo})")
        out.append(b)
    return out


def bench_table(outputs: list[BenchOutput], link: str = "", ratios_only: bool = False) -> str:
    """One row per saved bench output: its script, when and where it ran (its first line) and its figures
    (its last line, medians over the rounds); ``ratios_only``: the ``*_over_*`` figures alone (the
    per-round ratios of the compared sides)."""
    what = "ratios" if ratios_only else "figures"
    rows = [f"| bench | measured on (first line of its output) | {what} (last line: medians over the rounds) |",
            "|---|---|---|"]
    for b in outputs:
        kvs = [kv for kv in b.figures if "_over_" in kv.split("=", 1)[0]] if ratios_only else b.figures
        figures = " ".join(f"`{kv}`" for kv in kvs)
        machine = b.machine.removeprefix("machine: ").replace("|", "/")
        name = f"[`bench/{b.script}.py`]({link}#{b.anchor})" if link else f"`python bench/{b.script}.py`"
        rows.append(f"| {name} | {b.date}: {machine} | {figures} |")
    if not outputs:
        rows.append("| (none saved yet) | | |")
    return "\n".join(rows)


def bench_block(bench_dir: Path) -> str:
    """docs/performance.md's block: the table of every saved bench output, then each output as it was
    printed (machine, protocol, figures with their spread), per-round progress lines left out."""
    outputs = read_bench_outputs(bench_dir)
    parts = ["Saved bench outputs (`bench/results/<name>.txt`, written by `make bench`):", bench_table(outputs)]
    for b in outputs:
        parts.append(f"### {b.name}\n\n`python bench/{b.script}.py`, measured on {b.date} "
                     f"(per-round lines: `bench/results/{b.name}.txt`):\n\n```text\n" + "\n".join(b.body()) + "\n```")
    return "\n\n".join(parts)


def readme_bench_block(bench_dir: Path) -> str:
    """README.md's block: the ratios of every saved bench output, with the date and machine."""
    outputs = [b for b in read_bench_outputs(bench_dir) if b.script != QUICKSTART]
    return ("Generated from the saved bench outputs (`bench/results/`, written by `make bench`) by "
            "`make docs-results`: the ratios of the compared sides, each the median over alternating rounds "
            "of the per-round ratio; every figure with its spread is in [docs/performance.md](docs/performance.md).\n\n"
            + bench_table(outputs, "docs/performance.md", ratios_only=True))


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + "."


def quickstart_block(bench_dir: Path) -> str:
    """README.md's quick-start times: each command's time on a fresh clone (bench/quickstart.py's figures),
    where and when, against the goal."""
    found = [b for b in read_bench_outputs(bench_dir) if b.name == QUICKSTART]
    if not found:
        return ("Not measured yet: `make bench BENCHES=quickstart` times `make demo` and `make test` on fresh "
                "clones (about 45 minutes), then `make docs-results` writes them here.")
    b = found[0]
    fig = dict(kv.split("=", 1) for kv in b.figures)
    rows = ["| command (fresh clone, new `.venv`) | wall time | of which `make setup` | goal |", "|---|---|---|---|"]
    for key, what in (("make_demo_s", "`make demo`"), ("make_test_s", "`make test`"),
                      ("make_test_fast_s", "`make test-fast` (after `make test`: `.venv` ready)")):
        if key in fig:
            setup = fig.get(key.removesuffix("_s") + "_setup_s")  # make test-fast has none: .venv is there
            goal = QUICKSTART_GOALS.get(key)
            rows.append(f"| {what} | {minutes_seconds(fig[key])} | {minutes_seconds(setup) if setup else '—'} | "
                        f"{f'≤ {goal // 60} min' if goal else '—'} |")
    extra = []
    if "make_demo_dag_s" in fig:
        extra.append(f"the demo's DAG alone took {minutes_seconds(fig['make_demo_dag_s'])} (Snakemake's log)")
    others = sorted({k.split("_")[2] for k in fig if re.match(r"^make_demo_cores\d+_s$", k)})
    for c in others:
        took = minutes_seconds(fig[f"make_demo_{c}_s"])
        extra.append(f"`make demo CORES={c.removeprefix('cores')}` took {took} and gave byte-identical tables")
    machine = b.machine.removeprefix("machine: ")
    return (f"Measured by `python bench/quickstart.py` on {b.date} ({machine}; `make demo` at CORES="
            f"{fig.get('cores', '?')}, `make test` at CORES={fig.get('test_cores', '?')}; its whole output: "
            f"[docs/performance.md](docs/performance.md#quickstart)):\n\n"
            + "\n".join(rows) + ("\n\n" + _sentence("; ".join(extra)) if extra else ""))


# --- the stage ---------------------------------------------------------------------------------------

def render(repo: Path, tables_dir: Path | None, log_dir: Path) -> dict[Path, str]:
    """New text of every docs file with a generated block (demo blocks only when ``tables_dir``)."""
    out: dict[Path, str] = {}
    perf, readme = repo / "docs" / "performance.md", repo / "README.md"
    out[perf] = replace_block(perf.read_text(encoding="utf-8"), BENCH, bench_block(repo / "bench" / "results"),
                              str(perf))
    out[readme] = replace_block(readme.read_text(encoding="utf-8"), BENCH,
                                readme_bench_block(repo / "bench" / "results"), str(readme))
    out[readme] = replace_block(out[readme], QUICK, quickstart_block(repo / "bench" / "results"), str(readme))
    if tables_dir is not None:
        run = last_complete_run(log_dir)
        results = repo / "docs" / "results.md"
        out[readme] = replace_block(out[readme], DEMO, readme_block(tables_dir, run), str(readme))
        out[results] = replace_block(results.read_text(encoding="utf-8"), DEMO, results_block(tables_dir, run),
                                     str(results))
    return out


def main(argv: list[str]) -> int | None:
    p = argparse.ArgumentParser(prog="ssmttm docs-results", description=__doc__.split("\n\n")[0])
    p.add_argument("--repo", default=".", help="project root (README.md, docs/, bench/results/)")
    p.add_argument("--tables-dir", default="results/tables", help="the demo's tables; 'none' skips them")
    p.add_argument("--snakemake-log-dir", default=".snakemake/log", help="where the demo run's log is")
    args = p.parse_args(argv)
    log = logs.setup("ssmttm.docs")
    tables = None if args.tables_dir == "none" else Path(args.tables_dir)
    try:
        pages = render(Path(args.repo), tables, Path(args.snakemake_log_dir))
    except DocsError as exc:
        log.error("%s", exc)
        return 2
    for path, text in pages.items():
        if path.read_text(encoding="utf-8") != text:
            io.write_text(path, text)
            log.info("updated %s", path)
        else:
            log.info("unchanged %s", path)
    return 0
