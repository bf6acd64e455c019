"""External systems: a folder of another model's clips becomes a scored system in generate's layout."""

from __future__ import annotations

import numpy as np
import pytest

from ssmttm import audio, io, settings
from ssmttm.eval import evaluate as ev
from ssmttm.eval.options import EvaluateSettings
from ssmttm.generate import external as ext

SR = 16000


def _tone(freq: float, seconds: float = 2.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture()
def world(tmp_path):
    prompts = tmp_path / "prompts.json"
    ids = ["a", "b", "c", "d"]
    io.write_json(prompts, {"name": "t", "prompts": [{"prompt_id": k, "text": f"tone {k}", "ref_id": f"r{k}"}
                                                      for k in ids]})
    ref = tmp_path / "ref"
    ref.mkdir()
    for i, k in enumerate(ids):
        audio.write(ref / f"r{k}.wav", _tone(220 + 110 * i)[None], SR)
    io.write_json(ref / "index.json", {"clips": [{"id": f"r{k}", "file": f"r{k}.wav", "ref_id": f"r{k}"} for k in ids]})
    clips = tmp_path / "theirs"
    clips.mkdir()
    audio.write(clips / "a.wav", _tone(220)[None], SR)
    audio.write(clips / "b.flac", _tone(330)[None], SR)
    (clips / "c.wav").write_bytes(b"RIFF not really a wav")  # corrupt: rejected with its reason
    return tmp_path, prompts, ref, clips


def test_clips_are_found_copied_and_the_rest_rejected_with_reasons(world):
    tmp, prompts, _, clips = world
    out = tmp / "set"
    index = ext.build("other", clips, prompts, out)
    assert [it["prompt_id"] for it in index["items"]] == ["a", "b"]
    assert (out / "a.wav").read_bytes() == (clips / "a.wav").read_bytes() and (out / "b.flac").is_file()
    reasons = {r["prompt_id"]: r["reason"] for r in index["rejected"]}
    assert set(reasons) == {"c", "d"} and "c.wav" in reasons["c"] and "no d{" in reasons["d"]
    side = io.read_json(out / "a.json")
    assert side["source_sha256"] == io.sha256_file(clips / "a.wav") and side["system_kind"] == "external"
    assert io.read_json(out / "index.json")["n_prompts"] == 4


def test_a_file_table_names_clips_and_cannot_leave_the_folder(world):
    tmp, prompts, _, clips = world
    (tmp / "secret.wav").write_bytes((clips / "a.wav").read_bytes())
    table = tmp / "files.tsv"
    table.write_text("prompt_id\tfile\na\tb.flac\nb\t../secret.wav\n")
    index = ext.build("other", clips, prompts, tmp / "set", table)
    assert [it["prompt_id"] for it in index["items"]] == ["a"]
    reasons = {r["prompt_id"]: r["reason"] for r in index["rejected"]}
    assert "outside" in reasons["b"] and reasons["c"] == "not listed in --files"
    table.write_text("prompt\tpath\n")
    with pytest.raises(ext.ExternalSystemError, match="missing columns"):
        ext.build("other", clips, prompts, tmp / "set2", table)


def test_no_usable_clip_is_an_error_naming_the_folder(world, capsys):
    tmp, prompts, _, _ = world
    empty = tmp / "empty"
    empty.mkdir()
    with pytest.raises(ext.ExternalSystemError, match="systems.other: no usable clip"):
        ext.build("other", empty, prompts, tmp / "set")
    assert ext.main(["--name", "other", "--dir", str(tmp / "nope"), "--prompts", str(prompts),
                     "--out-dir", str(tmp / "set")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_an_external_system_is_scored_like_generated_clips(world):
    tmp, prompts, ref, clips = world
    out = tmp / "set"
    ext.build("other", clips, prompts, out)
    s = settings.resolve(EvaluateSettings, given={"bootstrap": 0, "device": "cpu"})
    (row,) = ev.evaluate("fd_logmel", "external", [out], ref, prompts, {}, tmp / "cache", s, experiment="other")
    assert row["system_kind"] == "external" and row["experiment"] == "other" and row["n"] == 2
    assert row["seed"] is None and row["step"] is None and row["duration_s"] == pytest.approx(2.0)
