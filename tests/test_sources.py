"""Dataset sources: the registry, the MTG-Jamendo source on tiny files, and a toy second source that
drives the licence audit, the selection and the shard fetch with no other module changed."""

from __future__ import annotations

import copy
import hashlib
import json
import subprocess
import sys
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml

from ssmttm import config, settings
from ssmttm.data import fetch, licenses, segment, select
from ssmttm.data.options import FetchShardSettings, SelectSettings
from ssmttm.data.sources import (
    LICENCE_RECORD_COLUMNS, OPERATIONS, SOURCES, TRACK_COLUMNS, DatasetSource, Problem, get_source, metadata_files,
)
from ssmttm.data.sources.jamendo import MtgJamendo
from ssmttm.schema import ConfigError

CC = "http://creativecommons.org/licenses"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- the registry --------------------------------------------------------------------------------------


def test_importing_the_registry_imports_no_source_and_nothing_heavy():
    code = ("import sys, ssmttm.data.sources as s; s.SOURCES; "
            "print(sorted(m for m in ('torch', 'pandas', 'numpy', 'requests', 'ssmttm.data.sources.jamendo') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_registered_source_resolves_and_matches_the_schema():
    schema = settings.schema_node("source")
    assert set(SOURCES) == set(schema["properties"]["kind"]["enum"])  # the enum is the registry's names
    assert schema["properties"]["kind"]["default"] in SOURCES
    metadata_keys = set(schema["properties"]["metadata"]["properties"])
    for name in SOURCES:
        src = get_source(name)
        assert isinstance(src, DatasetSource) and src.name == name and src.title
        assert set(src.reads) <= set(OPERATIONS)
        assert set(src.keys_for(*OPERATIONS)) <= set(src.metadata) <= metadata_keys
        assert set(src.metadata_checks()) <= set(src.metadata.values())
        assert 1 <= src.n_shards <= 100  # shard ids are two digits


def test_unknown_source_fails_naming_the_config_key(repo):
    with pytest.raises(ConfigError, match=r"config key source\.kind: unknown dataset source 'nope' \(known: mtg-jamendo"):
        get_source("nope")
    with open(repo / "config.yaml") as f:
        cfg = yaml.safe_load(f)
    bad = copy.deepcopy(cfg)
    bad["source"]["kind"] = "nope"
    with pytest.raises(ConfigError, match=r"config key source\.kind: 'nope' is not one of"):
        config.validate(bad)
    bad = copy.deepcopy(cfg)
    del bad["source"]["metadata"]["song_describer"]
    with pytest.raises(ConfigError, match=r"config key source\.metadata\.song_describer: required by source\.kind "
                                          r"mtg-jamendo \(its file song_describer\.csv\)"):
        config.validate(bad)
    assert config.validate(copy.deepcopy(cfg))["source"]["kind"] == "mtg-jamendo"  # the default


@pytest.mark.parametrize("module, func", [("ssmttm.data.fetch", "main_shard"), ("ssmttm.data.licenses", "main"),
                                          ("ssmttm.data.select", "main")])
def test_source_stages_take_the_kind_and_the_metadata_by_key(module, func, capsys):
    import importlib

    with pytest.raises(SystemExit):
        getattr(importlib.import_module(module), func)(["--help"])
    text = capsys.readouterr().out
    assert "--source-kind" in text and "--source-settings" in text and "--metadata KEY=PATH" in text


def test_metadata_flag_names_the_missing_key(tmp_path, capsys):
    tracks = tmp_path / "raw_30s_cleantags.tsv"
    tracks.write_text("TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS\n")
    with pytest.raises(SystemExit):
        licenses.main(["--metadata", f"cleantags={tracks}", "--out-dir", str(tmp_path), "--preset", "paper"])
    err = capsys.readouterr().err
    assert "--metadata: no file for key(s) ['licenses', 'meta']; source mtg-jamendo reads" in err
    with pytest.raises(SystemExit):
        licenses.main(["--metadata", f"cleantags={tracks}", "licenses=x", "meta=y", "--out-dir", str(tmp_path),
                       "--preset", "paper", "--source-kind", "nope"])
    assert "--source-kind / config key source.kind: 'nope' is not one of" in capsys.readouterr().err


# --- MTG-Jamendo ---------------------------------------------------------------------------------------


def jamendo_files(tmp_path) -> dict[str, Path]:
    """Three tracks (214 tagged, 300 untagged, 7 in the Song Describer set) and one malformed row."""
    files = {k: tmp_path / name for k, name in MtgJamendo.metadata.items()}
    files["cleantags"].write_text(
        "TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS\n"
        "track_0000214\tartist_1\talbum_1\t14/214.mp3\t124.6\tgenre---rock\tinstrument---piano\tmood/theme---calm\n"
        "track_0000300\tartist_2\talbum_2\t00/300.mp3\t31.0\n"
        "track_0000007\tartist_3\talbum_3\t07/7.mp3\t60.0\tgenre---pop\n"
        "track_0000099\tartist_4\talbum_4\t98/99.mp3\t40.0\n")  # folder is not 99 % 100
    files["meta"].write_text(
        "TRACK_ID\tARTIST_ID\tALBUM_ID\tTRACK_NAME\tARTIST_NAME\tALBUM_NAME\tRELEASEDATE\tURL\n"
        "track_0000214\tartist_1\talbum_1\tStand by Me\tTrip by Night\tA\t2004-12-28\thttps://j/214\n"
        "track_0000300\tartist_2\talbum_2\tIntro\tDavid\tB\t2005-01-01\thttps://j/300\n")
    files["licenses"].write_text(
        "14/214.mp3\nStand by Me by Trip by Night from Jamendo: https://www.jamendo.com/track/214\n"
        f"Available under a Creative Commons Attribution-ShareAlike license: {CC}/by-sa/3.0/\n\n"
        "00/300.mp3\nIntro by David from Jamendo: https://www.jamendo.com/track/300\n\n")  # no licence line
    files["song_describer"].write_text(
        "caption_id,track_id,caption,is_valid_subset,familiarity,artist_id,album_id,path,duration\n"
        "1,7,A pop song.,True,0,3,3,07/7.2min.mp3,120\n")
    return files


def test_jamendo_tracks_licences_and_held_out(tmp_path):
    src, files = MtgJamendo(), jamendo_files(tmp_path)
    tracks, problems = src.list_tracks(files)
    assert set(TRACK_COLUMNS) <= set(tracks.columns)
    assert list(tracks["track_id"]) == ["track_0000214", "track_0000300", "track_0000007"]
    assert tracks.iloc[0][["path", "shard", "seconds", "moods"]].tolist() == ["14/214.mp3", "14", 124.6, "calm"]
    assert [(p.line, p.track_id, p.path, p.shard) for p in problems] == [(5, "track_0000099", "98/99.mp3", "98")]

    records, problems = src.licence_records(files)
    assert list(records.columns) == list(LICENCE_RECORD_COLUMNS) and len(records) == 1
    r = records.iloc[0]
    assert (r.track_id, r.title, r.artist) == ("track_0000214", "Stand by Me", "Trip by Night")  # meta splits " by "
    assert (r.licence_url, r.licence_words) == (f"{CC}/by-sa/3.0/", "Attribution-ShareAlike")
    assert (r.file, r.record, r.line, r.track_url) == ("audio_licenses.txt", 1, 1, "https://www.jamendo.com/track/214")
    assert [(p.record, p.track_id) for p in problems] == [(2, "track_0000300")]  # excludes 300 as unparsable

    assert src.held_out(files, tracks) == {"track_0000007"}
    cfg = settings.resolve(FetchShardSettings, {"base_url": "x"})
    assert src.shard_audio("07", cfg) == "raw_30s_audio-07.tar"
    assert metadata_files("mtg-jamendo")["cleantags"] == "raw_30s_cleantags.tsv"


def test_jamendo_fetches_a_shard_from_a_local_mirror(tmp_path):
    src, mirror, out = MtgJamendo(), tmp_path / "mirror", tmp_path / "audio"
    (mirror / "raw_30s" / "audio").mkdir(parents=True)
    tar = mirror / "raw_30s" / "audio" / "raw_30s_audio-07.tar"
    body = b"seven" * 100
    with tarfile.open(tar, "w") as tf:
        info = tarfile.TarInfo("07/7.mp3")
        info.size = len(body)
        tf.addfile(info, __import__("io").BytesIO(body))
    files = {"tar_sha256": tmp_path / "tars.txt", "track_sha256": tmp_path / "tracks.txt"}
    files["tar_sha256"].write_text(f"{sha(tar.read_bytes())} raw_30s_audio-07.tar\n")
    files["track_sha256"].write_text(f"{sha(body)} 07/7.mp3\n{sha(b'x')} 08/8.mp3\n")
    cfg = settings.resolve(FetchShardSettings, {"base_url": str(mirror), "backoff_s": 0.01})
    rec = src.fetch_shard("07", files, out, out / "07.json", cfg)
    assert rec["tar"] == src.shard_audio("07", cfg) and rec["tracks"] == {"07/7.mp3": "ok"}
    assert (out / "07" / "7.mp3").read_bytes() == body and json.loads((out / "07.json").read_text()) == rec


# --- a toy second source: one csv, audio as .wav files in tars named toy-NN.tar ----------------------


class ToySource(DatasetSource):
    """A dataset with one catalogue csv (id, file, seconds, licence, names, held) and a csv of sha256s."""

    name = "toy"
    title = "Toy"
    metadata = {"catalogue": "toy.csv", "sums": "toy_sha256.csv"}
    reads = {"tracks": ("catalogue",), "licences": ("catalogue",), "held_out": ("catalogue",),
             "shard": ("sums",)}
    n_shards = 2
    held_out_reason = ("toy benchmark", "a track of the toy benchmark")
    attribution_note = "Licences as listed in toy.csv."

    def _rows(self, files):
        return pd.read_csv(files["catalogue"], dtype=str, keep_default_na=False)

    def list_tracks(self, files):
        df = self._rows(files)
        bad = df["seconds"] == ""
        problems = [Problem(line=i + 2, raw=",".join(r), reason="no duration", file="toy.csv", track_id=r[0])
                    for i, r in zip(df.index[bad], df[bad].itertuples(index=False))]
        df = df[~bad]
        shard = df["num"].astype(int).map(lambda n: f"{n % 2:02d}")
        return pd.DataFrame({
            "track_id": df["id"], "track_num": df["num"].astype("int64"), "path": shard + "/" + df["num"] + ".wav",
            "shard": shard, "seconds": df["seconds"].astype(float), "genres": "", "instruments": "", "moods": "",
            "tags": "",
        }).reset_index(drop=True), problems

    def licence_records(self, files):
        df = self._rows(files)
        df = df[df["licence"] != ""]
        return pd.DataFrame({
            "track_id": df["id"], "licence_url": df["licence"], "licence_words": "", "title": df["title"],
            "artist": df["artist"], "track_url": "https://toy.example/" + df["num"], "file": "toy.csv",
            "record": df.index + 1, "line": df.index + 2, "raw": df["id"],
        }, columns=list(LICENCE_RECORD_COLUMNS)), []

    def held_out(self, files, tracks):
        df = self._rows(files)
        return set(df.loc[df["held"] == "yes", "id"]) & set(tracks["track_id"])

    def shard_audio(self, shard, cfg):
        return f"toy-{shard}.tar"

    def fetch_shard(self, shard, files, out_dir, receipt_path, cfg):
        sums = pd.read_csv(files["sums"], dtype=str)
        sums = dict(zip(sums["name"], sums["sha256"]))  # archives and tracks, one list
        archive = self.shard_audio(shard, cfg)
        return fetch.fetch_archive(shard, archive, [fetch.join_url(cfg.base_url, archive)], sums.get(archive),
                                   {k: v for k, v in sums.items() if k.startswith(f"{shard}/")}, out_dir, receipt_path,
                                   archive_list="toy_sha256.csv", track_list="toy_sha256.csv",
                                   retries=0, backoff=0.01)


CATALOGUE = """id,num,seconds,licence,title,artist,held
toy-a,10,45.0,{cc}/by/4.0/,Alpha,Ann,no
toy-b,11,50.0,{cc}/by-nc/4.0/,Beta,Bob,no
toy-c,12,60.0,{cc}/by-sa/3.0/,Gamma,Cy,yes
toy-d,13,20.0,{cc}/by/4.0/,Delta,Di,no
toy-e,14,70.0,,Eps,Eve,no
toy-f,15,,{cc}/by/4.0/,Phi,Fay,no
toy-g,16,80.0,{cc}/by-zz/4.0/,Gee,Gus,no
"""


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(SOURCES, "toy", f"{__name__}:ToySource")
    return get_source("toy")


def test_a_second_source_drives_the_audit_and_the_selection(tmp_path, toy):
    files = {"catalogue": tmp_path / "toy.csv"}
    files["catalogue"].write_text(CATALOGUE.format(cc=CC))
    out = tmp_path / "licenses"
    summary = licenses.run(toy, files, ("by", "by-sa"), "commercial-ok", out)
    table = pd.read_csv(out / "tracks.tsv", sep="\t", dtype=str, keep_default_na=False).set_index("track_id")
    assert list(table.index) == ["toy-a", "toy-b", "toy-c", "toy-d", "toy-e", "toy-g"]  # toy-f: no duration
    assert table.loc["toy-a", "attribution"] == ("\u201cAlpha\u201d by Ann (https://toy.example/10), licensed "
                                                 f"under CC BY 4.0 ({CC}/by/4.0/)")
    assert table["allowed"].to_dict() == {"toy-a": "True", "toy-b": "False", "toy-c": "True", "toy-d": "True",
                                          "toy-e": "False", "toy-g": "False"}
    assert table.loc["toy-e", "reason"] == "no licence record"
    assert table.loc["toy-g", "reason"].startswith(licenses.UNPARSABLE) and "by-zz" in table.loc["toy-g", "reason"]
    assert summary["dataset_source"]["kind"] == "toy" and summary["n_unparsed"] == 2
    md = (out / "ATTRIBUTION.md").read_text()
    assert md.startswith("# Licence audit: Toy tracks allowed") and "Licences as listed in toy.csv." in md
    assert "MTG-Jamendo" not in md
    split, text = licenses.training_licences(out / "tracks.tsv", ["toy-a"], summary)
    assert split["n_tracks"] == 1 and "the 1 Toy tracks of this model's training split" in text

    args = SimpleNamespace(licenses_table=out / "tracks.tsv", shards=1, out_dir=tmp_path / "sel")
    cfg = settings.resolve(SelectSettings, {"min_seconds": 30.0})
    report = select.run(args, cfg, toy, files)
    cand = pd.read_csv(args.out_dir / "candidates.tsv", sep="\t", dtype=str, keep_default_na=False)
    rej = pd.read_csv(args.out_dir / "rejected.tsv", sep="\t", dtype=str, keep_default_na=False)
    assert list(cand["track_id"]) == ["toy-a"]  # shard 00: even numbers
    assert rej.set_index("track_id")["reason"].to_dict() == {
        "toy-f": "malformed metadata", "toy-b": "shard not selected", "toy-c": "toy benchmark",
        "toy-d": "shard not selected", "toy-e": "no licence record", "toy-g": "licence record unparsable"}
    assert report["n_held_out_ids"] == 1 and report["planned_clips"] == 1


def test_a_second_source_fetches_a_shard_that_segment_reads(tmp_path, toy):
    mirror, out = tmp_path / "mirror", tmp_path / "audio"
    mirror.mkdir()
    wav = b"RIFF" + b"\0" * 200
    with tarfile.open(mirror / "toy-00.tar", "w") as tf:
        info = tarfile.TarInfo("00/10.wav")
        info.size = len(wav)
        tf.addfile(info, __import__("io").BytesIO(wav))
    sums = tmp_path / "toy_sha256.csv"
    sums.write_text(f"name,sha256\ntoy-00.tar,{sha((mirror / 'toy-00.tar').read_bytes())}\n00/10.wav,{sha(wav)}\n"
                    f"00/12.wav,{sha(b'absent')}\n")
    cfg = settings.resolve(FetchShardSettings, {"base_url": str(mirror)})
    rec = toy.fetch_shard("00", {"sums": sums}, out, out / "00.json", cfg)
    assert rec["tar"] == "toy-00.tar" and rec["tracks"] == {"00/10.wav": "ok", "00/12.wav": "missing from tar"}
    receipt = segment.read_receipt(out / "00.json")
    row = {"track_id": "toy-a", "path": "00/10.wav", "shard": "00"}
    assert segment.fetch_rejection(row, receipt) is None and (out / row["path"]).read_bytes() == wav
    assert "missing from tar" in segment.fetch_rejection({**row, "path": "00/12.wav"}, receipt)
