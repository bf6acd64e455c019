"""The ``qwen2-audio`` captioner: Qwen2-Audio-Instruct captions, optionally rephrased by a text LLM.

docs/reference.md §2: the lab's captioning pipeline runs Qwen2-Audio-7B-Instruct with the system
prompt "You are a helpful assistant for music captioning." and the user turn (audio + "Generate a
detailed caption for this music piece, primarily focusing on instrumentation, genre, mood, rhythm,
and scenario."), max_new_tokens 256, then rephrases the caption with an LLM (model (unknown)).

Weights are always read from a local folder (the weights cache, results/weights/<name>/), offline:
the real 7B checkpoint and the demo's tiny random-init model (``tiny.build_tiny_qwen2_audio``) go
through the same loader. Decoding is greedy so captions are reproducible.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ssmttm import audio as audio_io
from ssmttm.data.captioners import Captioner, ClipInfo

log = logging.getLogger("ssmttm.captions")

SYSTEM_PROMPT = "You are a helpful assistant for music captioning."
INSTRUCTION = (
    "Generate a detailed caption for this music piece, primarily focusing on instrumentation, genre, "
    "mood, rhythm, and scenario."
)
# The rephrase instruction is ours (the paper's rephrase prompt and model are (unknown)); vocals were
# removed from every clip, so the rephrased caption must not mention them.
REPHRASE_INSTRUCTION = (
    "Rewrite the following music description as a concise caption of one or two sentences. Keep the "
    "instrumentation, genre, mood, rhythm and scenario. Do not mention vocals, singing, a singer or "
    "lyrics. Reply with the caption only.\n\nDescription: {caption}"
)
# A real chat tokenizer has tens of thousands of entries; a tokenizer whose files were missing loads
# as a near-empty byte-less vocabulary without an error in transformers 5, so check the size.
MIN_VOCAB = 256


def import_transformers():
    """Import transformers for offline use only (no Hub calls, ever)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    from ssmttm.compat import prepare_torchvision

    prepare_torchvision()  # transformers imports torchvision when installed (see ssmttm/compat.py)
    import transformers

    return transformers


def resolve_device(device: str = "auto"):
    """``auto`` -> cuda + bf16 when available, else cpu + fp32; ``cuda[:N]`` -> bf16; ``cpu`` -> fp32."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine")
    dev = torch.device(device)
    return dev, (torch.bfloat16 if dev.type == "cuda" else torch.float32)


def _check_folder(folder: str | os.PathLike, flag: str) -> Path:
    path = Path(folder)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{flag} {path}: not a model folder (no config.json); fetch it with the weights rule")
    return path


def check_tokenizer(tokenizer, folder: str | os.PathLike, chat_template: str | None) -> None:
    """Fail loudly when a tokenizer loaded empty or without a chat template (message names the folder)."""
    n = len(tokenizer)
    if n < MIN_VOCAB:
        raise ValueError(
            f"{folder}: tokenizer loaded with only {n} tokens; tokenizer.json (or vocab.json + merges.txt) "
            "is missing or unreadable in this folder"
        )
    if not chat_template:
        raise ValueError(f"{folder}: no chat template (chat_template.jinja / tokenizer_config.json); cannot build prompts")


def build_conversation(audio_ref: str = "clip") -> list[dict]:
    """The captioning chat (docs/reference.md §2): system prompt, then audio + instruction."""
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": [{"type": "audio", "audio_url": audio_ref}, {"type": "text", "text": INSTRUCTION}]},
    ]


def build_prompt(processor, audio_ref: str = "clip") -> str:
    """The prompt text rendered by the processor's chat template (one audio placeholder in it)."""
    prompt = processor.apply_chat_template(build_conversation(audio_ref), add_generation_prompt=True, tokenize=False)
    return prompt[0] if isinstance(prompt, list) else prompt


def build_rephrase_prompt(tokenizer, caption: str) -> str:
    """Chat prompt asking the text LLM to rephrase ``caption`` concisely, without vocals."""
    messages = [{"role": "user", "content": REPHRASE_INSTRUCTION.format(caption=caption)}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def load_qwen2_audio(folder: str | os.PathLike, device: str = "auto"):
    """Load ``(model, processor, torch_device)`` from a local Qwen2-Audio folder, offline.

    The processor pads text on the left (batched generation); the model's audio token id must be
    the tokenizer's ``<|AUDIO|>`` id, or audio features would be scattered into the wrong positions.
    """
    path = _check_folder(folder, "--model-path")
    tf = import_transformers()
    dev, dtype = resolve_device(device)
    processor = tf.AutoProcessor.from_pretrained(str(path), local_files_only=True)
    check_tokenizer(processor.tokenizer, path, getattr(processor, "chat_template", None))
    processor.tokenizer.padding_side = "left"
    model = tf.Qwen2AudioForConditionalGeneration.from_pretrained(str(path), local_files_only=True, dtype=dtype)
    model.to(dev).eval()
    if int(model.config.audio_token_id) != int(processor.audio_token_id):
        raise ValueError(
            f"{path}: config audio_token_index {model.config.audio_token_id} != tokenizer id "
            f"{processor.audio_token_id} of {processor.audio_token}"
        )
    return model, processor, dev


def load_text_lm(folder: str | os.PathLike, device: str = "auto"):
    """Load ``(model, tokenizer, torch_device)`` of a local causal text LM (the rephrase model)."""
    path = _check_folder(folder, "--rephrase-path")
    tf = import_transformers()
    dev, dtype = resolve_device(device)
    tokenizer = tf.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    check_tokenizer(tokenizer, path, tokenizer.chat_template)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = tf.AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, dtype=dtype)
    model.to(dev).eval()
    return model, tokenizer, dev


def _generate_new_text(model, tokenizer, inputs, max_new_tokens: int) -> list[str]:
    """Greedy generation; decode only the new tokens (left padding keeps prompts right-aligned)."""
    import torch

    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    new = out[:, inputs["input_ids"].shape[1]:]
    return [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]


class Qwen2AudioCaptioner(Captioner):
    """Qwen2-Audio captions, primary first: ``[rephrased, raw]`` with a rephrase model, else ``[raw]``."""

    name = "qwen2-audio"

    def __init__(
        self,
        model_path: str | os.PathLike,
        rephrase_path: str | os.PathLike | None,
        *,
        device: str,
        max_new_tokens: int,
        max_audio_seconds: float,
        seed: int,
    ):
        """The knobs are config keys ``captions.qwen2_audio.*`` and ``captions.seed`` (CaptionsSettings)."""
        if max_new_tokens < 1:
            raise ValueError(f"--max-new-tokens must be >= 1, got {max_new_tokens}")
        self.model, self.processor, self.device = load_qwen2_audio(model_path, device)
        fe = self.processor.feature_extractor
        self.sample_rate = int(fe.sampling_rate)  # 16 kHz for the Whisper-style features
        window = float(getattr(fe, "chunk_length", 30))
        if not 0 < max_audio_seconds <= window:
            raise ValueError(f"--max-audio-seconds must be in (0, {window:g}] (the encoder window), got {max_audio_seconds}")
        self.max_audio_seconds = float(max_audio_seconds)
        self.max_new_tokens = int(max_new_tokens)
        self.seed = int(seed)
        self.prompt = build_prompt(self.processor)
        self.rephraser = load_text_lm(rephrase_path, device) if rephrase_path else None
        log.info("qwen2-audio: %s on %s (rephrase: %s)", model_path, self.device, rephrase_path or "none")

    def load_audio(self, clip: ClipInfo) -> np.ndarray:
        """Mono ``[N] float32`` at the feature extractor's rate, at most ``max_audio_seconds`` long."""
        x = audio_io.load(clip.audio_path, self.sample_rate, 1, seconds=self.max_audio_seconds)
        return x[0]

    def describe(self, audios: list[np.ndarray]) -> list[str]:
        """Raw Qwen2-Audio captions for a batch of mono 16 kHz waveforms."""
        import torch

        torch.manual_seed(self.seed)
        inputs = self.processor(
            text=[self.prompt] * len(audios),
            audio=audios,
            sampling_rate=self.sample_rate,
            return_tensors="pt",
            padding=True,
        ).to(self.device)
        return _generate_new_text(self.model, self.processor.tokenizer, inputs, self.max_new_tokens)

    def rephrase(self, captions: list[str]) -> list[str]:
        """Concise rewrites of ``captions`` by the rephrase LLM (greedy)."""
        model, tokenizer, dev = self.rephraser
        prompts = [build_rephrase_prompt(tokenizer, c) for c in captions]
        inputs = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(dev)
        return _generate_new_text(model, tokenizer, inputs, self.max_new_tokens)

    def caption(self, batch: list[ClipInfo]) -> list[list[str]]:
        audios = [self.load_audio(c) for c in batch]  # AudioError names the clip's file
        raw = self.describe(audios)
        if self.rephraser is None:
            return [[r] if r else [] for r in raw]
        todo = [k for k, r in enumerate(raw) if r]
        rephrased = dict(zip(todo, self.rephrase([raw[k] for k in todo]))) if todo else {}
        out = []
        for k, r in enumerate(raw):
            p = rephrased.get(k, "")
            if r and not p:
                log.warning("%s: empty rephrase; keeping the raw caption as primary", batch[k].clip_id)
            out.append(list(dict.fromkeys(x for x in (p, r) if x)))
        return out
