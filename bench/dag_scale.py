"""How long Snakemake takes to plan the paper config at the real corpus's scale.

Plans `snakemake -n all` for config.yaml (100 shards) in a scratch working directory whose fetched
metadata is a synthetic 55,701-track set, and, side by side, a one-job-per-track design with just
two rules over the same tracks (the design this pipeline avoids). Wall seconds and peak resident
memory of each snakemake process.

Protocol (bench/_protocol.py): machine line first; threads pinned (the environment variables, which
the snakemake processes inherit); one warm-up plan of the sharded design (it loads the same
Snakemake and Python files from disk as the other); then ``--rounds`` rounds alternating the two
designs; every figure is the median [min–max] over the rounds, the per-track / sharded time ratio
per round.

Last line: tracks=55701 seconds=<s> peak_mb=<MB> per_track_seconds=<s> per_track_peak_mb=<MB>
per_track_over_sharded=<ratio> (medians). Targets for the sharded design: seconds <= 5 and peak_mb <= 500.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ssmttm.constants import JAMENDO_N_TRACKS_RAW_30S  # noqa: E402
from ssmttm.demo.scale import write_metadata  # noqa: E402

sys.path.insert(0, str(REPO / "bench"))
from _protocol import add_protocol_args, alternate, begin, figure_line, figures_line  # noqa: E402

PER_TRACK_SNAKEFILE = '''
TRACKS = []
with open("results/data/source/metadata/raw_30s_cleantags.tsv") as f:
    next(f)
    for line in f:
        TRACKS.append(line.split("\\t", 4)[3][:-4])

rule all:
    input: expand("per_track/clips/{t}.flac", t=TRACKS)

rule segment:
    input: "per_track/audio/{t}.mp3"
    output: "per_track/clips/{t}.flac"
    shell: "cp {input} {output}"

rule fetch:
    output: "per_track/audio/{t}.mp3"
    shell: "touch {output}"
'''


def snakemake_bin() -> str:
    cand = Path(sys.executable).with_name("snakemake")
    return str(cand) if cand.exists() else "snakemake"


def run_measured(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one child process."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.stderr.write(out.decode(errors="replace")[-4000:])
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}")
    return seconds, usage.ru_maxrss / 1024.0  # ru_maxrss is in KiB on Linux


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tracks", type=int, default=JAMENDO_N_TRACKS_RAW_30S, help="synthetic metadata rows")
    p.add_argument("--no-baseline", action="store_true", help="skip the one-job-per-track design")
    add_protocol_args(p, threads=2)
    a = p.parse_args(argv)
    begin(a)
    n = a.tracks
    with tempfile.TemporaryDirectory(prefix="ssmttm-dag-") as tmp:
        work = Path(tmp)
        write_metadata(work / "results" / "data" / "source" / "metadata", n_tracks=n)
        (work / "Snakefile.per_track").write_text(PER_TRACK_SNAKEFILE)
        sharded = [snakemake_bin(), "-n", "--cores", "4", "-q", "--snakefile", str(REPO / "Snakefile"),
                   "--directory", str(work), "all"]
        per_track = [snakemake_bin(), "-n", "--cores", "4", "-q", "--snakefile", "Snakefile.per_track",
                     "--directory", str(work), "all"]

        def side(cmd):
            def run() -> dict:
                seconds, peak = run_measured(cmd, work)
                return {"seconds": seconds, "peak_mb": peak}
            return run

        print("warm-up: the sharded design only (a per-track plan takes about a minute; both load the same "
              "Snakemake and Python files)", flush=True)
        sides = {"sharded": side(sharded)}
        if not a.no_baseline:
            sides["per_track"] = side(per_track)
        r = alternate(sides, a.rounds, a.warmup, warm=["sharded"],
                      on_call=lambda i, name, x: print(f"  round {i + 1} {name}: {x['seconds']:.2f} s, "
                                                       f"{x['peak_mb']:.0f} MB", flush=True))
    secs, peak = r.spread("sharded", "seconds"), r.spread("sharded", "peak_mb")
    print(f"sharded design (config.yaml, 100 shards, {n} tracks):")
    print("  " + figure_line("planning time", secs, "s", "{:.2f}"))
    print("  " + figure_line("peak memory", peak, "MB", "{:.0f}"))
    figures = {"tracks": n, "seconds": f"{secs.median:.2f}", "peak_mb": f"{peak.median:.0f}"}
    if not a.no_baseline:
        base_s, base_mb = r.spread("per_track", "seconds"), r.spread("per_track", "peak_mb")
        ratio = r.ratio("per_track", "sharded", "seconds")
        print(f"one-job-per-track design (2 rules, {n} tracks):")
        print("  " + figure_line("planning time", base_s, "s", "{:.2f}"))
        print("  " + figure_line("peak memory", base_mb, "MB", "{:.0f}"))
        print(figure_line("per-track / sharded planning time (per round)", ratio))
        figures.update(per_track_seconds=f"{base_s.median:.2f}", per_track_peak_mb=f"{base_mb.median:.0f}",
                       per_track_over_sharded=ratio)
    figures["rounds"] = a.rounds
    print(figures_line(figures))


if __name__ == "__main__":
    main()
