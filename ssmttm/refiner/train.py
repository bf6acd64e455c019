"""``python -m ssmttm train-refiner``: train the two-stage system's refiner on the token store.

The refiner learns the DAC latents of codebooks ``kappa + 1 .. K`` from codebook(s) ``1 .. kappa`` and
the caption, on the same clips, crops, captions and CFG dropout as the LM (its targets are the
stored codes' codebook vectors, so nothing is re-encoded). It is :class:`ssmttm.train.loop.Trainer`
with four hooks replaced, so it resumes exactly like the LM (same checkpoint layout with
``refiner_config.json``, same logs, DDP through torchrun):

- data: :class:`ssmttm.tokens.dataset.TokenDataset` over all K codebooks without the delay pattern;
- model: :class:`ssmttm.refiner.model.RefinerNet` with the codec's codebook tables installed (the
  codec weights are read once, at the start of a fresh run; a resumed run takes them from its
  checkpoint);
- loss: the v-prediction MSE (:func:`ssmttm.refiner.diffusion.v_loss`); the validation loss uses a
  fixed ``t`` and noise per batch, so it is comparable across checkpoints;
- FLOPs: one forward of the refiner counted by ``ssmttm.train.flops.flop_counter`` (per frame).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ssmttm import logs
from ssmttm.refiner.checkpoint import CONFIG_FILE as REFINER_CONFIG_FILE
from ssmttm.train.loop import Trainer, run_stage
from ssmttm.train.options import TrainConfig, common_parser, finish


@dataclass(kw_only=True)
class RefinerTrainConfig(TrainConfig):
    """TrainConfig whose settings are a refiners.<name> section (with its ``train:`` overrides merged into
    the shared recipe); ``kappa`` = codebooks given. The codec is the token store's."""

    SCHEMA_NODES = ("train", "refiners.*")

    def recipe(self) -> dict[str, Any]:
        r = super().recipe()
        r.pop("label_smoothing", None)  # not a classification loss
        return {**r, "objective": "v-prediction MSE, cosine schedule"}


def parse_args(argv: list[str]) -> RefinerTrainConfig:
    p = common_parser("ssmttm train-refiner", "Train the two-stage refiner (diffusion over DAC latents of "
                                              "codebooks kappa+1..K given codebooks 1..kappa and the text).",
                      RefinerTrainConfig)
    return finish(p, p.parse_args(argv), RefinerTrainConfig, variant="refiner", checkpoints=[])


class RefinerTrainer(Trainer):
    MODEL_KIND = "refiner"
    CONFIG_FILE = REFINER_CONFIG_FILE
    PATTERN = "aligned"  # codebooks 1..K frame by frame, no delay

    def _build(self) -> None:
        from ssmttm.refiner.config import refiner_from_preset
        from ssmttm.refiner.model import build_refiner
        from ssmttm.tokens.store import TokenStore

        cfg = self.cfg
        if not cfg.codec_weights:
            raise ValueError("--codec-weights: the refiner needs the codec's codebook tables (a weights receipt)")
        K = TokenStore(cfg.tokens).n_codebooks
        if cfg.kappa >= K:
            raise ValueError(f"--kappa {cfg.kappa}: the token shards {cfg.tokens} hold {K} codebooks, nothing is "
                             "left for a refiner to generate")
        self._load_data(K, delay=False)
        tables = self._codebook_tables()
        overrides = self._overrides((("n_codebooks", K), ("cond_codebooks", cfg.kappa), ("dropout", cfg.dropout),
                                     ("text_dim", self.train_ds.text.d_model), ("codebook_dim", int(tables.shape[-1])),
                                     ("cardinality", int(tables.shape[1]))),
                                    "the token store / --kappa / --dropout / the text store / the codec")
        self.model_cfg = refiner_from_preset(cfg.preset, **overrides)
        self.net = build_refiner(self.model_cfg, device=self.device)
        self.net.set_codebooks(tables)  # a resumed run reloads the same tables from its checkpoint

    def _codebook_tables(self):
        """The codec's codebook tables [K, cardinality, D], checked to be the token store's codec."""
        from ssmttm.codec import CodecError
        from ssmttm.tokens.tokenize import open_codec

        cfg = self.cfg
        try:
            codec, _ = open_codec(self.train_ds._tokens().meta["codec"], cfg.codec_weights, "cpu")
            tables = codec.codebook_tables()
        except CodecError as exc:
            raise ValueError(f"--codec-weights {cfg.codec_weights}: {exc}") from exc
        want = self.train_ds._tokens().meta.get("weights_sha256")
        if want and want != codec.weights_sha256:
            raise ValueError(f"--codec-weights {cfg.codec_weights} (sha256 {codec.weights_sha256[:12]}) is not the "
                             f"codec of the token shards {cfg.tokens} (sha256 {want[:12]})")
        return tables

    def _embeddings(self):
        return self.net.cond_emb

    def _targets(self, batch):
        """(x0 normalised latents [B, C, T], given codes [B, kappa, T], frame mask [B, T]) on the device."""
        codes = batch["codes"].to(self.device, non_blocking=True)
        k = self.model_cfg.cond_codebooks
        x0 = self.net.normalise(self.net.latents(codes[:, k:], k))
        return x0, codes[:, :k], batch["codes_mask"][:, 0].to(self.device)

    def _micro_loss(self, batch):
        from ssmttm.refiner.diffusion import v_loss

        x0, given, frames = self._targets(batch)
        with self._autocast():
            return v_loss(self.model, x0, given, batch["text"].to(self.device), batch["text_mask"].to(self.device),
                          frames)

    def _val_sums(self, batch, index: int) -> tuple[float, float, float]:
        import torch

        from ssmttm.refiner.diffusion import v_loss

        x0, given, frames = self._targets(batch)
        g = torch.Generator().manual_seed(10_007 * (index + 1))  # the same t and noise at every checkpoint
        t = torch.rand(x0.shape[0], generator=g).to(self.device)
        noise = torch.randn(x0.shape, generator=g).to(self.device)
        with self._autocast():
            loss = float(v_loss(self.net, x0, given, batch["text"].to(self.device),
                                batch["text_mask"].to(self.device), frames, t=t, noise=noise))
        n = float(frames.sum())
        return loss * n, loss * n, n

    def _forward_flops(self, batch) -> tuple[int, int]:
        import torch

        from ssmttm.train.flops import flop_counter  # attention kernels counted on CPU too

        x0, given, frames = self._targets(batch)
        t = torch.full((x0.shape[0],), 0.5, device=self.device)
        self.net.eval()
        with torch.no_grad(), flop_counter() as counter:
            self.net(x0, t, given, batch["text"].to(self.device), batch["text_mask"].to(self.device), frames)
        return int(counter.get_total_flops()), int(x0.shape[0] * x0.shape[-1])


def main(argv: list[str]) -> int:
    logs.setup()
    return run_stage(RefinerTrainer, parse_args(argv))
