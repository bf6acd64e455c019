"""``python -m ssmttm generate-musicgen``: the MusicGen baseline, generated on our prompt set in our layout.

The paper's headline comparison is against MusicGen-small. Its published scores come from another
evaluation protocol, so this stage generates the released checkpoint (``facebook/musicgen-small``,
transformers' ``MusicgenForConditionalGeneration``, pinned in the weights manifest) on the SAME prompt
set, clip length, guidance and sampling settings as our ``generate`` stage, and writes exactly its
output layout (``<prompt_id>.wav``, a ``<prompt_id>.json`` sidecar, then ``index.json``), so the
evaluation jobs score it unchanged.

Decoding is our own loop over the model's forward, not ``model.generate``:

- ``generate`` draws from torch's global RNG, so a prompt's sample would depend on its batch
  neighbours and on the prompt order; here each (prompt, sample) draws from its own generator seeded
  from (``--seed``, prompt id, sample index) in the ``musicgen`` stream (:mod:`ssmttm.rng`), through
  our sampler (:func:`ssmttm.generate.sampling.sample`: temperature, top-k, Gumbel-max per row);
- the text of each prompt is encoded alone by the checkpoint's T5 encoder (no padding), projected to
  the decoder's width and masked exactly as ``MusicgenForConditionalGeneration.forward`` does; the
  unconditional input of classifier-free guidance is transformers' (and audiocraft's) null condition:
  zero states with an all-zero attention mask. Cond and uncond rows go through the decoder as ONE
  batch of 2B rows (cond first), with the decoder's KV cache (one token per step), and their logits
  are combined ``uncond + cfg_scale * (cond - uncond)`` (transformers'
  ``ClassifierFreeGuidanceLogitsProcessor``; at ``cfg_scale`` 1 the uncond rows are skipped, as there);
- the delay pattern is the model's own (``MusicgenForCausalLM.build_delay_pattern_mask``): step 0 is
  the BOS column (``decoder_start_token_id``, 2048 for MusicGen), codebook k holds real codes at steps
  ``k+1 .. k+T`` and the pad token (2048) elsewhere, forced instead of sampled;
- the reverted codes ``[B, K, T]`` are decoded one prompt at a time by the checkpoint's audio encoder
  (EnCodec 32 kHz for MusicGen-small), so a prompt's audio depends on its codes alone.

With ``top_k`` 1 the loop returns the codes of ``model.generate(do_sample=False, guidance_scale=...)``
(tested on a tiny random-init model built by :func:`build_tiny_musicgen`, which the demo mirror also
writes).

Length: ``seconds`` (config ``systems.<name>.seconds``), or when it is null the length of our clips,
``generate.n_tokens`` DAC frames / 86.13 frames/s; MusicGen generates ``round(seconds * 50)`` EnCodec
frames (audiocraft truncates, ``int(duration * frame_rate)``; equal for whole seconds).

MusicGen's own sampling defaults, for reference (audiocraft ``MusicGen.set_generation_params``,
audiocraft/models/musicgen.py): ``use_sampling=True, top_k=250, top_p=0.0, temperature=1.0,
cfg_coef=3.0``. This stage uses the ``generate`` section's values (our temperature is 1.2), so both
systems are sampled alike; pass ``--temperature 1.0`` to sample MusicGen with its own recipe.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

import numpy as np

from ssmttm import io, logs, rng, settings
from ssmttm.errors import SsmttmError
from ssmttm.generate import sampling as smp
from ssmttm.generate.options import MusicgenSettings

log = logging.getLogger("ssmttm.generate.musicgen")

SYSTEM_KIND = "musicgen"
RNG_STREAM = "musicgen"  # ssmttm.rng.STREAMS: MusicGen's noise is not a function of our LM's
# The files a transformers MusicGen folder must hold (save_pretrained / the hub snapshot).
CONFIG_FILE = "config.json"
TOKENIZER_FILES = ("tokenizer.json", "spiece.model", "tokenizer_config.json")


class MusicgenError(SsmttmError, ValueError):
    """A MusicGen folder, prompt file or setting that cannot be used; the message names it."""


def clip_seconds(s: MusicgenSettings) -> float:
    """``s.seconds``, or the length of our clips (``n_tokens`` DAC frames) when it is null."""
    from ssmttm.constants import FRAME_RATE

    return float(s.seconds) if s.seconds is not None else s.n_tokens / FRAME_RATE


# --- loading ------------------------------------------------------------------------------------------
def load_musicgen(weights: str | os.PathLike, device: str = "cpu"):
    """(model in eval mode on ``device``, tokenizer, folder) from a LOCAL transformers MusicGen folder.

    ``weights``: a weights receipt (``results/weights/<key>.json``) or a folder saved with
    ``save_pretrained`` (the ``facebook/musicgen-small`` snapshot, or :func:`build_tiny_musicgen`'s).
    Never downloads (hub offline, ``local_files_only``); loads safetensors only (a snapshot's pickled
    ``*.bin`` files are never read). Raises :class:`MusicgenError` naming the folder and what is wrong.
    """
    from ssmttm import weight_cache
    from ssmttm.text.encoder import import_transformers

    folder = weight_cache.local_path(weights)  # MissingWeightError (an SsmttmError) naming the path
    if not folder.is_dir():
        raise MusicgenError(f"MusicGen weights {folder}: expected a folder saved with save_pretrained "
                            f"(config.json, model.safetensors, tokenizer files), got a file")
    if not (folder / CONFIG_FILE).is_file():
        raise MusicgenError(f"MusicGen weights {folder}: no {CONFIG_FILE} (not a transformers model folder)")
    if not any((folder / f).is_file() for f in TOKENIZER_FILES):
        raise MusicgenError(f"MusicGen weights {folder}: no tokenizer files (expected one of {list(TOKENIZER_FILES)})")
    model_type = io.read_json(folder / CONFIG_FILE).get("model_type")
    if model_type != "musicgen":
        raise MusicgenError(f"MusicGen weights {folder}: {CONFIG_FILE} describes a {model_type!r} model, "
                            f"not 'musicgen'")
    tf = import_transformers()
    with weight_cache.offline_env():
        try:
            tokenizer = tf.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            model = tf.MusicgenForConditionalGeneration.from_pretrained(str(folder), local_files_only=True,
                                                                        use_safetensors=True)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise MusicgenError(f"MusicGen weights {folder}: cannot load ({type(exc).__name__}: "
                                f"{str(exc)[:400]})") from exc
    if model.config.decoder.audio_channels != 1:
        raise MusicgenError(f"MusicGen weights {folder}: a stereo checkpoint ({model.config.decoder.audio_channels} "
                            f"channels); only mono MusicGen (musicgen-small/medium/large) is supported")
    model.to(device).eval()
    model.requires_grad_(False)
    return model, tokenizer, folder


def weights_identity(weights: str | os.PathLike) -> tuple[str, str]:
    """(weights key, sha256) of a receipt, or of a plain folder (its name and tree hash)."""
    from ssmttm.text.embed import encoder_identity

    return encoder_identity(weights)


# --- text ---------------------------------------------------------------------------------------------
def encode_text(model, tokenizer, text: str):
    """One prompt alone through the checkpoint's T5 encoder, then ``enc_to_dec_proj`` when the widths
    differ (as ``MusicgenForConditionalGeneration.forward``). Returns [L, decoder hidden] float."""
    import torch

    dev = next(model.parameters()).device
    ids = torch.tensor([tokenizer(text)["input_ids"]], dtype=torch.long, device=dev)
    with torch.inference_mode():
        h = model.text_encoder(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
        if (model.text_encoder.config.hidden_size != model.decoder.config.hidden_size
                and model.decoder.config.cross_attention_hidden_size is None):
            h = model.enc_to_dec_proj(h)
    return h[0]


def pad_states(states: list, with_uncond: bool):
    """B states [L_i, D] -> (hidden [R, L, D], mask [R, L] long), right-padded with zeros and masked;
    with ``with_uncond`` the B null-condition rows (zeros, mask 0) follow, R = 2B."""
    import torch

    B, L = len(states), max(int(s.shape[0]) for s in states)
    R = 2 * B if with_uncond else B
    h = torch.zeros((R, L, states[0].shape[-1]), dtype=states[0].dtype, device=states[0].device)
    mask = torch.zeros((R, L), dtype=torch.long, device=states[0].device)
    for i, s in enumerate(states):
        h[i, :s.shape[0]] = s
        mask[i, :s.shape[0]] = 1
    return h, mask


# --- the decoding loop --------------------------------------------------------------------------------
def generate_codes(model, states: list, n_frames: int, cfg: smp.SamplingConfig, seeds: list[int]):
    """Sample ``n_frames`` frames for B prompts: codes [B, K, n_frames] int64 on CPU.

    ``states``: B tensors [L_i, D] from :func:`encode_text`; ``seeds``: one per row
    (:func:`ssmttm.rng.prompt_seeds`). The model's delay pattern, CFG over one 2B batch and the decoder's
    KV cache, one decoder call per step (see the module docstring).
    """
    import torch

    dec = model.decoder  # MusicgenForCausalLM
    gc = model.generation_config
    K, B, dev = int(dec.num_codebooks), len(states), states[0].device
    if len(seeds) != B:
        raise ValueError(f"generate_codes: {len(seeds)} seeds for {B} prompts")
    bos = gc.decoder_start_token_id if gc.decoder_start_token_id is not None else gc.bos_token_id
    pad = int(gc.pad_token_id)
    S = n_frames + K  # the BOS column, n_frames codes per codebook, delayed by up to K steps
    start = torch.full((B * K, 1), int(bos), dtype=torch.long, device=dev)
    _, pattern = dec.build_delay_pattern_mask(start, pad_token_id=pad, max_length=S)
    pattern = pattern.reshape(B, K, S)  # -1: sample here; anything else: forced (BOS / pad)
    free = pattern == -1
    if int(free[0].sum()) != K * n_frames:
        raise MusicgenError(f"the model's delay pattern leaves {int(free[0].sum())} positions for {K} codebooks x "
                            f"{n_frames} frames")
    guided = cfg.cfg_scale != 1.0
    hidden, mask = pad_states(states, with_uncond=guided)
    hidden = hidden * mask[..., None].to(hidden.dtype)  # as MusicgenForConditionalGeneration.forward
    gens = rng.make_generators(seeds, dev)
    # forced positions hold the pattern's value (the pad token, also at the BOS column: transformers'
    # apply_delay_pattern_mask overwrites the decoder_start token there, and MusicGen's are both 2048)
    seq = torch.where(free, torch.full_like(pattern, pad), pattern)
    cache = None
    with torch.inference_mode():
        for t in range(1, S):
            prev = seq[:, :, t - 1].reshape(B * K, 1)
            if guided:
                prev = prev.repeat(2, 1)  # cond rows, then uncond rows (transformers' layout)
            out = dec(input_ids=prev, encoder_hidden_states=hidden, encoder_attention_mask=mask,
                      cache=cache, use_cache=True)
            cache = out.cache
            logits = out.logits[:, -1].float().reshape(-1, K, out.logits.shape[-1])  # [R, K, V]
            if guided:
                logits = smp.cfg_combine(logits[:B], logits[B:], cfg.cfg_scale)
            tok = smp.sample(logits, cfg.temperature, cfg.top_k, gens)  # [B, K]
            seq[:, :, t] = torch.where(free[:, :, t], tok, seq[:, :, t])
    codes = seq[free].reshape(B, K, n_frames).cpu()
    V = int(dec.config.vocab_size)
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= V):
        raise MusicgenError(f"sampled codes outside the codebook [0, {V}): {int(codes.min())}..{int(codes.max())}")
    return codes


def decode(model, codes) -> np.ndarray:
    """codes [B, K, T] -> mono audio [B, N] float32, one prompt per audio-encoder call."""
    import torch

    dev = next(model.audio_encoder.parameters()).device
    out = []
    with torch.inference_mode():
        for c in codes:
            wav = model.audio_encoder.decode(c[None, None].to(dev), audio_scales=[None]).audio_values  # [1, 1, N]
            out.append(wav[0, 0].float().cpu().numpy())
    return np.stack(out)


# --- the generator ------------------------------------------------------------------------------------
class MusicgenGenerator:
    """A loaded MusicGen checkpoint; :meth:`run` writes the audio of a prompt set in generate's layout."""

    def __init__(self, weights: str | os.PathLike, device: str = "auto"):
        from ssmttm.codec import resolve_device

        self.device = resolve_device(device)
        self.model, self.tokenizer, self.folder = load_musicgen(weights, self.device)
        self.weights_key, self.weights_sha256 = weights_identity(weights)
        self.sample_rate = int(self.model.config.audio_encoder.sampling_rate)
        self.frame_rate = float(self.model.config.audio_encoder.frame_rate)
        self.kappa = int(self.model.decoder.num_codebooks)

    def n_frames(self, seconds: float) -> int:
        n = round(seconds * self.frame_rate)
        if n < 1:
            raise MusicgenError(f"--seconds {seconds}: shorter than one frame at {self.frame_rate:g} frames/s")
        trained = self.model.generation_config.max_length
        if trained and n + self.kappa > trained:
            log.warning("%d frames (%.1f s) exceed the %d steps of MusicGen's generation config (max_length); "
                        "the model was trained on shorter clips", n, seconds, trained)
        return n

    def run(self, records: list[dict], out_dir: str | os.PathLike, seconds: float, cfg: smp.SamplingConfig,
            seed: int = 0, batch_size: int = 8, audio_format: str = "wav", prompt_set: str = "",
            sample: int = 0) -> dict:
        """Generate every prompt record ({prompt_id, text, ...}); write audio + sidecars, then index.json."""
        import transformers

        from ssmttm import audio

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        n_frames = self.n_frames(seconds)
        states = {}
        for r in records:
            if r["text"] not in states:
                states[r["text"]] = encode_text(self.model, self.tokenizer, r["text"])
        settings_ = {"seed": int(seed), "rng": rng.RNG_SCHEME, "rng_stream": RNG_STREAM, "system_kind": SYSTEM_KIND,
                     "checkpoint": str(self.folder), "checkpoint_sha256": self.weights_sha256,
                     "weights": self.weights_key, "kappa": self.kappa, **cfg.to_dict(), "n_tokens": n_frames,
                     "seconds": n_frames / self.frame_rate, "frame_rate": self.frame_rate,
                     "codec": str(self.model.config.audio_encoder.model_type), "decode_kappa": self.kappa,
                     "stages": "single-stage", "variant": "musicgen", "step": None, "sample_rate": self.sample_rate,
                     "n_params": sum(p.numel() for p in self.model.decoder.parameters()),
                     "device": str(self.device), "dtype": str(self.model.dtype).replace("torch.", ""),
                     "transformers": transformers.__version__, "prompt_set": prompt_set}
        items, rejected, gen_s = [], [], 0.0
        for b in range(0, len(records), batch_size):
            chunk = records[b:b + batch_size]
            pids = [str(r["prompt_id"]) for r in chunk]
            seeds = rng.prompt_seeds(seed, pids, RNG_STREAM, sample)
            tb = time.time()
            codes = generate_codes(self.model, [states[r["text"]] for r in chunk], n_frames, cfg, seeds)
            gen_s += time.time() - tb
            wav = decode(self.model, codes)
            for r, pid, x, s in zip(chunk, pids, wav, seeds):
                if not np.all(np.isfinite(x)):
                    log.error("prompt %s: decoded audio has non-finite samples; skipped", pid)
                    rejected.append({"prompt_id": pid, "reason": "non-finite decoded audio"})
                    continue
                name = f"{pid}.{audio_format}"
                audio.write(out / name, x[None], self.sample_rate)
                side = {"prompt": r["text"], "prompt_id": pid, **settings_, "sample": int(sample), "lm_seed": s,
                        "audio": name, "n_samples": int(x.shape[-1])}
                io.write_json(out / f"{pid}.json", side)
                items.append({"prompt_id": pid, "prompt": r["text"], "audio": name, "sidecar": f"{pid}.json"})
            log.info("generated %d/%d prompts (%.1f delayed steps/s, %d prompts per batch)",
                     min(b + batch_size, len(records)), len(records),
                     (n_frames + self.kappa) / max(time.time() - tb, 1e-9), len(chunk))
        index = {**settings_, "n_prompts": len(records), "items": items, "rejected": rejected,
                 "generate_seconds": round(gen_s, 3), "elapsed_s": round(time.time() - t0, 3),
                 "frames_per_s": round(len(records) * (n_frames + self.kappa) / max(gen_s, 1e-9), 2)}
        io.write_json(out / "index.json", index)
        return index


# --- the tiny demo model ------------------------------------------------------------------------------
TINY_RMS = 0.1  # -20 dBFS: the tiny codec's output level on random codes


def _audible_codec(codec, torch) -> None:
    """Make a random-init EnCodec's audio depend on its codes, at an audible level.

    Its codebooks start as zeros (the real ones are learned), so every code decodes to the same audio;
    and its decoder's random biases add a constant pattern some 20 dB above the code-dependent part.
    Random unit-scale codebooks, zero decoder biases, and the last layer scaled so random codes decode
    at :data:`TINY_RMS`.
    """
    with torch.no_grad():
        for layer in codec.quantizer.layers:
            layer.codebook.embed.copy_(torch.randn_like(layer.codebook.embed))
            layer.codebook.embed_avg.copy_(layer.codebook.embed)
            layer.codebook.cluster_size.fill_(1.0)
        for name, p in codec.decoder.named_parameters():
            if name.endswith("bias") or "bias_" in name:
                p.zero_()
        probe = torch.randint(0, codec.config.codebook_size, (1, 1, codec.config.num_quantizers, 50),
                              generator=torch.Generator().manual_seed(0))
        rms = float(codec.decode(probe, audio_scales=[None]).audio_values.pow(2).mean().sqrt())
        last = codec.decoder.layers[-1].conv
        g = last.parametrizations.weight.original0 if hasattr(last, "parametrizations") else last.weight
        g.mul_(TINY_RMS / max(rms, 1e-12))


def build_tiny_musicgen(out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Write a tiny random-init ``MusicgenForConditionalGeneration`` + tokenizer to ``out_dir`` (about 3 MB).

    The real classes and layout of ``facebook/musicgen-small`` at toy sizes: a T5 encoder (d_model 32,
    2 layers) with the demo's offline T5 tokenizer (:func:`ssmttm.text.encoder.build_tiny_tokenizer`),
    EnCodec at 32 kHz with MusicGen's hop of 640 (50 frames/s) and 4 codebooks of 2048 codes (2.2 kbps),
    and a 2-layer decoder of width 16 whose width differs from the text's, so ``enc_to_dec_proj`` is
    exercised as in the real model (768 -> 1024). Its generation config: pad / BOS / decoder start 2048,
    and audiocraft's sampling defaults (sampling, top-k 250, guidance 3.0) with max_length 1500 (its 30 s
    default at 50 frames/s). Saved with ``save_pretrained``, so :func:`load_musicgen` reads it exactly as it
    reads the real checkpoint.
    """
    import torch

    from ssmttm.text.encoder import build_tiny_tokenizer, import_transformers

    tf = import_transformers()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer()
    text = tf.T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                       feed_forward_proj="gated-gelu", tie_word_embeddings=False, is_encoder_decoder=False,
                       pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    audio = tf.EncodecConfig(sampling_rate=32000, audio_channels=1, num_filters=4, upsampling_ratios=[8, 5, 4, 4],
                             codebook_size=2048, codebook_dim=16, hidden_size=16, num_lstm_layers=1,
                             target_bandwidths=[2.2], use_causal_conv=False, normalize=False, chunk_length_s=None,
                             norm_type="weight_norm", num_residual_layers=1)
    decoder = tf.MusicgenDecoderConfig(vocab_size=2048, max_position_embeddings=2048, num_hidden_layers=2, ffn_dim=32,
                                       num_attention_heads=2, hidden_size=16, num_codebooks=4, dropout=0.0,
                                       pad_token_id=2048, bos_token_id=2048)
    config = tf.MusicgenConfig(text_encoder=text, audio_encoder=audio, decoder=decoder)
    torch.manual_seed(seed)
    model = tf.MusicgenForConditionalGeneration(config).eval()
    _audible_codec(model.audio_encoder, torch)
    gc = model.generation_config
    gc.do_sample, gc.guidance_scale, gc.top_k, gc.max_length = True, 3.0, 250, 1500
    gc.pad_token_id = gc.bos_token_id = gc.decoder_start_token_id = 2048
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


# --- stage --------------------------------------------------------------------------------------------
def read_prompts(path: str | os.PathLike) -> tuple[str, list[dict]]:
    """(set name, records) of a prompt-set JSON written by ``prompt-set`` (or any prompts file)."""
    from ssmttm.generate.prompts import read_prompt_records

    records = read_prompt_records(path)  # PromptError naming the file on anything malformed
    name = ""
    if Path(path).suffix.lower() == ".json":
        obj = io.read_json(path)
        name = str(obj.get("name") or "") if isinstance(obj, dict) else ""
    return name or Path(path).stem, records


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="ssmttm generate-musicgen", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", required=True, help="prompt-set JSON (results/generate/prompts/<set>.json)")
    p.add_argument("--weights", required=True,
                   help="MusicGen weights receipt results/weights/<key>.json, or a transformers MusicGen folder")
    p.add_argument("--out-dir", required=True, help="output folder (<prompt_id>.wav, .json, index.json)")
    settings.add_arguments(p, MusicgenSettings)
    args = p.parse_args(argv)
    args.settings = cfg = settings.from_args(p, MusicgenSettings, args)
    args.sampling = smp.from_recipe(cfg, p)
    return args


def main(argv: list[str]) -> int | None:
    """``generate-musicgen``: sample MusicGen on a prompt set; exit 2 on a named failure."""
    logs.setup()
    args = parse_args(argv)
    cfg = args.settings
    try:
        prompt_set, records = read_prompts(args.prompts)
        gen = MusicgenGenerator(args.weights, cfg.device)
    except SsmttmError as exc:  # prompts, weights: named, no traceback
        log.error("%s", exc)
        return 2
    index = gen.run(records, args.out_dir, clip_seconds(cfg), args.sampling, seed=cfg.seed,
                    batch_size=cfg.batch_size, audio_format=cfg.format, prompt_set=prompt_set)
    log.info("wrote %d MusicGen clips (%d rejected) to %s in %.1f s", len(index["items"]), len(index["rejected"]),
             args.out_dir, index["elapsed_s"])
    return 0 if index["items"] else 1
