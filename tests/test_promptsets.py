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
    rc = pr.main(["--prompt-set", "musiccaps", "--prompts-file", str(musiccaps_csv), "--prompt-options",
                  json.dumps({"musiccaps": {"subset": "balanced"}}), "--out", str(out)])
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
    for bad in (["--prompt-options", "{x"], ["--prompt-options", "[1]"]):
        with pytest.raises(SystemExit):
            pr.main(["--prompt-set", "musiccaps", "--prompts-file", str(musiccaps_csv), *bad,
                     "--out", str(tmp_path / "bad.json")])
    assert pr.main(["--prompt-set", "musiccaps", "--prompts-file", str(musiccaps_csv), "--prompt-options",
                    '{"musiccaps": {"subsett": 1}}', "--out", str(tmp_path / "bad.json")]) == 2
    assert not (tmp_path / "bad.json").exists()
    # the config's own prompts (generate.prompts) write ref_id null records
    assert pr.main(["--prompts", json.dumps({"p000": "calm piano"}), "--out", str(tmp_path / "j.json")]) == 0
    assert json.loads((tmp_path / "j.json").read_text())["prompts"] == [
        {"prompt_id": "p000", "text": "calm piano", "ref_id": None}]
