import copy
import subprocess
import sys

import pytest
import yaml

from ssmttm import config


@pytest.fixture()
def paper(repo):
    with open(repo / "config.yaml") as f:
        return yaml.safe_load(f)


def test_shipped_configs_validate(repo):
    cfg = config.load(repo / "config.yaml")
    assert cfg["shards"] == 100 and cfg["vocals"]["mode"] == "separate"
    demo = config.load(repo / "config.yaml", repo / "config" / "demo.yaml")
    assert demo["shards"] == 5 and demo["captions"]["captioner"] == "tags"
    # merged, not replaced: the paper's weights stay listed next to the demo's tiny ones
    assert {"htdemucs", "htdemucs_tiny"} <= set(demo["weights"]["models"])


def test_defaults_filled(paper):
    del paper["segment"]["position"]
    del paper["split"]
    cfg = config.validate(paper)
    assert cfg["segment"]["position"] == "center"
    assert cfg["split"] == {"valid_fraction": 0.02, "seed": 0, "verify_sha256": False}


@pytest.mark.parametrize(
    "path, value, key",
    [
        (("vocals", "mode"), "seperate", "vocals.mode"),
        (("shards",), 0, "shards"),
        (("shards",), 101, "shards"),
        (("segment", "position"), "middle", "segment.position"),
        (("licenses", "preset"), "anything", "licenses.preset"),
        (("weights", "models", "htdemucs", "sha256"), "not-hex", "weights.models.htdemucs.sha256"),
        (("source", "metadata", "cleantags", "url"), "", "source.metadata.cleantags.url"),
    ],
)
def test_wrong_value_names_key(paper, path, value, key):
    cfg = copy.deepcopy(paper)
    node = cfg
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    with pytest.raises(config.ConfigError) as exc:
        config.validate(cfg)
    assert f"config key {key}:" in str(exc.value)


def test_unknown_key_is_an_error(paper):
    paper["segment"]["positon"] = "start"
    with pytest.raises(config.ConfigError, match=r"config key segment\.positon: unknown key"):
        config.validate(paper)


def test_semantic_checks(paper):
    paper["vocals"]["model"] = "no_such_weight"
    with pytest.raises(config.ConfigError, match="vocals.model"):
        config.validate(copy.deepcopy(paper))
    paper["vocals"]["mode"] = "keep"  # the model is irrelevant when vocals are kept
    config.validate(copy.deepcopy(paper))
    paper["licenses"] = {"preset": "custom", "allow": []}
    with pytest.raises(config.ConfigError, match="licenses.allow"):
        config.validate(paper)


def test_demo_tracks_must_hold_a_clip(repo):
    demo = config.deep_update(yaml.safe_load((repo / "config.yaml").read_text()),
                              yaml.safe_load((repo / "config" / "demo.yaml").read_text()))
    config.validate(copy.deepcopy(demo))
    demo["segment"]["clip_seconds"] = 20.0  # the demo's shortest good track is 15 s
    with pytest.raises(config.ConfigError, match=r"config key demo_mirror\.seconds: the shortest good track"):
        config.validate(copy.deepcopy(demo))
    demo["source"]["base_url"] = "https://cdn.example/jamendo"  # the mirror is not the source: no constraint
    config.validate(copy.deepcopy(demo))
    demo["demo_mirror"]["seconds"] = [40.0, 30.0]
    with pytest.raises(config.ConfigError, match=r"config key demo_mirror\.seconds: shortest 40 s > longest 30 s"):
        config.validate(demo)


def test_helpers(paper):
    cfg = config.validate(paper)
    assert config.shard_ids(cfg)[:3] == ["00", "01", "02"] and len(config.shard_ids(cfg)) == 100
    assert config.allowed_licences(cfg) == ("by", "by-sa", "by-nd", "by-nc", "by-nc-sa", "by-nc-nd")
    cfg["licenses"]["preset"] = "commercial-ok"
    assert config.allowed_licences(cfg) == ("by", "by-sa")


def test_check_config_cli(repo, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("vocals:\n  mode: seperate\n")
    r = subprocess.run(
        [sys.executable, "-m", "ssmttm", "check-config", str(repo / "config.yaml"), str(bad)],
        capture_output=True, text=True, cwd=repo,
    )
    assert r.returncode == 2 and "config key vocals.mode" in r.stderr


def test_snakemake_rejects_bad_config_before_any_job(repo, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("segment:\n  clip_seconds: -1\n")
    snakemake = [sys.executable, "-m", "snakemake"]
    r = subprocess.run(
        snakemake + ["-n", "--cores", "1", "--snakefile", str(repo / "Snakefile"), "--directory", str(tmp_path),
                     "--configfile", str(bad)],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert r.returncode != 0
    assert "config key segment.clip_seconds" in r.stdout + r.stderr
    assert not (tmp_path / "results").exists()


def test_experiment_checks(paper):
    exp = paper["experiments"]["simba_k1"]
    exp["train"] = {"lr": 3e-4, "lrr": 1}
    exp["model"] = {"d_model": 64, "d_modle": 64}
    exp["generate_at"] = [12345]
    with pytest.raises(config.ConfigError) as e:
        config.validate(copy.deepcopy(paper))
    msg = str(e.value)
    assert "experiments.simba_k1.train: unknown keys ['lrr']" in msg
    assert "experiments.simba_k1.model: unknown LMConfig fields ['d_modle']" in msg
    assert "experiments.simba_k1.generate_at: step 12345 is not a checkpoint" in msg
    exp["train"], exp["model"], exp["generate_at"] = {"lr": 3e-4}, {"d_model": 64}, [5000, 100000]
    cfg = config.validate(paper)
    assert cfg["experiments"]["simba_k1"]["enabled"] is True


def test_evaluation_and_study_checks(paper):
    paper["studies"]["curves"]["experiments"] = ["simba_k1", "simba_k16"]
    paper["studies"]["variants"]["experiments"] = ["mamba_21k"]
    paper["experiments"]["mamba_21k"]["enabled"] = False
    paper["evaluation"]["models"]["passt"] = "passt_v2"
    paper["generate"]["prompt_options"]["musiccaps"] = {"subset": "random", "nn": 5}
    paper["generate"]["prompts_source"] = "musicaps"
    paper["evaluation"]["metrics"] = ["kl_passt", "attributes"]
    with pytest.raises(config.ConfigError) as e:
        config.validate(copy.deepcopy(paper))
    msg = str(e.value)
    assert "studies.curves.experiments: 'simba_k16' is not an experiment" in msg
    assert "studies.variants.experiments: experiment 'mamba_21k' has enabled: false" in msg
    assert "evaluation.models.passt: 'passt_v2' (needed by metric kl_passt) is not a key of weights.models" in msg
    assert "generate.prompt_options.musiccaps: unknown options ['nn']" in msg
    assert "generate.prompts_source: 'musicaps' is not a key of source.metadata" in msg
    assert "evaluation.truth: metric 'attributes' needs a truth table" in msg


def test_listening_checks(paper):
    """A listening test names systems the pipeline makes clips for, questions its attention check can use,
    and a folder when its ratings come as files; each mistake names its key."""
    t = paper["listening"]["tests"]["paper"]
    t["systems"] = ["simba_k1", "simba_k16", "resynth_k9", "resynth_k2"]
    t["questions"] = [{"id": "ovl", "text": "Quality", "min": 1, "max": 5, "labels": ["a", "b"]},
                      {"id": "ovl", "text": "Again", "min": 3, "max": 3}]
    t["attention"]["question"] = "rel"
    t["ratings"]["source"] = "files"
    with pytest.raises(config.ConfigError) as e:
        config.validate(copy.deepcopy(paper))
    msg = str(e.value)
    assert "listening.tests.paper.systems: 'simba_k16' is not an enabled experiment" in msg
    assert "'resynth_k2' is not" in msg and "'resynth_k9' is not" not in msg
    assert "listening.tests.paper.questions: duplicate ids ['ovl', 'ovl']" in msg
    assert "listening.tests.paper.questions (ovl): 2 labels for the 5 scores 1..5" in msg
    assert "listening.tests.paper.questions (ovl): max 3 must exceed min 3" in msg
    assert "listening.tests.paper.attention.question: 'rel' is not one of the questions" in msg
    assert "listening.tests.paper.ratings.dir: required when ratings.source is files" in msg


def test_refiner_checks(paper):
    paper["experiments"]["simba_k4"]["refiner"] = "refiner"  # kappa 4, the refiner completes kappa 1
    paper["experiments"]["simba_k9"]["refiner"] = "refinr"
    paper["refiners"]["refiner"]["model"] = {"d_model": 64, "d_modle": 1}
    paper["refiners"]["refiner"]["train"] = {"lrr": 1}
    paper["refiners"]["dd"] = {"backend": "discodiff"}
    paper["studies"]["stages"]["step"] = 20000
    with pytest.raises(config.ConfigError) as e:
        config.validate(copy.deepcopy(paper))
    msg = str(e.value)
    assert "experiments.simba_k4.refiner: refiner 'refiner' completes kappa=1 codebooks, the experiment models " \
           "kappa=4" in msg
    assert "experiments.simba_k9.refiner: 'refinr' is not a key of refiners" in msg
    assert "refiners.refiner.model: unknown RefinerConfig fields ['d_modle']" in msg
    assert "refiners.refiner.train: unknown keys ['lrr']" in msg
    assert "refiners.dd.checkpoint: the discodiff backend needs the path of your DiscoDiff checkpoint" in msg
    assert "studies.stages.step: experiment 'simba_k4' does not generate at step 20000" in msg
    paper["refiners"]["bad"] = {"sampler": {"sampler": "euler"}}
    with pytest.raises(config.ConfigError, match="refiners.bad.sampler.sampler"):
        config.validate(copy.deepcopy(paper))


def test_paper_dag_plans_every_study(repo, tmp_path):
    """The paper configuration's whole DAG (100 shards, every experiment, evaluation, report) plans."""
    r = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "-p", "--cores", "4", "--snakefile", str(repo / "Snakefile"),
         "--directory", str(tmp_path), "all"],
        capture_output=True, text=True, cwd=tmp_path,
    )
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    for rule in ("train", "train_refiner", "generate", "reference_audio", "resynth", "evaluate_generated", "evaluate_ground_truth",
                 "evaluate_resynth", "tables", "claims", "report_pages"):
        assert f"rule {rule}:" in out or f"localrule {rule}:" in out, rule
    assert "https://www.youtube.com/watch?v={ytid}" in out  # the URL template reaches the stage unformatted


UNSAFE_NAMES = ["$(touch pwned)", "a;b", "two words", "../up", "a/b", ".hidden", "`id`", "x'y", ""]


@pytest.mark.parametrize("bad", UNSAFE_NAMES)
@pytest.mark.parametrize("where", ["experiments", "refiners", "studies", "weights.models", "generate.prompts"])
def test_unsafe_names_fail_validation_naming_the_key(repo, where, bad):
    """Names that become folders, wildcards and shell words are checked by the schema's name pattern."""
    cfg = config.deep_update(yaml.safe_load((repo / "config.yaml").read_text()),
                             yaml.safe_load((repo / "config" / "demo.yaml").read_text()))
    node = cfg
    for part in where.split("."):
        node = node.setdefault(part, {})
    if node:
        first = next(iter(node))
        node[bad] = node.pop(first)
    else:
        node[bad] = "text"
    with pytest.raises(config.ConfigError) as exc:
        config.validate(cfg)
    assert f"config key {where}.{bad}: {bad!r} is not a safe name" in str(exc.value)


def test_name_pattern_is_the_schemas():
    schema = config.load_schema()
    assert schema["$defs"]["name"]["pattern"] == config.NAME_PATTERN


def test_snakemake_rejects_an_unsafe_experiment_name_before_any_job(repo, tmp_path):
    payload = "x$(touch PWNED)"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"experiments": {payload: {"variant": "prefix-simba", "preset": "tiny",
                                                             "kappa": 1, "steps": 2}}}))
    r = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--snakefile", str(repo / "Snakefile"),
         "--directory", str(tmp_path), "--configfile", str(repo / "config" / "demo.yaml"), str(bad)],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert r.returncode != 0 and "is not a safe name" in r.stdout + r.stderr
    assert not (tmp_path / "results").exists() and not (tmp_path / "PWNED").exists()
