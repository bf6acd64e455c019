"""The demo's tiny weights are byte-reproducible: their sha256 goes into MIRROR.json and from there
into the weights receipts, so two builds with the same seed, in different processes, must write
identical bytes for every file (a torch.save straight to the atomic temporary file used to put its
random name into the zip's record names)."""

import hashlib
import os
import subprocess
import sys
import zipfile

from ssmttm.demo.mirror import TINY_WEIGHTS

def _start(repo, out, hash_seed):
    # `ssmttm demo-weights` (what demo-mirror runs beside the corpus) in a fresh interpreter per build, with
    # its own str-hash seed: set/dict order differs between them
    env = {**os.environ, "PYTHONHASHSEED": str(hash_seed), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "ssmttm", "demo-weights", "--out-dir", str(out), "--seed", "0"],
                            cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _hashes(proc, out):
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file()}


def test_tiny_weights_are_byte_identical_across_builds(repo, tmp_path):
    procs = [_start(repo, tmp_path / "a", 1), _start(repo, tmp_path / "b", 2)]  # side by side
    a, b = _hashes(procs[0], tmp_path / "a"), _hashes(procs[1], tmp_path / "b")
    for rel, _ in TINY_WEIGHTS.values():  # every builder wrote something
        assert any(k == rel or k.startswith(rel + "/") for k in a), rel
    assert sorted(a) == sorted(b)
    differ = [k for k in a if a[k] != b[k]]
    assert not differ, f"not reproducible: {differ}"
    # torch.save zips: the inner folder is a fixed name, never the temporary file's
    for rel in a:
        path = tmp_path / "a" / rel
        if zipfile.is_zipfile(path) and path.suffix in (".pt", ".pth", ".th"):
            tops = {n.split("/", 1)[0] for n in zipfile.ZipFile(path).namelist()}
            assert not any("tmp" in t for t in tops), (rel, tops)
