"""Manifest: joins every stage's per-shard tables, rejects with stage + reason, splits by track."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from ssmttm import io
from ssmttm.constants import MANIFEST_VERSION
from ssmttm.data import manifest as M

# track number -> licence; shard = num % 100
LICENCES = {100: "by", 200: "by-sa", 300: "by", 400: "by", 500: "by-nc", 600: "by", 700: "by", 800: "by",
            101: "by-nc-sa", 201: "by-nd", 102: "by", 900: "by"}
CLEAN = {"source_format": "mp3", "extension_mismatch": False, "source_channels": 2, "downmixed": False,
         "source_sample_rate": 44100, "upsampled": False, "clipped_fraction": 0.0, "source_flags": ""}


def tid(num):
    return f"track_{num:07d}"


def make_run(tmp_path, sr=44100, channels=2):
    """A 3-shard run: shard 00 exercises every rejection, 01 is clean, 02's tar is missing."""
    root = tmp_path / "results"
    d = {k: root / k for k in ("source", "clips", "novocals", "captions", "sel", "lic")}
    for v in d.values():
        v.mkdir(parents=True)
    nums = [n for n in LICENCES if n != 900]
    cand = pd.DataFrame({"track_id": [tid(n) for n in nums], "track_num": nums,
                         "shard": [f"{n % 100:02d}" for n in nums], "path": [f"{n % 100:02d}/{n}.mp3" for n in nums],
                         "seconds": 60.0, "licence": [LICENCES[n] for n in nums]})
    cand.to_csv(d["sel"] / "candidates.tsv", sep="\t", index=False)
    pd.DataFrame({"track_id": [tid(900)], "path": ["00/900.mp3"], "shard": ["00"], "stage": ["select"],
                  "reason": ["too short"], "detail": ["12 s < 30 s"]}).to_csv(d["sel"] / "rejected.tsv", sep="\t", index=False)
    lic = pd.DataFrame({"track_id": [tid(n) for n in LICENCES], "licence": list(LICENCES.values())})
    lic["allowed"] = lic["track_id"] != tid(800)  # 800: licence gate changed after selection
    lic["reason"] = ""
    lic.to_csv(d["lic"] / "tracks.tsv", sep="\t", index=False)

    def receipt(shard, status, tracks, reason=""):
        io.write_json(d["source"] / f"{shard}.json", {"shard": shard, "status": status, "reason": reason,
                                                      "tracks": tracks})

    receipt("00", "ok", {"00/100.mp3": "ok", "00/200.mp3": "ok", "00/400.mp3": "bad sha256: 12ab != 34cd",
                         "00/500.mp3": "ok", "00/600.mp3": "ok", "00/700.mp3": "ok", "00/800.mp3": "ok"})  # 300 absent
    receipt("01", "ok", {"01/101.mp3": "ok", "01/201.mp3": "ok"})
    receipt("02", "missing", {}, reason="download failed: HTTP 404")

    clips, vocals, caps = {"00": [], "01": [], "02": []}, {"00": [], "01": [], "02": []}, {"00": [], "01": [], "02": []}
    x = np.zeros((int(sr * 0.05), channels), dtype=np.float32)

    def clip(num, k, status="ok", reason="", v_status="ok", v_reason="", caption="a calm piano piece", **source):
        shard, cid = f"{num % 100:02d}", f"{tid(num)}_{k:03d}"
        clips[shard].append({"clip_id": cid, "track_id": tid(num), "shard": shard,
                             "source_path": f"results/data/source/audio/{shard}/{num}.mp3", "offset": 15.0 + 30 * k,
                             "seconds": 30.0, "status": status, "reason": reason,
                             "clip_path": f"results/data/clips/{shard}/{cid}.flac", **CLEAN, **source})
        if status != "ok":
            return
        audio = d["novocals"] / shard / f"{cid}.wav"
        audio.parent.mkdir(exist_ok=True)
        sf.write(audio, x, sr)
        vocals[shard].append({"clip_id": cid, "audio_path": str(audio), "sha256": io.sha256_file(audio),
                              "status": v_status, "reason": v_reason, "vocals": "separate", "model_sha256": "ab" * 32})
        if caption is not None and v_status == "ok":
            caps[shard].append({"clip_id": cid, "caption": caption, "captions": json.dumps([caption, "alt"]),
                                "captioner": "tags"})

    six = {"source_format": "flac", "source_channels": 6, "downmixed": True, "source_flags": "downmixed"}
    clip(100, 0), clip(100, 1, clipped_fraction=0.25, source_flags="clipped")
    clip(200, 0, status="rejected", reason="silent: -80.0 dBFS < -60 dBFS")
    clip(500, 0, v_status="rejected", v_reason="separation failed: out of memory", source_sample_rate=8000,
         upsampled=True, source_flags="upsampled")
    clip(600, 0, caption=None)
    clip(700, 0, status="rejected", reason="extension mismatch: 00/700.mp3 holds wav data", source_format="wav",
         extension_mismatch=True, source_flags="extension_mismatch", clipped_fraction=None)
    clip(800, 0)
    clip(101, 0), clip(201, 0, **six), clip(201, 1, **six), clip(201, 2, **six)
    for shard in ("00", "01"):
        pd.DataFrame(clips[shard], columns=M.CLIPS_COLUMNS).to_csv(d["clips"] / f"{shard}.tsv", sep="\t", index=False)
        pd.DataFrame(vocals[shard], columns=M.VOCALS_COLUMNS).to_csv(d["novocals"] / f"{shard}.tsv", sep="\t", index=False)
        pd.DataFrame(caps[shard], columns=M.CAPTIONS_COLUMNS).to_csv(d["captions"] / f"{shard}.tsv", sep="\t", index=False)
    for sub in ("clips", "novocals", "captions"):  # missing tar: the stages left empty tables
        (d[sub] / "02.tsv").write_text("")
    return d


def _shard_files(d, shards):
    """The per-shard file lists, as the rule passes them."""
    return ["--receipts", *(str(d["source"] / f"{s}.json") for s in shards),
            "--clip-tables", *(str(d["clips"] / f"{s}.tsv") for s in shards),
            "--vocals-tables", *(str(d["novocals"] / f"{s}.tsv") for s in shards),
            "--captions-tables", *(str(d["captions"] / f"{s}.tsv") for s in shards)]


def run_manifest(d, out, shards=("00", "01", "02"), seed=0, fraction=0.02):
    rc = M.main(["--candidates", str(d["sel"] / "candidates.tsv"),
                 "--select-rejected", str(d["sel"] / "rejected.tsv"), "--licenses-table", str(d["lic"] / "tracks.tsv"),
                 *_shard_files(d, shards), "--valid-fraction", str(fraction), "--seed", str(seed),
                 "--out-dir", str(out)])
    assert rc == 0
    return (M.read_manifest(out / "manifest.parquet"),
            pd.read_csv(out / "rejected.tsv", sep="\t", dtype=str, keep_default_na=False),
            json.loads((out / "report.json").read_text()))


def test_manifest_joins_stages_and_rejects_with_reasons(tmp_path):
    d = make_run(tmp_path)
    df, rej, rep = run_manifest(d, tmp_path / "out")
    assert list(df.columns) == list(M.MANIFEST_COLUMNS)
    assert list(df["clip_id"]) == sorted([f"{tid(100)}_000", f"{tid(100)}_001", f"{tid(101)}_000",
                                          f"{tid(201)}_000", f"{tid(201)}_001", f"{tid(201)}_002"])
    r = df.set_index("clip_id").loc[f"{tid(100)}_001"]
    assert (r.offset, r.seconds, r.licence, r.sample_rate, r.channels) == (45.0, 30.0, "by", 44100, 2)
    assert r.vocals == "separate" and r.captioner == "tags" and json.loads(r.captions)[0] == r.caption
    assert r.sha256 == io.sha256_file(r.audio_path)
    got = {(row.stage, row.track_id, row.reason) for row in rej.itertuples()}
    assert got == {
        ("select", tid(900), "too short"),
        ("fetch", tid(300), "missing from tar"),
        ("fetch", tid(400), "bad sha256"),
        ("fetch", tid(102), "missing tar"),
        ("segment", tid(200), "silent"),
        ("segment", tid(700), "extension mismatch"),
        ("vocals", tid(500), "separation failed"),
        ("captions", tid(600), "no caption"),
        ("manifest", tid(800), "licence not allowed"),
    }
    assert "HTTP 404" in rej.set_index("track_id").loc[tid(102), "detail"]
    assert rep["clips"] == 6 and rep["tracks"] == 3 and rep["hours"] == pytest.approx(6 * 30 / 3600, abs=1e-4)
    assert rep["rejected"]["fetch"] == {"missing from tar": 1, "bad sha256": 1, "missing tar": 1}
    assert rep["per_licence"] == {"by": {"clips": 2, "hours": pytest.approx(60 / 3600, abs=1e-4)},
                                  "by-nc-sa": {"clips": 1, "hours": pytest.approx(30 / 3600, abs=1e-4)},
                                  "by-nd": {"clips": 3, "hours": pytest.approx(90 / 3600, abs=1e-4)}}
    assert sum(s["clips"] for s in rep["splits"].values()) == 6 and rep["splits"]["valid"]["tracks"] >= 1
    assert rep["manifest_sha256"] == io.sha256_file(tmp_path / "out" / "manifest.parquet")
    assert rep["manifest_version"] == MANIFEST_VERSION
    meta = pq.ParquetFile(tmp_path / "out" / "manifest.parquet").schema_arrow.metadata
    assert meta[M.VERSION_KEY] == str(MANIFEST_VERSION).encode()


def test_manifest_independent_of_shard_order(tmp_path):
    d = make_run(tmp_path)
    a, _, ra = run_manifest(d, tmp_path / "a", shards=("00", "01", "02"), fraction=0.3)
    b, _, rb = run_manifest(d, tmp_path / "b", shards=("02", "01", "00"), fraction=0.3)
    pd.testing.assert_frame_equal(a, b)
    assert ra["manifest_sha256"] == rb["manifest_sha256"]
    assert (tmp_path / "a" / "rejected.tsv").read_text() == (tmp_path / "b" / "rejected.tsv").read_text()
    assert (a.groupby("track_id")["split"].nunique() == 1).all()


def test_split_is_deterministic_grouped_by_track_and_stable():
    ids = [tid(n) for n in range(5000)]
    s1 = M.assign_splits(ids, 0.02, seed=0)
    s2 = M.assign_splits(list(reversed(ids)) + ids[:10], 0.02, seed=0)  # order and repeats do not matter
    assert s1 == s2
    n_valid = sum(v == "valid" for v in s1.values())
    assert 60 <= n_valid <= 140  # ~2 % of 5000
    assert M.assign_splits(ids, 0.02, seed=1) != s1
    sub = M.assign_splits(ids[:1000], 0.02, seed=0)  # adding tracks never moves a track
    assert all(sub[t] == s1[t] for t in sub)
    tiny = M.assign_splits(ids[:3], 0.02, seed=0)  # tiny runs still get one valid track
    assert sorted(tiny.values()) == ["train", "train", "valid"]
    assert set(M.assign_splits(ids[:3], 0.0, seed=0).values()) == {"train"}


def _write_raw(path, df, version=MANIFEST_VERSION):
    table = pa.Table.from_pandas(df, preserve_index=False)
    meta = {} if version is None else {M.VERSION_KEY: str(version).encode()}
    pq.write_table(table.replace_schema_metadata(meta), path)


def test_read_manifest_rejects_bad_files(tmp_path):
    d = make_run(tmp_path)
    good, _, _ = run_manifest(d, tmp_path / "out")
    cases = {
        "missing_column.parquet": (good.drop(columns=["caption"]), MANIFEST_VERSION, r"missing column\(s\) \['caption'\]"),
        "dup.parquet": (pd.concat([good, good.iloc[:1]]), MANIFEST_VERSION, "duplicate clip_id"),
        "version.parquet": (good, MANIFEST_VERSION + 1, f"version {MANIFEST_VERSION + 1}"),
        "noversion.parquet": (good, None, "not an ssmttm manifest"),
        "split.parquet": (good.assign(split="test"), MANIFEST_VERSION, "split values"),
        "dtype.parquet": (good.assign(sample_rate=good["sample_rate"].astype(str)), MANIFEST_VERSION, "sample_rate"),
        "mixed.parquet": (good.assign(split=["train", "valid"] * 3), MANIFEST_VERSION, "both splits"),
    }
    for name, (df, version, message) in cases.items():
        _write_raw(tmp_path / name, df, version)
        with pytest.raises(M.ManifestError, match=message) as exc:
            M.read_manifest(tmp_path / name)
        assert name in str(exc.value)
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(M.ManifestError, match="junk.parquet: not a readable parquet"):
        M.read_manifest(tmp_path / "junk.parquet")


def test_bad_stage_table_fails_naming_file(tmp_path):
    d = make_run(tmp_path)
    pd.DataFrame({"clip_id": ["x"]}).to_csv(d["captions"] / "01.tsv", sep="\t", index=False)
    rc = M.main(["--candidates", str(d["sel"] / "candidates.tsv"), "--select-rejected", str(d["sel"] / "rejected.tsv"),
                 "--licenses-table", str(d["lic"] / "tracks.tsv"), *_shard_files(d, ("00", "01")),
                 "--out-dir", str(tmp_path / "o")])
    assert rc == 2 and not (tmp_path / "o" / "manifest.parquet").exists()


def test_shard_file_lists_must_name_the_same_shards(tmp_path):
    d = make_run(tmp_path)
    base = ["--candidates", str(d["sel"] / "candidates.tsv"), "--select-rejected", str(d["sel"] / "rejected.tsv"),
            "--licenses-table", str(d["lic"] / "tracks.tsv"), "--out-dir", str(tmp_path / "o")]
    files = _shard_files(d, ("00", "01"))
    files.remove(str(d["novocals"] / "01.tsv"))  # a vocals table short
    assert M.main([*base, *files]) == 2
    files = _shard_files(d, ("00",))
    files[files.index("--clip-tables") + 1] = str(d["sel"] / "candidates.tsv")  # not NN.tsv
    assert M.main([*base, *files]) == 2
    assert not (tmp_path / "o" / "manifest.parquet").exists()


def test_several_rejected_tracks_without_clip_ids(tmp_path):
    """Segment writes one row with an empty clip_id per rejected track; none is a 'duplicate'."""
    d = make_run(tmp_path)
    t = pd.read_csv(d["clips"] / "00.tsv", sep="\t", dtype=str, keep_default_na=False)
    t.loc[t["track_id"] == tid(200), "clip_id"] = ""
    extra = t[t["track_id"] == tid(200)].copy()
    extra["track_id"], extra["reason"] = tid(600), "corrupt: cannot decode audio"
    pd.concat([t, extra]).to_csv(d["clips"] / "00.tsv", sep="\t", index=False)
    _, rej, _ = run_manifest(d, tmp_path / "out")
    got = {(row.stage, row.track_id, row.reason) for row in rej.itertuples()}
    assert ("segment", tid(200), "silent") in got and ("segment", tid(600), "corrupt") in got
    assert not any(r == "duplicate clip id" for _, _, r in got)


def test_source_columns_and_flag_report(tmp_path):
    d = make_run(tmp_path)
    df, rej, rep = run_manifest(d, tmp_path / "out")
    m = df.set_index("clip_id")
    clean, clipped, six = m.loc[f"{tid(100)}_000"], m.loc[f"{tid(100)}_001"], m.loc[f"{tid(201)}_002"]
    assert (clean.source_format, clean.extension_mismatch, clean.source_channels, clean.downmixed) == ("mp3", False, 2, False)
    assert (clean.source_sample_rate, clean.upsampled, clean.clipped_fraction, clean.source_flags) == (44100, False, 0.0, "")
    assert (clipped.clipped_fraction, clipped.source_flags) == (0.25, "clipped")
    assert (six.source_channels, six.downmixed, six.source_flags, six.channels) == (6, True, "downmixed", 2)
    for c, kind in M.SOURCE_COLUMNS.items():
        assert {"str": pd.api.types.is_string_dtype, "bool": pd.api.types.is_bool_dtype,
                "int": pd.api.types.is_integer_dtype, "float": pd.api.types.is_float_dtype}[kind](df[c]), c
    assert rep["flags"] == {
        "extension_mismatch": {"clips": 0, "tracks": 0, "rejected": 1},
        "downmixed": {"clips": 3, "tracks": 1, "rejected": 0},
        "upsampled": {"clips": 0, "tracks": 0, "rejected": 0},
        "clipped": {"clips": 1, "tracks": 1, "rejected": 0},
    }
    got = {(f["track_id"], f["clip_id"], ",".join(f["flags"]), f["status"], f.get("stage", "")) for f in rep["flagged"]}
    assert got == {
        (tid(100), f"{tid(100)}_001", "clipped", "kept", ""),
        (tid(201), f"{tid(201)}_000", "downmixed", "kept", ""),
        (tid(201), f"{tid(201)}_001", "downmixed", "kept", ""),
        (tid(201), f"{tid(201)}_002", "downmixed", "kept", ""),
        (tid(500), f"{tid(500)}_000", "upsampled", "rejected", "vocals"),  # flagged, then lost to vocals
        (tid(700), f"{tid(700)}_000", "extension_mismatch", "rejected", "segment"),
    }
    ext = next(f for f in rep["flagged"] if f["track_id"] == tid(700))
    assert ext["reason"] == "extension mismatch" and "holds wav data" in ext["detail"]
    assert ext["source_path"].endswith("00/700.mp3") and ext["shard"] == "00"


def test_bad_source_values_reject_the_clip(tmp_path):
    d = make_run(tmp_path)
    t = pd.read_csv(d["clips"] / "01.tsv", sep="\t", dtype=str, keep_default_na=False)
    t.loc[t["clip_id"] == f"{tid(101)}_000", "downmixed"] = "maybe"
    t.loc[t["clip_id"] == f"{tid(201)}_000", "clipped_fraction"] = ""
    t.to_csv(d["clips"] / "01.tsv", sep="\t", index=False)
    df, rej, _ = run_manifest(d, tmp_path / "out")
    bad = rej[rej["reason"] == "bad clip row"].set_index("clip_id")
    assert sorted(bad.index) == [f"{tid(101)}_000", f"{tid(201)}_000"]
    assert "downmixed 'maybe' is not a bool" in bad.loc[f"{tid(101)}_000", "detail"]
    assert "01.tsv" in bad.loc[f"{tid(201)}_000", "detail"]
    assert f"{tid(101)}_000" not in set(df["clip_id"])
    # a segment table from before the source checks lacks the columns: an error naming the file
    t.drop(columns=["source_flags"]).to_csv(d["clips"] / "01.tsv", sep="\t", index=False)
    rc = M.main(["--candidates", str(d["sel"] / "candidates.tsv"), "--select-rejected", str(d["sel"] / "rejected.tsv"),
                 "--licenses-table", str(d["lic"] / "tracks.tsv"), *_shard_files(d, ("00", "01")),
                 "--out-dir", str(tmp_path / "o")])
    assert rc == 2 and not (tmp_path / "o" / "manifest.parquet").exists()


def test_hand_built_manifest_gets_unmeasured_source_columns(tmp_path):
    row = {c: "x" for c, kind in M.MANIFEST_COLUMNS.items() if kind == "str" and c not in M.SOURCE_COLUMNS}
    row.update(clip_id="a", split="train", offset=0.0, seconds=1.0, sample_rate=44100, channels=2)
    M.write_manifest(tmp_path / "a.parquet", pd.DataFrame([row]))
    M.write_manifest(tmp_path / "b.parquet", pd.DataFrame([row], columns=list(M.MANIFEST_COLUMNS)))
    for name in ("a.parquet", "b.parquet"):
        back = M.read_manifest(tmp_path / name)
        assert {c: back[c][0] for c in M.SOURCE_COLUMNS} == M.SOURCE_UNMEASURED


def test_source_columns_match_the_segment_table():
    from ssmttm.data import segment

    assert tuple(M.SOURCE_COLUMNS) == segment.SOURCE_COLUMNS
    assert set(M.SOURCE_COLUMNS) <= set(M.CLIPS_COLUMNS) and set(segment.SOURCE_COLUMNS) <= set(segment.COLUMNS)
