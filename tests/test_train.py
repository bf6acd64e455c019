"""The trainer: schedule, decay groups, CFG dropout, FLOPs, model card, exact resume after SIGKILL,
NaN stop, OOV error and DDP (gloo, 2 processes), on tiny stores written in their exact formats."""

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from ssmttm import io
from ssmttm.constants import TEXT_STORE_VERSION
from ssmttm.models import build_lm
from ssmttm.models.config import from_preset
from ssmttm.models.lm import LM
from ssmttm.tokens.store import write_shard
from ssmttm.train import card, data, flops, schedule
from ssmttm.train.loop import LOG_COLUMNS, Trainer, main, param_groups, parse_args

REPO = Path(__file__).resolve().parent.parent
K, D, T = 4, 8, 200
N_TRAIN, N_VALID = 6, 2
CAPTION_LENGTHS = [1, 3, 4, 5, 6]  # caption 0 is "" (just </s>)
DETERMINISTIC = ["step", "epoch", "loss", "lr", "grad_norm", "tokens", "flops_6nd", "val_loss"]


def clip_codes(i):
    return np.random.default_rng(i).integers(0, 1024, (K, T)).astype(np.uint16)


def make_fixture(root: Path, oov_clip: int | None = None, codec_sha256: str = "ab" * 32, codes_fn=None) -> Path:
    """Token store (K=4, 8 clips of 200 frames, train + valid), text store (D=8), licences, manifest.
    ``codec_sha256``: the codec the store claims; ``codes_fn(i) -> uint16 [K, T]``: clip i's codes."""
    clips = {f"c{i}": ("train" if i < N_TRAIN else "valid", [1 + i % 4]) for i in range(N_TRAIN + N_VALID)}
    rows = []
    for i, (cid, (split, caps)) in enumerate(clips.items()):
        codes = (codes_fn or clip_codes)(i)
        if i == oov_clip:
            codes[0, :] = 1500  # out of vocabulary everywhere, whatever the crop
        rows.append(({"clip_id": cid, "track_id": cid, "shard": "00", "split": split, "licence": "by",
                      "caption_ids": caps, "audio_sha256": "0" * 64}, codes))
    write_shard(root / "tokens" / "00", rows, {"codec": "dac", "weights": "dac_44khz", "weights_sha256": codec_sha256,
                                               "sample_rate": 44100, "frame_rate": 86.1328125, "n_codebooks": K,
                                               "cardinality": 1024})
    text = root / "text"
    text.mkdir(parents=True)
    lengths = np.array(CAPTION_LENGTHS)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    np.save(text / "embeddings.npy", np.random.default_rng(0).standard_normal((int(lengths.sum()), D)).astype(np.float16))
    meta = {b"ssmttm.text_store_version": str(TEXT_STORE_VERSION).encode()}
    pq.write_table(pa.table({"caption_id": np.arange(len(lengths)), "text": [""] + [f"cap {i}" for i in range(1, 5)],
                             "offset": offsets.astype(np.int64), "length": lengths.astype(np.int64)})
                   .replace_schema_metadata(meta), text / "index.parquet")
    pq.write_table(pa.table({"clip_id": list(clips), "caption_ids": pa.array([v[1] for v in clips.values()],
                                                                             pa.list_(pa.int64()))})
                   .replace_schema_metadata(meta), text / "clips.parquet")
    io.write_json(text / "meta.json", {"version": TEXT_STORE_VERSION, "encoder": "flan_t5_tiny", "weights_sha256": "cd" * 32,
                                       "d_model": D, "max_length": 64, "n_captions": 8, "n_unique": 4,
                                       "encoder_forwards": 5, "dtype": "float16"})
    io.write_json(root / "licenses.json", {"allow": ["by", "by-nc"], "preset": "custom", "n_tracks": 9, "n_included": 8,
                                           "hours_included": 0.07, "nc_fraction": 0.5, "nd_fraction": 0.0,
                                           "per_licence": {"by": {"tracks_included": 4, "hours_included": 0.03,
                                                                  "tracks_excluded": 1}}})
    write_licence_table(root / "tracks.tsv", sorted({cid for cid in clips}))
    pd.DataFrame({"clip_id": list(clips), "track_id": list(clips), "shard": "00",
                  "split": [v[0] for v in clips.values()]}).to_parquet(root / "manifest.parquet")
    return root


def write_licence_table(path: Path, track_ids, licence=lambda i: "by-nc" if i % 2 else "by", allowed=lambda i: True):
    """The licence audit's tracks.tsv for ``track_ids``: licence(i)/allowed(i) of the i-th track."""
    from ssmttm.data.licenses import TRACK_TABLE_COLUMNS

    rows = []
    for i, tid in enumerate(track_ids):
        code = licence(i)
        rows.append({"track_id": tid, "track_num": str(i), "path": f"00/{i}.mp3", "shard": "00", "seconds": "30.0",
                     "licence": code, "licence_version": "3.0",
                     "licence_url": f"http://creativecommons.org/licenses/{code}/3.0/", "title": f"Song {i}",
                     "artist": f"Artist {i}", "track_url": f"https://www.jamendo.com/track/{i}",
                     "attribution": f"Song {i} by Artist {i}, CC {code.upper()} 3.0", "allowed": str(allowed(i)),
                     "reason": "" if allowed(i) else "licence not allowed"})
    pd.DataFrame(rows, columns=list(TRACK_TABLE_COLUMNS)).to_csv(path, sep="\t", index=False)


def argv(root: Path, run: Path, steps=12, extra=()):
    return ["--run-dir", str(run), "--experiment", "tiny", "--tokens", str(root / "tokens" / "00"), "--text", str(root / "text"),
            "--variant", "prefix-simba", "--preset", "tiny", "--kappa", "2", "--seed", "3", "--steps", str(steps),
            "--checkpoint-every", "4", "--warmup-steps", "3", "--batch-size", "2", "--grad-accum", "2", "--max-frames", "64",
            "--log-every", "1", "--licenses-json", str(root / "licenses.json"), "--licenses-table", str(root / "tracks.tsv"),
            "--manifest", str(root / "manifest.parquet"), "--out", str(run / "done.json"), *extra]


def popen(args, log_path: Path, module=("-m", "ssmttm.train.loop")):
    env = dict(os.environ, PYTHONPATH=str(REPO), SSMTTM_PROGRESS_INTERVAL="100")
    return subprocess.Popen([sys.executable, *module, *args], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=open(log_path, "wb"))


def last_step(run: Path) -> int:
    last = run / "ckpt" / "last"
    return int(last.read_text().strip().split("_")[1]) if last.is_file() else -1


@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory):
    return make_fixture(tmp_path_factory.mktemp("train"))


@pytest.fixture(scope="module")
def full_run(fixture_root, tmp_path_factory):
    """An uninterrupted 12-step run through the CLI (subprocess)."""
    run = tmp_path_factory.mktemp("full") / "run"
    proc = popen(argv(fixture_root, run), run.parent / "stderr.txt")
    assert proc.wait(timeout=600) == 0, (run.parent / "stderr.txt").read_text()
    return run


# --- units ------------------------------------------------------------------------------------------
def test_schedule_endpoints_per_optimizer_step():
    f = schedule.lr_factor
    assert f(0, 500, 100_000, 0.005) == pytest.approx(1 / 500)
    assert f(499, 500, 100_000, 0.005) == pytest.approx(1.0)
    assert f(500, 500, 100_000, 0.005) == pytest.approx(1.0)
    assert f(99_999, 500, 100_000, 0.005) == pytest.approx(0.005)
    mid = 500 + (100_000 - 1 - 500) / 2
    assert f(int(mid), 500, 100_000, 0.005) == pytest.approx(0.005 + 0.995 * 0.5, abs=1e-4)
    assert f(200_000, 500, 100_000, 0.005) == pytest.approx(0.005)
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=1e-4)
    sched = schedule.WarmupCosine(opt, 1e-4, 3, 12, 0.005)
    seen = []
    for _ in range(12):
        seen.append(sched.apply())
        opt.step()
        sched.step()
    assert seen[0] == pytest.approx(1e-4 / 3) and seen[2] == pytest.approx(1e-4) and seen[-1] == pytest.approx(5e-7)
    assert all(a >= b for a, b in zip(seen[2:], seen[3:]))  # monotone decay after warm-up
    other = schedule.WarmupCosine(opt, 1e-4, 3, 24, 0.005)
    with pytest.raises(ValueError, match="total"):
        other.load_state_dict(sched.state_dict())


def test_weight_decay_groups():
    lm = build_lm(from_preset("tiny", "cross-simba", text_dim=D))
    decay, no_decay = param_groups(lm, 0.02)
    assert decay["weight_decay"] == 0.02 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in lm.named_parameters()}
    nd = {names[id(p)] for p in no_decay["params"]}
    dc = {names[id(p)] for p in decay["params"]}
    assert len(nd) + len(dc) == len(names) and not nd & dc
    for suffix in ("A_log", "D", "dt_bias", "norm.weight", "text_proj.bias", "conv1d.bias"):
        assert any(n.endswith(suffix) for n in nd), suffix
    assert all(lm.get_parameter(n).ndim >= 2 for n in dc)
    assert "text_proj.weight" in dc and "heads.0.weight" in dc and any("in_proj.weight" in n for n in dc)


def test_cfg_dropout_rate_and_empty_prompt():
    B, L = 4000, 6
    empty = np.full((1, D), 7.0, dtype=np.float32)
    text = torch.randn(B, L, D)
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[::2, 4:] = False  # right-padded rows
    mask[1::4, 1:] = False  # rows with a single real token: never fully dropped
    batch = {"text": text, "text_mask": mask, "caption_ids": torch.full((B,), 3)}
    out = data.cfg_dropout(batch, empty, 0.1, 0.1, np.random.default_rng(0))
    drop = out["cfg_dropped"]
    assert abs(float(drop.float().mean()) - 0.1) < 0.015
    assert (out["caption_ids"][drop] == 0).all() and (out["caption_ids"][~drop] == 3).all()
    assert (out["text"][drop, 0] == 7.0).all() and (out["text"][drop, 1:] == 0).all()
    assert (out["text_mask"][drop].sum(1) == 1).all()
    keep_rows = ~drop
    assert out["text_mask"][keep_rows].any(1).all()  # never every token of a row
    real = mask[keep_rows] & ~(torch.arange(B)[keep_rows] % 4 == 1)[:, None]
    dropped_tokens = real & ~out["text_mask"][keep_rows]
    assert abs(float(dropped_tokens.sum()) / float(real.sum()) - 0.1) < 0.015
    assert (out["text"][keep_rows][~out["text_mask"][keep_rows]] == 0).all()
    assert not (out["text_mask"] & ~torch.cat([mask], 1)).any()  # padding never becomes real
    again = data.cfg_dropout(batch, empty, 0.1, 0.1, np.random.default_rng(0))
    assert torch.equal(again["text_mask"], out["text_mask"]) and torch.equal(again["text"], out["text"])


def test_rank_sharding_is_a_partition():
    for world in (1, 2, 3):
        seen = [i for r in range(world) for b in data.rank_batches(10, 5, 2, r, world, 2) for i in b]
        assert len(seen) == len(set(seen)) == (10 // world) * world
    assert data.rank_batches(10, 5, 0, 0, 1, 4) != data.rank_batches(10, 5, 1, 0, 1, 4)  # order changes per epoch
    assert data.rank_batches(10, 5, 1, 0, 1, 4) == data.rank_batches(10, 5, 1, 0, 1, 4)


def test_flops_6nd_arithmetic_and_measurement():
    # docs/reference.md §4: Prefix SiMBA, 100k steps x 128 x 2588 positions -> ~5.6e19 FLOPs
    cfg = from_preset("paper", "prefix-simba", mamba_backend="torch")
    with torch.device("meta"):
        lm = LM(cfg)
    n, n_ne = flops.count_params(lm)
    assert n_ne == n - 1025 * 1024 and abs(n / 1e6 - 281.04) < 0.3
    assert flops.flops_6nd(n_ne, 100_000 * 128 * 2588) == 6.0 * n_ne * 3.31264e10
    assert flops.flops_6nd(n_ne, 100_000 * 128 * 2588) == pytest.approx(5.6e19, rel=0.02)
    small = from_preset("tiny", "cross-transformer", text_dim=D)
    codes = torch.randint(0, 1024, (2, 1, 40))
    fl, pos = flops.measure_forward_flops(small, codes, torch.randn(2, 5, D), torch.ones(2, 5, dtype=torch.bool))
    _, ne = flops.count_params(build_lm(small))
    assert pos == 80 and 2 * ne * 0.5 < fl / pos < 2 * ne * 3  # ~2 FLOPs per matmul weight per position


def test_card_markdown_flags_nc():
    meta = {"experiment": "x", "seed": 0, "step": 5, "n_params": 10, "n_params_non_embedding": 8,
            "tokens_seen": 100, "licences": {"nc_fraction": 0.7, "nd_fraction": 0.34, "allow": ["by"]}}
    files = card.card_files(meta, {"n_layers": 2}, {"lr": 1e-4}, b"attr")
    md = files["MODEL_CARD.md"].decode()
    assert "70.0 % " in md and "non-commercial" in md and "34.0 %" in md
    assert json.loads(files["card.json"])["meta"]["licences"]["nc_fraction"] == 0.7 and files["ATTRIBUTION.md"] == b"attr"


# --- the CLI run -----------------------------------------------------------------------------------------
def test_run_outputs_card_and_done(full_run, fixture_root):
    done = io.read_json(full_run / "done.json")
    assert done["step"] == 12 and done["experiment"] == "tiny" and done["kappa"] == 2
    assert Path(done["final_checkpoint"]).name == "step_0000012"
    assert sorted(p.name for p in (full_run / "ckpt").glob("step_*")) == ["step_0000004", "step_0000008", "step_0000012"]
    assert (full_run / "ckpt" / "last").read_text().strip() == "step_0000012"
    assert (full_run / "done.json").stat().st_mtime >= (full_run / "log.csv").stat().st_mtime
    log = pd.read_csv(full_run / "log.csv")
    assert list(log.columns) == list(LOG_COLUMNS) and list(log["step"]) == list(range(1, 13))
    # lr per optimizer step; tokens = 2 accum x 2 sequences x (64 frames + kappa 2) positions per step
    expected_lr = [1e-4 * schedule.lr_factor(s, 3, 12, 0.005) for s in range(12)]
    np.testing.assert_allclose(log["lr"], expected_lr, rtol=1e-12)
    assert list(log["tokens"]) == [264 * s for s in range(1, 13)]
    np.testing.assert_allclose(log["flops_6nd"], 6.0 * done["n_params_non_embedding"] * log["tokens"])
    assert log["val_loss"].notna().tolist() == [s % 4 == 0 for s in range(1, 13)]
    assert np.isfinite(log["loss"]).all() and (log["grad_norm"] > 0).all()
    val = pd.read_csv(full_run / "val.csv")
    assert list(val["step"]) == [4, 8, 12] and (val["n"] == N_VALID).all()
    fl = pd.read_csv(full_run / "flops.csv")
    assert list(fl["step"]) == [4, 8, 12] and (fl["measured_forward_flops_per_token"] > 0).all()
    np.testing.assert_allclose(fl["measured_flops_total"], 3 * fl["measured_forward_flops_per_token"] * fl["tokens_seen"])
    assert list((full_run / "tb").glob("events.out.tfevents.*"))
    ck = full_run / "ckpt" / "step_0000012"
    meta = io.read_json(ck / "meta.json")
    for key in ("experiment", "seed", "step", "variant", "preset", "kappa", "n_params", "n_params_non_embedding",
                "tokens_seen", "flops_6nd", "codec", "text_encoder", "manifest_sha256", "licences"):
        assert key in meta, key
    assert meta["manifest_sha256"] == io.sha256_file(fixture_root / "manifest.parquet")
    # the licences of the training split (c0..c5; c6, c7 are validation clips), not the whole audit
    lic = meta["licences"]
    assert lic["n_tracks"] == N_TRAIN and lic["per_licence"]["by"]["tracks"] == 3
    assert lic["per_licence"]["by-nc"]["tracks"] == 3 and lic["nc_fraction"] == 0.5
    assert meta["codec"]["key"] == "dac_44khz" and meta["text_encoder"]["key"] == "flan_t5_tiny"
    attribution = (ck / "ATTRIBUTION.md").read_text()
    assert all(f"Song {i} by Artist {i}" in attribution for i in range(N_TRAIN))
    assert "Song 6 " not in attribution and "Song 7 " not in attribution
    cj = io.read_json(ck / "card.json")
    assert cj["meta"]["step"] == 12 and cj["lm_config"]["n_codebooks"] == 2 and cj["recipe"]["lr"] == 1e-4
    md = (ck / "MODEL_CARD.md").read_text()
    assert meta["manifest_sha256"] in md and "non-commercial" in md and "ATTRIBUTION.md" in md
    assert f"{meta['n_params']:,}" in md
    from ssmttm.models.checkpoint import load_model

    lm, _ = load_model(ck, kappa=2)  # the checkpoint loads through the shared loader
    assert lm.cfg.text_dim == D


def test_log_file_has_plain_progress_lines(full_run):
    """stderr goes to a file (as in a rule's log): progress as timestamped lines, no carriage returns."""
    text = (full_run.parent / "stderr.txt").read_text()
    assert "\r" not in text
    final = [ln for ln in text.splitlines() if re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d tiny: 12/12 it \(100%\) ", ln)]
    assert len(final) == 1 and re.search(r" it/s, done in \d+:\d\d:\d\d, loss=[\d.]+, lr=", final[0]), text[-2000:]


# The training stage, SIGKILLed by itself as it starts step 6: after the step-4 checkpoint and the logged
# step 5, before the step-8 checkpoint. Killing it from the test once a checkpoint shows up would race
# the run (a fast machine finishes all 12 steps before the kill lands).
KILL_DURING_STEP_6 = """
import os, signal, sys
from ssmttm.train import loop
train_step = loop.Trainer.train_step
def killed(self, it):
    if self.step == 5:
        os.kill(os.getpid(), signal.SIGKILL)
    return train_step(self, it)
loop.Trainer.train_step = killed
sys.exit(loop.main(sys.argv[1:]))
"""


def test_resume_after_sigkill_equals_uninterrupted(full_run, fixture_root, tmp_path):
    run = tmp_path / "run"
    proc = popen(argv(fixture_root, run), tmp_path / "killed.txt", module=("-c", KILL_DURING_STEP_6))
    assert proc.wait(timeout=600) == -signal.SIGKILL, (tmp_path / "killed.txt").read_text()
    assert last_step(run) == 4 and not (run / "done.json").exists()
    assert list(pd.read_csv(run / "log.csv")["step"]) == [1, 2, 3, 4, 5]  # step 5 is logged, not checkpointed
    proc = popen(argv(fixture_root, run), tmp_path / "resumed.txt")
    assert proc.wait(timeout=600) == 0, (tmp_path / "resumed.txt").read_text()
    assert "resumed from" in (tmp_path / "resumed.txt").read_text()
    a, b = pd.read_csv(full_run / "log.csv"), pd.read_csv(run / "log.csv")
    pd.testing.assert_frame_equal(a[DETERMINISTIC], b[DETERMINISTIC], check_exact=True)
    pd.testing.assert_frame_equal(pd.read_csv(full_run / "val.csv"), pd.read_csv(run / "val.csv"), check_exact=True)
    final = "ckpt/step_0000012/model.safetensors"
    assert (full_run / final).read_bytes() == (run / final).read_bytes()  # bitwise-identical weights


def test_nan_loss_stops_and_keeps_last_good_checkpoint(fixture_root, tmp_path, monkeypatch):
    from ssmttm.train.loop import parse_args

    run = tmp_path / "run"
    cfg = parse_args(argv(fixture_root, run, steps=6, extra=["--checkpoint-every", "2"]))
    trainer = Trainer(cfg)
    np.testing.assert_array_equal(trainer.empty, trainer.train_ds.text.embedding(0).astype(np.float32))
    real_loss = LM.loss

    def poisoned(logits, codes, mask=None, label_smoothing=0.1):
        out = real_loss(logits, codes, mask, label_smoothing)
        return out * float("nan") if trainer.step == 2 and torch.is_grad_enabled() else out

    monkeypatch.setattr(LM, "loss", staticmethod(poisoned))
    with pytest.raises(data.TrainError, match=r"step 3: non-finite loss nan.*\['c\d'") as err:
        trainer.run()
    assert "step_0000002" in str(err.value)
    assert (run / "ckpt" / "last").read_text().strip() == "step_0000002"
    assert sorted(p.name for p in (run / "ckpt").glob("step_*")) == ["step_0000002"]
    assert not (run / "done.json").exists()
    assert list(pd.read_csv(run / "log.csv")["step"]) == [1, 2]


def test_nonfinite_weights_are_never_checkpointed(fixture_root, tmp_path):
    from ssmttm.train.loop import parse_args

    trainer = Trainer(parse_args(argv(fixture_root, tmp_path / "run", steps=2, extra=["--checkpoint-every", "2"])))
    real_step = trainer.optimizer.step

    def blow_up(*a, **k):  # finite loss and gradients, but the update leaves an inf weight
        out = real_step(*a, **k)
        if trainer.step == 1:  # the update of step 2, a checkpoint step
            with torch.no_grad():
                trainer.net.heads[0].weight[0, 0] = float("inf")
        return out

    trainer.optimizer.step = blow_up
    with pytest.raises(data.TrainError, match=r"step 2: non-finite weights in \['heads.0.weight'\]"):
        trainer.run()
    assert not list((tmp_path / "run" / "ckpt").glob("step_*"))


def test_oov_token_names_the_clip(tmp_path, capsys):
    root = make_fixture(tmp_path / "fx", oov_clip=4)
    rc = main(argv(root, tmp_path / "run", steps=3))
    assert rc == 1
    err = capsys.readouterr().err
    assert "out-of-vocabulary code 1500" in err and "'c4'" in err
    assert not (tmp_path / "run" / "done.json").exists()


def test_ddp_two_processes_gloo(fixture_root, tmp_path):
    run = tmp_path / "run"
    args = argv(fixture_root, run, steps=4, extra=["--checkpoint-every", "1", "--checkpoints", "2", "--keep-last", "1"])
    proc = popen(["--standalone", "--nproc_per_node", "2", "-m", "ssmttm.train.loop", *args], tmp_path / "ddp.txt",
                 module=("-m", "torch.distributed.run"))
    rc = proc.wait(timeout=600)
    if rc != 0 and "Address already in use" in (tmp_path / "ddp.txt").read_text():
        pytest.skip("no free port for the gloo rendezvous")
    assert rc == 0, (tmp_path / "ddp.txt").read_text()[-3000:]
    done = io.read_json(run / "done.json")
    assert done["world_size"] == 2 and done["step"] == 4
    log = pd.read_csv(run / "log.csv")
    assert list(log["step"]) == [1, 2, 3, 4]  # one writer: rank 0
    # per rank and step: micro-batches of 2 and 1 clips (3 train clips per rank), x 2 ranks x 66 positions
    assert list(log["tokens"]) == [396 * s for s in range(1, 5)]
    assert np.isfinite(log["loss"]).all()
    # keep-last 1: periodic step 1 pruned, milestone 2 and final 4 kept
    assert sorted(p.name for p in (run / "ckpt").glob("step_*")) == ["step_0000002", "step_0000003", "step_0000004"]
    assert len(torch.load(run / "ckpt/step_0000004/trainer_state.pt", weights_only=True)["rng"]) == 2
    # exact resume under DDP: rewind a copy to step 2 (as if killed after that checkpoint) and rerun
    import shutil

    rerun = tmp_path / "rerun"
    shutil.copytree(run, rerun)
    for name in ("step_0000003", "step_0000004"):
        shutil.rmtree(rerun / "ckpt" / name)
    (rerun / "done.json").unlink()
    (rerun / "ckpt" / "last").write_text("step_0000002\n")
    args = argv(fixture_root, rerun, steps=4, extra=["--checkpoint-every", "1", "--checkpoints", "2", "--keep-last", "1"])
    proc = popen(["--standalone", "--nproc_per_node", "2", "-m", "ssmttm.train.loop", *args], tmp_path / "ddp2.txt",
                 module=("-m", "torch.distributed.run"))
    assert proc.wait(timeout=600) == 0, (tmp_path / "ddp2.txt").read_text()[-3000:]
    pd.testing.assert_frame_equal(log[DETERMINISTIC], pd.read_csv(rerun / "log.csv")[DETERMINISTIC], check_exact=True)
    final = "ckpt/step_0000004/model.safetensors"
    assert (run / final).read_bytes() == (rerun / final).read_bytes()


def test_csv_log_truncates_after_resumed_step_and_torn_line(tmp_path):
    from ssmttm.train.loop import CsvLog

    path = tmp_path / "log.csv"
    path.write_text("step,loss\n1,0.5\n2,0.25\n3,0.125\n4,0.1")  # "4,0.1" torn: no newline
    CsvLog(path, ("step", "loss"), keep_upto=2).append({"step": 3, "loss": 1 / 3})
    assert path.read_text() == f"step,loss\n1,0.5\n2,0.25\n3,{1 / 3!r}\n"
    CsvLog(path, ("step", "loss"), keep_upto=None)  # a fresh run starts a fresh file
    assert path.read_text() == "step,loss\n"


def test_bad_flags_fail_fast(fixture_root, tmp_path, capsys):
    from ssmttm.train.loop import parse_args

    for extra, msg in ((["--model", "{d_model: 64"], "--model"),
                       (["--cfg-dropout", "1.5"], "--cfg-dropout / config key train.cfg_dropout"),
                       (["--grad-accum", "0"], "--grad-accum / config key train.grad_accum"),
                       (["--variant", "prefix-lstm"], "--variant / config key experiments.*.variant"),
                       (["--settings", '{"warmup": 3}'], "unknown key(s) ['warmup']")):
        with pytest.raises(SystemExit):
            parse_args(argv(fixture_root, tmp_path / "run", extra=extra))
        assert msg in capsys.readouterr().err
    cfg = parse_args(argv(fixture_root, tmp_path / "run", extra=["--model", '{"n_codebooks": 3}']))
    with pytest.raises(ValueError, match="n_codebooks=3 contradicts 2"):
        Trainer(cfg)


def test_settings_come_from_the_schema_then_the_rule_then_the_flags(fixture_root, tmp_path):
    """One home per default: a key not given anywhere takes the schema's default; the rule's --settings
    JSON overrides it; a flag typed by hand overrides both."""
    from ssmttm import settings
    from ssmttm.train.loop import parse_args

    schema = settings.defaults(("train", "experiments.*"))
    base = argv(fixture_root, tmp_path / "run")
    cfg = parse_args(base)
    assert cfg.num_workers == schema["num_workers"] and cfg.keep_last == schema["keep_last"]
    assert cfg.label_smoothing == schema["label_smoothing"] and cfg.warmup_steps == 3
    cfg = parse_args([*base, "--settings", '{"label_smoothing": 0.2, "warmup_steps": 7, "num_workers": 0}'])
    assert (cfg.label_smoothing, cfg.warmup_steps, cfg.num_workers) == (0.2, 3, 0)  # the typed flag wins


def test_stale_shards_beside_the_declared_ones_are_never_opened(tmp_path, monkeypatch):
    """A shard folder left by an earlier run (here an NC track's tokens, excluded by the current
    commercial-ok audit) sits beside the current shard: training opens only the shards it is given,
    trains on the manifest's clips only, and its attribution lists exactly the training split's tracks."""
    from ssmttm.tokens import store as token_store

    root = make_fixture(tmp_path / "data")
    stale = [({"clip_id": "nc0", "track_id": "nc0", "shard": "07", "split": "train", "licence": "by-nc",
               "caption_ids": [1], "audio_sha256": "0" * 64}, clip_codes(99))]
    write_shard(root / "tokens" / "07", stale, {"codec": "dac", "weights": "dac_44khz", "weights_sha256": "ab" * 32,
                                                "sample_rate": 44100, "frame_rate": 86.1328125, "n_codebooks": K,
                                                "cardinality": 1024})
    ids = sorted(f"c{i}" for i in range(N_TRAIN + N_VALID)) + ["nc0"]
    write_licence_table(root / "tracks.tsv", ids, licence=lambda i: "by-nc" if ids[i] == "nc0" else "by",
                        allowed=lambda i: ids[i] != "nc0")  # commercial-ok: the NC track is excluded
    opened = []
    real_init = token_store.TokenShard.__init__

    def spy(self, path, *a, **kw):
        opened.append(Path(path).name)
        real_init(self, path, *a, **kw)

    monkeypatch.setattr(token_store.TokenShard, "__init__", spy)
    trainer = Trainer(parse_args(argv(root, tmp_path / "run", steps=4)))  # --tokens <root>/tokens/00, as the rule passes
    assert set(opened) == {"00"}
    assert trainer.train_ds.clip_ids == [f"c{i}" for i in range(N_TRAIN)] and "nc0" not in trainer.train_ds.track_ids
    done = trainer.run()
    ck = Path(done["checkpoint"]) if "checkpoint" in done else tmp_path / "run" / "ckpt" / "step_0000004"
    attribution = (ck / "ATTRIBUTION.md").read_text()
    listed = re.findall(r"Song (\d+) by", attribution)
    assert sorted(int(i) for i in listed) == list(range(N_TRAIN))  # the train split exactly: no valid, no stale
    assert set(opened) == {"00"}
    # a licence table that does not allow a track of the split fails before any step
    write_licence_table(root / "tracks.tsv", ids, allowed=lambda i: ids[i] not in ("c0", "nc0"))
    with pytest.raises(Exception, match="c0"):
        Trainer(parse_args(argv(root, tmp_path / "run2", steps=4)))


def test_the_train_rule_hands_over_exactly_the_configured_shards(repo, tmp_path):
    """Whatever else lies under results/tokens, the rule lists the config's shards, input by input."""
    (tmp_path / "results" / "tokens" / "dac_tiny" / "77").mkdir(parents=True)
    r = subprocess.run([str(Path(sys.executable).parent / "snakemake"), "-n", "-p", "--cores", "1", "--snakefile",
                        str(repo / "Snakefile"), "--directory", str(tmp_path), "--configfile",
                        str(repo / "config" / "demo.yaml")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [ln for ln in r.stdout.splitlines() if "python -m ssmttm train " in ln]
    assert lines
    for line in lines:
        tokens = re.search(r"--tokens (.*?) --text", line).group(1).split()
        assert tokens == [f"results/tokens/dac_tiny/{s:02d}" for s in range(5)]


def test_a_corrupt_resume_state_is_named_and_exits_2(fixture_root, tmp_path, capfd):
    run = tmp_path / "run"
    assert main(argv(fixture_root, run, steps=4)) == 0
    state_file = run / "ckpt" / "step_0000004" / "trainer_state.pt"
    state_file.write_bytes(state_file.read_bytes()[:100])  # truncated by a full disk, say
    capfd.readouterr()
    assert main(argv(fixture_root, run, steps=8)) == 2
    err = capfd.readouterr().err
    assert f"{state_file}: not a readable trainer state" in err and "Traceback" not in err
