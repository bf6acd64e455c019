"""The demo's tiny weights are byte-reproducible: their sha256 goes into MIRROR.json and from there
into the weights receipts, so two builds with the same seed, in different processes, must write
identical bytes for every file (a torch.save straight to the atomic temporary file used to put its
random name into the zip's record names)."""

import json
import os
import subprocess
import sys
import zipfile

from ssmttm.demo.mirror import TINY_WEIGHTS

BUILD = """
import hashlib, json, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
from ssmttm.demo.mirror import TINY_WEIGHTS, _call
out = Path(sys.argv[1])
for name, (rel, builder) in TINY_WEIGHTS.items():
    _call(builder, out / rel, seed=0)
print(json.dumps({p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                  for p in sorted(out.rglob("*")) if p.is_file()}))
"""


def _build(repo, out, hash_seed):
    # a fresh interpreter per build, with its own str-hash seed: set/dict order differs between them
    env = {**os.environ, "PYTHONHASHSEED": str(hash_seed), "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", BUILD, str(out)], cwd=repo, env=env, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_tiny_weights_are_byte_identical_across_builds(repo, tmp_path):
    a = _build(repo, tmp_path / "a", 1)
    b = _build(repo, tmp_path / "b", 2)
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
