"""report-pages' licence page: each trained model's training split, then the audit, labelled apart."""

from __future__ import annotations

import pytest

from ssmttm import io
from ssmttm.report import pages


def make_run(root, exp, seed, n_tracks, attribution, step=12, model="lm"):
    """A finished run folder: done.json naming ckpt/step_N, whose ATTRIBUTION.md is ``attribution``."""
    run = root / "train" / exp / f"seed{seed}"
    ck = run / "ckpt" / f"step_{step:07d}"
    io.write_text(ck / "ATTRIBUTION.md", attribution)
    lic = {"scope": "train split", "n_tracks": n_tracks, "hours": 0.5, "nc_fraction": 0.25, "nd_fraction": 0.0,
           "per_licence_version": {"cc-by-3.0": {"tracks": n_tracks - 1, "hours": 0.4},
                                   "cc-by-nc-3.0": {"tracks": 1, "hours": 0.1}}}
    # final_checkpoint as the trainer writes it: relative to the working folder it ran in, not to this one
    io.write_json(run / "done.json", {"model": model, "experiment": exp, "seed": seed, "step": step,
                                      "final_checkpoint": f"results/train/{exp}/seed{seed}/ckpt/{ck.name}",
                                      "licences": lic})
    return run / "done.json"


@pytest.fixture
def inputs(tmp_path):
    lic = tmp_path / "licenses"
    io.write_text(lic / "summary.tsv", "licence\ttracks_total\nby\t56\n")
    io.write_text(lic / "ATTRIBUTION.md", "# Licence audit\n\n- Audit Song by Audit Artist (CC BY)\n")
    split_a = "# Attribution: the 38 tracks\n\n- Split Song A by X (CC BY)\n"
    runs = [make_run(tmp_path, "simba", 0, 38, split_a), make_run(tmp_path, "simba", 1, 38, split_a),
            make_run(tmp_path, "other", 0, 12, "# Attribution: the 12 tracks\n\n- Split Song B by Y (CC BY)\n")]
    io.write_json(tmp_path / "prompts.json", {"prompts": []})
    return tmp_path, lic, runs


def test_licence_page_states_each_models_training_split(inputs):
    tmp, lic, runs = inputs
    assert pages.main(["--run", *map(str, runs), "--prompts", str(tmp / "prompts.json"),
                       "--licenses-summary", str(lic / "summary.tsv"), "--licenses-attribution",
                       str(lic / "ATTRIBUTION.md"), "--out-dir", str(tmp / "out")]) == 0
    page = (tmp / "out" / "licences.html").read_text()
    assert "Training data of each trained model" in page
    assert "simba (LM, seed 0, checkpoint step_0000012)" in page and "simba (LM, seed 1," in page
    assert "the <b>38 tracks</b> of its training split" in page and "the <b>12 tracks</b>" in page
    assert "<td>cc-by-3.0</td><td>37</td>" in page and "non-commercial 25.0 %" in page
    # one copy of a track list that two seeds share; the other run's own list
    assert page.count("Split Song A by X") == 1 and "the same list as <a href='#split-0'>" in page
    assert page.count("Split Song B by Y") == 1
    # the audit comes after, labelled as the audit and not as training data
    audit_at = page.index("Licence audit of the metadata (not the training data)")
    assert page.index("Split Song B") < audit_at < page.index("Audit Song by Audit Artist")
    assert "used for training" not in page


def test_run_without_its_checkpoint_attribution_is_an_error(inputs):
    tmp, lic, runs = inputs
    (runs[0].parent / "ckpt" / "step_0000012" / "ATTRIBUTION.md").unlink()
    with pytest.raises(SystemExit, match=r"simba/seed0/done\.json: its final checkpoint has no ATTRIBUTION\.md"):
        pages.licences_page([runs[0]], lic / "summary.tsv", lic / "ATTRIBUTION.md")
    io.write_json(runs[1], {**io.read_json(runs[1]), "final_checkpoint": "/elsewhere/model"})
    with pytest.raises(SystemExit, match="is not <run>/ckpt/step_N"):
        pages.licences_page([runs[1]], lic / "summary.tsv", lic / "ATTRIBUTION.md")
