"""Licence audit: record parser, CC normalisation, allow-list gate and every output file."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from ssmttm import io
from ssmttm.data import licenses as L

CC = "http://creativecommons.org/licenses"
WORDS = {
    "by": "Attribution", "by-sa": "Attribution-ShareAlike", "by-nd": "Attribution-NoDerivatives",
    "by-nc": "Attribution-NonCommercial", "by-nc-sa": "Attribution-NonCommercial-ShareAlike",
    "by-nc-nd": "Attribution-NonCommercial-NoDerivatives",
}
# track number -> (licence code, version, seconds); 700 has no licence record
TRACKS = {
    100: ("by", "3.0", 3600.0), 201: ("by-sa", "3.0", 1800.0), 302: ("by-nd", "2.5", 120.0),
    403: ("by-nc", "3.0", 60.0), 504: ("by-nc-sa", "3.0", 7200.0), 605: ("by-nc-nd", "4.0", 90.0),
    700: (None, None, 45.0),
}


def record(num, code, version, title="Song", artist="Artist", words=None):
    path = f"{num % 100:02d}/{num}.mp3"
    words = WORDS[code] if words is None else words
    return (f"{path}\n{title} by {artist} from Jamendo: https://www.jamendo.com/track/{num}\n"
            f"Available under a Creative Commons {words} license: {CC}/{code}/{version}/\n\n")


def make_inputs(tmp_path, extra_records="", titles=None):
    titles = titles or {}
    tr = ["TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS"]
    me = ["\t".join(("TRACK_ID", "ARTIST_ID", "ALBUM_ID", "TRACK_NAME", "ARTIST_NAME", "ALBUM_NAME",
                     "RELEASEDATE", "URL"))]
    lic = ""
    for num, (code, ver, secs) in TRACKS.items():
        tid = f"track_{num:07d}"
        tr.append(f"{tid}\tartist_1\talbum_1\t{num % 100:02d}/{num}.mp3\t{secs}\tgenre---rock")
        title, artist = titles.get(num, (f"Song {num}", f"Artist {num}"))
        me.append(f"{tid}\tartist_1\talbum_1\t{title}\t{artist}\tAlbum\t2010-01-01\thttps://j/{num}")
        if code:
            lic += record(num, code, ver, title, artist)
    paths = {"tracks": tmp_path / "raw_30s_cleantags.tsv", "meta": tmp_path / "raw.meta.tsv",
             "licenses": tmp_path / "audio_licenses.txt"}
    paths["tracks"].write_text("\n".join(tr) + "\n", encoding="utf-8")
    paths["meta"].write_text("\n".join(me) + "\n", encoding="utf-8")
    paths["licenses"].write_text(lic + extra_records, encoding="utf-8")
    return paths


def run_cli(tmp_path, paths, *flags):
    out = tmp_path / "out"
    rc = L.main(["--licenses", str(paths["licenses"]), "--tracks", str(paths["tracks"]),
                 "--meta", str(paths["meta"]), "--out-dir", str(out), *flags])
    assert rc == 0
    table = pd.read_csv(out / "tracks.tsv", sep="\t", dtype=str, keep_default_na=False)
    return out, table


@pytest.mark.parametrize("url,code,version", [
    (f"{CC}/by/3.0/", "by", "3.0"),
    (f"{CC}/by-sa/4.0/", "by-sa", "4.0"),
    (f"{CC}/by-nd/2.5/", "by-nd", "2.5"),
    (f"{CC}/by-nc/3.0/", "by-nc", "3.0"),
    (f"{CC}/BY-NC-SA/3.0/", "by-nc-sa", "3.0"),
    ("https://creativecommons.org/licenses/by-nc-nd/2.0/es/", "by-nc-nd", "2.0"),
    ("https://www.creativecommons.org/licenses/by/4", "by", "4.0"),
])
def test_licence_url_normalisation(url, code, version):
    assert L.parse_licence_url(url) == (code, version)


@pytest.mark.parametrize("url", [
    f"{CC}/by-nc-xx/3.0/", f"{CC}/publicdomain/", "http://example.org/licenses/by/3.0/", f"{CC}/sampling+/1.0/",
])
def test_unknown_licence_url_is_rejected(url):
    with pytest.raises(ValueError):
        L.parse_licence_url(url)


def test_parser_reports_bad_records_and_keeps_good_ones(tmp_path):
    text = (
        record(100, "by", "3.0")                                                        # rec 1, line 1
        + "01/201.mp3\nOnly a title by Someone from Jamendo: https://www.jamendo.com/track/201\n\n"  # rec 2
        + "1/302.mp3\nT by A from Jamendo: https://x/track/302\n"                        # rec 3, line 8
          f"Available under a Creative Commons Attribution license: {CC}/by/3.0/\n\n"
        + record(403, "by-nc", "3.0").replace("/by-nc/3.0/", "/by-nc-zz/3.0/")           # rec 4, line 12
        + record(504, "by-nc-sa", "3.0", words="Attribution-ShareAlike")                 # rec 5, line 16
        + record(605, "by-nc-nd", "3.0", words="Attribution-NonCommercial-NoDerivs 4.0")  # rec 6, line 20
        + record(100, "by", "3.0")                                                       # rec 7 duplicate
        + record(11, "by", "3.0").rstrip("\n") + "\n"                                    # rec 8: lost blank
        + record(12, "by-sa", "3.0").replace("track/12", "track/13")                     # rec 9 url mismatch
    )
    p = tmp_path / "audio_licenses.txt"
    p.write_bytes(text.replace("\n", "  \r\n").encode())  # trailing spaces + CRLF are tolerated
    recs, problems = L.parse_licences(p)
    assert list(recs["path"]) == ["00/100.mp3", "11/11.mp3"]
    assert recs.iloc[0]["licence"] == "by" and recs.iloc[0]["licence_version"] == "3.0"
    got = {pr.record: pr for pr in problems}
    assert sorted(got) == [2, 3, 4, 5, 6, 7, 9]
    assert "2 line(s)" in got[2].reason and got[2].line == 5 and "Only a title" in got[2].raw
    assert "bad path" in got[3].reason and got[3].line == 8
    assert "unknown licence code 'by-nc-zz'" in got[4].reason
    assert "name by-sa, URL names by-nc-sa" in got[5].reason
    assert "version 4.0, URL names 3.0" in got[6].reason
    assert "duplicate record" in got[7].reason
    assert "names track 13" in got[9].reason
    assert all(pr.file == "audio_licenses.txt" and "\r" not in pr.raw for pr in problems)


def test_missing_final_blank_line_and_title_with_by(tmp_path):
    paths = make_inputs(tmp_path, titles={100: ("Stand by Me", "Trip by Night")})
    text = paths["licenses"].read_text().rstrip("\n")
    paths["licenses"].write_text(text)  # no final newline at all
    recs, problems = L.parse_licences(paths["licenses"])
    assert problems == [] and len(recs) == 6
    out, table = run_cli(tmp_path, paths, "--preset", "paper")
    row = table[table["track_num"] == "100"].iloc[0]
    assert (row["title"], row["artist"]) == ("Stand by Me", "Trip by Night")  # meta disambiguates " by "
    assert row["attribution"] == ("\u201cStand by Me\u201d by Trip by Night (https://www.jamendo.com/track/100), "
                                  f"licensed under CC BY 3.0 ({CC}/by/3.0/)")


def test_paper_preset_outputs(tmp_path):
    paths = make_inputs(tmp_path, extra_records="garbage line\n\n")
    out, table = run_cli(tmp_path, paths, "--preset", "paper")
    assert len(table) == 7
    unknown = table[table["track_num"] == "700"].iloc[0]
    assert unknown["licence"] == "unknown" and unknown["allowed"] == "False"
    assert unknown["reason"] == "no licence record"
    assert set(table.loc[table["allowed"] == "True", "track_num"]) == {"100", "201", "302", "403", "504", "605"}
    v = table.set_index("track_num")
    assert v.loc["605", "licence_version"] == "4.0" and v.loc["302", "licence_version"] == "2.5"
    unparsed = pd.read_csv(out / "unparsed.tsv", sep="\t", keep_default_na=False)
    assert len(unparsed) == 1 and unparsed.iloc[0]["raw"] == "garbage line"
    summary = json.loads((out / "licenses.json").read_text())
    assert summary["n_included"] == 6 and summary["n_unparsed"] == 1 and summary["preset"] == "paper"
    assert summary["per_licence"]["unknown"]["tracks_excluded"] == 1
    assert summary["nc_fraction"] == pytest.approx(3 / 6) and summary["nd_fraction"] == pytest.approx(2 / 6)
    assert summary["sha256"]["tracks.tsv"] == io.sha256_file(out / "tracks.tsv")
    assert summary["sha256"]["ATTRIBUTION.md"] == io.sha256_file(out / "ATTRIBUTION.md")
    assert summary["source_sha256"]["audio_licenses.txt"] == io.sha256_file(paths["licenses"])


def test_commercial_ok_preset_excludes_nc_and_nd(tmp_path):
    paths = make_inputs(tmp_path)
    out, table = run_cli(tmp_path, paths, "--preset", "commercial-ok", "--allow", "by-sa,by")
    inc = table[table["allowed"] == "True"]
    assert set(inc["licence"]) == {"by", "by-sa"}
    exc = table[(table["allowed"] == "False") & (table["licence"] != "unknown")]
    assert set(exc["licence"]) == {"by-nd", "by-nc", "by-nc-sa", "by-nc-nd"}
    assert all(r.startswith("licence by-n") and "not allowed" in r for r in exc["reason"])
    # ATTRIBUTION.md lists exactly the included tracks, sorted by track id
    lines = [ln for ln in (out / "ATTRIBUTION.md").read_text().splitlines() if ln.startswith("- ")]
    assert len(lines) == 2
    assert "track/100" in lines[0] and "CC BY 3.0" in lines[0]
    assert "track/201" in lines[1] and "CC BY-SA 3.0" in lines[1]
    assert "commercial-ok" in (out / "ATTRIBUTION.md").read_text()
    assert json.loads((out / "licenses.json").read_text())["nc_fraction"] == 0.0


def test_summary_hours_add_up(tmp_path):
    paths = make_inputs(tmp_path)
    out, _ = run_cli(tmp_path, paths, "--allow", "by,by-nc-sa")
    s = pd.read_csv(out / "summary.tsv", sep="\t", keep_default_na=False).set_index("licence")
    assert list(s.index) == [*L.CC_CODES, "unknown", "TOTAL"]
    body, total = s.drop(index="TOTAL"), s.loc["TOTAL"]
    for col in s.columns:
        assert body[col].sum() == pytest.approx(total[col], abs=1e-3), col
    assert (s["tracks_included"] + s["tracks_excluded"] == s["tracks_total"]).all()
    assert (s["hours_included"] + s["hours_excluded"]).to_numpy() == pytest.approx(s["hours_total"].to_numpy())
    expected_total_h = sum(v[2] for v in TRACKS.values()) / 3600
    assert total["hours_total"] == pytest.approx(expected_total_h, abs=1e-3)
    assert total["hours_included"] == pytest.approx((3600 + 7200) / 3600)
    assert s.loc["unknown", "tracks_total"] == 1


def test_allow_flags_fail_fast(tmp_path, capsys):
    assert L.resolve_allow("by, BY-SA", None) == (("by", "by-sa"), "custom")
    assert L.resolve_allow(None, "commercial-ok") == (("by", "by-sa"), "commercial-ok")
    with pytest.raises(ValueError, match="--allow: unknown"):
        L.resolve_allow("by,cc0", None)
    with pytest.raises(ValueError, match="disagrees with --preset paper"):
        L.resolve_allow("by", "paper")
    with pytest.raises(ValueError, match="--allow: required"):
        L.resolve_allow(None, None)
    paths = make_inputs(tmp_path)
    with pytest.raises(SystemExit):
        L.main(["--licenses", str(paths["licenses"]), "--tracks", str(paths["tracks"]), "--meta",
                str(paths["meta"]), "--allow", "by,nope", "--out-dir", str(tmp_path / "o")])
    assert "--allow" in capsys.readouterr().err


def test_track_with_unparsable_record_says_so(tmp_path):
    """700 has a record whose licence line is garbled: excluded as unparsable, not as 'no record'."""
    bad = ("00/700.mp3\nSong 700 by Artist 700 from Jamendo: https://www.jamendo.com/track/700\n"
           "Available under a Creative Commons Public Domain license: http://example.org/pd/\n\n")
    paths = make_inputs(tmp_path, extra_records=bad)
    table = run_cli(tmp_path, paths, "--preset", "paper")[1]
    row = table.set_index("track_id").loc["track_0000700"]
    assert row["allowed"] == "False" and row["reason"].startswith(L.UNPARSABLE + ": ")
