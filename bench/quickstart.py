"""How long the README's quick start takes a newcomer: ``make demo`` and ``make test`` on fresh clones.

Each command runs in a new ``git clone`` of this repository's HEAD (uncommitted changes are not in it)
with a new ``.venv`` and a cold numba seed cache (``SSMTTM_NUMBA_SEED`` pointed at an empty folder of
the clone, so the user's own cache is neither used nor touched); pip's download cache and the machine's
package index are as found. The interpreter running this script is kept off ``PATH``, so ``make``
builds the virtualenv from the system ``python3`` as on a fresh machine.

- ``make demo CORES=c`` once per ``--demo-cores`` value, each in its own clone: timed as ``make setup``
  then ``make demo`` (the DAG's own time is read from Snakemake's log). The study tables
  (``results/tables/``) of every core count must be byte-identical, or the bench fails.
- ``make test CORES=c`` in one more clone (``--test-cores``; 0 skips it), again as ``make setup`` then
  ``make test``, then ``make test-fast`` in the same clone (the contributor's loop: the virtualenv is
  there).

These are end-to-end times of single runs (each takes minutes), not comparisons of alternatives, so no
sides alternate: the protocol line says so, and the saved output (``make bench BENCHES=quickstart``)
keeps every command's time. Run it on an otherwise idle machine. A failing command ends the bench with
its log's tail and no figures. ``--workdir`` keeps the clones (to render the demo's tables with
``make docs-results`` there); by default they are deleted.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _protocol import figures_line, machine_line  # noqa: E402

from ssmttm.report.docs import last_complete_run, minutes_seconds  # noqa: E402

_PASSED = re.compile(r"(\d+) passed")


def clean_env(seed_dir: Path) -> dict[str, str]:
    """This process's environment without its virtualenv, with a cold numba seed cache."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME", "PYTHONPATH")}
    here = str(Path(sys.executable).parent)
    venv = os.environ.get("VIRTUAL_ENV")
    drop = {here} | ({str(Path(venv) / "bin")} if venv else set())
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p and p not in drop)
    env["SSMTTM_NUMBA_SEED"] = str(seed_dir)
    return env


def clone(repo: Path, dest: Path) -> str:
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(repo), str(dest)], check=True)
    return subprocess.run(["git", "-C", str(dest), "rev-parse", "--short", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()


def make(where: Path, target: str, cores: int, log: Path) -> float:
    """Run ``make <target> CORES=<cores>`` in ``where``; its wall seconds. A failure ends the bench."""
    seed = where / ".numba-seed"
    seed.mkdir(exist_ok=True)
    t0 = time.monotonic()
    with open(log, "ab") as f:
        f.write(f"\n$ make {target} CORES={cores}\n".encode())
        f.flush()
        rc = subprocess.run(["make", target, f"CORES={cores}"], cwd=where, env=clean_env(seed),
                            stdout=f, stderr=subprocess.STDOUT).returncode
    seconds = time.monotonic() - t0
    if rc != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-40:]
        sys.exit(f"make {target} CORES={cores} failed in {where} (exit {rc}); log {log}:\n" + "\n".join(tail))
    return seconds


def same_tree(a: Path, b: Path) -> list[str]:
    """Files that differ (or exist on one side only) between two folders, relative paths."""
    fa = {p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file()}
    fb = {p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file()}
    diff = sorted(fa ^ fb)
    diff += [r for r in sorted(fa & fb) if not filecmp.cmp(a / r, b / r, shallow=False)]
    return diff


def timing(setup: float, run: float) -> str:
    """``'13 min 9 s (setup 2 min 7 s, then 11 min 1 s'``: a command's time as make setup + the command (the
    caller closes the parenthesis)."""
    return f"{minutes_seconds(setup + run)} (setup {minutes_seconds(setup)}, then {minutes_seconds(run)}"


def dag_seconds(clone_dir: Path) -> float | None:
    run = last_complete_run(clone_dir / ".snakemake" / "log")
    return run.seconds if run else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repo", default=str(Path(__file__).resolve().parent.parent), help="the repository to clone")
    p.add_argument("--demo-cores", type=int, nargs="*", default=[2, 4], help="a fresh make demo per value")
    p.add_argument("--test-cores", type=int, default=2, help="make test / test-fast CORES (0: skip them)")
    p.add_argument("--tables", default="results/tables", help="the demo's outputs compared across core counts")
    p.add_argument("--workdir", default="", help="keep the clones here (default: a temporary folder, deleted)")
    args = p.parse_args()
    repo = Path(args.repo).resolve()
    work = Path(args.workdir).resolve() if args.workdir else Path(tempfile.mkdtemp(prefix="ssmttm-quickstart-"))
    work.mkdir(parents=True, exist_ok=True)
    dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    print(machine_line())
    print("protocol: one run per command, each from a fresh git clone with a new .venv and a cold numba seed "
          f"cache; rounds=1 (end-to-end times of minutes, nothing compared side by side); demo CORES "
          f"{' '.join(map(str, args.demo_cores)) or '-'}, test CORES {args.test_cores or '-'}"
          + ("; the working tree has uncommitted changes, which the clones do not hold" if dirty else ""),
          flush=True)
    figures: dict[str, object] = {"cores": args.demo_cores[0]} if args.demo_cores else {}
    if args.test_cores:
        figures["test_cores"] = args.test_cores
    try:
        demos = []
        for cores in args.demo_cores:
            d = work / f"demo-cores{cores}"
            rev = clone(repo, d)
            log = d.parent / f"demo-cores{cores}.log"
            setup, run = make(d, "setup", cores, log), make(d, "demo", cores, log)
            dag = dag_seconds(d)
            suffix = "" if cores == args.demo_cores[0] else f"_cores{cores}"
            print(f"make demo CORES={cores} ({rev}): {timing(setup, run)}; "
                  f"DAG {minutes_seconds(dag) if dag else '?'} by Snakemake's log)", flush=True)
            figures[f"make_demo{suffix}_s"] = round(setup + run)
            figures[f"make_demo{suffix}_setup_s"] = round(setup)
            if dag:
                figures[f"make_demo{suffix}_dag_s"] = round(dag)
            demos.append(d)
        for other in demos[1:]:
            differ = same_tree(demos[0] / args.tables, other / args.tables)
            if differ or not (demos[0] / args.tables).is_dir():
                sys.exit(f"{args.tables} differs between {demos[0].name} and {other.name}: {differ[:10]}")
        if len(demos) > 1:
            print(f"{args.tables}: byte-identical across CORES {' '.join(map(str, args.demo_cores))}", flush=True)
        if args.test_cores:
            cores, d = args.test_cores, work / "test"
            rev = clone(repo, d)
            log = d.parent / "test.log"
            setup, run = make(d, "setup", cores, log), make(d, "test", cores, log)
            passed = _PASSED.findall(log.read_text(encoding="utf-8", errors="replace"))
            fast = make(d, "test-fast", cores, log)
            print(f"make test CORES={cores} ({rev}): {timing(setup, run)}; {passed[-1] if passed else '?'} passed); "
                  f"make test-fast after it: {minutes_seconds(fast)}", flush=True)
            figures.update(make_test_s=round(setup + run), make_test_setup_s=round(setup), make_test_fast_s=round(fast))
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    print(figures_line(figures))


if __name__ == "__main__":
    main()
