"""``python -m ssmttm generate``: text -> delay-patterned DAC codes -> 44.1 kHz audio.

Decoding (docs/reference.md §1 sampling; MusicGen-style delay pattern, :mod:`ssmttm.pattern`):

- the B prompts and B copies of the empty prompt "" (the unconditional prompt of classifier-free
  guidance) go through the LM as ONE batch of 2B rows with an explicit decoding cache
  (``lm.allocate_cache`` / ``lm.prefill`` / ``lm.step``): each token costs O(1) in the sequence
  length for the Mamba2 sub-layers (a KV cache for self-attention), and one LM call per step;
- the patterned sequence of ``n_tokens + kappa`` steps is generated step by step exactly as the
  model saw it in training: step 0 is the BOS column (SPECIAL_TOKEN for every codebook), and at
  step t codebook k holds a real code only for ``k + 1 <= t <= k + n_tokens``
  (``pattern.valid_mask``); elsewhere SPECIAL_TOKEN is forced instead of sampled;
- logits are combined ``uncond + cfg_scale * (cond - uncond)`` and sampled with temperature and
  top-k (:mod:`ssmttm.generate.sampling`), each prompt with its own generator seeded from (``--seed``,
  prompt id, sample index) (:mod:`ssmttm.rng`; the refiner draws from a second stream);
  the heads have 1024 outputs, so SPECIAL_TOKEN is never sampled for a real position;
- an imported checkpoint (``lm.cfg.compat``, :mod:`ssmttm.importer`) decodes as its own code did:
  its 1025-way heads get logit 1024 masked at real positions, fillers may be sampled, and its prompts
  are encoded with their padding kept (:mod:`ssmttm.generate.compat`);
- ``pattern.revert`` gives ``[kappa, n_tokens]`` codes, which the codec decodes from its first kappa
  codebooks (``n_tokens * hop`` samples at 44.1 kHz for DAC).

Text: each unique prompt (and "") is encoded once by the frozen T5 encoder of the weights receipt
and rounded to float16, as the text store that trained the model holds its states; or, with
``--text-states``, those states are read from the folder ``prompt-embed`` wrote once for the whole
prompt set (:mod:`ssmttm.generate.prompt_embed`, the same encoding bit for bit; the DAG's way).

Outputs in ``--out-dir``: ``<prompt_id>.wav`` (or .flac), a ``<prompt_id>.json`` sidecar {prompt,
prompt_id, seed, checkpoint, checkpoint_sha256, kappa, cfg_scale, temperature, top_k, n_tokens,
seconds, codec, decode_kappa, ...} and, last, ``index.json`` listing them.

:func:`generate_naive` is the authors' way (the whole sequence recomputed every step, cond and
uncond as two passes); tests and ``bench/generation_speed.py`` compare it with the cached path.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ssmttm import io, logs, rng, settings
from ssmttm.constants import CODEBOOK_SIZE, SPECIAL_TOKEN
from ssmttm.errors import SsmttmError
from ssmttm.generate import sampling as smp
from ssmttm.models.checkpoint import MODEL_FILE, load_model, resolve_checkpoint
from ssmttm.refiner import load_refiner
from ssmttm.text.store import pad

log = logging.getLogger("ssmttm.generate")


class GenerationError(SsmttmError, RuntimeError):
    """Generation cannot go on; the message names the checkpoint, codec, prompt or token."""


# --- validation -------------------------------------------------------------------------------------
def check_codes(codes, limit: int, what: str) -> None:
    """Raise :class:`GenerationError` when an id of ``codes`` lies outside ``[0, limit)``."""
    if codes.numel() == 0:
        return
    lo, hi = int(codes.min()), int(codes.max())
    if lo < 0 or hi >= limit:
        bad = hi if hi >= limit else lo
        raise GenerationError(f"{what}: out-of-vocabulary token id {bad} (valid ids are 0..{limit - 1})")


def pad_states(states: list[np.ndarray], device) -> tuple:
    """B arrays [L_i, D] -> (text [B, L, D] float32, mask [B, L] bool) on ``device``, right-padded
    (:func:`ssmttm.text.store.pad`, the batching the LM was trained with)."""
    text, mask = pad(states)
    return text.to(device), mask.to(device)


# --- the decoding loop -------------------------------------------------------------------------------
def decode_pattern(next_logits: Callable, batch: int, kappa: int, n_tokens: int,
                   cfg: smp.SamplingConfig, seeds: list[int], device, compat=None) -> "torch.Tensor":
    """Generate the delay-patterned sequence [B, kappa, n_tokens + kappa] (int64, on ``device``);
    row b draws its noise from a generator seeded with ``seeds[b]`` (:func:`ssmttm.rng.prompt_seeds`).

    ``next_logits(t, seq)`` returns (cond, uncond) logits [B, kappa, 1024] predicting ``seq[:, :, t]``
    from ``seq[:, :, :t]`` (or None at t = 0, where the BOS column is forced).

    ``compat`` (an imported LM's :class:`ssmttm.models.config.CompatConfig`, None for ours): logits have
    ``compat.n_logits`` entries; with 1025 (the special token scored too) logit 1024 is set to -inf
    after CFG wherever a real code is sampled (``special_at_real: mask``), so a real position never
    holds 1024; ``fillers: sampled`` feeds back the token sampled at filler positions too instead of
    SPECIAL_TOKEN (the authors' loop); :func:`revert_codes` drops fillers either way.
    """
    import torch

    from ssmttm import pattern

    S = n_tokens + kappa
    valid = pattern.valid_mask(kappa, n_tokens, like=torch.empty(0, device=device))  # [K, S]
    seq = torch.full((batch, kappa, S), SPECIAL_TOKEN, dtype=torch.long, device=device)
    if len(seeds) != batch:
        raise ValueError(f"decode_pattern: {len(seeds)} seeds for {batch} rows")
    gens = smp.make_generators(seeds, device)
    n_logits = CODEBOOK_SIZE if compat is None else compat.n_logits
    keep = valid if compat is None or compat.fillers == "special" else torch.ones_like(valid)  # sampled, not forced
    for t in range(S):
        out = next_logits(t, seq)
        if t == 0:
            continue  # step 0 is the BOS column: SPECIAL_TOKEN for every codebook, never sampled
        cond, uncond = out
        if cond.shape[-1] != n_logits:
            raise GenerationError(f"the LM heads have {cond.shape[-1]} outputs, expected {n_logits}")
        logits = smp.cfg_combine(cond.float(), uncond.float(), cfg.cfg_scale)
        if n_logits > CODEBOOK_SIZE:  # compat (special_at_real: mask): SPECIAL_TOKEN is no code
            logits[..., CODEBOOK_SIZE:] = logits[..., CODEBOOK_SIZE:].masked_fill(valid[:, t, None], float("-inf"))
        tok = smp.sample(logits, cfg.temperature, cfg.top_k, gens)  # [B, K]
        check_codes(tok, n_logits, f"sampled codes at step {t}")  # never feed an OOV id to the LM
        if n_logits > CODEBOOK_SIZE:
            check_codes(tok[:, valid[:, t]], CODEBOOK_SIZE, f"sampled codes at real positions of step {t}")
        seq[:, :, t] = torch.where(keep[:, t], tok, torch.full_like(tok, SPECIAL_TOKEN))
    return seq


def _per_row(uncond_state, batch: int) -> list:
    """The unconditional states of each of ``batch`` rows: one array for all, or a list of one per row."""
    if isinstance(uncond_state, (list, tuple)):
        if len(uncond_state) != batch:
            raise ValueError(f"{len(uncond_state)} unconditional states for {batch} rows")
        return list(uncond_state)
    return [uncond_state] * batch


def generate_cached(lm, cond_states: list[np.ndarray], uncond_state: np.ndarray, n_tokens: int,
                    cfg: smp.SamplingConfig, seeds: list[int]):
    """Ours: cond and uncond in ONE batch of 2B through the cached decoder, one LM call per step.

    cond_states: B arrays [L_i, text_dim]; uncond_state: [L_0, text_dim] (the empty prompt), or B of
    them (one per row: an imported LM's, :mod:`ssmttm.generate.compat`); seeds: B per-row seeds
    (:func:`ssmttm.rng.prompt_seeds`).
    Returns the patterned sequence [B, kappa, n_tokens + kappa] int64 on the LM's device.
    """
    import torch

    device = next(lm.parameters()).device
    B, K = len(cond_states), lm.cfg.n_codebooks
    text, mask = pad_states(list(cond_states) + _per_row(uncond_state, B), device)
    cache = lm.allocate_cache(2 * B, text, mask)

    def next_logits(t, seq):
        if t == 0:
            lm.prefill(cache)  # consumes the text; its logits predict the forced BOS column
            return None
        prev = seq[:, :, t - 1:t]
        logits = lm.step(torch.cat([prev, prev], dim=0), cache)  # [2B, K, 1024]
        return logits[:B], logits[B:]

    with torch.no_grad():
        return decode_pattern(next_logits, B, K, n_tokens, cfg, seeds, device, compat=lm.cfg.compat)


def generate_naive(lm, cond_states: list[np.ndarray], uncond_state: np.ndarray, n_tokens: int,
                   cfg: smp.SamplingConfig, seeds: list[int], on_step: Callable | None = None):
    """The authors' way: every step runs the FULL forward over the sequence so far, cond and uncond
    as two separate passes, and keeps the last logits (O(n^2)). Same output layout as
    :func:`generate_cached`; ``on_step(t, seq)`` is called after the forward passes of each step
    (timing hooks; ``seq`` is filled in place, steps < t final)."""
    import torch

    device = next(lm.parameters()).device
    B, K = len(cond_states), lm.cfg.n_codebooks
    ctext, cmask = pad_states(list(cond_states), device)
    utext, umask = pad_states(_per_row(uncond_state, B), device)

    def next_logits(t, seq):
        if t == 0:
            return None
        x = seq[:, :, :t + 1]  # logits[:, :, t] depend on seq[:, :, :t] only
        out = lm(x, ctext, cmask)[:, :, t], lm(x, utext, umask)[:, :, t]
        if on_step is not None:
            on_step(t, seq)
        return out

    with torch.no_grad():
        return decode_pattern(next_logits, B, K, n_tokens, cfg, seeds, device, compat=lm.cfg.compat)


def revert_codes(seq) -> "torch.Tensor":
    """Patterned [B, K, T + K] -> codes [B, K, T] (CPU int64), checked to hold no SPECIAL_TOKEN."""
    from ssmttm import pattern

    codes = pattern.revert(seq).cpu()
    check_codes(codes, CODEBOOK_SIZE, "reverted codes")
    return codes


def _meta_sha(meta: dict, key: str) -> str:
    v = meta.get(key)
    return str(v.get("sha256") or "") if isinstance(v, dict) else ""


# --- the generator -----------------------------------------------------------------------------------
class Generator:
    """A loaded checkpoint + codec + T5 encoder; :meth:`run` writes the audio of a prompt set."""

    def __init__(self, checkpoint: str | os.PathLike, codec: str, codec_weights: str | os.PathLike,
                 text_encoder: str | os.PathLike | None = None, device: str = "auto", kappa: int | None = None,
                 max_text_length: int | None = None, refiner=None, refiner_sampler=None,
                 text_states: str | os.PathLike | None = None):
        """Prompts are encoded by the T5 of ``text_encoder`` (a receipt or folder), or read from
        ``text_states`` (a ``prompt-embed`` folder: no T5 is loaded); give exactly one.
        ``refiner``: an :class:`ssmttm.refiner.Refiner` (the two-stage system: the LM's kappa codebooks
        are completed to all K before decoding) with its ``refiner_sampler`` settings, or None."""
        from ssmttm.codec import resolve_device
        from ssmttm.tokens.tokenize import open_codec

        if (text_encoder is None) == (text_states is None):
            raise GenerationError("give the prompts' text encoder (--text-encoder) or their states (--text-states), "
                                  "not both or neither")
        self.device = resolve_device(device)
        self.codec_arg = f"{codec} ({codec_weights})"
        self.codec, self.codec_key = open_codec(codec, codec_weights, self.device)
        if self.codec.cardinality != CODEBOOK_SIZE:
            raise GenerationError(f"codec {codec} ({codec_weights}) has {self.codec.cardinality} codes per "
                                  f"codebook; the LM predicts {CODEBOOK_SIZE}")
        self.encoder = self.tokenizer = self.states = None
        if text_states is not None:
            from ssmttm.generate.prompt_embed import PromptStates

            self.states = PromptStates(text_states)
            self.text_arg, self.text_dim = f"--text-states {text_states}", self.states.d_model
            self.text_key, self.text_sha256 = self.states.encoder_key, self.states.weights_sha256
        else:
            from ssmttm.text.embed import encoder_identity
            from ssmttm.text.encoder import load_t5_encoder

            self.text_arg = f"--text-encoder {text_encoder}"
            self.text_key, self.text_sha256 = encoder_identity(text_encoder)
            self.encoder, self.tokenizer = load_t5_encoder(text_encoder, str(self.device))
            self.text_dim = int(self.encoder.config.d_model)
        self.requested_max_length = max_text_length  # None: the checkpoint's (checked in load_checkpoint)
        self.refiner, self.refiner_sampler = refiner, refiner_sampler
        if refiner is not None:
            refiner.check_codec(self.codec)
        self.load_checkpoint(checkpoint, kappa)

    def load_checkpoint(self, checkpoint: str | os.PathLike, kappa: int | None = None) -> None:
        """Load (or swap in) the LM of ``checkpoint``, keeping the codec and the text encoder: one job
        samples several checkpoints of a run without reloading them. Checks the checkpoint against both."""
        self.ckpt_dir = resolve_checkpoint(checkpoint)
        self.lm, self.meta = load_model(self.ckpt_dir, self.device, kappa)  # CheckpointError on a kappa mismatch
        self.kappa = int(self.lm.cfg.n_codebooks)
        self.checkpoint_sha256 = io.sha256_file(self.ckpt_dir / MODEL_FILE)
        if self.kappa > self.codec.n_codebooks:
            raise GenerationError(f"checkpoint {self.ckpt_dir} models kappa={self.kappa} codebooks but codec "
                                  f"{self.codec_arg} has only {self.codec.n_codebooks}")
        from ssmttm import pattern

        laid_out = self.meta.get("pattern")
        if laid_out is not None and laid_out != pattern.NAME:
            raise GenerationError(f"checkpoint {self.ckpt_dir} was trained on codes laid out as {laid_out!r}; "
                                  f"generation decodes the {pattern.NAME!r} pattern")
        want = _meta_sha(self.meta, "codec")
        if want and want != self.codec.weights_sha256:
            raise GenerationError(f"checkpoint {self.ckpt_dir} was trained on codec tokens of sha256 {want[:12]}, "
                                  f"but --codec-weights {self.codec_arg} has sha256 {self.codec.weights_sha256[:12]}")
        want = _meta_sha(self.meta, "text_encoder")
        if want and want != self.text_sha256:
            raise GenerationError(f"checkpoint {self.ckpt_dir} was trained with text encoder sha256 {want[:12]}, "
                                  f"but {self.text_arg} has sha256 {self.text_sha256[:12]}")
        compat = self.lm.cfg.compat
        if self.states is not None and compat is not None and compat.text_keep_padding:
            raise GenerationError(f"checkpoint {self.ckpt_dir} ({compat.source}) encodes its prompts with their "
                                  f"padding kept: generate it with --text-encoder, not --text-states")
        if self.refiner is not None and self.refiner.cond_codebooks != self.kappa:
            raise GenerationError(f"checkpoint {self.ckpt_dir} models kappa={self.kappa} codebooks, the refiner "
                                  f"completes kappa={self.refiner.cond_codebooks}")
        self.max_text_length = self._text_max_length()
        if self.states is not None and self.states.max_length != self.max_text_length:
            raise GenerationError(f"{self.text_arg} holds prompts cut at {self.states.max_length} T5 tokens but "
                                  f"checkpoint {self.ckpt_dir} was trained on {self.max_text_length}; re-run "
                                  f"prompt-embed with --max-length {self.max_text_length}")
        if self.text_dim != self.lm.cfg.text_dim:
            raise GenerationError(f"{self.text_arg} gives {self.text_dim}-d states but checkpoint "
                                  f"{self.ckpt_dir} expects text_dim={self.lm.cfg.text_dim}")

    def _text_max_length(self) -> int:
        """Prompts are truncated exactly as the checkpoint's training captions were (its text store's
        max_length, recorded in meta.json); a different requested length is an error naming both."""
        trained = (self.meta.get("text_encoder") or {}).get("max_length")
        asked = self.requested_max_length
        if trained is not None and asked is not None and int(asked) != int(trained):
            raise GenerationError(f"--max-length {asked} (config text.max_length) differs from the {trained} tokens "
                                  f"checkpoint {self.ckpt_dir} was trained with; re-run text-embed and training, "
                                  f"or generate with --max-length {trained}")
        if trained is None and asked is None:
            from ssmttm import settings

            asked = settings.defaults(("text",))["max_length"]
            log.warning("checkpoint %s does not record its text max_length; truncating prompts at %d tokens "
                        "(config text.max_length default)", self.ckpt_dir, asked)
        return int(trained if trained is not None else asked)

    def encode_texts(self, texts: list[str]) -> dict[str, np.ndarray]:
        """Each unique text once -> {text: float32 [L, text_dim]} (values rounded through float16, as the
        text store holds them for training): from the prompt states, or encoded by T5 here."""
        from ssmttm.generate.prompt_embed import PromptStatesError, encode_prompts

        try:
            if self.states is not None:
                return self.states.states(texts)
            return encode_prompts(self.encoder, self.tokenizer, texts, self.max_text_length)
        except PromptStatesError as exc:
            raise GenerationError(str(exc)) from None

    def check_prompts(self, texts: list[str]) -> None:
        """Fail before any sampling (GenerationError naming the folder) when the prompt states lack one of
        ``texts`` or the empty prompt; nothing to check when T5 encodes them here."""
        from ssmttm.generate.prompt_embed import PromptStatesError

        if self.states is not None:
            try:
                self.states.check([*texts, ""])
            except PromptStatesError as exc:
                raise GenerationError(str(exc)) from None

    def generate_codes(self, states: list[np.ndarray], uncond: np.ndarray, n_tokens: int,
                       cfg: smp.SamplingConfig, seeds: list[int], texts: list[str] | None = None):
        """-> codes [B, kappa, n_tokens] int64 on CPU (reverted, all in [0, 1024)); ``seeds``: one per row.

        An imported LM that keeps padded text states (``compat.text_keep_padding``) is given states
        encoded its way from ``texts`` (the rows' prompts) instead of ``states`` / ``uncond``."""
        compat = self.lm.cfg.compat
        if compat is not None and compat.text_keep_padding:
            from ssmttm.generate.compat import prompt_states

            if texts is None or len(texts) != len(states):
                raise GenerationError(f"checkpoint {self.ckpt_dir} ({compat.source}) needs the prompt texts")
            enc = prompt_states(self.encoder, self.tokenizer, texts, compat, self.max_text_length)
            states, uncond = [enc[t][0] for t in texts], [enc[t][1] for t in texts]
        return revert_codes(generate_cached(self.lm, states, uncond, n_tokens, cfg, seeds))

    def decode(self, codes) -> np.ndarray:
        """codes [B, kappa, T] -> audio [B, T * hop] float32 from the codec's first kappa codebooks."""
        check_codes(codes, CODEBOOK_SIZE, f"codes given to codec {self.codec.name}")
        return self.codec.decode(codes).numpy()[:, 0]

    def run(self, prompts: list[tuple[str, str]], out_dir: str | os.PathLike, n_tokens: int,
            cfg: smp.SamplingConfig, seed: int = 0, batch_size: int = 8, audio_format: str = "wav",
            prompt_set: str = "") -> dict:
        """Generate every prompt, write audio + sidecars, then index.json; returns the index."""
        from ssmttm import audio

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        enc = self.encode_texts([t for _, t in prompts] + [""])
        sr = int(self.codec.sample_rate)
        settings = {"seed": int(seed), "rng": rng.RNG_SCHEME, "checkpoint": str(self.ckpt_dir),
                    "checkpoint_sha256": self.checkpoint_sha256,
                    "kappa": self.kappa, **cfg.to_dict(), "n_tokens": int(n_tokens),
                    "seconds": n_tokens / self.codec.frame_rate, "codec": self.codec.name,
                    "codec_weights": self.codec_key, "codec_sha256": self.codec.weights_sha256,
                    "decode_kappa": self.kappa if self.refiner is None else self.refiner.n_codebooks,
                    "stages": "single-stage" if self.refiner is None else "two-stage",
                    **({} if self.refiner is None else {**self.refiner.describe(), **self.refiner_sampler.to_dict()}),
                    "text_encoder": self.text_key, "text_encoder_sha256": self.text_sha256, "text_max_length": self.max_text_length,
                    "sample_rate": sr, "variant": self.lm.cfg.variant, "step": self.meta.get("step"),
                    "prompt_set": prompt_set}
        items, rejected, gen_s, refine_s = [], [], 0.0, 0.0
        for b in range(0, len(prompts), batch_size):
            chunk = prompts[b:b + batch_size]
            tb = time.time()
            states = [enc[t] for _, t in chunk]
            pids = [pid for pid, _ in chunk]
            lm_seeds = rng.prompt_seeds(seed, pids, "lm")
            codes = self.generate_codes(states, enc[""], n_tokens, cfg, lm_seeds, texts=[t for _, t in chunk])
            gen_s += time.time() - tb
            if self.refiner is not None:  # two-stage: codebooks kappa+1..K from the refiner
                tr = time.time()
                codes = self.refiner.refine(codes, states, enc[""], [t for _, t in chunk], self.refiner_sampler,
                                            rng.prompt_seeds(seed, pids, "refiner"))
                refine_s += time.time() - tr
            wav = self.decode(codes)
            for (pid, text), x, lm_seed in zip(chunk, wav, lm_seeds):
                if not np.all(np.isfinite(x)):
                    log.error("prompt %s: decoded audio has non-finite samples; skipped", pid)
                    rejected.append({"prompt_id": pid, "reason": "non-finite decoded audio"})
                    continue
                name = f"{pid}.{audio_format}"
                audio.write(out / name, x[None], sr)
                side = {"prompt": text, "prompt_id": pid, **settings, "sample": 0, "lm_seed": lm_seed,
                        **({} if self.refiner is None else {"refiner_seed": rng.sample_seed(seed, pid, 0, "refiner")}),
                        "audio": name, "n_samples": int(x.shape[-1])}
                io.write_json(out / f"{pid}.json", side)
                items.append({"prompt_id": pid, "prompt": text, "audio": name, "sidecar": f"{pid}.json"})
            log.info("generated %d/%d prompts (%.1f delayed steps/s, %d prompts per batch)",
                     min(b + batch_size, len(prompts)), len(prompts),
                     (n_tokens + self.kappa) / max(time.time() - tb, 1e-9), len(chunk))
        index = {**settings, "n_prompts": len(prompts), "items": items, "rejected": rejected,
                 "generate_seconds": round(gen_s, 3), "refine_seconds": round(refine_s, 3),
                 "elapsed_s": round(time.time() - t0, 3),
                 "frames_per_s": round(len(prompts) * (n_tokens + self.kappa) / max(gen_s, 1e-9), 2)}
        io.write_json(out / "index.json", index)
        return index


# --- stage ------------------------------------------------------------------------------------------------
def parse_args(argv: list[str]) -> argparse.Namespace:
    """Flags -> namespace with ``settings`` (GenerateSettings), ``refiner_settings`` (RefinerSampling),
    ``sampling`` and ``refiner_sampling``; a bad value fails naming the flag and its config key."""
    from ssmttm.generate.options import GenerateSettings, RefinerSampling

    p = argparse.ArgumentParser(prog="ssmttm generate", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, action="append",
                   help="checkpoint folder ckpt/step_N, or a run folder (uses ckpt/last); repeat with one --out-dir "
                        "each to sample several checkpoints of a run in one job (codec and T5 loaded once)")
    p.add_argument("--codec-weights", required=True, help="codec weights receipt results/weights/<key>.json or a file")
    text = p.add_mutually_exclusive_group(required=True)
    text.add_argument("--text-encoder", help="T5 weights receipt results/weights/<key>.json or a folder: prompts are "
                                             "encoded here")
    text.add_argument("--text-states", help="the prompts' T5 states, encoded once by `ssmttm prompt-embed` "
                                            "(results/generate/prompts/<set>.states); no T5 is loaded")
    p.add_argument("--prompts-file", default=None, help=".txt/.csv/.json/.yaml prompts (demo and file sets)")
    p.add_argument("--prompt", action="append", default=None, help="a prompt text (repeatable; demo set)")
    p.add_argument("--refiner", default=None,
                   help="two-stage: a refiner checkpoint (train_refiner run folder, ckpt/step_N or done.json; or a "
                        "DiscoDiff checkpoint with --refiner-backend discodiff) that completes the LM's codebooks")
    p.add_argument("--out-dir", required=True, action="append",
                   help="results/generate/<exp>/seed<S>/step_N/<set> (one per --checkpoint, same order)")
    settings.add_arguments(p, GenerateSettings)
    settings.add_arguments(p, RefinerSampling, prefix="refiner-")
    args = p.parse_args(argv)
    if len(args.out_dir) != len(args.checkpoint):
        p.error(f"--out-dir: give one per --checkpoint ({len(args.checkpoint)} checkpoints, {len(args.out_dir)} "
                f"out dirs)")
    args.settings = cfg = settings.from_args(p, GenerateSettings, args)
    args.refiner_settings = rs = settings.from_args(p, RefinerSampling, args, prefix="refiner-")
    args.sampling = smp.from_recipe(cfg, p)
    from ssmttm.refiner.diffusion import SamplerConfig

    try:
        args.refiner_sampling = SamplerConfig(rs.steps, rs.cfg_scale, rs.sampler)
    except ValueError as exc:
        p.error(f"--refiner-*: {exc}")
    return args


def main(argv: list[str]) -> int | None:
    """``generate``: sample audio for a prompt set from one LM checkpoint."""
    from ssmttm.generate.prompts import load_prompt_set

    logs.setup()
    args = parse_args(argv)
    cfg = args.settings
    try:
        prompts = load_prompt_set(cfg.prompt_set, prompts=args.prompt, prompts_file=args.prompts_file)
        refiner = None
        if args.refiner:
            refiner = load_refiner(args.refiner_settings.backend, args.refiner, cfg.device)  # resolves "auto"
        gen = Generator(args.checkpoint[0], cfg.codec, args.codec_weights, args.text_encoder, cfg.device,
                        kappa=cfg.kappa, max_text_length=cfg.max_length, refiner=refiner,
                        refiner_sampler=args.refiner_sampling, text_states=args.text_states)
        gen.check_prompts([t for _, t in prompts])
    except SsmttmError as exc:  # prompts, checkpoint, codec, text encoder, weights, refiner: named, no traceback
        log.error("%s", exc)
        return 2
    ok = True
    for i, (ckpt, out_dir) in enumerate(zip(args.checkpoint, args.out_dir)):
        if i:
            try:
                gen.load_checkpoint(ckpt, cfg.kappa)
            except SsmttmError as exc:
                log.error("%s", exc)
                return 2
        index = gen.run(prompts, out_dir, cfg.n_tokens, args.sampling, seed=cfg.seed,
                        batch_size=cfg.batch_size, audio_format=cfg.format, prompt_set=cfg.prompt_set)
        log.info("wrote %d clips (%d rejected) to %s in %.1f s", len(index["items"]), len(index["rejected"]),
                 out_dir, index["elapsed_s"])
        ok = ok and bool(index["items"])
    return 0 if ok else 1
