"""Metadata filter: rule order, reasons, planned clips, and the paper's 457 h from 55,701 tracks."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ssmttm.constants import CC_CODES, JAMENDO_N_TRACKS_RAW_30S, SONG_DESCRIBER_N_TRACKS
from ssmttm.data import select as S

HEADER = "TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS\n"
SDD_HEADER = "caption_id,track_id,caption,is_valid_subset,familiarity,artist_id,album_id,path,duration\n"


def write_inputs(tmp_path, nums, secs, licences, allowed, sdd, extra_rows=""):
    """cleantags TSV, licence table (tracks.tsv shape) and Song Describer csv for the given tracks."""
    tracks = tmp_path / "raw_30s_cleantags.tsv"
    tracks.write_text(HEADER + "".join(
        f"track_{k:07d}\tartist_{k % 97:06d}\talbum_{k % 301:06d}\t{k % 100:02d}/{k}.mp3\t{s:.1f}"
        f"\tgenre---rock\tinstrument---piano\tmood/theme---calm\n" for k, s in zip(nums, secs)) + extra_rows,
        encoding="utf-8")
    lic = pd.DataFrame({
        "track_id": [f"track_{k:07d}" for k in nums if k in licences],
        "licence": [licences[k] for k in nums if k in licences],
        "allowed": [allowed[k] for k in nums if k in licences],
    })
    lic["reason"] = np.where(lic["allowed"], "", "licence " + lic["licence"] + " not allowed (allow: by)")
    table = tmp_path / "tracks.tsv"
    lic.to_csv(table, sep="\t", index=False)
    sddf = tmp_path / "song_describer.csv"
    sddf.write_text(SDD_HEADER + "".join(
        f"{i},{k},a caption,True,1,1,1,{k % 100:02d}/{k}.2min.mp3,120\n" for i, k in enumerate(sdd)),
        encoding="utf-8")
    return tracks, table, sddf


def metadata_flags(tracks, sddf):
    return ["--metadata", f"cleantags={tracks}", f"song_describer={sddf}"]


def run_select(tmp_path, tracks, table, sddf, *flags):
    out = tmp_path / "sel"
    rc = S.main([*metadata_flags(tracks, sddf), "--licenses-table", str(table), "--out-dir", str(out), *flags])
    assert rc == 0
    cand = pd.read_csv(out / "candidates.tsv", sep="\t", dtype={"shard": str}, keep_default_na=False)
    rej = pd.read_csv(out / "rejected.tsv", sep="\t", dtype={"shard": str}, keep_default_na=False)
    return cand, rej, json.loads((out / "report.json").read_text())


def test_paper_preset_gives_457_to_459_hours(tmp_path):
    """55,701 tracks > 30 s over 100 shards, 706 in Song Describer, all CC: 54,995 x 30 s = 458.3 h."""
    rng = np.random.default_rng(0)
    n = JAMENDO_N_TRACKS_RAW_30S
    nums = rng.choice(np.arange(1, 1_500_000), size=n, replace=False)
    secs = rng.uniform(30.1, 600.0, size=n)
    sdd = rng.choice(nums, size=SONG_DESCRIBER_N_TRACKS, replace=False)
    codes = rng.choice(np.array(CC_CODES), size=n)
    tracks, table, sddf = write_inputs(tmp_path, nums, secs, dict(zip(nums, codes)),
                                       dict.fromkeys(nums, True), sdd)
    assert len(set(nums % 100)) == 100
    cand, rej, rep = run_select(tmp_path, tracks, table, sddf, "--shards", "100", "--min-seconds", "30",
                                "--clip-seconds", "30", "--position", "center")
    assert rep["n_candidates"] == n - SONG_DESCRIBER_N_TRACKS == 54_995
    assert rep["planned_clips"] == 54_995
    assert 457.0 <= rep["planned_hours"] <= 459.0
    assert rep["planned_hours"] == pytest.approx(54_995 * 30 / 3600, abs=1e-3)
    assert rep["rejected"] == {"song describer": SONG_DESCRIBER_N_TRACKS} and rep["n_shard_not_selected"] == 0
    assert len(rej) == SONG_DESCRIBER_N_TRACKS and set(rej["stage"]) == {"select"}
    assert not set(cand["track_num"]) & set(sdd.tolist())


def test_rules_apply_in_order_with_first_reason(tmp_path):
    # track: (seconds, licence or None, allowed, in SDD)
    spec = {
        100: (40.0, "by", True, False),     # candidate (shard 00)
        201: (40.0, "by", True, False),     # candidate (shard 01)
        302: (10.0, "by-nc", False, True),  # shard 02 not selected: reported as such, nothing else
        1: (20.0, "by-nc", False, True),    # too short first
        101: (40.0, "by-nc", False, True),  # Song Describer before licence
        401: (40.0, None, False, False),    # no licence record
        501: (40.0, "by-nc", False, False),  # licence not allowed
        600: (95.0, "by-sa", True, False),  # candidate
    }
    nums = list(spec)
    bad = ("track_0000700\tartist_1\talbum_1\t00/700.mp3\tsoon\tgenre---rock\n"
           "track_0000800\tartist_1\n")
    tracks, table, sddf = write_inputs(
        tmp_path, nums, [v[0] for v in spec.values()],
        {k: v[1] for k, v in spec.items() if v[1]}, {k: v[2] for k, v in spec.items()},
        [k for k, v in spec.items() if v[3]], extra_rows=bad)
    cand, rej, rep = run_select(tmp_path, tracks, table, sddf, "--shards", "2", "--position", "center")
    assert list(cand["track_num"]) == [100, 201, 600]
    assert list(cand.columns) == list(S.CANDIDATE_COLUMNS)
    assert (cand["n_clips_planned"] == 1).all() and list(cand["licence"]) == ["by", "by", "by-sa"]
    assert cand.iloc[0]["genres"] == "rock" and cand.iloc[0]["shard"] == "00"
    why = dict(zip(rej["track_id"], rej["reason"]))
    assert len(rej) == len(why)  # each rejected track listed once
    assert why == {
        "track_0000700": "malformed metadata", "track_0000800": "malformed metadata",
        "track_0000302": "shard not selected", "track_0000001": "too short",
        "track_0000101": "song describer", "track_0000401": "no licence record",
        "track_0000501": "licence not allowed",
    }
    detail = dict(zip(rej["track_id"], rej["detail"]))
    assert "line 10: non-numeric" in detail["track_0000700"] and "20 s < 30 s" in detail["track_0000001"]
    assert "by-nc not allowed" in detail["track_0000501"]
    assert rej.set_index("track_id").loc["track_0000700", "shard"] == "00"
    assert rep["n_shard_not_selected"] == 1 and "shard not selected" not in rep["rejected"]
    assert rep["rejected"] == {"malformed metadata": 2, "too short": 1, "song describer": 1,
                               "no licence record": 1, "licence not allowed": 1}
    assert rep["n_rows"] == 10 and rep["planned_hours"] == pytest.approx(3 * 30 / 3600, abs=1e-4)


def test_position_all_and_keep_song_describer(tmp_path):
    nums, secs = [100, 200, 300], [95.0, 59.9, 30.0]
    tracks, table, sddf = write_inputs(tmp_path, nums, secs, dict.fromkeys(nums, "by"),
                                       dict.fromkeys(nums, True), [200])
    cand, rej, rep = run_select(tmp_path, tracks, table, sddf, "--shards", "1", "--position", "all",
                                "--exclude-song-describer", "false")
    assert dict(zip(cand["track_num"], cand["n_clips_planned"])) == {100: 3, 200: 1, 300: 1}
    assert rep["planned_clips"] == 5 and rep["planned_hours"] == pytest.approx(5 * 30 / 3600, abs=1e-4)
    assert len(rej) == 0
    # with a 40 s clip the 30 s track holds no whole clip: rejected, not planned with zero clips
    cand, rej, rep = run_select(tmp_path, tracks, table, sddf, "--shards", "1", "--position", "all",
                                "--clip-seconds", "40", "--min-seconds", "0")
    assert dict(zip(cand["track_num"], cand["n_clips_planned"])) == {100: 2}
    assert dict(zip(rej["track_id"], rej["reason"])) == {"track_0000300": "too short",
                                                         "track_0000200": "song describer"}
    assert "no whole 40 s clip" in rej.set_index("track_id").loc["track_0000300", "detail"]


def test_bad_licence_table_fails_naming_file(tmp_path):
    tracks, table, sddf = write_inputs(tmp_path, [100], [40.0], {100: "by"}, {100: True}, [])
    pd.DataFrame({"track_id": ["track_0000100"], "licence": ["by"]}).to_csv(table, sep="\t", index=False)
    rc = S.main([*metadata_flags(tracks, sddf), "--licenses-table", str(table), "--shards", "1", "--out-dir", str(tmp_path / "o")])
    assert rc == 2 and not (tmp_path / "o" / "candidates.tsv").exists()
    with pytest.raises(SystemExit):
        S.main([*metadata_flags(tracks, sddf), "--licenses-table", str(table), "--shards", "101", "--out-dir", str(tmp_path / "o")])
