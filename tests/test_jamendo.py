"""Strict MTG-Jamendo metadata parsers: good rows parsed, bad rows reported with line and reason."""

from __future__ import annotations

import numpy as np
import pytest

from ssmttm.data import jamendo

HEADER = "TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS\n"


def _write(tmp_path, name, text, newline="\n"):
    p = tmp_path / name
    p.write_bytes(text.replace("\n", newline).encode("utf-8"))
    return p


def test_read_tracks_parses_columns(tmp_path):
    p = _write(tmp_path, "t.tsv", HEADER
               + "track_0000214\tartist_000014\talbum_000031\t14/214.mp3\t124.6\tgenre---rock\tinstrument---guitar"
                 "\tmood/theme---happy\tgenre---pop\n"
               + "track_1376256\tartist_490499\talbum_161779\t56/1376256.mp3\t166.0\tinstrument---piano\t\n"
               + "track_0000300\tartist_1\talbum_1\t00/300.mp3\t31.0\n")  # no tag: accepted
    df, problems = jamendo.read_tracks(p)
    assert problems == []
    assert list(df.columns) == list(jamendo.TRACK_COLUMNS)
    r = df.iloc[0]
    assert (r.track_id, r.track_num, r.path, r.shard, r.seconds) == ("track_0000214", 214, "14/214.mp3", "14", 124.6)
    assert r.genres == "rock;pop" and r.instruments == "guitar" and r.moods == "happy"
    assert r.tags == "genre---rock;instrument---guitar;mood/theme---happy;genre---pop"
    assert df.iloc[1].shard == "56" and df.iloc[1].tags == "instrument---piano"  # trailing empty field ignored
    assert df.iloc[2].tags == "" and df.iloc[2].shard == "00"
    assert str(df["track_num"].dtype) == "int64" and str(df["seconds"].dtype) == "float64"


def test_read_tracks_reports_every_malformed_row(tmp_path):
    rows = [
        "track_0000214\tartist_1\talbum_1\t14/214.mp3\t124.6\tgenre---rock",  # 2 good
        "track_0000215\tartist_1\talbum_1\t15/215.mp3",                        # 3 too few fields
        "track_0000216\tartist_1\talbum_1\t16/216.mp3\tlong\tgenre---rock",    # 4 non-numeric
        "track_0000217\tartist_1\talbum_1\t17/217.mp3\t-3\tgenre---rock",      # 5 negative
        "trk_218\tartist_1\talbum_1\t18/218.mp3\t40\tgenre---rock",            # 6 bad id
        "track_0000219\tartist_1\talbum_1\t19/291.mp3\t40\tgenre---rock",      # 7 path/id mismatch
        "track_0000220\tartist_1\talbum_1\t21/220.mp3\t40\tgenre---rock",      # 8 folder != num % 100
        "track_0000214\tartist_1\talbum_1\t14/214.mp3\t50\tgenre---rock",      # 9 duplicate
        "track_0000222\tartist_1\talbum_1\t22/222.mp3\t40\trock",              # 10 bad tag
        "track_0000223\tartist_1\talbum_1\t23/223.mp3\tnan\tgenre---rock",     # 11 not finite
        "track_0000224\tartist_1\talbum_1\t24/224.mp3\t40.0\tgenre---jazz",    # 12 good
    ]
    p = _write(tmp_path, "t.tsv", HEADER + "\n".join(rows) + "\n", newline="\r\n")
    df, problems = jamendo.read_tracks(p)
    assert list(df["track_id"]) == ["track_0000214", "track_0000224"]
    assert df.iloc[0].seconds == 124.6  # the first of a duplicated id wins
    got = {pr.line: pr.reason for pr in problems}
    assert sorted(got) == list(range(3, 12))
    assert "too few fields" in got[3]
    assert "non-numeric duration" in got[4]
    assert "invalid duration" in got[5] and "invalid duration" in got[11]
    assert "bad track id" in got[6]
    assert "does not match track number" in got[7]
    assert "track_num % 100" in got[8]
    assert "duplicate track id" in got[9] and "line 2" in got[9]
    assert "<category>---<name>" in got[10]
    assert all(pr.raw and "\r" not in pr.raw and pr.file == "t.tsv" for pr in problems)


def test_read_tracks_wrong_header_fails_naming_file(tmp_path):
    p = _write(tmp_path, "t.tsv", "id\tpath\n1\t2\n")
    with pytest.raises(jamendo.JamendoFormatError, match="t.tsv.*header"):
        jamendo.read_tracks(p)


def test_read_tracks_full_size(tmp_path):
    n = 55_701
    nums = np.arange(1000, 1000 + n)
    secs = 30.1 + (nums % 500)
    body = "".join(f"track_{k:07d}\tartist_{k % 977:06d}\talbum_{k % 3001:06d}\t{k % 100:02d}/{k}.mp3\t{s:.1f}"
                   f"\tgenre---rock\tinstrument---piano\tmood/theme---calm\n" for k, s in zip(nums, secs))
    p = _write(tmp_path, "big.tsv", HEADER + body)
    df, problems = jamendo.read_tracks(p)
    assert len(df) == n and not problems
    assert df["track_num"].tolist() == nums.tolist() and df["seconds"].iloc[-1] == round(secs[-1], 1)


def test_read_meta(tmp_path):
    p = _write(tmp_path, "raw.meta.tsv",
               "\t".join(jamendo.META_HEADER) + "\n"
               "track_0000214\tartist_000014\talbum_000031\tStand by Me\tThe Band\tAlbum\t2004-01-01\thttps://j/214\n"
               "track_0000215\tartist_000014\talbum_000031\tOnly\tfour\tfields\n")
    df, problems = jamendo.read_meta(p)
    assert list(df.columns) == list(jamendo.META_COLUMNS)
    assert df.iloc[0].title == "Stand by Me" and df.iloc[0].artist == "The Band" and df.iloc[0].track_num == 214
    assert len(problems) == 1 and problems[0].line == 3 and "fields" in problems[0].reason


def test_read_song_describer_ids_in_every_form(tmp_path):
    p = tmp_path / "sdd.csv"
    p.write_text(
        "caption_id,track_id,caption,is_valid_subset,familiarity,artist_id,album_id,path,duration\n"
        '1,214,"A caption, with a comma",True,1,14,31,14/214.2min.mp3,120\n'
        "2,214,second caption of the same track,True,1,14,31,14/214.2min.mp3,120\n"
        "3,track_0000300,x,False,0,1,1,00/300.mp3,60\n"
        "4,,y,False,0,1,1,17/1017.2min.mp3,60\n"
        '5,"42",z,False,0,1,1,42/42.mp3,60\n', encoding="utf-8")
    assert jamendo.read_song_describer(p) == {214, 300, 1017, 42}
    bad = tmp_path / "bad.csv"
    bad.write_text("caption_id,track_id,caption,path\n1,abc,x,nowhere\n", encoding="utf-8")
    with pytest.raises(jamendo.JamendoFormatError, match="bad.csv: line 2"):
        jamendo.read_song_describer(bad)


def test_read_sha256_list(tmp_path):
    a, b = "a" * 64, "b" * 64
    p = _write(tmp_path, "s.txt", f"{a} raw_30s_audio-00.tar\n{b}  14/214.mp3\n\n")
    assert jamendo.read_sha256_list(p) == {"raw_30s_audio-00.tar": a, "14/214.mp3": b}
    with pytest.raises(jamendo.JamendoFormatError, match="line 2"):
        jamendo.read_sha256_list(_write(tmp_path, "s2.txt", f"{a} x\nnot-a-hash y\n"))
    with pytest.raises(jamendo.JamendoFormatError, match="twice"):
        jamendo.read_sha256_list(_write(tmp_path, "s3.txt", f"{a} x\n{b} x\n"))


def test_read_sha256_list_real_and_sha256sum_forms(tmp_path):
    real = ("c569f4b7264995c06de93eb6c20138d9355274508dde37085ed992fc990d930b raw_30s_audio-00.tar\n"  # MTG's file
            "1b079d27127462c9066ed2fa18490303850bc1041fcae55835be3a46d6c965b0 raw_30s_audio-01.tar\n")
    got = jamendo.read_sha256_list(_write(tmp_path, "tars.txt", real, newline="\r\n"))
    assert list(got) == ["raw_30s_audio-00.tar", "raw_30s_audio-01.tar"] and got["raw_30s_audio-00.tar"][:6] == "c569f4"
    a = "A" * 64
    forms = f"{a}  00/100.mp3\n{a} *00/200.mp3\n{a}\t00/300.mp3\n{a.lower()} 00/100.mp3\n"  # same hash twice: fine
    assert jamendo.read_sha256_list(_write(tmp_path, "sum.txt", forms)) == {
        "00/100.mp3": "a" * 64, "00/200.mp3": "a" * 64, "00/300.mp3": "a" * 64}


@pytest.mark.parametrize("bad", [
    "a" * 64,                           # no name
    "a" * 63 + " 00/100.mp3",           # short hash
    "a" * 64 + "00/100.mp3",            # no separator
    "a" * 64 + " 00/100.mp3 extra",     # a third field
    "00/100.mp3 " + "a" * 64,           # fields swapped
    "<html><body>Not Found</body></html>",
])
def test_read_sha256_list_bad_line_names_file_line_and_format(tmp_path, bad):
    p = _write(tmp_path, "tracks.txt", f"{'b' * 64} 00/1.mp3\n\n{bad}\n{'c' * 64} 00/2.mp3\n")
    with pytest.raises(jamendo.JamendoFormatError) as e:
        jamendo.read_sha256_list(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}: line 3: expected {jamendo.SHA256_LINE_FORMAT}") and repr(bad)[:40] in msg


def test_import_does_not_load_pandas():
    """The fetch stage (and every fetch-file job) imports this module for the checksum lists only."""
    import subprocess
    import sys

    code = "import sys, ssmttm.data.jamendo; print('pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
