"""The two-stage refiner: latents and quantisation against DAC, the v-prediction sampler,
conditioning alignment, training (loss decreases, exact resume), and the two-stage generate stage."""

import importlib.util
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from ssmttm import io, weights
from ssmttm.codec.dac import build_tiny_dac
from ssmttm.codec.dac import load as load_dac
from ssmttm.generate import generate as gen
from ssmttm.generate.sampling import make_generators, prompt_seeds
from ssmttm.refiner import RefinerError, load_refiner
from ssmttm.refiner import diffusion as D
from ssmttm.refiner.config import RefinerConfig, refiner_from_preset
from ssmttm.refiner.model import build_refiner
from ssmttm.refiner.train import RefinerTrainer, parse_args

K, TEXT = 4, 8


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def dac_file(tmp_path_factory):
    return build_tiny_dac(tmp_path_factory.mktemp("dac") / "dac_tiny.pth", seed=0)


@pytest.fixture(scope="module")
def codec(dac_file):
    return load_dac(dac_file, "cpu")


def _net(codec, seed=0, **kw):
    torch.manual_seed(seed)
    net = build_refiner(refiner_from_preset("tiny", n_codebooks=K, text_dim=TEXT, **kw))
    net.set_codebooks(codec.codebook_tables())
    return net.eval()


def _text(B=2, L=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, L, TEXT, generator=g), torch.ones(B, L, dtype=torch.bool)


# --- config and latents -----------------------------------------------------------------------------
def test_config_checks_and_sizes():
    with pytest.raises(ValueError, match="cond_codebooks=4 .*nothing is left"):
        RefinerConfig(n_codebooks=4, cond_codebooks=4)
    with pytest.raises(ValueError, match="kernel_size=4"):
        RefinerConfig(kernel_size=4)
    cfg = refiner_from_preset("paper")  # DAC-44k: 9 codebooks, kappa 1
    assert cfg.latent_channels == 64  # (9 - 1) x 8, DiscoDiff's secondary latent size
    assert RefinerConfig.from_dict(cfg.to_dict()) == cfg
    n = sum(p.numel() for p in build_refiner(cfg, device="meta").parameters())
    assert 40e6 < n < 60e6
    with pytest.raises(ValueError, match="unknown refiner preset"):
        refiner_from_preset("huge")


def test_latents_and_quantize_match_dac(codec):
    net = _net(codec)
    assert tuple(codec.codebook_tables().shape) == (K, 1024, 8)
    codes = torch.randint(0, 1024, (2, K, 30), generator=torch.Generator().manual_seed(0))
    lat = net.latents(codes[:, 1:], 1)
    assert lat.shape == (2, 24, 30)
    # the codebook vectors DAC decodes from, and back to the same codes
    want = torch.cat([codec.model.quantizer.quantizers[k].decode_code(codes[:, k]) for k in range(1, K)], 1)
    assert torch.allclose(lat, want)
    assert torch.equal(net.quantize(lat), codes[:, 1:])
    # off-codebook latents: the same nearest neighbour as DAC's VectorQuantize.decode_latents
    noisy = lat + 0.3 * torch.randn(lat.shape, generator=torch.Generator().manual_seed(1))
    theirs = torch.stack([codec.model.quantizer.quantizers[1 + j].decode_latents(noisy[:, 8 * j:8 * j + 8])[1]
                          for j in range(K - 1)], 1)
    assert torch.equal(net.quantize(noisy), theirs)
    assert torch.allclose(net.denormalise(net.normalise(lat)), lat, atol=1e-5)
    x = net.normalise(net.latents(torch.randint(0, 1024, (8, K - 1, 400)), 1))
    assert abs(float(x.mean())) < 0.1 and abs(float(x.std()) - 1) < 0.1  # unit scale for the diffusion


# --- the network: shapes and alignment ------------------------------------------------------------
def test_forward_shapes_alignment_and_padding(codec):
    net = _net(codec, seed=3)
    for p in net.out.parameters():  # the zero-initialised head would hide everything below it
        torch.nn.init.normal_(p, std=0.5)
    B, T = 2, 64
    z = torch.randn(B, 24, T)
    t = torch.tensor([0.3, 0.7])
    cond = torch.randint(0, 1024, (B, 1, T), generator=torch.Generator().manual_seed(0))
    text, mask = _text(B)
    v = net(z, t, cond, text, mask)
    assert v.shape == (B, 24, T)
    # time alignment: a change of codebook 1 at frame 30 moves the output at frame 30 and only within
    # the receptive field of the dilated convolutions (sum of dilation x (kernel // 2) = 6 frames here)
    cond2 = cond.clone()
    cond2[:, 0, 30] = (cond2[:, 0, 30] + 1) % 1024
    diff = (net(z, t, cond2, text, mask) - v).abs().amax((0, 1))
    field = sum(d * (net.cfg.kernel_size // 2) for d in net.cfg.dilations)
    assert diff[30] > 1e-4
    assert float(diff[:30 - field].max()) == 0.0 and float(diff[31 + field:].max()) == 0.0
    # padded frames (frame_mask False) never change real frames
    fm = torch.ones(B, T, dtype=torch.bool)
    fm[:, 50:] = False
    base = net(z, t, cond, text, mask, fm)
    z2 = z.clone()
    z2[:, :, 50:] = 100.0
    assert torch.allclose(net(z2, t, cond, text, mask, fm)[:, :, :50], base[:, :, :50], atol=1e-5)
    # text matters (cross-attention), padded text positions do not
    text3 = text.clone()
    text3[:, 3:] += 5.0
    assert not torch.allclose(net(z, t, cond, text3, mask), v)
    mask4 = mask.clone()
    mask4[:, 3:] = False
    assert torch.allclose(net(z, t, cond, text3, mask4), net(z, t, cond, text, mask4), atol=1e-6)
    with pytest.raises(ValueError, match="conditions on 1 codebook"):
        net(z, t, torch.zeros(B, 2, T, dtype=torch.long), text, mask)


# --- diffusion -----------------------------------------------------------------------------------------
def test_v_parameterisation_identities():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 4, 5, generator=g), torch.randn(3, 4, 5, generator=g)
    for t in (0.0, 0.2, 0.5, 0.9, 1.0):
        a, s = D.alpha_sigma(torch.tensor(t))
        assert abs(float(a ** 2 + s ** 2) - 1) < 1e-6  # variance preserving
        z, v = a * x0 + s * eps, a * eps - s * x0
        assert torch.allclose(a * z - s * v, x0, atol=1e-5) and torch.allclose(s * z + a * v, eps, atol=1e-5)


class _Oracle(torch.nn.Module):
    """Predicts the exact velocity towards a fixed x0 (as a perfect model of a point mass would)."""

    def __init__(self, x0, cfg):
        super().__init__()
        self.x0, self.cfg = x0, cfg

    def encode_text(self, text):
        return text

    def forward(self, z, t, cond, text, mask, fm=None, text_encoded=False):
        a, s = (u.reshape(-1, 1, 1) for u in D.alpha_sigma(t))
        eps = (z - a * self.x0.repeat(z.shape[0] // self.x0.shape[0], 1, 1)) / s.clamp_min(1e-6)
        return a * eps - s * self.x0.repeat(z.shape[0] // self.x0.shape[0], 1, 1)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_samplers_recover_the_target_of_a_perfect_model(sampler):
    cfg = refiner_from_preset("tiny", n_codebooks=3, text_dim=TEXT)
    x0 = torch.randn(2, cfg.latent_channels, 12, generator=torch.Generator().manual_seed(0))
    text, mask = _text(2)
    cond = torch.zeros(2, 1, 12, dtype=torch.long)
    for steps in (1, 5, 25):
        out = D.sample(_Oracle(x0, cfg), cond, text, mask, text, mask, D.SamplerConfig(steps, 3.0, sampler),
                       make_generators([0, 0]))
        assert torch.allclose(out, x0, atol=1e-4), (sampler, steps)


class _GaussianDenoiser(torch.nn.Module):
    """The exact denoiser of x0 ~ N(0, var) per channel: E[x0 | z_t] = a var z / (a^2 var + s^2)."""

    def __init__(self, var, cfg):
        super().__init__()
        self.var, self.cfg = var, cfg

    def encode_text(self, text):
        return text

    def forward(self, z, t, cond, text, mask, fm=None, text_encoded=False):
        a, s = (u.reshape(-1, 1, 1) for u in D.alpha_sigma(t))
        x0 = a * self.var * z / (a ** 2 * self.var + s ** 2)
        eps = (z - a * x0) / s
        return a * eps - s * x0


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_samplers_draw_from_the_data_distribution(sampler):
    """With the exact denoiser of N(0, 0.25) data, samples have variance 0.25: a wrong noise term in the
    ancestral update (or a wrong DDIM step) inflates or shrinks it."""
    cfg = refiner_from_preset("tiny", n_codebooks=2, text_dim=TEXT)  # 8 channels
    n, T = 64, 32
    text, mask = _text(n)
    x = D.sample(_GaussianDenoiser(0.25, cfg), torch.zeros(n, 1, T, dtype=torch.long), text, mask, text, mask,
                 D.SamplerConfig(100, 1.0, sampler), [torch.Generator().manual_seed(i) for i in range(n)])
    assert abs(float(x.var()) - 0.25) < 0.02, float(x.var())


def test_sampling_is_seeded_batch_independent_and_guided(codec):
    net = _net(codec, seed=5)
    for p in net.out.parameters():
        torch.nn.init.normal_(p, std=0.2)
    cond = torch.randint(0, 1024, (3, 1, 20), generator=torch.Generator().manual_seed(2))
    text, mask = _text(3, seed=4)
    utext, umask = torch.zeros(3, 5, TEXT), torch.zeros(3, 5, dtype=torch.bool)
    umask[:, 0] = True
    cfg = D.SamplerConfig(steps=8)

    ids = ["a", "b", "c"]

    def run(seed, rows=slice(None), c=cfg):
        return D.sample(net, cond[rows], text[rows], mask[rows], utext[rows], umask[rows], c,
                        make_generators(prompt_seeds(seed, ids[rows], "refiner")))

    a = run(7)
    assert torch.equal(a, run(7))  # a fixed seed reproduces exactly
    assert not torch.allclose(a, run(8))
    assert torch.allclose(run(7, slice(1, 2)), a[1:2], atol=1e-5)  # a row does not depend on its batch
    # different prompts draw different noise: the same inputs in every row still give distinct rows
    same = D.sample(net, cond[:1].repeat(3, 1, 1), text[:1].repeat(3, 1, 1), mask[:1].repeat(3, 1), utext, umask, cfg,
                    make_generators(prompt_seeds(7, ids, "refiner")))
    assert not torch.allclose(same[0], same[1]) and not torch.allclose(same[1], same[2])
    ddim = D.SamplerConfig(steps=8, sampler="ddim")
    assert not torch.allclose(run(7, c=ddim), a)
    assert not torch.allclose(run(7, c=D.SamplerConfig(steps=8, cfg_scale=1.0)), a)  # guidance acts
    with pytest.raises(ValueError, match="sampler"):
        D.SamplerConfig(sampler="euler")


# --- training ----------------------------------------------------------------------------------------
def _structured_codes(i):
    """Codebooks 2..4 are functions of codebook 1, so a refiner can learn them (on unit-variance latents
    the v-loss stays at 1 unless the conditioning predicts the target: v is uncorrelated with z_t)."""
    from test_train import T

    c1 = np.random.default_rng(i).integers(0, 8, T)  # few values: learnable in a few dozen tiny steps
    return np.stack([(c1 * 37 * (k + 1) + 17 * k) % 1024 for k in range(K)]).astype(np.uint16)


def _refiner_argv(root, run, dac, steps=30, extra=()):
    return ["--run-dir", str(run), "--experiment", "refiner", "--tokens", str(root / "tokens" / "00"), "--text",
            str(root / "text"), "--preset", "tiny", "--kappa", "1", "--seed", "1", "--steps", str(steps),
            "--checkpoint-every", "10", "--warmup-steps", "3", "--lr", "3e-3", "--batch-size", "2", "--grad-accum", "1",
            "--max-frames", "48", "--dropout", "0", "--log-every", "1", "--codec-weights", str(dac),
            "--licenses-json", str(root / "licenses.json"), "--licenses-table", str(root / "tracks.tsv"),
            "--manifest", str(root / "manifest.parquet"), "--device", "cpu", "--out", str(run / "done.json"), *extra]


def test_training_loss_decreases_resumes_exactly_and_checks_the_codec(tmp_path, dac_file):
    import pandas as pd

    from test_train import make_fixture

    root = make_fixture(tmp_path / "data", codec_sha256=io.sha256_file(dac_file), codes_fn=_structured_codes)
    run = tmp_path / "run"
    done = RefinerTrainer(parse_args(_refiner_argv(root, run, dac_file, steps=60))).run()
    assert done["model"] == "refiner" and done["step"] == 60 and done["kappa"] == 1
    log = pd.read_csv(run / "log.csv")
    assert log["loss"].iloc[:10].mean() > 1.15 * log["loss"].iloc[-10:].mean()
    val = pd.read_csv(run / "val.csv")
    assert val["val_loss"].iloc[-1] < val["val_loss"].iloc[0]
    ck = run / "ckpt" / "step_0000060"
    assert (ck / "refiner_config.json").is_file() and (ck / "MODEL_CARD.md").is_file()
    assert "Diffusion refiner" in (ck / "MODEL_CARD.md").read_text()
    assert io.read_json(ck / "meta.json")["codec"]["sha256"] == io.sha256_file(dac_file)
    # interrupted after step 24 (last checkpoint 20) and rerun: the same curve as an uninterrupted run
    r1, r2 = tmp_path / "a", tmp_path / "b"
    RefinerTrainer(parse_args(_refiner_argv(root, r1, dac_file, steps=30))).run()
    t = RefinerTrainer(parse_args(_refiner_argv(root, r2, dac_file, steps=30)))
    step = t.train_step

    def killed(it):
        if t.step == 24:
            raise KeyboardInterrupt
        return step(it)

    t.train_step = killed
    with pytest.raises(KeyboardInterrupt):
        t.run()
    assert not (r2 / "done.json").exists()
    RefinerTrainer(parse_args(_refiner_argv(root, r2, dac_file, steps=30))).run()
    cols = ["step", "loss", "grad_norm", "val_loss"]
    pd.testing.assert_frame_equal(pd.read_csv(r1 / "log.csv")[cols], pd.read_csv(r2 / "log.csv")[cols])
    # a codec that is not the token store's is refused, naming both
    other = build_tiny_dac(tmp_path / "other.pth", seed=1)
    with pytest.raises(ValueError, match="is not the codec of the token shards"):
        RefinerTrainer(parse_args(_refiner_argv(root, tmp_path / "c", other)))
    with pytest.raises(SystemExit):
        parse_args(_refiner_argv(root, tmp_path / "d", dac_file, extra=["--kappa", "0"]))


# --- two-stage generation --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_stage(tmp_path_factory, dac_file):
    """A trained tiny refiner (on the tiny T5's 32-d states), a tiny kappa-1 LM, weights receipts."""
    from ssmttm.models import build_lm
    from ssmttm.models.checkpoint import save_model
    from ssmttm.models.config import from_preset
    from ssmttm.text.encoder import build_tiny_t5

    root = tmp_path_factory.mktemp("two_stage")
    t5 = build_tiny_t5(root / "src" / "t5_tiny", seed=0)
    weights.fetch("dac_tiny", str(dac_file), root / "weights", licence="MIT")
    weights.fetch("t5_tiny", str(t5), root / "weights", licence="Apache-2.0")
    torch.manual_seed(0)
    lm = build_lm(from_preset("tiny", "prefix-simba", n_codebooks=1, text_dim=32, mamba_backend="torch"))
    lm_ck = save_model(root / "lm", lm, {"step": 5, "variant": "prefix-simba"})
    net = build_refiner(refiner_from_preset("tiny", n_codebooks=K, text_dim=32))
    net.set_codebooks(load_dac(dac_file, "cpu").codebook_tables())
    for p in net.out.parameters():
        torch.nn.init.normal_(p, std=0.2)
    ref_ck = save_model(root / "refiner" / "ckpt" / "step_0000003", net,
                        {"step": 3, "experiment": "refiner", "codec": {"sha256": io.sha256_file(dac_file)}},
                        config_file="refiner_config.json")
    io.write_text(root / "refiner" / "ckpt" / "last", "step_0000003")
    io.write_json(root / "refiner" / "done.json", {"step": 3})
    return root, lm_ck, ref_ck


def _gen_argv(root, lm_ck, out, *extra):
    return ["--checkpoint", str(lm_ck), "--codec", "dac", "--codec-weights", str(root / "weights" / "dac_tiny.json"),
            "--text-encoder", str(root / "weights" / "t5_tiny.json"), "--n-tokens", "30", "--device", "cpu",
            "--prompt", "a calm piano piece", "--prompt", "fast drums", "--seed", "2", "--out-dir", str(out), *extra]


def test_two_stage_generate_stage(tmp_path, two_stage):
    root, lm_ck, ref_ck = two_stage
    refiner = ["--refiner", str(root / "refiner" / "done.json"), "--refiner-steps", "6"]
    out = tmp_path / "two"
    assert gen.main(_gen_argv(root, lm_ck, out, *refiner)) == 0
    side = io.read_json(out / "p000.json")
    assert side["stages"] == "two-stage" and side["kappa"] == 1 and side["decode_kappa"] == K
    assert side["refiner_sha256"] == io.sha256_file(ref_ck / "model.safetensors") and side["refiner_step"] == 3
    assert (side["refiner_steps"], side["refiner_sampler"], side["refiner_cfg_scale"]) == (6, "ddpm", 3.0)
    two = sf.read(str(out / "p000.wav"))[0]
    assert sf.info(str(out / "p000.wav")).frames == 30 * 512 and np.isfinite(two).all()
    # reproducible with the seed, batch-independent, and different from decoding codebook 1 alone
    again = tmp_path / "again"
    assert gen.main(_gen_argv(root, lm_ck, again, *refiner, "--batch-size", "1")) == 0
    assert np.allclose(sf.read(str(again / "p000.wav"))[0], two, atol=1e-4)
    one = tmp_path / "one"
    assert gen.main(_gen_argv(root, lm_ck, one)) == 0
    assert io.read_json(one / "p000.json")["stages"] == "single-stage"
    assert not np.allclose(sf.read(str(one / "p000.wav"))[0], two)
    # the refiner's codes, recomputed by hand, are what was decoded
    r = load_refiner("ssmttm", ref_ck)
    assert r.cond_codebooks == 1 and r.n_codebooks == K


def test_two_stage_errors(tmp_path, two_stage, dac_file, capsys):
    root, lm_ck, ref_ck = two_stage
    with pytest.raises(RefinerError, match="unknown refiner backend"):
        load_refiner("magic", ref_ck)
    with pytest.raises(RefinerError, match="not a checkpoint folder"):
        load_refiner("ssmttm", tmp_path)
    assert gen.main(_gen_argv(root, lm_ck, tmp_path / "x", "--refiner", str(tmp_path))) == 2
    assert "not a checkpoint folder" in capsys.readouterr().err
    # an LM of another kappa
    from ssmttm.models import build_lm
    from ssmttm.models.checkpoint import save_model
    from ssmttm.models.config import from_preset

    lm2 = save_model(tmp_path / "lm2", build_lm(from_preset("tiny", "prefix-simba", n_codebooks=2, text_dim=32)),
                     {"step": 1})
    assert gen.main(_gen_argv(root, lm2, tmp_path / "y", "--refiner", str(ref_ck))) == 2
    assert "the refiner completes kappa=1" in capsys.readouterr().err
    # a refiner trained on another codec
    other = build_tiny_dac(tmp_path / "other.pth", seed=1)
    weights.fetch("dac_other", str(other), tmp_path / "w", licence="MIT")
    argv = _gen_argv(root, lm_ck, tmp_path / "z", "--refiner", str(ref_ck))
    argv[argv.index("--codec-weights") + 1] = str(tmp_path / "w" / "dac_other.json")
    assert gen.main(argv) == 2
    assert "was trained on codec weights sha256" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        gen.main(_gen_argv(root, lm_ck, tmp_path / "w2", "--refiner-steps", "0"))


# --- the DiscoDiff backend (plumbing only: no real DiscoDiff weights exist publicly) ----------------
class StandInUNet(torch.nn.Module):
    """The call signature of DiscoDiff's secondary UNet1DConditionModel (72 -> 64 channels, T5 context)."""

    def __init__(self, in_channels=32, out_channels=24, cross_attention_dim=32):
        super().__init__()
        self.conv = torch.nn.Conv1d(in_channels, out_channels, 3, padding=1)
        self.ctx = torch.nn.Linear(cross_attention_dim, out_channels)

    def forward(self, sample, timestep, encoder_hidden_states=None, encoder_attention_mask=None):
        from types import SimpleNamespace

        m = encoder_attention_mask[..., None].float()
        ctx = (encoder_hidden_states * m).sum(1) / m.sum(1)
        return SimpleNamespace(sample=self.conv(sample) + self.ctx(ctx)[..., None] + 1e-3 * timestep[:, None, None])


def _discodiff_folder(root, dac_file, t5):
    import json as _json

    torch.manual_seed(0)
    unet = StandInUNet()
    root.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {f"model_secondary.{k}": v for k, v in unet.state_dict().items()}, "epoch": 3},
               root / "discodiff.ckpt")
    np.save(root / "tables.npy", load_dac(dac_file, "cpu").codebook_tables().numpy())
    (root / "discodiff.json").write_text(_json.dumps({
        "unet_class": "test_refiner:StandInUNet", "unet_config": {}, "text_encoder": str(t5),
        "codebook_tables": str(root / "tables.npy"), "n_codebooks": K, "num_train_timesteps": 100}))
    return root


def test_discodiff_backend_plumbing(tmp_path, two_stage, dac_file, capsys, monkeypatch):
    from ssmttm.refiner import discodiff

    monkeypatch.setattr(discodiff, "UNET_CLASSES", (*discodiff.UNET_CLASSES, "test_refiner:StandInUNet"))
    root, lm_ck, _ = two_stage
    folder = _discodiff_folder(tmp_path / "dd", dac_file, root / "weights" / "t5_tiny.json")
    r = load_refiner("discodiff", folder)
    cond = torch.randint(0, 1024, (2, 1, 16), generator=torch.Generator().manual_seed(0))
    sc = D.SamplerConfig(steps=5)
    out = r.refine(cond, [], None, ["piano", "drums"], sc, prompt_seeds(1, ["p0", "p1"], "refiner"))
    assert out.shape == (2, K, 16) and torch.equal(out[:, :1], cond) and int(out.max()) < 1024
    assert torch.equal(out, r.refine(cond, [], None, ["piano", "drums"], sc, prompt_seeds(1, ["p0", "p1"], "refiner")))
    r.check_codec(load_dac(dac_file, "cpu"))
    with pytest.raises(RefinerError, match="not the codebook tables"):
        r.check_codec(load_dac(build_tiny_dac(tmp_path / "o.pth", seed=1), "cpu"))
    # through the generate stage: the same two-stage chain, another backend
    out_dir = tmp_path / "gen"
    assert gen.main(_gen_argv(root, lm_ck, out_dir, "--refiner", str(folder), "--refiner-backend", "discodiff",
                              "--refiner-steps", "4")) == 0
    side = io.read_json(out_dir / "p000.json")
    assert side["refiner_backend"] == "discodiff" and side["decode_kappa"] == K
    # a checkpoint that pickles arbitrary objects is refused; a folder without the files names them
    torch.save({"state_dict": {}, "hparams": StandInUNet()}, folder / "discodiff.ckpt")
    with pytest.raises(RefinerError, match="refused"):
        load_refiner("discodiff", folder)
    with pytest.raises(RefinerError, match="discodiff.json"):
        load_refiner("discodiff", tmp_path)


def test_bench_prints_one_table_and_its_figures(repo, capsys):
    spec = importlib.util.spec_from_file_location("refiner_speed", repo / "bench" / "refiner_speed.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--quick", "--seconds", "0.2", "--threads", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    figures = dict(kv.split("=") for kv in lines[-1].split())
    for key in ("s_per_audio_s_4", "mel_4", "acc_4", "mel_ddim_1", "mel_codebook1_only", "loss_first", "loss_last"):
        assert math.isfinite(float(figures[key])), key
    assert any(line.split()[:1] == ["4"] for line in lines)  # the table row of 4 steps


def test_a_refiner_folder_cannot_name_code_to_run(tmp_path, dac_file):
    """discodiff.json is data: a unet_class outside the package's allow-list is refused before any import."""
    import json as _json

    folder = _discodiff_folder(tmp_path / "dd", dac_file, tmp_path / "t5")
    cfg = _json.loads((folder / "discodiff.json").read_text())
    marker = tmp_path / "ran"
    for name, conf in (("subprocess:call", {"args": f"touch {marker}", "shell": True}),
                       ("os:system", {"command": f"touch {marker}"}), ("test_refiner:StandInUNet", {})):
        (folder / "discodiff.json").write_text(_json.dumps({**cfg, "unet_class": name, "unet_config": conf}))
        with pytest.raises(RefinerError, match="not one of the classes a refiner folder may name"):
            load_refiner("discodiff", folder)
    assert not marker.exists()
