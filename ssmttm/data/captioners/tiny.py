"""Tiny random-init Qwen2-Audio (and text LM) folders for the offline demo and tests.

They use the real classes (Qwen2AudioForConditionalGeneration, Qwen2AudioProcessor with a
WhisperFeatureExtractor and a byte-level BPE Qwen2 tokenizer, Qwen2ForCausalLM) and are written with
``save_pretrained``, so :func:`ssmttm.data.captioners.qwen2_audio.load_qwen2_audio` loads them exactly
as it loads Qwen/Qwen2-Audio-7B-Instruct. Their captions are random text: they test the plumbing.
"""

from __future__ import annotations

import os
from pathlib import Path

# Special tokens of Qwen2-Audio-Instruct: ChatML turns plus the audio span markers.
ENDOFTEXT = "<|endoftext|>"
CHAT_TOKENS = ("<|im_start|>", "<|im_end|>")
AUDIO_TOKENS = ("<|audio_bos|>", "<|AUDIO|>", "<|audio_eos|>")
SPECIAL_TOKENS = (ENDOFTEXT, *CHAT_TOKENS, *AUDIO_TOKENS)

# ChatML with one "Audio k: <|audio_bos|><|AUDIO|><|audio_eos|>" line per audio item, the layout the
# Qwen2-Audio-Instruct template produces (the processor then repeats <|AUDIO|> once per audio frame).
QWEN2_AUDIO_CHAT_TEMPLATE = (
    "{% set audio_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n"
    "{% else %}"
    "{% for content in message['content'] %}"
    "{% if 'audio' in content or 'audio_url' in content %}"
    "{% set audio_count.value = audio_count.value + 1 %}"
    "Audio {{ audio_count.value }}: <|audio_bos|><|AUDIO|><|audio_eos|>\n"
    "{% elif 'text' in content %}"
    "{{ content['text'] }}"
    "{% endif %}"
    "{% endfor %}"
    "<|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# A few sentences to learn BPE merges from (the byte alphabet alone covers any input text).
_CORPUS = (
    "You are a helpful assistant for music captioning.",
    "Generate a detailed caption for this music piece, primarily focusing on instrumentation, genre, "
    "mood, rhythm, and scenario.",
    "A calm piano piece with soft strings and a slow rhythm, suitable for film.",
    "An upbeat electronic dance track with synthesizer, bass and a drum machine.",
    "A happy rock song featuring electric guitar, bass guitar and energetic drums.",
    "Relaxing ambient music with warm pads, gentle percussion and a dreamy mood.",
    "Rewrite the following music description as a concise caption of one or two sentences.",
)
VOCAB_SIZE = 384


def build_tiny_tokenizer():
    """A Qwen2 byte-level BPE tokenizer (256 bytes + merges + Qwen2-Audio special tokens)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    from ssmttm.data.captioners.qwen2_audio import import_transformers

    tf = import_transformers()
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tok = Tokenizer(models.BPE())
    # Same normalizer / pre-tokenizer / decoder as Qwen2Tokenizer, so the saved tokenizer.json
    # behaves like the real one (regex split, then byte-level mapping).
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(_CORPUS) * 4, trainer)
    tokenizer = tf.Qwen2TokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token=ENDOFTEXT,
        unk_token=None,
        extra_special_tokens=[*CHAT_TOKENS, *AUDIO_TOKENS],
    )
    tokenizer.chat_template = QWEN2_AUDIO_CHAT_TEMPLATE
    return tokenizer


def _tiny_text_config(tf, vocab_size: int):
    return tf.Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
    )


def _finish(model, tokenizer, tf) -> None:
    """Greedy end-of-turn settings; zero the output rows of special tokens.

    A random model would otherwise sometimes pick <|im_end|> first and return an empty caption; with
    zero logits for special tokens, greedy decoding emits ``max_new_tokens`` text tokens.
    """
    import torch

    ids = [tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS]
    with torch.no_grad():
        model.get_output_embeddings().weight[ids] = 0.0
    model.generation_config = tf.GenerationConfig(
        eos_token_id=[tokenizer.convert_tokens_to_ids(ENDOFTEXT), tokenizer.convert_tokens_to_ids("<|im_end|>")],
        pad_token_id=tokenizer.convert_tokens_to_ids(ENDOFTEXT),
        do_sample=False,
    )


def build_tiny_qwen2_audio(out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Write a tiny random-init Qwen2-Audio model + processor to ``out_dir`` (about 0.6 MB).

    Audio encoder: 2 layers, d_model 32, 128 mel bins (as the real processor) and the real 1500
    positions (the Whisper features are always padded to 30 s = 3000 frames). Text model: Qwen2 with
    hidden 32, 2 layers, the tiny tokenizer's vocabulary. ``audio_token_index`` = id of <|AUDIO|>.
    """
    import torch

    from ssmttm.data.captioners.qwen2_audio import import_transformers

    tf = import_transformers()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer()
    # 16 kHz, 25 ms window / 10 ms hop, 30 s chunks: the Whisper front end Qwen2-Audio uses.
    features = tf.WhisperFeatureExtractor(
        feature_size=128, sampling_rate=16_000, hop_length=160, chunk_length=30, n_fft=400
    )
    processor = tf.Qwen2AudioProcessor(
        feature_extractor=features, tokenizer=tokenizer, chat_template=QWEN2_AUDIO_CHAT_TEMPLATE
    )
    audio_config = tf.Qwen2AudioEncoderConfig(
        num_mel_bins=128,
        encoder_layers=2,
        encoder_attention_heads=2,
        encoder_ffn_dim=64,
        d_model=32,
        max_source_positions=1500,
    )
    config = tf.Qwen2AudioConfig(
        audio_config=audio_config,
        text_config=_tiny_text_config(tf, len(tokenizer)),
        audio_token_index=tokenizer.convert_tokens_to_ids("<|AUDIO|>"),
    )
    torch.manual_seed(seed)
    model = tf.Qwen2AudioForConditionalGeneration(config).eval()
    _finish(model, tokenizer, tf)
    model.save_pretrained(str(out))
    processor.save_pretrained(str(out))
    return out


def build_tiny_text_lm(out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Write a tiny random-init Qwen2ForCausalLM + chat tokenizer (a stand-in rephrase model)."""
    import torch

    from ssmttm.data.captioners.qwen2_audio import import_transformers

    tf = import_transformers()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer()
    torch.manual_seed(seed)
    model = tf.Qwen2ForCausalLM(_tiny_text_config(tf, len(tokenizer))).eval()
    _finish(model, tokenizer, tf)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out
