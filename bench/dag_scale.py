"""How long Snakemake takes to plan the paper config at the real corpus's scale.

Plans `snakemake -n all` for config.yaml (100 shards) in a scratch working directory whose fetched
metadata is a synthetic 55,701-track set, and, side by side, a one-job-per-track design with just
two rules over the same tracks (the design this pipeline avoids). Wall seconds and peak resident
memory of each snakemake process; median of --repeats runs.

Last line: tracks=55701 seconds=<s> peak_mb=<MB> per_track_seconds=<s> per_track_peak_mb=<MB>
Targets for the sharded design: seconds <= 5 and peak_mb <= 500.
"""

from __future__ import annotations

import argparse
import os
import statistics
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
from _protocol import machine_line  # noqa: E402

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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-baseline", action="store_true", help="skip the one-job-per-track design")
    a = p.parse_args()
    print(machine_line(), flush=True)
    n = JAMENDO_N_TRACKS_RAW_30S
    with tempfile.TemporaryDirectory(prefix="ssmttm-dag-") as tmp:
        work = Path(tmp)
        write_metadata(work / "results" / "data" / "source" / "metadata", n_tracks=n)
        cmd = [snakemake_bin(), "-n", "--cores", "4", "-q", "--snakefile", str(REPO / "Snakefile"),
               "--directory", str(work), "all"]
        runs = [run_measured(cmd, work) for _ in range(a.repeats)]
        secs = statistics.median(r[0] for r in runs)
        peak = max(r[1] for r in runs)
        print(f"sharded design (config.yaml, 100 shards): median {secs:.2f} s, peak {peak:.0f} MB")
        base_s = base_mb = float("nan")
        if not a.no_baseline:
            (work / "Snakefile.per_track").write_text(PER_TRACK_SNAKEFILE)
            cmd = [snakemake_bin(), "-n", "--cores", "4", "-q", "--snakefile", "Snakefile.per_track",
                   "--directory", str(work), "all"]
            base_s, base_mb = run_measured(cmd, work)
            print(f"one-job-per-track design (2 rules, {n} tracks): {base_s:.2f} s, peak {base_mb:.0f} MB")
    print(f"tracks={n} seconds={secs:.2f} peak_mb={peak:.0f} per_track_seconds={base_s:.2f} per_track_peak_mb={base_mb:.0f}")


if __name__ == "__main__":
    main()
