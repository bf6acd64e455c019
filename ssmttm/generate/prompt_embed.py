"""``python -m ssmttm prompt-embed``: a prompt set's T5 states, encoded once for every generate job.

Every LM of a study conditions on the same frozen T5 states of the same prompts, so the DAG encodes
them once (rule ``prompt_embed``) and each ``generate`` job reads them (``--text-states``) instead of
importing transformers and loading T5 itself, which cost a demo generate job about half its run time.

The output folder is a text store (:mod:`ssmttm.text.store`): ``embeddings.npy`` (float16 states of
each unique text's real tokens), ``index.parquet`` (caption id 0 = the empty prompt "" of
classifier-free guidance, then the prompts' unique texts in order), ``clips.parquet`` (prompt id ->
its caption id) and ``meta.json`` (encoder key and sha256, d_model, max_length, the prompt set's name
and the prompts file's sha256), written last so a folder with it is complete.

The texts go through :func:`encode_prompts`, the function ``generate --text-encoder`` runs, with the
same batches in the same order, so both ways give the same states bit for bit (tests check it).
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import numpy as np

from ssmttm import io, logs
from ssmttm.constants import TEXT_STORE_VERSION
from ssmttm.errors import SsmttmError
from ssmttm.text import store as ts

log = logging.getLogger("ssmttm.generate")
TEXT_BATCH = 64  # prompts per T5 forward


class PromptStatesError(SsmttmError, ValueError):
    """Prompt states that cannot serve a prompt or a checkpoint; the message names the folder."""


def encode_prompts(encoder, tokenizer, texts: list[str], max_length: int) -> dict[str, np.ndarray]:
    """Each unique text once -> {text: float32 [L, d_model]}, rounded through float16 as the text store
    that trained the LM holds its states; texts longer than ``max_length`` tokens are truncated (logged)."""
    from ssmttm.text.embed import tokenize
    from ssmttm.text.encoder import forward

    uniq = list(dict.fromkeys(texts))
    ids, truncated = tokenize(tokenizer, uniq, max_length)
    for i in truncated:
        log.warning("prompt truncated to %d tokens: %.80r", max_length, uniq[i])
    out: dict[str, np.ndarray] = {}
    for s in range(0, len(uniq), TEXT_BATCH):
        states = forward(encoder, ids[s:s + TEXT_BATCH], tokenizer.pad_token_id)
        for text, h in zip(uniq[s:s + TEXT_BATCH], states):
            h16 = h.astype(np.float16)
            if not np.all(np.isfinite(h16)):
                raise PromptStatesError(f"text encoder states of prompt {text[:80]!r} are not finite in float16")
            out[text] = h16.astype(np.float32)
    return out


def write_prompt_states(out_dir: str | os.PathLike, prompts: list[tuple[str, str]], states: dict[str, np.ndarray],
                        meta: dict) -> dict:
    """Write ``states`` ({text: [L, D]}, holding "" and every prompt's text) as a text store in ``out_dir``;
    ``meta`` adds to meta.json (encoder, weights_sha256, max_length, ...). Returns meta.json's content."""
    from ssmttm.text.embed import write_index_tables

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / ts.META).unlink(missing_ok=True)  # meta.json is written last: present = complete
    texts = list(dict.fromkeys([""] + [t for _, t in prompts]))  # caption id 0 is always ""
    lengths = np.array([states[t].shape[0] for t in texts], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    d = int(states[""].shape[1])
    emb = np.concatenate([states[t] for t in texts]).astype(np.float16).reshape(-1, d)
    with io.atomic_path(out / ts.EMBEDDINGS) as tmp, open(tmp, "wb") as f:
        np.save(f, emb, allow_pickle=False)
    ids = {t: i for i, t in enumerate(texts)}
    write_index_tables(out, texts, offsets, lengths, {pid: [ids[t]] for pid, t in prompts})
    full = {"version": TEXT_STORE_VERSION, **meta, "d_model": d, "n_clips": len(prompts),
            "n_captions": len(prompts), "n_unique": len(texts) - 1, "total_tokens": int(lengths.sum()),
            "dtype": "float16"}
    io.write_json(out / ts.META, full)
    return full


class PromptStates:
    """Prompt states read from a ``prompt-embed`` folder: ``states(texts)`` -> {text: float32 [L, D]}."""

    def __init__(self, directory: str | os.PathLike):
        try:
            self.store = ts.TextStore(directory)
        except ts.TextStoreError as exc:
            raise PromptStatesError(f"--text-states: {exc}") from None
        self.dir = self.store.dir
        meta = self.store.meta
        missing = [k for k in ("encoder", "weights_sha256", "max_length") if k not in meta]
        if missing:
            raise PromptStatesError(f"--text-states {self.dir}: meta.json lacks {missing} (not written by "
                                    f"`ssmttm prompt-embed`?)")
        self.encoder_key, self.weights_sha256 = str(meta["encoder"]), str(meta["weights_sha256"] or "")
        self.max_length, self.d_model = int(meta["max_length"]), self.store.d_model
        self._ids = {t: i for i, t in enumerate(self.store.index["text"])}

    def check(self, texts: list[str]) -> None:
        """Raise PromptStatesError naming the folder and the first of ``texts`` it holds no states for."""
        for text in texts:
            if text not in self._ids:
                raise PromptStatesError(f"--text-states {self.dir} holds no states for prompt {text[:80]!r} "
                                        f"(encoded from another prompt set? re-run prompt-embed on this one)")

    def states(self, texts: list[str]) -> dict[str, np.ndarray]:
        uniq = list(dict.fromkeys(texts))
        self.check(uniq)
        return {text: np.asarray(self.store.embedding(self._ids[text]), dtype=np.float32) for text in uniq}


def main(argv: list[str]) -> int | None:
    from ssmttm.generate.prompts import load_prompt_set
    from ssmttm.text.embed import encoder_identity
    from ssmttm.text.encoder import load_t5_encoder, resolve_device

    p = argparse.ArgumentParser(prog="ssmttm prompt-embed", description=__doc__.split("\n")[0])
    p.add_argument("--prompts-file", required=True, help="the prompt set's JSON (rule prompt_set)")
    p.add_argument("--prompt-set", required=True, help="its name (config generate.prompt_set)")
    p.add_argument("--text-encoder", required=True, help="T5 weights receipt results/weights/<key>.json or a folder")
    p.add_argument("--max-length", type=int, required=True,
                   help="T5 tokens per prompt incl. </s> (config text.max_length: as the LMs' captions were cut)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (config generate.device)")
    p.add_argument("--out-dir", required=True, help="results/generate/prompts/<set>.states")
    args = p.parse_args(argv)
    logs.setup()
    if args.max_length < 2:
        p.error(f"--max-length {args.max_length}: at least 2 tokens (a word and </s>)")
    try:
        device, _ = resolve_device(args.device)
    except ValueError as exc:
        p.error(str(exc))
    try:
        prompts = load_prompt_set(args.prompt_set, prompts_file=args.prompts_file)
        key, sha = encoder_identity(args.text_encoder)
        encoder, tokenizer = load_t5_encoder(args.text_encoder, str(device))
        states = encode_prompts(encoder, tokenizer, [t for _, t in prompts] + [""], args.max_length)
    except SsmttmError as exc:  # prompts, encoder folder, missing weights: named, no traceback
        log.error("%s", exc)
        return 2
    meta = write_prompt_states(args.out_dir, prompts, states, {
        "encoder": key, "weights_sha256": sha, "max_length": args.max_length, "prompt_set": args.prompt_set,
        "prompts_sha256": io.sha256_file(args.prompts_file), "compute_dtype": str(encoder.dtype).replace("torch.", "")})
    log.info("prompt-embed: %d prompts, %d unique texts + \"\", %d tokens, d_model %d -> %s", len(prompts),
             meta["n_unique"], meta["total_tokens"], meta["d_model"], args.out_dir)
    return 0
