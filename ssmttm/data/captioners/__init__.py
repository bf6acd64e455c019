"""Captioners: the extension point that turns one clip into one or more text captions.

A captioner is a small object with a ``name`` and ``caption(batch) -> list[list[str]]`` (one list per
clip, primary caption first). The registry maps the config name (``captions.captioner``) to a lazy
factory: building or reading the registry imports nothing heavy (transformers and torch are imported
only when the ``qwen2-audio`` factory runs), so the Snakefile and ``--help`` stay cheap.

Captioners (docs/reference.md §2):
- ``tags``: deterministic templates over the clip's MTG-Jamendo genre / instrument / mood tags
  (the offline alternative; no model, no GPU).
- ``qwen2-audio``: Qwen2-Audio-7B-Instruct with the lab's captioning prompt, greedy decoding, then an
  optional LLM rephrase (the paper's ``rephrased_caption``; the rephrase model is (unknown)).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Callable

from ssmttm.data.options import CaptionsSettings
from ssmttm.errors import SsmttmError


@dataclass(frozen=True)
class ClipInfo:
    """What a captioner may know about one clip.

    ``audio_path`` is the vocal-free clip (the ``vocals`` stage output); tag tuples hold bare
    MTG-Jamendo tag names (``rock``, ``electricguitar``, ``happy``), without ``genre---`` prefixes.
    """

    clip_id: str
    track_id: str = ""
    shard: str = ""
    audio_path: str = ""
    genres: tuple[str, ...] = ()
    instruments: tuple[str, ...] = ()
    moods: tuple[str, ...] = ()


class ClipError(SsmttmError, ValueError):
    """One clip cannot be captioned (the message names the clip); the stage rejects it and goes on."""


class Captioner(abc.ABC):
    """Turns a batch of clips into captions: ``caption(batch)[i]`` is a non-empty list of strings for
    ``batch[i]``, primary caption first. Raise :class:`ClipError` or ``ssmttm.audio.AudioError`` for a
    clip that cannot be captioned; the stage then retries the batch clip by clip and rejects only it.
    """

    name: str = ""

    @abc.abstractmethod
    def caption(self, batch: list[ClipInfo]) -> list[list[str]]:
        """One list of captions per clip in ``batch``, primary first."""


def _build_tags(opts: CaptionsSettings) -> Captioner:
    from ssmttm.data.captioners.tags import TagsCaptioner

    return TagsCaptioner(seed=opts.seed, n_variants=opts.n_variants)


def _build_qwen2_audio(opts: CaptionsSettings) -> Captioner:
    from ssmttm.data.captioners.qwen2_audio import Qwen2AudioCaptioner

    if not opts.model_path:
        raise ValueError("captioner qwen2-audio needs --model-path (a local Qwen2-Audio folder from the weights cache)")
    return Qwen2AudioCaptioner(
        model_path=opts.model_path,
        rephrase_path=opts.rephrase_path,
        device=opts.device,
        max_new_tokens=opts.max_new_tokens,
        max_audio_seconds=opts.max_audio_seconds,
        seed=opts.seed,
    )


# Config name -> lazy factory (audiocraft-style builder registry; nothing is imported until called).
CAPTIONERS: dict[str, Callable[[CaptionsSettings], Captioner]] = {
    "tags": _build_tags,
    "qwen2-audio": _build_qwen2_audio,
}


def build(opts: CaptionsSettings) -> Captioner:
    """Instantiate the captioner ``opts.captioner`` (config ``captions.captioner``) with the knobs of ``opts``
    (the ``captions`` section, ssmttm.data.options); unknown names fail with the known list."""
    if opts.captioner not in CAPTIONERS:
        raise ValueError(f"unknown captioner {opts.captioner!r}; known: {', '.join(sorted(CAPTIONERS))}")
    return CAPTIONERS[opts.captioner](opts)


__all__ = ["CAPTIONERS", "Captioner", "CaptionsSettings", "ClipError", "ClipInfo", "build"]
