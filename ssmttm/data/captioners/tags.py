"""The ``tags`` captioner: deterministic template captions from MTG-Jamendo tags.

docs/reference.md §2 names this as the offline alternative to Qwen2-Audio captions. Each clip's
genre / instrument / mood-theme tags (``raw_30s_cleantags.tsv``: ``genre---rock``,
``instrument---electricguitar``, ``mood/theme---film``) are turned into readable words, mood tags are
split into adjectives ("happy") and scenarios ("film" -> "suitable for film"), and a few phrasings
are rendered. Which phrasings (and which tags when a track has many) is drawn from a numpy Generator
seeded from ``(seed, sha256(clip_id))``, so a clip's captions never depend on processing order.
Vocals were removed by the ``vocals`` stage, so vocal tags (voice, choir) are never mentioned.
"""

from __future__ import annotations

import hashlib
from typing import Callable

import numpy as np

from ssmttm.data.captioners import Captioner, ClipInfo

# MTG-Jamendo tag names are lower-case words run together; map them to readable words.
GENRE_WORDS = {
    "60s": "60s", "70s": "70s", "80s": "80s", "90s": "90s", "acidjazz": "acid jazz",
    "alternativerock": "alternative rock", "bluesrock": "blues rock", "bossanova": "bossa nova",
    "chillout": "chill-out", "classicrock": "classic rock", "darkambient": "dark ambient",
    "deephouse": "deep house", "drumnbass": "drum and bass", "easylistening": "easy listening",
    "edm": "EDM", "ethno": "ethnic", "hardrock": "hard rock", "hiphop": "hip hop", "idm": "IDM",
    "improvisation": "improvised", "instrumentalpop": "instrumental pop",
    "instrumentalrock": "instrumental rock", "jazzfusion": "jazz fusion", "latin": "Latin",
    "newage": "new age", "newwave": "new wave", "popfolk": "pop folk", "poprock": "pop rock",
    "postrock": "post-rock", "punkrock": "punk rock", "rap": "hip hop", "rnb": "R&B",
    "rocknroll": "rock and roll", "singersongwriter": "acoustic songwriter", "synthpop": "synth-pop",
    "triphop": "trip hop", "world": "world music", "worldfusion": "world fusion",
}
INSTRUMENT_WORDS = {
    "acousticbassguitar": "acoustic bass guitar", "acousticguitar": "acoustic guitar", "beat": "beats",
    "bell": "bells", "bongo": "bongos", "classicalguitar": "classical guitar",
    "computer": "electronic sounds", "doublebass": "double bass", "drummachine": "drum machine",
    "electricguitar": "electric guitar", "electricpiano": "electric piano", "horn": "horns",
    "keyboard": "keyboards", "pad": "synth pads", "pipeorgan": "pipe organ", "rhodes": "Rhodes piano",
    "synth": "synthesizer",
}
# mood/theme tags that describe the feel of the music: readable adjectives.
MOOD_WORDS = {
    "action": "action-packed", "adventure": "adventurous", "ballad": "ballad-like", "drama": "dramatic",
    "dream": "dreamy", "funny": "playful", "love": "romantic", "sexy": "sensual",
    "soundscape": "atmospheric",
}
# mood/theme tags that describe a use or scenario rather than a feel.
THEME_WORDS = {
    "advertising": "advertising", "background": "background music", "children": "children's media",
    "christmas": "Christmas", "commercial": "commercials", "corporate": "corporate videos",
    "documentary": "documentaries", "film": "film", "movie": "film", "game": "video games",
    "holiday": "holidays", "nature": "nature scenes", "party": "parties", "space": "space scenes",
    "sport": "sports", "summer": "summer days", "trailer": "trailers", "travel": "travel videos",
}
# Vocals were removed (Demucs htdemucs no-vocals stem): never describe singing.
VOCAL_TAGS = frozenset({"voice", "vocal", "vocals", "choir", "singer", "acapella", "speech"})

MAX_GENRES, MAX_INSTRUMENTS, MAX_MOODS, MAX_THEMES = 2, 3, 2, 2

FALLBACKS = ("An instrumental music track.", "Instrumental music.", "A piece of instrumental music.")
THEME_SUFFIXES = (" Suitable for {t}.", " Well suited to {t}.", " A good fit for {t}.")


def _bare(tag: str) -> str:
    """``genre---rock`` / ``mood/theme---happy`` / `` Rock `` -> ``rock``."""
    return tag.split("---")[-1].strip().lower()


def readable(tag: str, table: dict[str, str]) -> str:
    """A Jamendo tag as readable words (unknown tags keep their name, separators become spaces)."""
    t = _bare(tag)
    return table.get(t, t.replace("_", " ").replace("-", " "))


def _unique(words: list[str]) -> list[str]:
    return list(dict.fromkeys(w for w in words if w))


def split_tags(clip: ClipInfo) -> dict[str, list[str]]:
    """Readable ``genres``, ``instruments``, ``moods`` (adjectives) and ``themes`` (scenarios)."""
    keep = lambda tags: [t for t in tags if _bare(t) and _bare(t) not in VOCAL_TAGS]  # noqa: E731
    moods, themes = [], []
    for t in keep(clip.moods):
        if _bare(t) in THEME_WORDS:
            themes.append(THEME_WORDS[_bare(t)])
        else:
            moods.append(readable(t, MOOD_WORDS))
    return {
        "genres": _unique([readable(t, GENRE_WORDS) for t in keep(clip.genres)]),
        "instruments": _unique([readable(t, INSTRUMENT_WORDS) for t in keep(clip.instruments)]),
        "moods": _unique(moods),
        "themes": _unique(themes),
    }


def join_words(words: list[str]) -> str:
    """["a"] -> "a"; ["a", "b"] -> "a and b"; ["a", "b", "c"] -> "a, b and c"."""
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def article(phrase: str) -> str:
    """``phrase`` with "a" or "an" in front, by the sound of its first word (EDM -> an, 80s -> an)."""
    first = phrase.split(" ", 1)[0]
    if first[:1].isdigit():
        vowel = first.startswith(("8", "11", "18"))
    elif first.isupper() or "&" in first:
        vowel = first[:1] in "AEFHILMNORSX"
    else:
        vowel = first[:1].lower() in "aeiou"
    return ("an " if vowel else "a ") + phrase


def cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def stable_hash(text: str) -> int:
    """64-bit hash of ``text`` that is the same in every process (unlike ``hash()``)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")


def clip_rng(seed: int, clip_id: str) -> np.random.Generator:
    """Generator seeded from (seed, clip_id): the same clip gets the same draws in any order."""
    return np.random.default_rng([int(seed), stable_hash(clip_id)])


def _pick(words: list[str], k: int, rng: np.random.Generator) -> list[str]:
    """At most ``k`` of ``words`` (a seeded subset, original order kept)."""
    if len(words) <= k:
        return list(words)
    idx = sorted(rng.choice(len(words), size=k, replace=False).tolist())
    return [words[i] for i in idx]


# A template renders a sentence from the parts g (genres), i (instruments), m (moods), or returns
# None when a part it needs is missing. Parts are already joined phrases ("guitar and drums").
Template = Callable[[str, str, str], "str | None"]


def _desc(g: str, m: str) -> str:
    return " ".join(x for x in (m, g) if x)


TEMPLATES: tuple[Template, ...] = (
    lambda g, i, m: f"{cap(article(_desc(g, m) or 'instrumental'))} track featuring {i}." if i else None,
    lambda g, i, m: f"{cap(g)} with {i}; {m} mood." if g and i and m else None,
    lambda g, i, m: f"{cap(m)} {g} music built on {i}." if g and i and m else None,
    lambda g, i, m: f"An instrumental {g} piece with {i}, with {article(m)} feel." if g and i and m else None,
    lambda g, i, m: f"{cap(_desc(g, m))} instrumental led by {i}." if i and (g or m) else None,
    lambda g, i, m: f"Instrumental {g} featuring {i}." if g and i else None,
    lambda g, i, m: f"{cap(article(m))} instrumental featuring {i}." if m and i else None,
    lambda g, i, m: f"An instrumental piece featuring {i}." if i and not (g and m) else None,
    lambda g, i, m: f"{cap(article(_desc(g, m)))} instrumental piece." if (g or m) and not i else None,
    lambda g, i, m: f"{cap(g)} music with {article(m)} mood." if g and m and not i else None,
    lambda g, i, m: f"{cap(m)} {g} instrumental." if g and m and not i else None,
    lambda g, i, m: f"Instrumental {g}." if g and not (i or m) else None,
    lambda g, i, m: f"{cap(article(g))} track." if g and not (i or m) else None,
    lambda g, i, m: f"Music in the {g} style." if g and not (i or m) else None,
    lambda g, i, m: f"{cap(m)} instrumental music." if m and not (i or g) else None,
    lambda g, i, m: f"{cap(article(m))} track." if m and not (i or g) else None,
    lambda g, i, m: f"Instrumental music with {i}." if i and not (g or m) else None,
    lambda g, i, m: f"A track played on {i}." if i and not (g or m) else None,
)


def tag_captions(clip: ClipInfo, seed: int = 0, n_variants: int = 3) -> list[str]:
    """Up to ``n_variants`` distinct captions for ``clip`` (primary first), never empty.

    Deterministic in (seed, clip.clip_id, tags). Without usable tags it falls back to generic
    "An instrumental music track." phrasings (plus the scenario when a theme tag exists).
    """
    rng = clip_rng(seed, clip.clip_id)
    parts = split_tags(clip)
    g = join_words(_pick(parts["genres"], MAX_GENRES, rng))
    i = join_words(_pick(parts["instruments"], MAX_INSTRUMENTS, rng))
    m = join_words(_pick(parts["moods"], MAX_MOODS, rng))
    t = join_words(_pick(parts["themes"], MAX_THEMES, rng))
    sentences = _unique([s for tmpl in TEMPLATES if (s := tmpl(g, i, m))])
    if not sentences:
        sentences = [f"Instrumental music for {t}.", f"An instrumental track suited to {t}."] if t else []
        sentences += list(FALLBACKS)
    # The primary caption names every available part; the other variants may drop some.
    complete = [k for k, s in enumerate(sentences) if all(x.lower() in s.lower() for x in (g, i, m) if x)]
    first = int(rng.choice(complete)) if complete else 0
    rest = [k for k in rng.permutation(len(sentences)).tolist() if k != first]
    chosen = [sentences[k] for k in [first, *rest][: max(1, n_variants)]]
    if t:
        suffix = [THEME_SUFFIXES[int(k)] for k in rng.integers(0, len(THEME_SUFFIXES), size=len(chosen))]
        chosen = [s if t in s else s + x.format(t=t) for s, x in zip(chosen, suffix)]
    return _unique(chosen)


class TagsCaptioner(Captioner):
    """Template captions from the clip's tags; no audio is read (the stage checks the file exists)."""

    name = "tags"

    def __init__(self, *, seed: int, n_variants: int):
        """``seed``, ``n_variants``: config keys ``captions.seed`` and ``captions.tags.n_variants``."""
        if n_variants < 1:
            raise ValueError(f"n_variants must be >= 1, got {n_variants}")
        self.seed = int(seed)
        self.n_variants = int(n_variants)

    def caption(self, batch: list[ClipInfo]) -> list[list[str]]:
        return [tag_captions(c, self.seed, self.n_variants) for c in batch]
