"""Licence audit: record parser, CC normalisation, allow-list gate and every output file."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from ssmttm import io
from ssmttm.data import licenses as L
from ssmttm.data.sources import jamendo as J

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


def metadata_flags(paths):
    return ["--metadata", f"licenses={paths['licenses']}", f"cleantags={paths['tracks']}", f"meta={paths['meta']}"]


def parse_licences(path):
    """The audit's per-track licence table and problems of one audio_licenses.txt (no track table)."""
    return L.read_licences(*J.parse_licence_file(path))


def run_cli(tmp_path, paths, *flags):
    out = tmp_path / "out"
    rc = L.main([*metadata_flags(paths), "--out-dir", str(out), *flags])
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
    # deed and legal-code pages of the same licence, also after a jurisdiction port
    (f"{CC}/by-nc-sa/3.0/deed.en", "by-nc-sa", "3.0"),
    (f"{CC}/by/3.0/deed.fr", "by", "3.0"),
    (f"{CC}/by-nd/3.0/legalcode", "by-nd", "3.0"),
    ("https://creativecommons.org/licenses/by-sa/4.0/legalcode.en", "by-sa", "4.0"),
    (f"{CC}/by-nc-nd/3.0/es/deed.es", "by-nc-nd", "3.0"),
    (f"{CC}/by-nc/3.0/deed.pt_BR", "by-nc", "3.0"),
])
def test_licence_url_normalisation(url, code, version):
    assert L.parse_licence_url(url) == (code, version)


def test_licence_key_tells_a_port_from_a_deed_page():
    assert L.licence_key(f"{CC}/by/3.0/deed.en") == L.licence_key(f"{CC}/by/3.0/") == ("by", "3.0", "")
    assert L.licence_key(f"{CC}/by/3.0/legalcode") == ("by", "3.0", "")  # not a port named "legalcode"
    assert L.licence_key(f"{CC}/by-nc-nd/3.0/es/deed.es") == ("by-nc-nd", "3.0", "es")


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
        + record(100, "by", "3.0")                                                       # rec 7 same: merged
        + record(11, "by", "3.0").rstrip("\n") + "\n"                                    # rec 8: lost blank
        + record(12, "by-sa", "3.0").replace("track/12", "track/13")                     # rec 9 url mismatch
    )
    p = tmp_path / "audio_licenses.txt"
    p.write_bytes(text.replace("\n", "  \r\n").encode())  # trailing spaces + CRLF are tolerated
    recs, problems = parse_licences(p)
    assert list(recs["track_id"]) == ["track_0000100", "track_0000011"]
    assert recs.iloc[0]["licence"] == "by" and recs.iloc[0]["licence_version"] == "3.0"
    got = {pr.record: pr for pr in problems}
    assert sorted(got) == [2, 3, 4, 5, 6, 9] and recs.attrs["n_duplicates_merged"] == 1
    assert "2 line(s)" in got[2].reason and got[2].line == 5 and "Only a title" in got[2].raw
    assert "bad path" in got[3].reason and got[3].line == 8
    assert "unknown licence code 'by-nc-zz'" in got[4].reason
    assert "name by-sa, URL names by-nc-sa" in got[5].reason
    assert "version 4.0, URL names 3.0" in got[6].reason
    assert "names track 13" in got[9].reason
    assert all(pr.file == "audio_licenses.txt" and "\r" not in pr.raw for pr in problems)


def test_missing_final_blank_line_and_title_with_by(tmp_path):
    paths = make_inputs(tmp_path, titles={100: ("Stand by Me", "Trip by Night")})
    text = paths["licenses"].read_text().rstrip("\n")
    paths["licenses"].write_text(text)  # no final newline at all
    recs, problems = parse_licences(paths["licenses"])
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
    out, table = run_cli(tmp_path, paths, "--preset", "commercial-ok", "--allow", "by-sa", "by")
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
    out, _ = run_cli(tmp_path, paths, "--preset", "custom", "--allow", "by", "by-nc-sa")
    s = pd.read_csv(out / "summary.tsv", sep="\t", keep_default_na=False).set_index("licence")
    assert list(s.index) == [*L.CC_CODES, "unknown", "conflict", "TOTAL"]
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
    assert L.resolve_allow(["by", " BY-SA"], "custom") == (("by", "by-sa"), "custom")
    assert L.resolve_allow([], "commercial-ok") == (("by", "by-sa"), "commercial-ok")
    assert L.resolve_allow(["by-sa", "by"], "commercial-ok") == (("by", "by-sa"), "commercial-ok")
    with pytest.raises(ValueError, match="--allow / config key licenses.allow: unknown"):
        L.resolve_allow(["by", "cc0"], "custom")
    with pytest.raises(ValueError, match=r"licenses.allow \['by'\] disagrees with preset paper"):
        L.resolve_allow(["by"], "paper")  # an allow-list next to a named preset is never silently ignored
    with pytest.raises(ValueError, match="--allow / config key licenses.allow: required"):
        L.resolve_allow([], "custom")
    paths = make_inputs(tmp_path)
    base = [*metadata_flags(paths), "--out-dir", str(tmp_path / "o")]
    for flags, msg in ((["--preset", "custom", "--allow", "by", "nope"], "--allow / config key licenses.allow"),
                       (["--allow", "by"], "--preset / config key licenses.preset: required"),
                       (["--preset", "custom"], "--allow / config key licenses.allow: required")):
        with pytest.raises(SystemExit):
            L.main([*base, *flags])
        assert msg in capsys.readouterr().err


def test_track_with_unparsable_record_says_so(tmp_path):
    """700 has a record whose licence line is garbled: excluded as unparsable, not as 'no record'."""
    bad = ("00/700.mp3\nSong 700 by Artist 700 from Jamendo: https://www.jamendo.com/track/700\n"
           "Available under a Creative Commons Public Domain license: http://example.org/pd/\n\n")
    paths = make_inputs(tmp_path, extra_records=bad)
    table = run_cli(tmp_path, paths, "--preset", "paper")[1]
    row = table.set_index("track_id").loc["track_0000700"]
    assert row["allowed"] == "False" and row["reason"].startswith(L.UNPARSABLE + ": ")


# --- several records for one track -----------------------------------------------------------------
def deed(num, code, version, page="deed.en", **kw):
    """A record whose licence URL points at a deed page (http://.../by-nc/3.0/deed.en)."""
    return record(num, code, version, **kw).replace(f"/{code}/{version}/\n", f"/{code}/{version}/{page}\n")


CONFLICTS = {  # second record for track 100 (first: CC BY 3.0) -> the licences the reason must name
    "code": (record(100, "by-nc", "3.0", "Song 100", "Artist 100"), "CC BY-NC 3.0"),
    "version": (record(100, "by", "4.0", "Song 100", "Artist 100"), "CC BY 4.0"),
    "port": (record(100, "by", "3.0", "Song 100", "Artist 100").replace("/by/3.0/", "/by/3.0/es/"),
             "/by/3.0/es/"),
    "deed url": (deed(100, "by-nc", "3.0", title="Song 100", artist="Artist 100"), "CC BY-NC 3.0"),
}


@pytest.mark.parametrize("flags", [("--preset", "paper"), ("--preset", "commercial-ok"),
                                   ("--preset", "custom", "--allow", "by", "by-nc"),
                                   ("--preset", "custom", "--allow", "by")])
@pytest.mark.parametrize("kind", list(CONFLICTS))
def test_conflicting_records_exclude_the_track_under_every_allow_list(tmp_path, kind, flags):
    second, names = CONFLICTS[kind]
    paths = make_inputs(tmp_path, extra_records=second)
    out, table = run_cli(tmp_path, paths, *flags)
    row = table.set_index("track_num").loc["100"]
    assert (row["allowed"], row["reason"], row["licence"]) == ("False", L.LICENCE_CONFLICT, L.CONFLICT)
    assert row["attribution"] == ""
    # both records stay listed, each with a reason naming both licences
    unparsed = pd.read_csv(out / "unparsed.tsv", sep="\t", keep_default_na=False)
    rows = unparsed[unparsed["raw"].str.startswith("00/100.mp3")]
    assert len(rows) == 2 and sorted(rows["line"]) == [1, 25]  # 6 records of 4 lines, then this one
    for reason in rows["reason"]:
        assert reason.startswith(L.LICENCE_CONFLICT) and "CC BY 3.0" in reason and names in reason
    s = pd.read_csv(out / "summary.tsv", sep="\t", keep_default_na=False).set_index("licence")
    assert s.loc["conflict", "tracks_excluded"] == 1 and s.loc["conflict", "tracks_included"] == 0
    assert s.loc["by", "tracks_total"] == 0  # not counted as CC BY either
    summary = json.loads((out / "licenses.json").read_text())
    assert summary["n_licence_conflicts"] == 1 and summary["per_licence"]["conflict"]["tracks_excluded"] == 1
    assert summary["n_unparsed"] == 2
    assert "track/100" not in (out / "ATTRIBUTION.md").read_text()


def test_identical_duplicates_are_merged_into_one_allowed_track(tmp_path):
    # same licence (one URL points at the deed page), title/artist differ only in whitespace
    dup = deed(100, "by", "3.0", title="Song  100 ", artist="Artist\t100")
    paths = make_inputs(tmp_path, extra_records=dup + record(504, "by-nc-sa", "3.0", "Song 504", "Artist 504"))
    out, table = run_cli(tmp_path, paths, "--preset", "paper")
    assert len(table) == 7 and table["track_id"].is_unique
    for num in ("100", "504"):
        row = table.set_index("track_num").loc[num]
        assert row["allowed"] == "True" and row["reason"] == ""
    assert table.set_index("track_num").loc["100", "attribution"].endswith(f"CC BY 3.0 ({CC}/by/3.0/)")
    assert len(pd.read_csv(out / "unparsed.tsv", sep="\t")) == 0
    summary = json.loads((out / "licenses.json").read_text())
    assert summary["n_duplicates_merged"] == 2 and summary["n_unparsed"] == 0 and summary["n_included"] == 6


def test_duplicate_with_other_names_keeps_the_track_and_is_listed(tmp_path):
    paths = make_inputs(tmp_path, extra_records=record(100, "by", "3.0", "Another Song", "Someone Else"))
    out, table = run_cli(tmp_path, paths, "--preset", "paper")
    row = table.set_index("track_num").loc["100"]
    assert row["allowed"] == "True" and "Song 100" in row["attribution"]
    unparsed = pd.read_csv(out / "unparsed.tsv", sep="\t", keep_default_na=False)
    assert len(unparsed) == 1 and unparsed.iloc[0]["reason"].startswith(L.DUPLICATE_NAMES)
    assert "Another Song" in unparsed.iloc[0]["reason"] and "CC BY 3.0" in unparsed.iloc[0]["reason"]


def test_readable_record_next_to_an_unreadable_one_is_not_trusted(tmp_path):
    garbled = record(100, "by-nc", "3.0", "Song 100", "Artist 100").replace("/by-nc/3.0/", "/by-nc-zz/3.0/")
    paths = make_inputs(tmp_path, extra_records=garbled)
    out, table = run_cli(tmp_path, paths, "--preset", "paper")
    row = table.set_index("track_num").loc["100"]
    assert row["allowed"] == "False" and row["reason"].startswith(L.UNPARSABLE + ": another record")
    assert "by-nc-zz" in row["reason"]


def test_deed_url_record_parses_and_is_allowed(tmp_path):
    text = deed(100, "by-nc-sa", "3.0") + deed(201, "by", "3.0", page="legalcode")
    p = tmp_path / "audio_licenses.txt"
    p.write_text(text)
    recs, problems = parse_licences(p)
    assert problems == [] and list(recs["licence"]) == ["by-nc-sa", "by"]
    assert recs.iloc[0]["licence_url"] == f"{CC}/by-nc-sa/3.0/deed.en"


# --- the licences of a training split --------------------------------------------------------------
def audited(tmp_path, *flags):
    """Run the audit on the 7-track fixture; returns (tracks.tsv path, licenses.json object)."""
    out, _ = run_cli(tmp_path, make_inputs(tmp_path), *flags)
    return out / "tracks.tsv", json.loads((out / "licenses.json").read_text())


def test_training_licences_count_exactly_the_split(tmp_path):
    tsv, audit = audited(tmp_path, "--preset", "paper")
    ids = ["track_0000605", "track_0000100", "track_0000504", "track_0000100"]  # a manifest repeats tracks
    summary, md = L.training_licences(tsv, ids, audit)
    assert summary["scope"] == "train split" and summary["n_tracks"] == 3
    assert summary["hours"] == pytest.approx((3600 + 7200 + 90) / 3600, abs=1e-4)
    assert summary["per_licence"] == {"by": {"tracks": 1, "hours": 1.0}, "by-nc-sa": {"tracks": 1, "hours": 2.0},
                                      "by-nc-nd": {"tracks": 1, "hours": 0.025}}
    assert list(summary["per_licence_version"]) == ["cc-by-3.0", "cc-by-nc-sa-3.0", "cc-by-nc-nd-4.0"]
    assert summary["nc_fraction"] == pytest.approx(2 / 3) and summary["nd_fraction"] == pytest.approx(1 / 3)
    assert summary["allow"] == list(L.CC_CODES) and summary["preset"] == "paper"
    assert summary["audit_n_included"] == 6 and summary["tracks_tsv_sha256"] == io.sha256_file(tsv)
    assert summary["attribution_sha256"] == __import__("hashlib").sha256(md.encode()).hexdigest()
    json.dumps(summary)  # goes into meta.json / card.json
    assert "the 3 MTG-Jamendo tracks of this model's training split" in md
    lines = [ln for ln in md.splitlines() if ln.startswith("- ")]
    assert len(lines) == 3 and ["track/100" in lines[0], "track/504" in lines[1], "track/605" in lines[2]] == [True] * 3
    assert "track/201" not in md and "| CC BY-NC-ND 4.0 | 1 | 0.025 |" in md and "| total | 3 |" in md
    assert L.training_licences(tsv, ids)[0]["preset"] is None  # the audit is optional


def test_training_licences_reject_an_excluded_or_unknown_track(tmp_path):
    tsv, audit = audited(tmp_path, "--preset", "commercial-ok")
    with pytest.raises(L.LicenceError, match=r"tracks\.tsv: track track_0000403 .*excluded.*by-nc"):
        L.training_licences(tsv, ["track_0000100", "track_0000403"], audit)
    with pytest.raises(L.LicenceError, match=r"tracks\.tsv: track track_0000700 .*no licence record"):
        L.training_licences(tsv, ["track_0000700"], audit)
    with pytest.raises(L.LicenceError, match=r"tracks\.tsv: track 100 of the training split is not in .*track_0000100"):
        L.training_licences(tsv, ["100"], audit)
    with pytest.raises(L.LicenceError, match="no track ids"):
        L.training_licences(tsv, [], audit)
    with pytest.raises(L.LicenceError, match="different audit runs"):
        L.training_licences(tsv, ["track_0000100"], {**audit, "sha256": {"tracks.tsv": "0" * 64}})
    summary, _ = L.training_licences(tsv, ["track_0000100", "track_0000201"], audit)
    assert summary["n_tracks"] == 2 and summary["nc_fraction"] == 0.0


def test_training_licences_reject_a_conflicting_track(tmp_path):
    paths = make_inputs(tmp_path, extra_records=CONFLICTS["code"][0])
    out, _ = run_cli(tmp_path, paths, "--preset", "custom", "--allow", "by", "by-nc")
    with pytest.raises(L.LicenceError, match=r"track track_0000100 .*licence conflict.*licence_conflict"):
        L.training_licences(out / "tracks.tsv", ["track_0000100"])
