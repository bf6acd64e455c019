"""Prompt-set registry with options, and the MusicCaps / Song Describer parsers (ssmttm.eval.promptsets)."""

import csv
import io as _io
import json
import logging
from pathlib import Path

import pytest

from ssmttm.eval import promptsets as ps
from ssmttm.generate import prompts as pr

MC_HEADER = list(ps.MUSICCAPS_COLUMNS)


def _mc_row(ytid, caption, aspects="['rock', 'electric guitar']", start=30, end=40, balanced="False"):
    return [ytid, start, end, "/m/04rlf", aspects, caption, 4, balanced, "True"]


def _write_csv(path: Path, header, rows) -> Path:
    buf = _io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r in rows:
        w.writerow(r)
    path.write_text(buf.getvalue(), encoding="utf-8")
    return path


@pytest.fixture
def musiccaps_csv(tmp_path):
    rows = [
        _mc_row("-0Gj8-vB1q4", "A rock song with distorted guitars, no vocals.", balanced="True"),   # line 2
        _mc_row("aaaaaaaaaa1", "A male singer sings over a piano.\nLow quality recording.",          # lines 3-4
                "['male vocals', 'piano']"),
        _mc_row("aaaaaaaaaa2", "An instrumental jazz piece, saxophone lead.", "['instrumental', 'no voices']",
                balanced="True"),                                                                       # 5
        _mc_row("aaaaaaaaaa3", "Soft ambient pads.", "['ambient', 'choir']"),                           # 6
        _mc_row("bad_ytid", "A short id."),                                                            # 7
        ["aaaaaaaaaa4", 0, 10, "/m/x", "[]", "eight fields only", 1, "True"],                          # 8
        _mc_row("aaaaaaaaaa5", "Reversed bounds.", start=20, end=10),                                   # 9
        _mc_row("aaaaaaaaaa6", "Bad flag.", balanced="yes"),                                            # 10
        _mc_row("aaaaaaaaaa7", "Bad aspects.", aspects="[not a literal"),                               # 11
        _mc_row("aaaaaaaaaa2", "Duplicate of line 5."),                                                 # 12
        _mc_row("aaaaaaaaaa8", "A rapper over a trap beat.", "['hip hop', 'rap']"),                     # 13
        _mc_row("aaaaaaaaaa9", "Orchestral strings; non-vocal.", "['orchestra']", balanced="True"),     # 14
    ]
    return _write_csv(tmp_path / "musiccaps-public.csv", MC_HEADER, rows)


def test_read_musiccaps_is_strict_and_reports_lines(musiccaps_csv):
    rows, problems = ps.read_musiccaps(musiccaps_csv)
    assert [r["ytid"] for r in rows] == ["-0Gj8-vB1q4", "aaaaaaaaaa1", "aaaaaaaaaa2", "aaaaaaaaaa3",
                                         "aaaaaaaaaa8", "aaaaaaaaaa9"]
    by_line = {p.line: p.reason for p in problems}
    assert sorted(by_line) == [7, 8, 9, 10, 11, 12]
    assert "bad ytid" in by_line[7] and "8 fields" in by_line[8] and "bounds" in by_line[9]
    assert "is_balanced_subset" in by_line[10] and "aspect_list" in by_line[11]
    assert "duplicate ytid aaaaaaaaaa2 (first at line 5)" in by_line[12]
    assert rows[1]["aspects"] == ["male vocals", "piano"] and rows[1]["start_s"] == 30.0
    assert "\n" in rows[1]["caption"]  # a quoted newline stays inside its caption


def test_musiccaps_subsets(musiccaps_csv, caplog):
    with caplog.at_level(logging.WARNING):
        recs = pr.load_prompt_records("musiccaps", prompts_file=musiccaps_csv)
    assert "line 12: duplicate ytid" in caplog.text
    assert len(recs) == 6
    r0 = recs[0]
    assert r0["prompt_id"] == r0["ref_id"] == "-0Gj8-vB1q4" and (r0["start_s"], r0["end_s"]) == (30.0, 40.0)
    bal = pr.load_prompt_records("musiccaps", prompts_file=musiccaps_csv, options={"subset": "balanced"})
    assert [r["ref_id"] for r in bal] == ["-0Gj8-vB1q4", "aaaaaaaaaa2", "aaaaaaaaaa9"]
    # no_singing: "no vocals", "no voices" and "non-vocal" are negations; singer, choir, rap are not
    ns = pr.load_prompt_records("musiccaps", prompts_file=musiccaps_csv, options={"subset": "no_singing"})
    assert [r["ref_id"] for r in ns] == ["-0Gj8-vB1q4", "aaaaaaaaaa2", "aaaaaaaaaa9"]
    ns2 = pr.load_prompt_records("musiccaps", prompts_file=musiccaps_csv,
                                 options={"subset": "no_singing", "exclude_words": ["piano", "saxophone"]})
    assert [r["ref_id"] for r in ns2] == ["-0Gj8-vB1q4", "aaaaaaaaaa3", "aaaaaaaaaa8", "aaaaaaaaaa9"]


def test_musiccaps_random_subset_is_seeded_and_in_file_order(musiccaps_csv):
    def ids(**o):
        return [r["ref_id"] for r in pr.load_prompt_records("musiccaps", prompts_file=musiccaps_csv, options=o)]

    a, b = ids(subset="random", n=3, seed=1), ids(subset="random", n=3, seed=1)
    assert a == b and len(a) == 3 and len(set(a)) == 3
    order = ids()
    assert a == sorted(a, key=order.index)
    assert any(ids(subset="random", n=3, seed=s) != a for s in range(2, 8))
    assert len(ids(subset="balanced", n=2)) == 2
    with pytest.raises(pr.PromptError, match="n: 200 asked for"):  # default n=200 > 6 rows
        ids(subset="random")
    with pytest.raises(pr.PromptError, match="--options n"):
        ids(subset="random", n=0)


def test_options_are_checked(musiccaps_csv):
    with pytest.raises(pr.PromptError, match="unknown option 'subsett'"):
        pr.load_prompt_records("musiccaps", prompts_file=musiccaps_csv, options={"subsett": "all"})
    with pytest.raises(pr.PromptError, match="subset: 'vocal'"):
        pr.load_prompt_records("musiccaps", prompts_file=musiccaps_csv, options={"subset": "vocal"})
    with pytest.raises(pr.PromptError, match="unknown option 'n' for prompt set 'demo'.*none"):
        pr.load_prompt_records("demo", options={"n": 3})
    with pytest.raises(pr.PromptError, match="needs --prompts-file"):
        pr.load_prompt_records("musiccaps")
    with pytest.raises(pr.PromptError, match="header"):
        pr.load_prompt_records("musiccaps", prompts_file=_write_csv(musiccaps_csv.with_name("x.csv"), ["a"], []))
    assert set(pr.set_options("song_describer")) == {"valid_only", "one_per_track", "n", "seed"}


def test_prompt_set_stage_writes_records_that_generate_reads(musiccaps_csv, tmp_path):
    out = tmp_path / "mc.json"
    rc = pr.main(["--name", "musiccaps", "--prompts-file", str(musiccaps_csv), "--options",
                  json.dumps({"subset": "balanced"}), "--out", str(out)])
    assert rc == 0
    obj = json.loads(out.read_text())
    assert obj["name"] == "musiccaps" and obj["options"] == {"subset": "balanced"}
    assert [p["ref_id"] for p in obj["prompts"]] == ["-0Gj8-vB1q4", "aaaaaaaaaa2", "aaaaaaaaaa9"]
    assert obj["prompts"][0]["start_s"] == 30.0 and obj["prompts"][0]["text"].startswith("A rock song")
    # generate reads it through the file set, the demo set or its own set name (already resolved)
    want = [(p["prompt_id"], p["text"]) for p in obj["prompts"]]
    assert pr.load_prompt_set("file", prompts_file=out) == want
    assert pr.load_prompt_set("musiccaps", prompts_file=out) == want
    assert pr.read_prompts_file(out) == want
    again = pr.load_prompt_records("file", prompts_file=out)
    assert again[1]["ref_id"] == "aaaaaaaaaa2" and again[1]["end_s"] == 40.0
    with pytest.raises(pr.PromptError, match="named 'musiccaps', not 'song_describer'"):
        pr.load_prompt_records("song_describer", prompts_file=out)
    # bad flags fail naming the flag, writing nothing
    for bad in (["--options", "{x"], ["--options", "[1]"], ["--options", '{"subsett": 1}']):
        assert pr.main(["--name", "musiccaps", "--prompts-file", str(musiccaps_csv), *bad,
                        "--out", str(tmp_path / "bad.json")]) == 2
    assert not (tmp_path / "bad.json").exists()
    # the old --json path still writes ref_id null records
    assert pr.main(["--json", json.dumps(["calm piano"]), "--out", str(tmp_path / "j.json")]) == 0
    assert json.loads((tmp_path / "j.json").read_text())["prompts"] == [
        {"prompt_id": "p000", "text": "calm piano", "ref_id": None}]


# --- Song Describer ---------------------------------------------------------------------------------------
@pytest.fixture
def sdd_csv(tmp_path):
    rows = [
        [101, 214, "Calm piano, sparse.", "False", 0, 5, 7, "14/214.2min.mp3", 120.0],          # 2
        [102, 214, "A gentle piano piece.", "True", 1, 5, 7, "14/214.2min.mp3", 120.0],         # 3
        [103, "track_0000315", "Loud rock.", "True", 2, 6, 8, "15/315.2min.mp3", 90.0],         # 4
        [104, "", "Id from the path.", "False", 0, 6, 8, "16/416.2min.mp3", 90.0],              # 5
        ["x5", 500, "Bad caption id.", "True", 0, 1, 1, "00/500.2min.mp3", 60.0],               # 6
        [106, "", "No id anywhere.", "True", 0, 1, 1, "nowhere", 60.0],                         # 7
        [102, 600, "Duplicate caption id.", "True", 0, 1, 1, "00/600.2min.mp3", 60.0],          # 8
        [108, 700, "", "True", 0, 1, 1, "00/700.2min.mp3", 60.0],                               # 9
    ]
    return _write_csv(tmp_path / "song_describer.csv", list(ps.SONG_DESCRIBER_COLUMNS), rows)


def test_song_describer(sdd_csv):
    rows, problems = ps.read_song_describer_captions(sdd_csv)
    assert [p.line for p in problems] == [6, 7, 8, 9]
    assert "duplicate caption_id 102 (first at line 3)" in problems[2].reason
    recs = pr.load_prompt_records("song_describer", prompts_file=sdd_csv)
    assert [(r["prompt_id"], r["ref_id"]) for r in recs] == [
        ("sdd_101", "214"), ("sdd_102", "214"), ("sdd_103", "315"), ("sdd_104", "416")]
    valid = pr.load_prompt_records("song_describer", prompts_file=sdd_csv, options={"valid_only": True})
    assert [r["prompt_id"] for r in valid] == ["sdd_102", "sdd_103"]
    one = pr.load_prompt_records("song_describer", prompts_file=sdd_csv, options={"one_per_track": True})
    assert [r["prompt_id"] for r in one] == ["sdd_102", "sdd_103", "sdd_104"]  # valid caption preferred
    two = pr.load_prompt_records("song_describer", prompts_file=sdd_csv, options={"n": 2, "seed": 3})
    assert len(two) == 2
    with pytest.raises(pr.PromptError, match="valid_only: expected true or false"):
        pr.load_prompt_records("song_describer", prompts_file=sdd_csv, options={"valid_only": "yes"})


def test_song_describer_demo_mirror_file(repo):
    path = repo / "results/demo/mirror/metadata/song_describer.csv"
    if not path.is_file():
        pytest.skip("demo mirror not built")
    recs = pr.load_prompt_records("song_describer", prompts_file=path)
    with open(path, encoding="utf-8", newline="") as f:
        n_rows = sum(1 for _ in csv.DictReader(f))
    assert len(recs) == n_rows and all(r["ref_id"].isdigit() and r["prompt_id"].startswith("sdd_") for r in recs)
