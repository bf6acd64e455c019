"""Stages tokenize, ceiling and ceiling-summary on a tiny manifest, plus the ceiling metrics."""

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("torch")
warnings.filterwarnings("ignore", message=".*weight_norm.*")

from ssmttm import audio, io  # noqa: E402
from ssmttm.codec.dac import build_tiny_dac  # noqa: E402
from ssmttm.data.manifest import MANIFEST_COLUMNS, write_manifest  # noqa: E402
from ssmttm.tokens import ceiling, tokenize  # noqa: E402
from ssmttm.tokens.store import CODES_FILE, TokenShard, codes_sha256  # noqa: E402

SR = 44_100


def _row(clip_id, shard, path, split="train"):
    row = {c: "" for c, kind in MANIFEST_COLUMNS.items() if kind == "str"}
    row.update(clip_id=clip_id, track_id=f"track_{clip_id}", shard=shard, source_path=f"{shard}/{clip_id}.mp3",
               offset=0.0, seconds=1.0, licence="by-sa", caption="c", captions='["c"]', split=split,
               sha256=f"{abs(hash(clip_id)):064x}"[:64], audio_path=str(path), sample_rate=SR, channels=2,
               vocals="removed", captioner="tags")
    return row


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Shard 00: 4 good clips (two lengths, one 22.05 kHz mono) + corrupt, empty, missing; shard 01: none."""
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    rows = []
    for i, (sr, ch, sec) in enumerate([(SR, 2, 1.0), (SR, 2, 1.0), (SR, 2, 0.7), (22_050, 1, 1.0)]):
        t = np.arange(int(sr * sec)) / sr
        x = 0.3 * np.sin(2 * np.pi * (220 * (i + 1)) * t) + 0.05 * rng.standard_normal(t.shape)
        audio.write(root / f"good{i}.flac", np.repeat(x[None], ch, 0).astype(np.float32), sr)
        rows.append(_row(f"00_good{i}", "00", root / f"good{i}.flac", split="valid" if i == 3 else "train"))
    (root / "corrupt.flac").write_bytes(b"fLaC this is not audio")
    audio.write(root / "empty.flac", np.zeros((2, 0), np.float32), SR)
    rows += [_row("00_corrupt", "00", root / "corrupt.flac"), _row("00_empty", "00", root / "empty.flac"),
             _row("00_missing", "00", root / "missing.flac")]
    manifest = root / "manifest.parquet"
    write_manifest(manifest, pd.DataFrame(rows))
    text = root / "clips.parquet"
    pd.DataFrame({"clip_id": [r["clip_id"] for r in rows],
                  "caption_ids": [[2 * i + 1, 2 * i + 2] for i in range(len(rows))]}).to_parquet(text)
    weights = build_tiny_dac(root / "weights" / "dac_tiny" / "weights.pth")
    receipt = root / "weights" / "dac_tiny.json"
    io.write_json(receipt, {"name": "dac_tiny", "sha256": io.sha256_file(weights), "path": str(weights),
                            "kind": "file", "bytes": weights.stat().st_size})
    return {"root": root, "manifest": manifest, "text": text, "receipt": receipt, "rows": rows}


def _tokenize(corpus, out, shard="00", batch=8, text=None):
    return tokenize.main(["--shard", shard, "--manifest", str(corpus["manifest"]), "--text-clips",
                          str(text or corpus["text"]), "--codec", "dac", "--codec-weights", str(corpus["receipt"]),
                          "--device", "cpu", "--batch-size", str(batch), "--out-dir", str(out)])


@pytest.fixture(scope="module")
def tokens(corpus):
    out = corpus["root"] / "tokens" / "dac_tiny" / "00"
    assert _tokenize(corpus, out) == 0
    return out


def test_tokenize_shard(tokens, corpus):
    shard = TokenShard(tokens)
    assert list(shard.index["clip_id"]) == [f"00_good{i}" for i in range(4)]
    # 1.0 s at 44.1 kHz = 44100 samples -> ceil(44100 / 512) = 87 frames; 0.7 s -> 61; 22.05 kHz is resampled
    assert list(shard.index["length"]) == [87, 87, 61, 87]
    assert shard.meta["weights"] == "dac_tiny" and shard.meta["n_codebooks"] == 4 and shard.meta["n_clips"] == 4
    assert shard.meta["weights_sha256"] == io.read_json(corpus["receipt"])["sha256"]
    assert list(shard.index["caption_ids"].iloc[1]) == [3, 4] and shard.index["split"].iloc[3] == "valid"
    assert shard.index["audio_sha256"].iloc[0] == corpus["rows"][0]["sha256"]
    for i in range(4):
        assert shard.codes(i).shape == (4, shard.length(i)) and shard.index["codes_sha256"].iloc[i] == codes_sha256(shard.codes(i))
    assert not np.array_equal(shard.codes(0), shard.codes(1))
    rej = pd.read_csv(tokens / "rejected.tsv", sep="\t")
    assert list(rej["clip_id"]) == ["00_corrupt", "00_empty", "00_missing"]
    for cid, r in zip(rej["clip_id"], rej["reason"]):
        assert r.startswith("unreadable audio:") and cid.split("_")[1] in r  # the reason names the file


def test_tokenize_deterministic_across_runs_and_batch_sizes(tokens, corpus, tmp_path):
    ref = TokenShard(tokens)
    for batch in (8, 1, 3):
        assert _tokenize(corpus, tmp_path / str(batch), batch=batch) == 0
        again = TokenShard(tmp_path / str(batch))
        assert list(again.index["codes_sha256"]) == list(ref.index["codes_sha256"])
        assert io.sha256_file(tmp_path / str(batch) / CODES_FILE) == io.sha256_file(tokens / CODES_FILE)


def test_empty_shard_and_missing_captions(corpus, tmp_path):
    assert _tokenize(corpus, tmp_path / "01", shard="01") == 0
    shard = TokenShard(tmp_path / "01")
    assert len(shard) == 0 and shard.meta["total_frames"] == 0
    partial = tmp_path / "partial.parquet"
    pd.DataFrame({"clip_id": ["00_good0"], "caption_ids": [[1]]}).to_parquet(partial)
    assert _tokenize(corpus, tmp_path / "x", text=partial) == 1
    assert not (tmp_path / "x").exists()


# --- ceiling metrics on signals with known answers ---------------------------------------------------

def test_si_sdr_known_snr():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(SR)
    assert ceiling.si_sdr(x, x) > 100
    y = x + 0.1 * rng.standard_normal(SR)
    assert ceiling.si_sdr(x, 0.5 * y) == pytest.approx(ceiling.si_sdr(x, y), abs=1e-9)  # scale invariant
    for snr in (0.0, 10.0, 20.0):
        noise = rng.standard_normal(SR)
        noise *= np.linalg.norm(x) / np.linalg.norm(noise) / 10 ** (snr / 20)
        noise -= np.dot(noise, x) / np.dot(x, x) * x  # orthogonal: SI-SDR equals the SNR exactly
        assert ceiling.si_sdr(x, x + noise) == pytest.approx(snr, abs=0.05)


def test_mel_distance_zero_and_monotone():
    rng = np.random.default_rng(1)
    t = np.arange(SR) / SR
    x = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    assert ceiling.mel_distance(x, x, SR) == 0.0
    noise = rng.standard_normal(SR).astype(np.float32)
    d = [ceiling.mel_distance(x, x + a * noise, SR) for a in (0.001, 0.01, 0.1)]
    assert 0 < d[0] < d[1] < d[2]
    fb = ceiling.mel_filterbank(SR, 512, 32)
    assert fb.shape == (32, 257) and (fb.sum(1) > 0).all()  # no empty band at the smallest FFT
    with pytest.raises(ValueError, match="lengths differ"):
        ceiling.mel_distance(x, x[:-1], SR)


def test_sample_clips_seeded():
    a = ceiling.sample_clips(100, 4, 0, "00")
    assert a == ceiling.sample_clips(100, 4, 0, "00") and len(set(a)) == 4 and a == sorted(a)
    assert a != ceiling.sample_clips(100, 4, 0, "01") or a != ceiling.sample_clips(100, 4, 1, "00")
    assert ceiling.sample_clips(3, 4, 0, "00") == [0, 1, 2] and ceiling.sample_clips(0, 4, 0, "00") == []


def test_ceiling_stage_and_summary(tokens, corpus, tmp_path):
    out = tmp_path / "ceiling" / "00.tsv"
    args = ["--shard", "00", "--tokens", str(tokens), "--manifest", str(corpus["manifest"]), "--codec", "dac",
            "--codec-weights", str(corpus["receipt"]), "--device", "cpu", "--clips-per-shard", "3", "--seed", "0",
            "--kappas", "1", "4", "9", "--out", str(out)]
    assert ceiling.main(args) == 0
    df = pd.read_csv(out, sep="\t", dtype={"shard": str})
    assert list(df.columns) == list(ceiling.COLUMNS) and len(df) == 9 and df["clip_id"].nunique() == 3
    ok = df[df["kappa"] <= 4]
    assert (ok["status"] == "ok").all() and np.isfinite(ok[["mel_distance", "si_sdr_db"]].to_numpy()).all()
    assert (ok["mel_distance"] > 0).all() and (ok["seconds"] > 0.5).all()
    assert df[df["kappa"] == 9]["status"].str.startswith("skipped: kappa 9 > 4").all()
    assert set(df["weights"]) == {"dac_tiny"} and set(df["codec"]) == {"dac"}
    empty = tmp_path / "ceiling" / "01.tsv"
    io.write_table(empty, pd.DataFrame(columns=list(ceiling.COLUMNS)))
    report = ceiling.summarize([out, empty], tmp_path / "ceiling.tsv", tmp_path / "ceiling.json")
    summary = pd.read_csv(tmp_path / "ceiling.tsv", sep="\t")
    assert list(summary["kappa"]) == [1, 4, 9] and list(summary["n"]) == [3, 3, 0]
    row1 = summary.iloc[0]
    assert row1["mel_distance_mean"] == pytest.approx(ok[ok["kappa"] == 1]["mel_distance"].mean())
    assert row1["mel_distance_ci95"] > 0 and math.isnan(summary.iloc[2]["si_sdr_db_mean"])
    saved = json.loads((tmp_path / "ceiling.json").read_text())
    assert saved == json.loads(json.dumps(report)) and saved["n_clips"] == 3
    assert saved["kappas"]["9"]["status"].startswith("skipped") and saved["kappas"]["9"]["si_sdr_db_mean"] is None
    assert ceiling.main_summary(["--inputs", str(out), "--out-tsv", str(tmp_path / "s.tsv"),
                                 "--out-json", str(tmp_path / "s.json")]) == 0
