"""Settings of a listening test: one test's section of the config (``listening.tests.<name>``), shared by
the ``listening-kit``, ``listen`` and ``listening-results`` stages.

The schema (rules/schemas/config.schema.yaml, ``listening``) holds every default; the rules pass the
resolved section as ``--settings`` JSON (see ssmttm.settings). Nested items (questions, attention
checks, ratings) are read back through :func:`questions` / :func:`attention` / :func:`ratings`, which
fill the defaults of keys a hand-written ``--settings`` left out. No heavy import (Snakemake imports
this module when it builds the DAG).
"""

from __future__ import annotations

from dataclasses import dataclass

from ssmttm import settings as st

# Paths inside results/listening/<test>/ that every listen module agrees on.
KIT_DIR = "kit"                 # the served (and exported) folder: nothing in it names a system
CLIPS_DIR = "clips"             # kit/clips/<clip id>.wav
PLAN_FILE = "plan.json"         # kit/plan.json: questions and every rater's order (anonymous ids only)
KEY_FILE = "key.json"           # clip id -> system, prompt, role: OUTSIDE the kit
KIT_SUMMARY = "kit.json"        # the kit rule's record: settings, loudness per clip, sha256 of every file
DB_FILE = "ratings.sqlite"      # what `listen serve` writes
RESULTS_DIR = "results"         # listening_results' tables and plot
HISTORY_DIR = "history"         # history/<plan sha256[:16]>/: plan, key and record of every kit built (never
                                # deleted: a rebuilt kit cannot take the key of ratings already given with it)
# the "format" of each file, checked by every reader
PLAN_FORMAT = "ssmttm-listening-plan/1"
KEY_FORMAT = "ssmttm-listening-key/1"
KIT_FORMAT = "ssmttm-listening-kit/1"
RATINGS_FORMAT = "ssmttm-listening-ratings/1"  # a ratings JSON file (static export, scripted raters)
RESULTS_FORMAT = "ssmttm-listening-results/1"


@dataclass(kw_only=True)
class KitSettings:
    """What a test's kit is made from (``listening.tests.<name>`` minus the analysis keys): a change here
    rebuilds the kit (new clips or orders); a change of :class:`ListeningSettings`' own keys does not."""

    SCHEMA_NODES = ("listening.tests.*",)

    systems: list[str]
    n_prompts: int
    seed: int
    seconds: float
    loudness_lufs: float
    peak_dbfs: float
    questions: list[dict]
    attention: dict
    raters: int
    per_rater: int


@dataclass(kw_only=True)
class ListeningSettings(KitSettings):
    """One listening test's section (``listening.tests.<name>``, minus ``enabled``, the rules' key): the
    kit's settings plus where the ratings come from and the bootstrap of the MOS intervals."""

    ratings: dict
    bootstrap: int


@dataclass(kw_only=True)
class ServeSettings:
    """``listen serve``: where the rating app listens (``listening.host`` / ``listening.port``)."""

    SCHEMA_NODES = ("listening",)

    host: str
    port: int


@dataclass(frozen=True)
class Question:
    id: str
    text: str
    min: int = 1
    max: int = 5
    labels: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        return {"id": self.id, "text": self.text, "min": self.min, "max": self.max, "labels": list(self.labels)}


@dataclass(frozen=True)
class Attention:
    count: int
    question: str
    max_score: int


@dataclass(frozen=True)
class Ratings:
    source: str
    dir: str | None
    scripted_raters: int


def _defaults(dotted: str) -> dict:
    return {k: v.get("default") for k, v in st.schema_node(dotted).get("properties", {}).items() if "default" in v}


def questions(s: KitSettings) -> list[Question]:
    """The test's questions, defaults filled; raises ValueError on an empty scale, duplicate ids or a
    label count that does not match the scale."""
    out = []
    for q in s.questions:
        q = {"min": 1, "max": 5, "labels": [], **q}
        if q["max"] <= q["min"]:
            raise ValueError(f"listening question {q['id']!r}: max {q['max']} must exceed min {q['min']}")
        if q["labels"] and len(q["labels"]) != q["max"] - q["min"] + 1:
            raise ValueError(f"listening question {q['id']!r}: {len(q['labels'])} labels for scores "
                             f"{q['min']}..{q['max']}")
        out.append(Question(q["id"], q["text"], int(q["min"]), int(q["max"]), tuple(q["labels"])))
    ids = [q.id for q in out]
    if len(set(ids)) != len(ids):
        raise ValueError(f"listening questions: duplicate ids in {ids}")
    return out


def attention(s: KitSettings) -> Attention:
    a = {**_defaults("listening.tests.*.attention"), **s.attention}
    att = Attention(int(a["count"]), str(a["question"]), int(a["max_score"]))
    if att.count and att.question not in {q.id for q in questions(s)}:
        raise ValueError(f"listening attention.question {att.question!r} is not one of the questions "
                         f"{[q.id for q in questions(s)]}")
    return att


def ratings(s: ListeningSettings) -> Ratings:
    r = {**_defaults("listening.tests.*.ratings"), **s.ratings}
    return Ratings(str(r["source"]), r["dir"], int(r["scripted_raters"]))
