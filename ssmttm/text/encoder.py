"""The frozen T5 text encoder: offline loader, padded forward pass and the tiny demo builder.

The paper conditions every LM on the frozen FLAN-T5-base encoder (docs/reference.md §1: 768-d
last hidden states; the LM projects 768 -> 1024 itself). :func:`load_t5_encoder` loads a
``T5EncoderModel`` and its tokenizer from a LOCAL folder saved with ``save_pretrained`` (the
``google/flan-t5-base`` snapshot fetched by the weights rule, or the tiny random-init model
:func:`build_tiny_t5` writes for the demo and the tests) with every hub access switched off.

T5 uses relative position biases and an attention mask, so with right padding the states of a
caption's real tokens do not depend on what else is in the batch (tests check this to ~1e-5).
"""

from __future__ import annotations

import os
from pathlib import Path

from ssmttm.errors import SsmttmError

# A real T5 tokenizer (FLAN-T5: 32,100 pieces) is far larger; fewer pieces than this means the
# folder holds a placeholder vocabulary (e.g. only the special tokens), which maps text to <unk>.
MIN_VOCAB = 64
# A probe sentence in the captions' own vocabulary: a working tokenizer maps it to known pieces.
PROBE = "a calm piano piece with soft strings and a slow rhythm"
TOKENIZER_FILES = ("tokenizer.json", "spiece.model", "tokenizer_config.json")


class TextEncoderError(SsmttmError, RuntimeError):
    """A text-encoder folder that cannot be used; the message names the folder."""


def import_transformers():
    """Import transformers for offline use only (no hub calls, ever)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    from ssmttm.compat import prepare_torchvision

    prepare_torchvision()  # transformers imports torchvision when installed (see ssmttm/compat.py)
    import transformers

    return transformers


def resolve_device(device: str = "auto", dtype: str = "auto"):
    """(torch.device, compute dtype). ``auto``: cuda when available else cpu; dtype ``auto``: bf16 on
    cuda (T5 was trained in bf16; fp16 overflows in its feed-forward layers), fp32 on cpu."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine")
    dev = torch.device(device)
    if dtype == "auto":
        dtype = "bfloat16" if dev.type == "cuda" else "float32"
    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"--dtype {dtype}: use auto, float32 or bfloat16 (float16 overflows in T5)")
    return dev, getattr(torch, dtype)


def _check_tokenizer(tokenizer, folder: Path, vocab_size: int) -> None:
    """Fail loudly when the tokenizer cannot be what the encoder was trained with."""
    n = len(tokenizer)
    if n < MIN_VOCAB:
        raise TextEncoderError(
            f"text encoder {folder}: the tokenizer has only {n} pieces (a real T5 tokenizer has tens of "
            f"thousands); the folder's tokenizer files are missing or a placeholder"
        )
    if n > vocab_size:
        raise TextEncoderError(
            f"text encoder {folder}: the tokenizer has {n} pieces but the model's embedding table only "
            f"{vocab_size} rows (tokenizer and model come from different checkpoints)"
        )
    if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
        raise TextEncoderError(f"text encoder {folder}: the tokenizer defines no <pad> or </s> token")
    ids = tokenizer(PROBE)["input_ids"]
    if not ids or ids[-1] != tokenizer.eos_token_id:
        raise TextEncoderError(f"text encoder {folder}: the tokenizer does not end a text with </s> as T5 does")
    words = [i for i in ids if i not in tokenizer.all_special_ids]
    if not words or tokenizer.unk_token_id in ids:
        raise TextEncoderError(
            f"text encoder {folder}: the tokenizer maps plain caption words ({PROBE!r}) to unknown or "
            f"special tokens (ids {ids}); its vocabulary is broken or a placeholder"
        )


def load_t5_encoder(path_or_receipt: str | os.PathLike, device: str = "cpu", dtype: str = "auto"):
    """Load (T5EncoderModel in eval mode on ``device``, tokenizer) from a local folder.

    ``path_or_receipt``: a weights receipt (``results/weights/<key>.json``) or a folder saved with
    ``save_pretrained``. Never downloads (local_files_only, hub offline). Raises
    :class:`TextEncoderError` naming the folder when the tokenizer is missing or unusable.
    """
    from ssmttm import weight_cache

    folder = weight_cache.local_path(path_or_receipt)
    if not folder.is_dir():
        raise TextEncoderError(f"text encoder {folder}: expected a folder saved with save_pretrained")
    if not any((folder / f).is_file() for f in TOKENIZER_FILES):
        # transformers would silently build a placeholder T5 vocabulary from config.json alone
        raise TextEncoderError(f"text encoder {folder}: no tokenizer files (expected one of {list(TOKENIZER_FILES)})")
    dev, torch_dtype = resolve_device(device, dtype)
    tf = import_transformers()
    with weight_cache.offline_env():
        try:
            tokenizer = tf.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            raise TextEncoderError(f"text encoder {folder}: no usable tokenizer ({type(exc).__name__}: {exc})") from exc
        if tokenizer is None or isinstance(tokenizer, bool):
            raise TextEncoderError(f"text encoder {folder}: no tokenizer files")
        try:
            # safetensors only: the hub snapshot also ships pickled pytorch_model.bin, never loaded
            model = tf.T5EncoderModel.from_pretrained(str(folder), local_files_only=True, dtype=torch_dtype,
                                                      use_safetensors=True)
        except (OSError, ValueError) as exc:
            raise TextEncoderError(f"text encoder {folder}: no loadable T5 encoder ({exc})") from exc
    _check_tokenizer(tokenizer, folder, model.config.vocab_size)
    model.to(dev).eval()
    model.requires_grad_(False)
    return model, tokenizer


def forward(model, ids: list[list[int]], pad_id: int) -> list:
    """Encode token-id lists in ONE padded batch.

    ids: B lists of token ids (each ending in </s>). Right-padded with ``pad_id`` and masked, so the
    result does not depend on the batch. Returns B float32 numpy arrays [L_i, d_model]: the
    encoder's last_hidden_state at the real tokens.
    """
    import torch

    dev = next(model.parameters()).device
    L = max(len(x) for x in ids)
    x = torch.full((len(ids), L), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), L), dtype=torch.long)
    for i, seq in enumerate(ids):
        x[i, :len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[i, :len(seq)] = 1
    with torch.no_grad():
        h = model(input_ids=x.to(dev), attention_mask=mask.to(dev)).last_hidden_state
    h = h.float().cpu().numpy()
    return [h[i, :len(seq)] for i, seq in enumerate(ids)]


# --- the tiny demo encoder -----------------------------------------------------------------------

_WORDS = {
    "genre": "rock pop jazz blues classical electronic ambient folk metal punk funk soul reggae hiphop "
             "techno house trance dubstep country disco orchestral cinematic lounge chillout world latin",
    "instrument": "piano guitar bass drums synthesizer strings violin cello flute saxophone trumpet organ "
                  "harp choir pads percussion ukulele accordion clarinet marimba bells keyboard sampler",
    "mood": "happy sad calm energetic dark bright dreamy melancholic uplifting relaxing epic romantic "
            "aggressive peaceful mysterious playful nostalgic hopeful tense warm gentle soft heavy",
    "rhythm": "slow fast steady groovy driving syncopated laid back upbeat tempo beat rhythm groove "
              "pulse swing shuffle waltz",
    "scenario": "film video game party meditation workout study travel night summer advertisement "
                "documentary trailer background dance",
    "glue": "a an the with and of for in on this piece track song music featuring suitable by its "
            "is are that has it mix sound sounds instrumental melody harmony lead acoustic electric",
}


def _caption_corpus() -> list[str]:
    """Deterministic sentences over a few hundred music-caption words (for tokenizer training)."""
    w = {k: v.split() for k, v in _WORDS.items()}
    out = [" ".join(ws) for ws in w.values()]
    for i in range(240):
        g, ins, m = w["genre"][i % len(w["genre"])], w["instrument"][i % len(w["instrument"])], \
            w["mood"][(i * 7) % len(w["mood"])]
        r, s = w["rhythm"][(i * 3) % len(w["rhythm"])], w["scenario"][(i * 5) % len(w["scenario"])]
        out.append(f"a {m} {g} track with {ins} and a {r} rhythm, suitable for {s}.")
    return out


def build_tiny_tokenizer():
    """A T5-layout tokenizer trained offline: <pad>=0, </s>=1, <unk>=2, '</s>' appended to every text.

    BPE over T5's Metaspace pre-tokenization (the tokenizers Unigram trainer splits even frequent
    words into characters on a corpus this small), wrapped as a ``PreTrainedTokenizerFast`` so
    ``AutoTokenizer`` loads it from the folder like FLAN-T5's own tokenizer.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tf = import_transformers()
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    # The pre-tokenizer / decoder of transformers' T5Tokenizer: whitespace split, "▁" word prefix.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)]
    )
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "</s>", "<unk>"], show_progress=False)
    tok.train_from_iterator(_caption_corpus(), trainer)
    eos = tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(
        single=["$A", "</s>"], pair=["$A", "</s>", "$B", "</s>"], special_tokens=[("</s>", eos)]
    )
    return tf.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=512
    )


def build_tiny_t5(out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Write a tiny random-init ``T5EncoderModel`` + T5 tokenizer to ``out_dir`` (about 0.1 MB).

    The real classes (T5Config with FLAN-T5's gated-GELU feed-forward, T5EncoderModel, a fast
    tokenizer with T5's special ids) at d_model 32, 2 layers, 4 heads, d_ff 64 and a 400-piece
    vocabulary, saved with
    ``save_pretrained`` so :func:`load_t5_encoder` loads it exactly as it loads FLAN-T5-base.
    """
    import torch

    tf = import_transformers()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer()
    config = tf.T5Config(
        vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=32, relative_attention_max_distance=128,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False, is_encoder_decoder=False,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    model = tf.T5EncoderModel(config).eval()
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out
