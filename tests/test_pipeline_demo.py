"""The whole demo DAG, end to end, through Snakemake: `make demo` in a scratch directory.

Checks what a user would: every good synthetic track reaches the manifest, every planted defect is
rejected at the right stage with its reason, licence outputs agree with the manifest, the clips are
real 44.1 kHz audio of the configured clip length with the recorded sha256, and a rerun schedules nothing.
"""

from __future__ import annotations

import json
import math
import re
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ssmttm import config, io
from ssmttm.data.manifest import read_manifest

pytestmark = pytest.mark.slow


def snakemake(repo: Path, workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    # rules call `python -m ssmttm`: the interpreter running the tests must be the one on PATH
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = str(repo) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(repo / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(repo / "config" / "demo.yaml"), *args]
    r = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


@pytest.fixture(scope="module")
def demo(repo, tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("demo")
    snakemake(repo, work, "--cores", "2", "all")
    return work


@pytest.fixture(scope="module")
def demo_cfg(repo) -> dict:
    return config.load(repo / "config.yaml", repo / "config" / "demo.yaml")


@pytest.fixture(scope="module")
def truth(demo) -> pd.DataFrame:
    return pd.read_csv(demo / "results/demo/mirror/metadata/demo_truth.tsv", sep="\t", dtype=str,
                       keep_default_na=False)


def test_good_tracks_reach_the_manifest(demo, truth, demo_cfg):
    m = read_manifest(demo / "results/data/manifest.parquet")
    keep = set(truth.loc[truth["expect"] == "keep", "track_id"])
    assert set(m["track_id"]) == keep
    assert len(m) == len(keep)  # one clip per track (position: center)
    assert set(m["split"]) == {"train", "valid"}
    assert (m["sample_rate"] == 44100).all() and (m["seconds"] == demo_cfg["segment"]["clip_seconds"]).all()
    assert m["caption"].str.len().min() > 10 and (m["captioner"] == "tags").all()
    assert (m["vocals"] == "separate").all()
    import soundfile as sf

    for row in m.head(5).itertuples():
        path = demo / row.audio_path
        assert io.sha256_file(path) == row.sha256
        info = sf.info(str(path))
        assert info.samplerate == 44100 and abs(info.frames - demo_cfg["segment"]["clip_seconds"] * 44100) <= 1


def test_every_planted_problem_is_rejected_with_its_reason(demo, truth):
    rej = pd.read_csv(demo / "results/data/rejected.tsv", sep="\t", dtype=str, keep_default_na=False)
    by_track = {t: (s, r) for t, s, r in zip(rej["track_id"], rej["stage"], rej["reason"])}
    expected = {"corrupt": ("segment", "corrupt"), "truncated": ("segment", "truncated"),
                "silent": ("segment", "silent"), "short": ("segment", "too short after decoding")}
    for row in truth[truth["defect"] != ""].itertuples():
        assert by_track[row.track_id] == expected[row.defect], row.track_id
    planted = {"song_describer": ("select", "song describer")}
    for row in truth[truth["planted"] == "song_describer"].itertuples():
        assert by_track[row.track_id] == planted["song_describer"]
    reasons = set(zip(rej["stage"], rej["reason"]))
    for want in [("fetch", "missing tar"), ("fetch", "sha256 mismatch"), ("select", "malformed metadata"),
                 ("select", "no licence record"), ("select", "licence record unparsable")]:
        assert want in reasons, want
    # nothing is lost: every track of the TSV is either in the manifest or rejected (or malformed)
    m = read_manifest(demo / "results/data/manifest.parquet")
    assert set(truth["track_id"]) <= set(m["track_id"]) | set(rej["track_id"])


def test_licence_outputs_cover_the_manifest(demo):
    lic = demo / "results/licenses"
    summary = json.loads((lic / "licenses.json").read_text())
    assert summary["preset"] == "paper" and summary["n_unparsed"] >= 3
    tracks = pd.read_csv(lic / "tracks.tsv", sep="\t", dtype=str, keep_default_na=False)
    allowed = set(tracks.loc[tracks["allowed"] == "True", "track_id"])
    m = read_manifest(demo / "results/data/manifest.parquet")
    assert set(m["track_id"]) <= allowed
    attribution = (lic / "ATTRIBUTION.md").read_text()
    for tid in m["track_id"]:
        num = int(tid.split("_")[1])
        assert f"/track/{num}" in attribution
    assert len(pd.read_csv(lic / "unparsed.tsv", sep="\t")) >= 3


def test_logs_and_benchmarks_per_rule(demo):
    for rule in ("license_audit", "select_tracks", "manifest", "demo_mirror"):
        assert (demo / f"results/logs/{rule}.log").exists()
        assert (demo / f"results/benchmarks/{rule}.tsv").exists()
    for rule in ("fetch_shard", "segment", "vocals", "captions"):
        assert len(list((demo / f"results/benchmarks/{rule}").glob("*.tsv"))) == 5


def test_rerun_schedules_nothing(repo, demo):
    r = snakemake(repo, demo, "-n", "--cores", "2", "all")
    assert "Nothing to be done" in r.stdout + r.stderr


def test_licenses_target_runs_only_the_audit(repo, tmp_path):
    r = snakemake(repo, tmp_path, "-n", "--cores", "1", "licenses")
    out = r.stdout + r.stderr
    assert "license_audit" in out and "segment" not in out and "vocals" not in out


def test_tokens_cover_the_manifest(demo, demo_cfg):
    from ssmttm.text.store import TextStore
    from ssmttm.tokens.store import TokenStore

    m = read_manifest(demo / "results/data/manifest.parquet")
    shards = sorted(p.parent for p in (demo / "results/tokens/dac_tiny").glob("*/meta.json"))
    store = TokenStore(shards)
    assert set(store.index["clip_id"]) == set(m["clip_id"])
    clip_s = demo_cfg["segment"]["clip_seconds"]
    assert (store.index["length"] == math.ceil(clip_s * 44100 / 512)).all()  # 86.13 frames/s (2584 for 30 s)
    text = TextStore(demo / "results/text/t5_tiny")
    n_unique = len({c for caps in m["captions"] for c in json.loads(caps)})
    assert text.meta["encoder_forwards"] == n_unique + 1  # + the empty CFG prompt
    for clip_id in m["clip_id"].head(3):
        assert text.caption_ids(clip_id)
    ceiling = pd.read_csv(demo / "results/tokens/dac_tiny/ceiling.tsv", sep="\t")
    assert {1, 4} <= set(ceiling["kappa"])


def test_parameter_table(demo):
    table = pd.read_csv(demo / "results/models/params.tsv", sep="\t")
    row = table[(table["preset"] == "paper") & (table["variant"] == "prefix-simba")].iloc[0]
    assert row["params"] == 281_041_152


def test_every_variant_trained_and_generated(demo):
    import soundfile as sf

    from ssmttm.models.checkpoint import load_model

    runs = sorted((demo / "results/train").glob("*/seed0/done.json"))
    manifest = read_manifest(demo / "results/data/manifest.parquet")
    train_tracks = set(manifest.loc[manifest["split"] == "train", "track_id"])
    assert 0 < len(train_tracks) < len(set(manifest["track_id"]))
    assert len(runs) == 8  # six kappa-1 experiments (two-stage) + two single-stage kappa-4 ones
    prompts = json.loads((demo / "results/generate/prompts/song_describer.json").read_text())["prompts"]
    for done in runs:
        run = done.parent
        log = pd.read_csv(run / "log.csv")
        assert log["step"].iloc[-1] == 200 and log["loss"].iloc[-5:].mean() < log["loss"].iloc[:5].mean()
        last = (run / "ckpt" / "last").read_text().strip()
        lm, meta = load_model(run / "ckpt" / Path(last).name)
        assert meta["licences"]["preset"] == "paper" and meta["manifest_sha256"]
        assert (run / "ckpt" / Path(last).name / "MODEL_CARD.md").exists()
        # the card and ATTRIBUTION.md list the training split's tracks exactly, not the licence audit's
        assert meta["licences"]["n_tracks"] == len(train_tracks)
        assert sum(v["tracks"] for v in meta["licences"]["per_licence"].values()) == len(train_tracks)
        attribution = (run / "ckpt" / Path(last).name / "ATTRIBUTION.md").read_text()
        listed = {f"track_{int(n):07d}" for n in re.findall(r"jamendo\.com/track/(\d+)", attribution)}
        assert listed == train_tracks
        assert meta["text_encoder"]["max_length"] == 256  # what generation truncates prompts at
        index = demo / f"results/generate/{run.parent.name}/seed0/step_0000200/song_describer/index.json"
        items = json.loads(index.read_text())["items"]
        assert len(items) == len(prompts) == 7  # one caption per Song Describer track (4 in the corpus, 3 not)
        info = sf.info(str(index.parent / items[0]["audio"]))
        assert info.samplerate == 44100 and info.frames == 430 * 512
    for ext in ("png", "svg"):
        assert (demo / f"results/plots/loss/all.{ext}").stat().st_size > 1000


# --- evaluation ----------------------------------------------------------------------------------

def scheduled_jobs(output: str) -> list[tuple[str, str]]:
    """(rule, wildcards) of every job a dry run lists."""
    import re

    jobs, rule = [], None
    for line in output.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):$", line.strip())
        if m:
            rule = m.group(1)
            jobs.append((rule, ""))
            continue
        m = re.match(r"^wildcards: (.*)$", line.strip())
        if m and rule is not None and jobs and jobs[-1][0] == rule:
            jobs[-1] = (rule, m.group(1))
    return jobs


# embed_eval: one job per metric model over every system's clips, so new clips rerun it (it embeds only
# those); the other systems' score jobs read its summary as ancient() and do not rerun. The listening test
# rates several systems' clips: a rated system's new clips rebuild its kit, ratings and tables.
AGGREGATES = {"tables", "report_pages", "loss_curves", "val_loss", "all", "evaluate_all", "train_all", "generate_all",
              "embed_eval", "listening_kit", "listening_scripted", "listening_results", "listening"}


def test_evaluation_tables_cover_every_system(demo):
    scores = pd.read_csv(demo / "results/tables/all_scores.csv")
    gen = scores[scores["system_kind"] == "generated"]
    for exp in ("simba_k1", "transformer_k1", "mamba_k1", "cross_simba_k1", "simba_small", "transformer_small",
                "simba_k4", "transformer_k4"):
        rows = gen[gen["experiment"] == exp]
        assert set(rows["seed"].astype(int)) == ({0} if exp.endswith("k4") else {0, 1, 2}), exp
        assert {"fad_vggish", "kl_passt", "clap_score", "fd_logmel", "tempo_acc", "drums_acc"} <= set(
            rows["metric"]), exp
    curve = gen[gen["experiment"] == "simba_k1"]
    assert set(curve["step"].astype(int)) == {50, 100, 200}
    assert {"ground_truth", "resynth"} <= set(scores["system_kind"])
    # random-init metric models are pipeline checks; the training-free metrics are scores
    status = dict(zip(gen["metric"], gen["status"]))
    assert status["fad_vggish"] == status["kl_passt"] == status["clap_score"] == "pipeline check, not a score"
    assert status["fd_logmel"] == status["tempo_acc"] == "score"
    fd = gen[gen["metric"] == "fd_logmel"]
    assert (fd["value"] > 0).all() and (fd["ci_low"] <= fd["value"]).all() and (fd["value"] <= fd["ci_high"]).all()
    vgg = gen[gen["metric"] == "fad_vggish"].iloc[0]
    assert vgg["model"] == "vggish" and vgg["checkpoint"] == "vggish_tiny.pth" and len(vgg["checkpoint_sha256"]) == 64
    assert vgg["sample_rate"] == 16000 and vgg["n"] > 0
    for study in ("variants", "curves", "scaling_down", "stages"):
        for ext in ("csv", "md", "tex"):
            assert (demo / f"results/tables/{study}.{ext}").stat().st_size > 200
    md = (demo / "results/tables/variants.md").read_text()
    assert "†" in md and "MusicGen" in md
    for x in ("steps", "flops"):
        assert (demo / f"results/plots/eval/curves_vs_{x}.png").stat().st_size > 5000
    claims = pd.read_csv(demo / "results/tables/claims.csv")
    assert len(claims) >= 2


def test_two_stage_chain(demo):
    """The two-stage system: the tiny refiner trains (its loss decreases), two-stage runs decode all
    4 codebooks through it, and the stages table compares them with single-stage kappa 4 at the same LM step."""
    run = demo / "results/refiner/refiner"
    log = pd.read_csv(run / "log.csv")
    assert log["step"].iloc[-1] == 300
    assert log["loss"].iloc[-20:].mean() < log["loss"].iloc[:20].mean()
    val = pd.read_csv(run / "val.csv")
    assert val["val_loss"].iloc[-1] < val["val_loss"].iloc[0]
    done = json.loads((run / "done.json").read_text())
    assert done["model"] == "refiner" and done["licences"]["preset"] == "paper"
    set_dir = demo / "results/generate/simba_k1/seed0/step_0000200/song_describer"
    first = json.loads((set_dir / "index.json").read_text())["items"][0]
    side = json.loads((set_dir / first["sidecar"]).read_text())
    assert side["stages"] == "two-stage" and side["kappa"] == 1 and side["decode_kappa"] == 4
    assert side["refiner_steps"] == 25 and side["refiner_sampler"] == "ddim" and side["refiner_step"] == 300
    k4 = json.loads((demo / "results/generate/simba_k4/seed0/step_0000200/song_describer/index.json").read_text())
    assert k4["stages"] == "single-stage" and k4["decode_kappa"] == 4
    stages = pd.read_csv(demo / "results/tables/stages.csv")
    gen = stages[stages["system_kind"] == "generated"]
    assert set(gen["experiment"]) == {"simba_k1", "simba_k4", "transformer_k1", "transformer_k4"}
    assert set(gen["step"].astype(int)) == {200}
    assert dict(zip(gen["experiment"], gen["stages"]))["simba_k1"] == "two-stage"
    assert "resynth_k4" in set(stages["experiment"])  # the all-codebook ceiling both systems aim at
    assert "prefix-simba (κ 1 + refiner)" in (demo / "results/tables/stages.md").read_text()


def test_reference_availability_names_missing_clips(demo):
    avail = pd.read_csv(demo / "results/eval/reference/song_describer/availability.tsv", sep="\t", dtype=str,
                        keep_default_na=False)
    assert (avail["status"].isin(["fetched", "cached"])).sum() >= 2
    missing = avail[avail["status"] == "missing"]
    assert len(missing) >= 3 and (missing["reason"].str.len() > 5).all()  # 3 SDD tracks are not in the corpus


def test_html_report_embeds_tables_licences_and_audio(repo, demo):
    page = (demo / "results/report/audio/simba_k1.html").read_text()
    assert page.count("data:audio/wav;base64,") == 2
    assert "Attribution" in (demo / "results/report/licences.html").read_text()
    snakemake(repo, demo, "--report", "report.html")
    html = (demo / "report.html").read_text(errors="replace")
    assert len(html) > 100_000 and "curves_vs_steps.png" in html and "licences.html" in html
    assert "mos.png" in html and "mos.html" in html  # the listening test's MOS plot and tables


def test_listening_test_kit_ratings_and_mos(repo, demo):
    """The demo's listening test: 3 systems x 4 prompts in an anonymous kit, scripted raters through the
    rating app (the last fails the attention check), MOS per system and question."""
    import json
    import sqlite3

    test = demo / "results/listening/demo"
    key = json.loads((test / "key.json").read_text())
    tests = config.load(repo / "config.yaml", repo / "config/demo.yaml")["listening"]["tests"]
    systems = tests["demo"]["systems"]
    assert sorted(key["systems"]) == sorted(systems) and len(key["prompt_ids"]) == 4
    served = b"".join(p.read_bytes() for p in (test / "kit").rglob("*") if p.is_file())
    assert not [s for s in systems if s.encode() in served]
    conn = sqlite3.connect(test / "scripted.sqlite")
    assert conn.execute("SELECT COUNT(*) FROM ratings WHERE played = 1").fetchone()[0] == 6 * 9 * 2
    conn.close()
    summary = json.loads((test / "results/summary.json").read_text())
    assert summary["raters"]["failed"] == 1 and summary["raters"]["kept"] == 5
    mos = (test / "results/mos.csv").read_text()
    assert all(s in mos for s in systems)


def test_adding_an_experiment_schedules_only_its_jobs(repo, demo, tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text("experiments:\n  simba_extra: {variant: prefix-simba, preset: tiny, kappa: 1, steps: 100, "
                     "seeds: [0], checkpoints: [100]}\n")
    r = snakemake(repo, demo, "-n", "--cores", "2", "--configfile", str(repo / "config/demo.yaml"), str(extra),
                  "--", "all")
    jobs = scheduled_jobs(r.stdout + r.stderr)
    own = [(rule, wc) for rule, wc in jobs if rule not in AGGREGATES]
    assert own and all("simba_extra" in wc for _, wc in own), own
    assert {rule for rule, _ in own} == {"train", "generate", "evaluate_generated"}
    metrics = config.load(repo / "config.yaml", repo / "config/demo.yaml")["evaluation"]["metrics"]
    assert sum(rule == "evaluate_generated" for rule, _ in own) == len(metrics) == 5  # one job per metric
    # each metric model embeds the new clips in one job (loaded once); no other system's score reruns
    embeds = sorted(wc for rule, wc in jobs if rule == "embed_eval")
    assert embeds == [f"embedder={m}" for m in ("clap", "passt", "vggish")]


def test_changing_one_setting_reruns_exactly_what_depends_on_it(repo, demo, tmp_path):
    """Settings reach stages as their resolved config section (--settings): a new text.max_length reruns
    the text states and everything trained on them, and nothing upstream of them; one experiment's
    learning rate reruns that experiment's jobs only."""
    extra = tmp_path / "extra.yaml"
    extra.write_text("text:\n  max_length: 64\n")
    r = snakemake(repo, demo, "-n", "--cores", "2", "--configfile", str(repo / "config/demo.yaml"), str(extra),
                  "--", "all")
    rules = {rule for rule, _ in scheduled_jobs(r.stdout + r.stderr)}
    assert {"text_embed", "tokenize", "train", "train_refiner", "generate"} <= rules
    assert not rules & {"fetch_shard", "segment", "vocals", "captions", "manifest", "license_audit"}
    cfg = config.load(repo / "config.yaml", repo / "config/demo.yaml")
    name = next(iter(cfg["experiments"]))
    extra.write_text(f"experiments:\n  {name}:\n    train: {{lr: 0.000123}}\n")
    r = snakemake(repo, demo, "-n", "--cores", "2", "--configfile", str(repo / "config/demo.yaml"), str(extra),
                  "--", "all")
    own = [(rule, wc) for rule, wc in scheduled_jobs(r.stdout + r.stderr) if rule not in AGGREGATES | {"claims"}]
    assert own and all(name in wc for _, wc in own), own


def test_an_analysis_setting_of_the_listening_test_keeps_its_kit(repo, demo, tmp_path):
    """The kit rule gets only the kit's settings (KitSettings): a new bootstrap size reruns the MOS tables,
    not the kit (whose rebuild would take the clips from under the raters) nor its ratings."""
    extra = tmp_path / "extra.yaml"
    extra.write_text("listening:\n  tests:\n    demo:\n      bootstrap: 300\n")
    r = snakemake(repo, demo, "-n", "--cores", "2", "--configfile", str(repo / "config/demo.yaml"), str(extra),
                  "--", "all")
    assert {rule for rule, _ in scheduled_jobs(r.stdout + r.stderr)} - {"all", "listening"} == {"listening_results"}


def test_adding_a_metric_schedules_only_its_jobs(repo, demo, tmp_path):
    # The demo leaves fd_clap out; adding it must schedule its jobs only, then reuse the cached CLAP
    # embeddings clap_score computed.
    extra = tmp_path / "metric.yaml"
    extra.write_text("evaluation:\n  metrics: [fad_vggish, kl_passt, clap_score, fd_logmel, attributes, fd_clap]\n")
    args = ("--configfile", str(repo / "config/demo.yaml"), str(extra))
    r = snakemake(repo, demo, "-n", "--cores", "2", *args, "--", "all")
    jobs = scheduled_jobs(r.stdout + r.stderr)
    own = [(rule, wc) for rule, wc in jobs if rule not in AGGREGATES]
    assert own and all("metric=fd_clap" in wc for _, wc in own), own
    assert len(own) == 8 + 1 + 2 + 2  # eight experiments, ground truth, resynth k1 and k4, two baseline systems
    # CLAP's embed_eval job does not rerun: its clips and texts are the ones clap_score had embedded
    assert not [wc for rule, wc in jobs if rule == "embed_eval"]
    # run two of them for real: from the cache, without loading CLAP
    targets = [f"results/eval/scores/song_describer/{system}/fd_clap.json" for system in ("simba_k4", "ground_truth")]
    snakemake(repo, demo, "--cores", "2", *args, "--", *targets)
    log = (demo / "results/logs/evaluate/simba_k4_fd_clap.log").read_text()
    assert "clap embeddings: 7 files, 7 cached, 0 computed" in log  # clap_score's embeddings, reused
    for target in targets:
        rows = json.loads((demo / target).read_text())["rows"]
        assert len(rows) == 1 and rows[0]["model"] == "clap" and rows[0]["metric"] == "fd_clap"
        assert rows[0]["status"] == "pipeline check, not a score"
    r = snakemake(repo, demo, "-n", "--cores", "2", *args, "--", *targets)
    assert "Nothing to be done" in r.stdout + r.stderr


def test_committed_demo_results_are_what_the_code_produces(repo, demo):
    """README.md's and docs/results.md's generated blocks hold this code's demo tables (when they
    do not: `make demo && make docs-results`, and commit the result).

    The numbers are compared digit for digit on a machine whose CPU numerics (ssmttm.machine) are
    the ones the committed block records; on another CPU the floats round differently from the
    tiny weights' first draw on, so there every table row, column, system and note must still match,
    with the numbers masked."""
    from ssmttm import machine
    from ssmttm.report import docs

    fresh = docs.render(repo, demo / "results" / "tables", demo / ".snakemake" / "log")
    here = machine.numerics()
    for page in (repo / "README.md", repo / "docs" / "results.md"):
        block = docs.extract_block(page.read_text(encoding="utf-8"), docs.DEMO, str(page))
        recorded = docs.block_numerics(block)
        assert recorded, f"{page.relative_to(repo)}: the demo block does not say which CPU numerics made it"
        committed = docs.table_lines(block)
        now = docs.table_lines(docs.extract_block(fresh[page], docs.DEMO, str(page)))
        if recorded != here:
            committed, now = docs.numbers_masked(committed), docs.numbers_masked(now)
        assert committed == now, f"{page.relative_to(repo)} is stale: run `make demo && make docs-results`"


def test_log_files_hold_plain_lines(demo):
    """Every job's log is plain lines: no progress bar redraws (carriage returns), ours or a library's."""
    logs = sorted((demo / "results" / "logs").rglob("*.log"))
    assert logs
    redrawn = [str(p.relative_to(demo)) for p in logs if "\r" in p.read_text(encoding="utf-8", errors="replace")]
    assert not redrawn, redrawn
