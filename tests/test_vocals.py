"""Vocals stage: safe HTDemucs loading, the tiny model round trip, separation and keep mode."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

torch = pytest.importorskip("torch")
pytest.importorskip("demucs")

from ssmttm import settings  # noqa: E402
from ssmttm.data import segment as seg  # noqa: E402
from ssmttm.data import vocals as v  # noqa: E402
from ssmttm.data.options import VocalsSettings  # noqa: E402

SR = 44_100
SECONDS = 1.5


def _mark(path: str) -> None:  # what a malicious pickle would run on load
    Path(path).write_text("code ran")


class Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (_mark, (self.marker,))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "htdemucs_tiny.th"
    model = v.build_tiny_htdemucs(path, seed=0)
    return path, model


def _clip(seconds=SECONDS, channels=2, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    x = [0.3 * np.sin(2 * np.pi * (200 + 100 * c) * t) + 0.05 * rng.standard_normal(len(t)) for c in range(channels)]
    return np.stack(x, axis=1).astype(np.float32)


def _segment_table(root: Path) -> Path:
    """Clips 1_000 (stereo), 2_000 (mono), 3_000 (broken file) and one rejected track row."""
    d = root / "clips"
    d.mkdir()
    sf.write(d / "1_000.flac", _clip(seed=1), SR)
    sf.write(d / "2_000.flac", _clip(channels=1, seed=2)[:, 0], SR)
    (d / "3_000.flac").write_bytes(b"fLaC" + b"\x00" * 200)
    rows = [
        {"clip_id": "1_000", "track_id": "track_0000001", "channels": 2, "clip_path": str(d / "1_000.flac")},
        {"clip_id": "2_000", "track_id": "track_0000002", "channels": 1, "clip_path": str(d / "2_000.flac")},
        {"clip_id": "3_000", "track_id": "track_0000003", "channels": 2, "clip_path": str(d / "3_000.flac")},
    ]
    full = [{**{c: "" for c in seg.COLUMNS}, "shard": "00", "status": "ok", "stage": "segment",
             "sample_rate": SR, "seconds": SECONDS, **r} for r in rows]
    full.append({**{c: "" for c in seg.COLUMNS}, "track_id": "track_0000004", "shard": "00",
                 "status": "rejected", "reason": "corrupt: x", "stage": "segment"})
    pd.DataFrame(full, columns=seg.COLUMNS).to_csv(root / "00.tsv", sep="\t", index=False)
    return root / "00.tsv"


def test_tiny_roundtrip_through_loader(tiny):
    path, model = tiny
    assert path.stat().st_size < 2_000_000
    from demucs.htdemucs import HTDemucs

    with torch.serialization.safe_globals([HTDemucs, v.Fraction]):
        pkg = torch.load(path, map_location="cpu", weights_only=True)
    assert pkg["klass"] is HTDemucs and set(pkg) >= {"args", "kwargs", "state", "training_args"}
    assert isinstance(pkg["kwargs"]["segment"], v.Fraction)  # like the released htdemucs
    again = path.parent / "again.th"
    v.build_tiny_htdemucs(again, seed=0)
    assert again.read_bytes() == path.read_bytes()  # reproducible file for the demo mirror's pins
    loaded = v.load_htdemucs(path)
    assert isinstance(loaded, HTDemucs) and list(loaded.sources) == list(v.SOURCES)
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_loader_refuses_disallowed_pickles(tmp_path, tiny):
    path, _ = tiny
    marker = tmp_path / "ran.txt"
    from demucs.htdemucs import HTDemucs

    with torch.serialization.safe_globals([HTDemucs, v.Fraction]):
        pkg = torch.load(path, map_location="cpu", weights_only=True)
    pkg["training_args"] = {"hook": Evil(str(marker))}
    bad = tmp_path / "evil.th"
    torch.save(pkg, bad)
    with pytest.raises(v.CheckpointError, match=r"evil\.th.*refused.*_mark.*not allow-listed"):
        v.load_htdemucs(bad)
    assert not marker.exists()
    other = tmp_path / "other.th"
    torch.save({"klass": "HTDemucs", "args": (), "kwargs": {}, "state": {}}, other)
    with pytest.raises(v.CheckpointError, match="other.th: klass"):
        v.load_htdemucs(other)
    junk = tmp_path / "junk.th"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(v.CheckpointError, match="junk.th: not a readable torch checkpoint"):
        v.load_htdemucs(junk)


def test_separation_shape_and_values(tiny):
    _, model = tiny
    x = torch.from_numpy(np.stack([_clip(seed=3).T, _clip(seed=4).T]))  # [2, 2, T]
    y = v.separate_no_vocals(model, x, shifts=1, overlap=0.25, device="cpu")
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert not torch.allclose(y, x, atol=1e-3)
    one = v.separate_no_vocals(model, x[1:], shifts=1, overlap=0.25, device="cpu")
    torch.testing.assert_close(one[0], y[1], atol=1e-4, rtol=1e-4)  # batching does not change a clip


def test_separate_shard_rejects_broken_and_continues(tmp_path, tiny):
    path, _ = tiny
    table = _segment_table(tmp_path)
    rc = v.main(["--shard", "00", "--clips", str(table), "--mode", "separate", "--model-path", str(path),
                 "--device", "cpu", "--shifts", "1", "--overlap", "0.25", "--batch-size", "3",
                 "--out-dir", str(tmp_path / "nv"), "--table", str(tmp_path / "nv.tsv")])
    assert rc == 0
    df = pd.read_csv(tmp_path / "nv.tsv", sep="\t", dtype=str, keep_default_na=False)
    assert list(df.columns) == v.COLUMNS
    assert list(df["status"]) == ["ok", "ok", "rejected", "rejected"]
    assert df["reason"][2].startswith("unreadable clip: ") and "3_000.flac" in df["reason"][2]
    assert df["reason"][3] == "corrupt: x"
    assert set(df["vocals"]) == {"separate"}
    from ssmttm.io import sha256_file

    assert set(df["model_sha256"]) == {sha256_file(path)}
    for i, ch in ((0, 2), (1, 1)):
        y, sr = sf.read(df["audio_path"][i], always_2d=True)
        src = sf.read(tmp_path / "clips" / f"{df['clip_id'][i]}.flac", always_2d=True)[0]
        assert sr == SR and y.shape == (int(SECONDS * SR), ch) and np.isfinite(y).all()
        assert np.abs(y - src).max() > 1e-2
        assert df["sha256"][i] == sha256_file(df["audio_path"][i])
    assert sorted(os.listdir(tmp_path / "nv")) == ["1_000.flac", "2_000.flac"]


def test_keep_mode_links(tmp_path):
    table = _segment_table(tmp_path)
    # as the rule passes it with vocals.mode keep: --model-path with no value (no weights input)
    v.main(["--shard", "00", "--clips", str(table), "--model-path", "--settings", '{"mode": "keep"}',
            "--out-dir", str(tmp_path / "kv"), "--table", str(tmp_path / "kv.tsv")])
    df = pd.read_csv(tmp_path / "kv.tsv", sep="\t", dtype=str, keep_default_na=False)
    assert list(df["status"]) == ["ok", "ok", "rejected", "rejected"]
    assert df["reason"][2].startswith("unreadable clip: ")
    assert set(df["vocals"]) == {"keep"} and set(df["model_sha256"]) == {""}
    out = tmp_path / "kv" / "1_000.flac"
    assert out.read_bytes() == (tmp_path / "clips" / "1_000.flac").read_bytes()
    assert os.stat(out).st_ino == os.stat(tmp_path / "clips" / "1_000.flac").st_ino  # hard link


def test_bad_flags_fail_fast(tmp_path):
    table = _segment_table(tmp_path)
    base = ["--shard", "00", "--clips", str(table), "--out-dir", "o", "--table", "t.tsv"]
    with pytest.raises(SystemExit):
        v.main(base + ["--mode", "separate"])  # no --model-path
    with pytest.raises(SystemExit):
        v.main(base + ["--mode", "separate", "--model-path", str(tmp_path / "nope.th")])
    with pytest.raises(SystemExit):
        v.main(base + ["--mode", "separate", "--model-path", str(tmp_path / "nope.json")])


def test_model_path_from_weights_receipt(tmp_path, tiny):
    path, _ = tiny
    from ssmttm import io

    folder = tmp_path / "htdemucs_tiny"
    folder.mkdir()
    (folder / path.name).write_bytes(path.read_bytes())
    io.write_json(tmp_path / "htdemucs_tiny.json", {"name": "htdemucs_tiny", "path": str(folder / path.name),
                                                     "kind": "file", "bytes": path.stat().st_size})
    assert v.checkpoint_file(tmp_path / "htdemucs_tiny.json") == folder / path.name
    assert v.checkpoint_file(folder) == folder / path.name
    knobs = settings.resolve(VocalsSettings, {"mode": "separate", "device": "cpu"})
    remover = v.HTDemucsRemover(tmp_path / "htdemucs_tiny.json", device=knobs.device, shifts=knobs.shifts,
                                overlap=knobs.overlap, batch_size=knobs.batch_size)
    from ssmttm.io import sha256_file

    assert remover.model_sha256 == sha256_file(path)


def test_import_is_cheap():
    code = "import sys, ssmttm.data.vocals, ssmttm.data.segment; print('torch' in sys.modules, 'demucs' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.stdout.split() == ["False", "False"]
