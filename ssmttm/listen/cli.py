"""``python -m ssmttm listen serve|export|simulate``: the commands a person runs around a listening test.

- ``serve --test NAME``: the rating app over results/listening/NAME/kit, ratings into
  results/listening/NAME/ratings.sqlite (127.0.0.1:8765 unless ``--host`` / ``--port``, whose defaults
  are the config schema's ``listening.host`` / ``listening.port``).
- ``export --test NAME --out DIR``: the same pages as a static folder for any web host; raters download
  their ratings as JSON files, which ``listening_results`` reads (``ratings: {source: files, dir: ...}``).
- ``simulate``: scripted raters through the rating app (the offline demo's ratings).

The kit itself is built by the pipeline (rule listening_kit, ``ssmttm listening-kit``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ssmttm import settings as st
from ssmttm.config import NAME_PATTERN
from ssmttm.listen.options import DB_FILE, KIT_DIR, PLAN_FILE, ServeSettings


def test_dir(parser: argparse.ArgumentParser, results_dir: str, test: str) -> Path:
    """results/listening/<test>, checked to hold a built kit (else the error says how to build it)."""
    import re

    if not re.fullmatch(NAME_PATTERN, test):
        parser.error(f"--test {test!r}: not a test name (pattern {NAME_PATTERN})")
    d = Path(results_dir) / "listening" / test
    if not (d / KIT_DIR / PLAN_FILE).is_file():
        parser.error(f"{d / KIT_DIR / PLAN_FILE}: no kit for test {test!r}; build it first: "
                     f"snakemake --cores 1 {d / KIT_DIR}")
    return d


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="ssmttm listen", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve the rating pages of a test's kit")
    serve.add_argument("--test", required=True, help="listening.tests.<name>")
    serve.add_argument("--results-dir", default="results", help="the pipeline's results folder")
    serve.add_argument("--db", default=None, help=f"ratings database (default results/listening/<test>/{DB_FILE})")
    st.add_arguments(serve, ServeSettings)

    export = sub.add_parser("export", help="write the kit and the pages as a static folder for any web host")
    export.add_argument("--test", required=True)
    export.add_argument("--results-dir", default="results")
    export.add_argument("--out", required=True, help="the folder to write (new, empty, or an earlier export)")

    sim = sub.add_parser("simulate", help="scripted raters through the rating app (the offline demo)")
    sim.add_argument("--test-dir", required=True, help="results/listening/<test>")
    sim.add_argument("--raters", type=int, required=True)
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--db", required=True, help="the ratings database to write")

    args = p.parse_args(argv)
    if args.command == "serve":
        from ssmttm.listen.app import serve as run_server

        opts = st.from_args(serve, ServeSettings, args)
        d = test_dir(serve, args.results_dir, args.test)
        run_server(d, opts.host, opts.port, db_path=Path(args.db) if args.db else None)
        return 0
    if args.command == "export":
        from ssmttm.listen.app import export as write_export

        d = test_dir(export, args.results_dir, args.test)
        out = Path(args.out)
        write_export(d, out)  # refuses a folder that is neither empty nor an earlier export of a kit
        print(f"static listening test written to {out}", file=sys.stderr)
        return 0
    from ssmttm.listen.simulate import simulate

    if args.raters < 1:
        sim.error("--raters must be >= 1")
    simulate(Path(args.test_dir), args.raters, args.seed, Path(args.db))
    return 0
