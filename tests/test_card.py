"""Model card: the licence section counts the training split, and MODEL_CARD.md is a Hub model card."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest
from huggingface_hub import ModelCard

from ssmttm.data import licenses as L
from ssmttm.train import card

CODES = ("by", "by-sa", "by-nc-sa", "by-nc-nd")  # track i has CODES[i % 4]
META = {"model": "lm", "experiment": "simba_k1", "seed": 0, "step": 200, "variant": "prefix-simba", "preset": "tiny",
        "kappa": 1, "n_params": 1000, "n_params_non_embedding": 800, "tokens_seen": 12345, "manifest_sha256": "ab" * 32}


def audit_table(path, n=56):
    """An audit's tracks.tsv of ``n`` allowed tracks, 60 s each."""
    rows = []
    for i in range(n):
        code = CODES[i % 4]
        url = f"http://creativecommons.org/licenses/{code}/3.0/"
        rows.append({"track_id": f"track_{i:07d}", "track_num": i, "path": f"{i % 100:02d}/{i}.mp3",
                     "shard": f"{i % 100:02d}", "seconds": 60.0, "licence": code, "licence_version": "3.0",
                     "licence_url": url, "title": f"Song {i}", "artist": f"Artist {i}",
                     "track_url": f"https://www.jamendo.com/track/{i}",
                     "attribution": L.attribution(f"Song {i}", f"Artist {i}", f"https://www.jamendo.com/track/{i}",
                                                  code, "3.0", url),
                     "allowed": True, "reason": ""})
    pd.DataFrame(rows, columns=list(L.TRACK_TABLE_COLUMNS)).to_csv(path, sep="\t", index=False)
    return path


@pytest.fixture
def split_card(tmp_path):
    tsv = audit_table(tmp_path / "tracks.tsv")
    audit = {"allow": list(CODES), "preset": "custom", "n_tracks": 56, "n_included": 56}
    summary, md = L.training_licences(tsv, [f"track_{i:07d}" for i in range(38)], audit)
    files = card.card_files({**META, "licences": summary}, {"n_layers": 2, "d_model": 16}, {"lr": 1e-4}, md.encode())
    return files, summary, md


def test_card_counts_the_training_split_not_the_audit(split_card):
    files, summary, md = split_card
    text = files["MODEL_CARD.md"].decode()
    assert "38 tracks of its training split" in text and not re.search(r"\b56\b", text)  # the audit's count
    # 38 tracks: i % 4 -> by 10, by-sa 10, by-nc-sa 9, by-nc-nd 9; NC 18/38, ND 9/38
    for row in ("| CC BY 3.0 | 10 | 26.3 % | 0.1667 |", "| CC BY-SA 3.0 | 10 |", "| CC BY-NC-SA 3.0 | 9 |",
                "| CC BY-NC-ND 3.0 | 9 | 23.7 % | 0.15 |", "| total | 38 | 100 % | 0.6333 |"):
        assert row in text, row
    assert "47.4 % of the 38 tracks of the training split are licensed non-commercial" in text
    assert "no-derivatives (ND): 23.7 %" in text and "`ATTRIBUTION.md` in this folder" in text
    assert files["ATTRIBUTION.md"] == md.encode() and md.count("\n- ") == 38
    assert json.loads(files["card.json"])["meta"]["licences"] == summary


def test_model_card_front_matter_is_hub_yaml(split_card):
    files, _, _ = split_card
    hub = ModelCard(files["MODEL_CARD.md"].decode())
    data = hub.data.to_dict()
    assert data["license"] == "other" and data["license_link"] == "ATTRIBUTION.md"
    assert data["pipeline_tag"] == "text-to-audio" and data["library_name"] == "ssmttm"
    assert {"text-to-music", "mtg-jamendo", "prefix-simba", "non-commercial-training-data"} <= set(data["tags"])
    assert data["training_data_tracks"] == 38
    assert data["training_data_licences"] == {"cc-by-3.0": 10, "cc-by-sa-3.0": 10, "cc-by-nc-sa-3.0": 9,
                                              "cc-by-nc-nd-3.0": 9}
    assert hub.text.lstrip().startswith("# simba_k1 / seed 0 / step 200")


def test_card_without_nc_nd_has_no_restriction_note(tmp_path):
    tsv = audit_table(tmp_path / "tracks.tsv", n=8)
    summary, md = L.training_licences(tsv, ["track_0000000", "track_0000001", "track_0000004"])
    text = card.card_files({**META, "licences": summary}, {}, {}, None)["MODEL_CARD.md"].decode()
    assert "Use restrictions" not in text and "3 tracks of its training split" in text
    assert "non-commercial-training-data" not in text


def test_card_of_an_older_checkpoint_labels_the_audit_summary():
    audit = {"allow": ["by"], "preset": "paper", "n_tracks": 56, "n_included": 50, "hours_included": 0.4,
             "nc_fraction": 0.5, "nd_fraction": 0.0, "per_licence": {"by": {"tracks_included": 50}}}
    text = card.model_card_markdown(card.card_dict({**META, "licences": audit}, {}, {}))
    assert "summary of the whole licence audit, not of its own training split" in text
    assert "50 of 56 audited tracks allowed" in text and "training_data_tracks" not in text
