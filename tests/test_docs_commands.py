"""Every command in the README's and docs' code blocks runs as written.

Each `snakemake` line is parsed with Snakemake's own argument parser (so an option that swallows
the target is caught) and dry-run (`-n`) against the offline demo configuration in a scratch
working directory; nothing is written into the repository's results/. A line may state what it
plans, as a comment:

    # plans: vocals×S captions×S manifest data             (the data half already built)
    # plans from scratch: fetch_metadata×3 license_audit licenses

`S` is the number of shards; the demo-only `demo_mirror` job is not listed. Those lists must equal
the dry run's job counts exactly. Lines without a list must plan every target they name.

The demo stands in for config.yaml with one difference put back: `config.yaml` captions with
Qwen2-Audio, the demo with tag templates, so the documented "switch the captioner" example needs
a Qwen2-Audio run to switch from. `QWEN_OVERLAY` (the demo's tiny Qwen2-Audio weights) is merged
after config/demo.yaml for every command that names no demo config of its own.

"Already built" is made by creating every output of the demo's data half as an empty file (or
folder) and letting `snakemake --touch --forceall` record them; Snakemake 9's --touch does not
create missing files itself. Other lines: `python -m ssmttm check-config` is run, `make X` and
`bench/*.py` are checked to exist (tests/test_docs.py), anything else in a shell block fails.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHELL_LANGS = {"bash", "sh", "shell", "console"}
DEMO = "config/demo.yaml"
QWEN_OVERLAY = "qwen_as_config_yaml.yaml"
QWEN_OVERLAY_TEXT = "captions: {captioner: qwen2-audio, qwen2_audio: {model: qwen2_audio_tiny, device: cpu}}\n"
BIN = Path(sys.executable).parent
SNAKEMAKE = REPO / ".venv" / "bin" / "snakemake"
if not SNAKEMAKE.exists():
    SNAKEMAKE = BIN / "snakemake"
PYTHON = REPO / ".venv" / "bin" / "python"
if not PYTHON.exists():
    PYTHON = Path(sys.executable)


@dataclass(frozen=True)
class Command:
    page: str
    line: int
    text: str  # the command as written, without its comment
    comment: str

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def plans(self) -> tuple[str, str] | None:
        """("built" | "scratch", job list) when the comment states what the command plans."""
        m = re.search(r"plans( from scratch)?:\s*(.+)$", self.comment)
        if not m:
            return None
        return ("scratch" if m.group(1) else "built", m.group(2))


def _blocks(text: str):
    """(language, first line number, lines) of every fenced code block."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"\s*```(\w*)", lines[i])
        if m:
            lang, start, body = m.group(1), i + 2, []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith("```"):
                body.append(lines[i])
                i += 1
            yield lang, start, body
        i += 1


def _split_comment(line: str) -> tuple[str, str]:
    """`cmd   # comment` -> (cmd, comment)."""
    m = re.search(r"\s#(\s|$)", line)
    if m:
        return line[: m.start()].strip(), line[m.end():].strip()
    return line.strip(), ""


@cache
def documented() -> tuple[list[Command], dict[str, str]]:
    """Shell commands of every page, and the YAML files the pages show (`# name.yaml` first line)."""
    commands, files = [], {}
    for page in PAGES:
        name = str(page.relative_to(REPO))
        for lang, start, body in _blocks(page.read_text(encoding="utf-8")):
            if lang == "yaml" and body and re.fullmatch(r"#\s*[\w.-]+\.ya?ml", body[0].strip()):
                files[body[0].strip().lstrip("#").strip()] = "\n".join(body[1:]) + "\n"
            if lang not in SHELL_LANGS:
                continue
            joined, first = "", None
            for offset, line in enumerate(b.strip() for b in body):
                if not line or line.startswith("#"):
                    continue
                first = start + offset if first is None else first
                if line.endswith("\\"):
                    joined += line[:-1] + " "
                    continue
                cmd, comment = _split_comment(joined + line)
                commands.append(Command(name, first, cmd, comment))
                joined, first = "", None
    return commands, files


def snakemake_commands() -> list[Command]:
    return [c for c in documented()[0] if shlex.split(c.text)[0].endswith("snakemake")]


def _expected(jobs: str) -> Counter:
    shards = yaml.safe_load((REPO / DEMO).read_text())["shards"]
    out = Counter()
    for item in jobs.replace(",", " ").split():
        rule, _, n = item.partition("×")
        out[rule] += shards if n == "S" else int(n or 1)
    return out


def _job_stats(output: str) -> Counter:
    if "Nothing to be done" in output and "Job stats:" not in output:
        return Counter()
    block = output.split("Job stats:", 1)[1].split("\ntotal", 1)[0]
    return Counter({m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", block, re.M)})


def _parse(args: list[str]):
    from snakemake.cli import get_argument_parser

    return get_argument_parser().parse_args(args)


def _workdir(tmp: Path) -> Path:
    """A scratch working directory that sees the repository's config/ and profiles/."""
    tmp.mkdir(parents=True, exist_ok=True)
    for name in ("config", "profiles", "config.yaml"):
        if not (tmp / name).exists():
            (tmp / name).symlink_to(REPO / name)
    (tmp / QWEN_OVERLAY).write_text(QWEN_OVERLAY_TEXT)
    for fname, body in documented()[1].items():
        (tmp / fname).write_text(body)
    return tmp


def _dry_run_args(cmd: Command) -> list[str]:
    """The command's arguments, pointed at the demo and made a dry run."""
    args = shlex.split(cmd.text)[1:]
    if "--configfile" in args:
        i = args.index("--configfile") + 1
        j = i
        while j < len(args) and not args[j].startswith("-"):
            j += 1
        files = [f for f in args[i:j] if f != "config.yaml"]
        if DEMO not in files:
            files = [DEMO, QWEN_OVERLAY, *files]
        args[i:j] = files
    else:
        args += ["--configfile", DEMO, QWEN_OVERLAY]
    if "-n" not in args and "--dry-run" not in args:
        args.append("-n")
    return ["--snakefile", str(REPO / "Snakefile"), *args, "--nolock"]


def _snakemake(workdir: Path, args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(SNAKEMAKE), *args], cwd=workdir, capture_output=True, text=True, timeout=300)


def _build_data_half(workdir: Path) -> None:
    """Every output of the demo's data half, present and recorded as up to date."""
    base = ["--snakefile", str(REPO / "Snakefile"), "--cores", "2", "data", "--configfile", DEMO, QWEN_OVERLAY,
            "--nolock"]
    plan = _snakemake(workdir, [*base, "-n"])
    assert plan.returncode == 0, plan.stderr[-3000:]
    outputs = [o for line in re.findall(r"^\s+output: (.+)$", plan.stdout, re.M) for o in line.split(", ")]
    assert outputs
    for out in outputs:
        path = workdir / out
        if "." in path.name:  # files; the data half's folder outputs are shard folders (NN)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        else:
            path.mkdir(parents=True, exist_ok=True)
    touch = _snakemake(workdir, [*base, "--touch", "--forceall"])
    assert touch.returncode == 0, touch.stderr[-3000:]
    again = _snakemake(workdir, [*base, "-n"])
    assert "Nothing to be done" in again.stdout + again.stderr, again.stdout[-3000:]


def _without_targets(args: list[str], targets: list[str]) -> list[str]:
    """`args` minus the positional targets (not an option's value that happens to read the same)."""
    takes_one = {"--cores", "-c", "--jobs", "-j", "--snakefile", "-s", "--profile", "--directory", "-d"}
    rest = list(args)
    for t in targets:
        i = max(i for i, a in enumerate(rest) if a == t and not (i and rest[i - 1] in takes_one))
        del rest[i]
    return rest


@pytest.fixture(scope="module")
def dry_runs(tmp_path_factory):
    """Every documented snakemake command's dry run (command id -> CompletedProcess), two at a time.

    Commands without a `plans:` list that differ only in their targets share one dry run: from
    scratch their union DAG plans each target if and only if it would alone. The others run one by
    one, each in a scratch working directory of its own or on the built data half.
    """
    built = _workdir(tmp_path_factory.mktemp("built"))
    _build_data_half(built)
    groups: dict[tuple, dict] = {}
    for cmd in snakemake_commands():
        if "--report" in cmd.text:
            continue
        args = _dry_run_args(cmd)
        if cmd.plans or "--summary" in args:
            groups[(cmd.id,)] = {"ids": [cmd.id], "state": cmd.plans[0] if cmd.plans else "scratch", "args": args}
            continue
        names = list(_parse(args).targets)
        rest = _without_targets(args, names)
        group = groups.setdefault(("scratch", *rest), {"ids": [], "state": "scratch", "targets": [], "rest": rest})
        group["ids"].append(cmd.id)
        group["targets"] += [t for t in names if t not in group["targets"]]
    jobs = []
    for group in groups.values():
        workdir = built if group["state"] == "built" else _workdir(tmp_path_factory.mktemp("scratch"))
        args = group.get("args") or [*group["targets"], *group["rest"]]
        jobs.append((group["ids"], workdir, args))
    with ThreadPoolExecutor(max_workers=2) as pool:
        done = [(ids, pool.submit(_snakemake, w, a)) for ids, w, a in jobs]
        return {cid: future.result() for ids, future in done for cid in ids}


def test_pages_have_commands():
    cmds = snakemake_commands()
    assert len(cmds) >= 15
    pages = {c.page for c in cmds}
    assert {"README.md", "docs/user-guide.md", "docs/reproduction.md"} <= pages
    # the rerun examples carry what they plan
    planned = [c for c in cmds if c.plans and c.plans[0] == "built"]
    assert any("--forcerun vocals" in c.text for c in planned)
    assert any("--configfile my.yaml" in c.text for c in planned)


def test_every_shell_line_is_a_known_kind():
    known = (r"make [\w-]+", r"\.venv/bin/snakemake ", r"\.venv/bin/python -m ssmttm [a-z-]+",
             r"\.venv/bin/python bench/\w+\.py")
    for cmd in documented()[0]:
        assert any(re.match(k, cmd.text) for k in known), f"{cmd.id}: unchecked command {cmd.text!r}"


@pytest.mark.parametrize("cmd", snakemake_commands(), ids=lambda c: c.id)
def test_snakemake_command_parses_and_names_its_targets(cmd):
    words = shlex.split(cmd.text)
    assert words[0] == ".venv/bin/snakemake", f"{cmd.id}: use .venv/bin/snakemake (runs without activating the venv)"
    ns = _parse(words[1:])
    if "--report" in words:
        return
    assert ns.targets, f"{cmd.id}: no target left after parsing (an option swallowed it): {cmd.text}"
    # a target must come before any option that takes several values
    for opt in ("--configfile", "--forcerun", "--resources", "--config", "-R", "--until", "--omit-from"):
        if opt in words:
            assert words.index(opt) > max(words.index(t) for t in ns.targets), f"{cmd.id}: target after {opt}"


@pytest.mark.parametrize("cmd", [c for c in snakemake_commands() if "--report" not in c.text], ids=lambda c: c.id)
def test_snakemake_command_dry_runs_as_documented(cmd, dry_runs):
    r = dry_runs[cmd.id]
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"{cmd.id}: {cmd.text}\n{out[-3000:]}"
    if "--summary" in cmd.text:
        assert "output_file" in out
        return
    planned = _job_stats(r.stdout)
    planned.pop("demo_mirror", None)
    if cmd.plans:
        assert planned == _expected(cmd.plans[1]), f"{cmd.id}: documented {cmd.plans[1]!r}, planned {dict(planned)}"
        return
    ns = _parse(shlex.split(cmd.text)[1:])
    assert planned, f"{cmd.id}: plans nothing from scratch"
    for target in ns.targets:
        if not ("/" in target or "." in target):
            assert target in planned, f"{cmd.id}: target {target} not planned: {dict(planned)}"


def test_check_config_commands_run(tmp_path):
    workdir = _workdir(tmp_path)
    cmds = [c for c in documented()[0] if c.text.startswith(".venv/bin/python -m ssmttm check-config")]
    assert cmds
    for cmd in cmds:
        args = shlex.split(cmd.text)[1:]
        r = subprocess.run([str(PYTHON), *args], cwd=workdir, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and "config ok" in r.stdout, f"{cmd.id}: {r.stdout}{r.stderr}"
