"""Stage processes and numba's on-disk cache (ssmttm.numba_cache.private_numba_cache).

librosa compiles numba kernels with ``cache=True``; processes compiling the same kernels at once into one
cache folder can leave a kernel and its ufunc wrapper from different processes, and every later process
that loads them segfaults (numba/numba#10128). The race test below recreates what a new user's first
``make demo`` did: attribute evaluations started while another one is still compiling into a cold cache
next to librosa's sources. Each stage process must compile into a cache of its own instead.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ssmttm import audio, cli, numba_cache

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only (flock, pids of /tmp folders)")

SR = 22050
# Jobs 2 and 3 start once 1 and 3 kernel caches exist. Before each stage process had a cache of its own,
# this segfaulted in 10 runs of this test out of 10, always in its first trial; with only a second job,
# started at 1 cache file, in 2 runs of 4, started at 3, in none of 5.
START_AFTER = (1, 3)
TRIALS = 2


def _nbi(*roots: Path) -> list[Path]:
    return [p for r in roots if r.exists() for p in r.rglob("*.nbi")]


def _wait_for(pred, first: subprocess.Popen, limit_s: float = 120.0) -> None:
    """Until ``pred()`` or ``first`` has exited; the limit only keeps a broken setup from hanging (the
    race needs the event, not a time)."""
    end = time.monotonic() + limit_s
    while not pred() and first.poll() is None and time.monotonic() < end:
        time.sleep(0.05)


@pytest.fixture()
def evaluation(tmp_path):
    """A one-clip ground-truth attribute evaluation: reference folder, prompt set and truth table."""
    ref = tmp_path / "ref"
    ref.mkdir()
    t = np.arange(2 * SR) / SR  # 2 s of a C major chord with noise-burst beats
    x = sum(0.2 * np.sin(2 * np.pi * f * t) for f in (261.63, 329.63, 392.0))
    x = x + 0.3 * ((t * 2.0) % 1.0 < 0.05) * np.random.default_rng(0).standard_normal(t.size)
    audio.write(ref / "track_0000001.wav", x[None].astype(np.float32), SR)
    (ref / "index.json").write_text(json.dumps({"kind": "reference", "clips": [
        {"id": "track_0000001", "file": "track_0000001.wav", "ref_id": "track_0000001"}]}))
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"name": "t", "prompts": [
        {"prompt_id": "p1", "text": "a chord", "ref_id": "track_0000001"}]}))
    truth = tmp_path / "truth.tsv"
    truth.write_text("track_id\tbpm\tkey\tmode\tdrums\ntrack_0000001\t120\tC\tmajor\t1\n")
    return ref, prompts, truth


def test_concurrent_attribute_jobs_on_a_cold_cache(repo, tmp_path, evaluation):
    ref, prompts, truth = evaluation
    seed, tmp = tmp_path / "seed", tmp_path / "tmp"
    tmp.mkdir()
    librosa_src = Path(importlib.util.find_spec("librosa").submodule_search_locations[0])
    base_env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    # the seed (shared warm cache) and the temporary folders (private caches) of this test only
    base_env.update(SSMTTM_NUMBA_SEED=str(seed), TMPDIR=str(tmp), OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1",
                    OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")

    def job(env, i: int, trial: int) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "ssmttm", "evaluate", "--metric", "attributes", "--system", "ground_truth",
               "--reference", str(ref), "--prompts", str(prompts), "--truth", str(truth), "--bootstrap", "10",
               "--cache-dir", str(tmp_path / "emb"), "--out", str(tmp_path / f"scores{trial}_{i}.json")]
        with open(tmp_path / f"job{trial}_{i}.log", "wb") as log:
            return subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=log)

    # A copy of librosa first on PYTHONPATH: numba's default cache (its __pycache__ folders) is shared by
    # every process, as in a fresh virtualenv, and made cold before each trial, without touching the real one.
    site = tmp_path / "site"
    shutil.copytree(librosa_src, site / "librosa", ignore=shutil.ignore_patterns("__pycache__"))
    env = dict(base_env, PYTHONPATH=os.pathsep.join([str(site), str(repo)]))
    caches = (site, tmp)  # where compiled kernels can land: librosa's tree, the private caches
    wrote_tree = []
    for trial in range(TRIALS):
        for p in site.rglob("*.nb[ic]"):
            p.unlink()
        procs = [job(env, 0, trial)]
        # the next jobs start while the first is compiling (after some of its cache files): they catch up
        # on what it has written, then compile the same kernels at the same time, as Snakemake's jobs did
        for n in START_AFTER:
            _wait_for(lambda n=n: len(_nbi(*caches)) >= n, procs[0])
            procs.append(job(env, len(procs), trial))
        rcs = [p.wait(timeout=600) for p in procs]
        rcs.append(job(env, len(procs), trial).wait(timeout=600))  # a job started after them loads what they left
        for i, rc in enumerate(rcs):
            err = (tmp_path / f"job{trial}_{i}.log").read_text(errors="replace")
            assert rc == 0, f"trial {trial} job {i}: exit {rc} (-11: segfault)\n{err[-3000:]}"
            rows = json.loads((tmp_path / f"scores{trial}_{i}.json").read_text())["rows"]
            assert {r["metric"] for r in rows} >= {"tempo_acc", "key_acc"}
        wrote_tree.append(len(_nbi(site)))
    assert wrote_tree == [0] * TRIALS, "stage processes wrote numba's cache into librosa's shared folder"
    assert not list(tmp.glob("ssmttm-numba-*")), "private numba caches left behind"
    assert _nbi(seed / "cache"), "the compiled kernels were not kept as the seed for later jobs"


def test_user_numba_cache_dir_is_left_alone(monkeypatch, tmp_path):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "mine"))
    monkeypatch.setenv(numba_cache.NUMBA_SEED_ENV, str(tmp_path / "seed"))
    with numba_cache.private_numba_cache() as private:
        assert private is None and os.environ["NUMBA_CACHE_DIR"] == str(tmp_path / "mine")
    assert not (tmp_path / "seed").exists()


def _files(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): p.read_text() for p in folder.rglob("*") if p.is_file()}


def test_private_cache_is_seeded_published_and_removed(monkeypatch, tmp_path):
    seed, tmp = tmp_path / "seed", tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv(numba_cache.NUMBA_SEED_ENV, str(seed))
    monkeypatch.setattr("tempfile.tempdir", str(tmp))
    # a private cache of a process that died without cleaning up (its pid no longer runs), and an old one
    # of a process that still runs (this one)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp / f"ssmttm-numba-{int(dead.stdout)}-abc123"
    alive = tmp / f"ssmttm-numba-{os.getpid()}-def456"
    for d in (stale, alive):
        d.mkdir()
        os.utime(d, (time.time() - 7200, time.time() - 7200))

    with numba_cache.private_numba_cache() as private:  # no seed yet: starts empty, compiles, publishes
        assert os.environ["NUMBA_CACHE_DIR"] == str(private) and private.parent == tmp and not any(private.iterdir())
        (private / "lib_abc").mkdir()
        (private / "lib_abc" / "f-1.py311.nbi").write_text("index 1")
        (private / "lib_abc" / "f-1.py311.1.nbc").write_text("data 1")
    assert not private.exists() and "NUMBA_CACHE_DIR" not in os.environ
    assert not stale.exists() and alive.exists()
    assert _files(seed / "cache") == {"lib_abc/f-1.py311.nbi": "index 1", "lib_abc/f-1.py311.1.nbc": "data 1"}

    before = (seed / "cache").stat().st_ino
    with numba_cache.private_numba_cache() as private:  # warm: a copy of the seed; nothing compiled, nothing published
        assert _files(private) == _files(seed / "cache")
    assert (seed / "cache").stat().st_ino == before

    with numba_cache.private_numba_cache() as private:  # compiles one more kernel: the whole cache becomes the seed
        (private / "lib_abc" / "g-9.py311.nbi").write_text("index 2")
    assert set(_files(seed / "cache")) == {"lib_abc/f-1.py311.nbi", "lib_abc/f-1.py311.1.nbc", "lib_abc/g-9.py311.nbi"}
    assert not list(seed.glob(".cache*")) and [d for d in tmp.glob("ssmttm-numba-*") if d != alive] == []

    monkeypatch.setenv(numba_cache.NUMBA_SEED_ENV, "")  # seeding off: a cold private cache, still removed at exit
    with numba_cache.private_numba_cache() as private:
        assert not any(private.iterdir())
    assert not private.exists()


def _probe_stage(argv):
    _SEEN.append(os.environ.get("NUMBA_CACHE_DIR"))
    return 0


_SEEN: list = []


def test_main_isolates_only_command_line_runs(monkeypatch):
    """``python -m ssmttm`` gets a private cache; in-process calls (tests) leave the environment alone."""
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv(numba_cache.NUMBA_SEED_ENV, "")
    monkeypatch.setitem(cli.STAGES, "probe", (__name__, "_probe_stage", "test stage"))
    monkeypatch.setattr("sys.argv", ["ssmttm", "probe"])
    _SEEN.clear()
    assert cli.main() == 0 and cli.main(["probe"]) == 0
    assert "ssmttm-numba-" in _SEEN[0] and not Path(_SEEN[0]).exists() and _SEEN[1] is None
