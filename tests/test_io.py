"""Atomic writes follow the umask: results on a shared machine get the permissions the user asked for.

tempfile.mkstemp/mkdtemp create 0600 files and 0700 folders whatever the umask; every atomic writer
(ssmttm.io, checkpoints, token shards) must hand its outputs over as open()/mkdir() would.
"""

from __future__ import annotations

import os
import stat
import threading

import numpy as np
import pandas as pd
import pytest

from ssmttm import io


@pytest.fixture(params=[0o022, 0o027], ids=["umask022", "umask027"])
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def expected(umask_value: int) -> tuple[int, int]:
    """(file mode, folder mode) of a plain open()/mkdir() under ``umask_value``."""
    return 0o666 & ~umask_value, 0o777 & ~umask_value


def no_temp_left(folder) -> None:
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_current_umask_reads_without_changing_it(umask):
    assert io.current_umask() == umask
    assert io.current_umask() == umask  # reading it did not change it
    f, d = expected(umask)
    assert io.file_mode() == f and io.dir_mode() == d


def test_umask_fallback_without_proc(umask, monkeypatch):
    """Where /proc does not say (not Linux), the set-and-restore fallback gives the same answer and
    leaves the mask as it was, also from several threads at once."""
    monkeypatch.setattr(io, "_umask_from_proc", lambda: None)
    seen = []
    threads = [threading.Thread(target=lambda: seen.extend(io.current_umask() for _ in range(200))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(seen) == {umask}
    assert io.current_umask() == umask
    probe = os.umask(umask)
    assert probe == umask  # still the test's mask


def test_atomic_writes_follow_umask(tmp_path, umask):
    f, d = expected(umask)
    io.write_text(tmp_path / "a.txt", "text\n")
    io.write_json(tmp_path / "b.json", {"x": 1})
    io.write_table(tmp_path / "c.tsv", pd.DataFrame({"x": [1, 2]}))
    io.write_table(tmp_path / "c.parquet", pd.DataFrame({"x": [1, 2]}))
    with io.atomic_open(tmp_path / "d.bin", "wb") as fh:
        fh.write(b"\0")
    with io.atomic_path(tmp_path / "e.npy") as tmp:
        np.save(tmp, np.zeros(3))
    for name in ("a.txt", "b.json", "c.tsv", "c.parquet", "d.bin", "e.npy"):
        assert mode(tmp_path / name) == f, name
    tmp = io.temp_dir(tmp_path, prefix=".staging.")
    assert mode(tmp) == d
    tmp.rmdir()
    no_temp_left(tmp_path)


def test_rewrite_over_a_private_file_takes_the_umask(tmp_path, umask):
    """The new file replaces the old one; it does not inherit an old 0600."""
    p = tmp_path / "a.json"
    p.write_text("{}")
    os.chmod(p, 0o600)
    io.write_json(p, {"x": 2})
    assert mode(p) == expected(umask)[0]


def test_checkpoint_folder_and_files_follow_umask(tmp_path, umask):
    torch = pytest.importorskip("torch")
    from ssmttm.models.checkpoint import save_model

    class Cfg:
        def to_dict(self):
            return {"d": 2}

    lm = torch.nn.Linear(2, 2)
    lm.cfg = Cfg()
    out = save_model(tmp_path / "ckpt" / "step_0000001", lm, {"step": 1}, extra_files={"trainer_state.pt": b"x"})
    f, d = expected(umask)
    assert mode(out) == d
    for p in out.iterdir():
        assert mode(p) == f, p.name
    no_temp_left(tmp_path / "ckpt")


def test_token_shard_folder_and_files_follow_umask(tmp_path, umask):
    pytest.importorskip("pyarrow")
    from ssmttm.tokens.store import write_shard

    rows = [({"clip_id": "00_c0", "track_id": "track_0", "shard": "00", "split": "train", "licence": "by",
              "caption_ids": [1, 2], "audio_sha256": "0" * 64}, np.ones((2, 5), dtype=np.uint16))]
    meta = {"codec": "dac", "weights": "dac_tiny", "weights_sha256": "ab" * 32, "sample_rate": 44100,
            "frame_rate": 44100 / 512, "n_codebooks": 2, "cardinality": 1024}
    write_shard(tmp_path / "tokens" / "00", rows, meta, extra_files={"rejected.tsv": "clip_id\treason\n"})
    f, d = expected(umask)
    out = tmp_path / "tokens" / "00"
    assert mode(out) == d
    names = sorted(p.name for p in out.iterdir())
    assert "rejected.tsv" in names and "meta.json" in names
    for p in out.iterdir():
        assert mode(p) == f, p.name
    no_temp_left(tmp_path / "tokens")


def test_failed_write_leaves_nothing(tmp_path, umask):
    with pytest.raises(RuntimeError):
        with io.atomic_open(tmp_path / "a.txt", "w") as fh:
            fh.write("half")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_weights_copied_from_private_files_follow_umask(tmp_path, umask, monkeypatch):
    """save_pretrained and hub downloads write 0600; the weights stage hands copies over with umask modes."""
    from ssmttm import weights

    monkeypatch.chdir(tmp_path)
    src = tmp_path / "src" / "t5_tiny"
    (src / "sub").mkdir(parents=True)
    for rel in ("model.safetensors", "sub/tokenizer.json"):
        (src / rel).write_bytes(b"w")
        os.chmod(src / rel, 0o600)
    os.chmod(src / "sub", 0o700)
    single = tmp_path / "src" / "dac.pth"
    single.write_bytes(b"d")
    os.chmod(single, 0o600)
    weights.fetch("t5_tiny", str(src), "w")
    weights.fetch("dac", str(single), "w")
    f, d = expected(umask)
    for p in [tmp_path / "w" / "t5_tiny", tmp_path / "w" / "t5_tiny" / "sub", tmp_path / "w" / "dac"]:
        assert mode(p) == d, p
    for p in ["t5_tiny/model.safetensors", "t5_tiny/sub/tokenizer.json", "t5_tiny.json", "dac/dac.pth", "dac.json"]:
        assert mode(tmp_path / "w" / p) == f, p


def test_apply_umask_modes_keeps_execute_bits_and_skips_links(tmp_path, umask):
    tool = tmp_path / "run.sh"
    tool.write_text("#!/bin/sh\n")
    os.chmod(tool, 0o700)
    data = tmp_path / "data.bin"
    data.write_bytes(b"x")
    os.chmod(data, 0o600)
    (tmp_path / "link").symlink_to(data)
    io.apply_umask_modes(tmp_path)
    f, d = expected(umask)
    assert mode(tool) == d and mode(data) == f


def test_sha256_file_matches_hashlib_on_large_and_empty_files(tmp_path):
    import hashlib

    data = np.random.default_rng(0).bytes((3 << 20) + 17)  # several read blocks and a ragged tail
    big, empty = tmp_path / "big.bin", tmp_path / "empty.bin"
    big.write_bytes(data)
    empty.write_bytes(b"")
    assert io.sha256_file(big) == hashlib.sha256(data).hexdigest()
    assert io.sha256_file(empty) == hashlib.sha256(b"").hexdigest()
