"""Numpy-only synthetic instrumental music whose tags truly describe the audio.

Each track is drawn as a :class:`TrackSpec` (genre, mood, tempo, key, mode, instruments, drums)
and rendered by :func:`render` to ``[2, N] float32`` at 44.1 kHz (the MTG-Jamendo / DAC rate).
The mapping from tags to sound is fixed so that later stages can check prompts against audio:

- mood -> mode and tempo: happy = major, 112-140 bpm, bright; energetic = 128-160 bpm;
  calm = major, slow, soft; sad = minor, slow, dark; dark = minor, mid tempo, dull timbre.
- genre -> instruments and drums: rock / pop / electronic / jazz have a drum kit (so ~2/3 of
  tracks have drums), classical and ambient have none.
- instrument tags are exactly the voices that play (``pad`` and ``lead`` are tagged
  ``synthesizer``; the kit is ``drums``). No voice sings: the music is instrumental.

Every note is additive synthesis over a few partials (vectorised over partials x samples) and
cached per (voice, pitch, length), so a 60 s track renders in well under a second.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ssmttm.constants import SAMPLE_RATE

NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
# Chord progressions as 0-based scale degrees; all start on the tonic so the key is audible, and in
# minor the chord on degree 4 takes the raised leading tone (harmonic-minor V), which marks the key.
PROGRESSIONS = {
    "major": ((0, 4, 5, 3), (0, 3, 4, 0), (0, 5, 3, 4), (0, 3, 0, 4)),
    "minor": ((0, 3, 0, 4), (0, 5, 3, 4), (0, 3, 4, 0), (0, 5, 6, 0)),
}


@dataclass(frozen=True)
class Mood:
    modes: tuple[str, ...]
    bpm: tuple[int, int]
    bright: float  # 0..1, harmonic roll-off of every voice
    level: float  # peak level (linear, < 1) the mix is normalised to
    density: str  # melody rhythm: sparse / medium / dense


@dataclass(frozen=True)
class Genre:
    moods: tuple[str, ...]
    chords: tuple[str, ...]
    melody: tuple[str | None, ...]
    bass: tuple[str | None, ...]
    drums: str | None  # drum pattern name, None = no kit
    bars_per_chord: int = 1


MOODS = {
    "happy": Mood(("major",), (112, 140), 0.9, 0.70, "medium"),
    "energetic": Mood(("major", "minor"), (128, 160), 1.0, 0.75, "dense"),
    "calm": Mood(("major",), (70, 96), 0.5, 0.45, "sparse"),
    "sad": Mood(("minor",), (70, 92), 0.45, 0.45, "sparse"),
    "dark": Mood(("minor",), (84, 118), 0.3, 0.60, "medium"),
}
GENRES = {
    "rock": Genre(("energetic", "happy", "dark"), ("guitar",), ("guitar", "lead", "organ"), ("bass",), "rock"),
    "pop": Genre(("happy", "sad", "energetic"), ("piano", "guitar"), ("lead", "piano", "strings"), ("bass",), "pop"),
    "electronic": Genre(("energetic", "dark", "happy"), ("pad",), ("lead",), ("bass",), "electronic"),
    "jazz": Genre(("calm", "sad", "happy"), ("piano", "organ"), ("piano", "guitar"), ("bass",), "jazz"),
    "classical": Genre(("calm", "sad", "happy"), ("strings", "piano"), ("piano", "strings"), ("strings", "piano"),
                       None),
    "ambient": Genre(("calm", "dark", "sad"), ("pad", "strings"), ("piano", "lead", None), (None, "pad"), None, 2),
}
# Voice -> MTG-Jamendo instrument tag.
VOICE_TAG = {
    "piano": "piano", "organ": "organ", "guitar": "guitar", "strings": "strings",
    "pad": "synthesizer", "lead": "synthesizer", "bass": "bass",
}
# Drum patterns on a 16-step bar grid: (kick, snare, closed hat, ride/open hat) step lists.
DRUM_PATTERNS = {
    "rock": ((0, 8), (4, 12), (0, 2, 4, 6, 8, 10, 12, 14), ()),
    "pop": ((0, 6, 8), (4, 12), (0, 2, 4, 6, 8, 10, 12, 14), ()),
    "electronic": ((0, 4, 8, 12), (4, 12), (2, 6, 10, 14), ()),
    "jazz": ((0, 8), (12,), (4, 12), (0, 4, 8, 12, 14)),
}
RHYTHMS = {  # melody rhythms in eighth notes per bar (each sums to 8)
    "sparse": ((4, 4), (8,), (2, 2, 4), (6, 2)),
    "medium": ((2, 2, 2, 2), (3, 1, 2, 2), (2, 2, 4), (2, 1, 1, 4)),
    "dense": ((1, 1, 1, 1, 1, 1, 1, 1), (2, 1, 1, 2, 1, 1), (1, 1, 2, 1, 1, 2), (2, 2, 1, 1, 2)),
}


@dataclass(frozen=True)
class TrackSpec:
    """Everything that decides a track's sound; :func:`render` is a pure function of it."""

    seed: int
    seconds: float
    genre: str
    mood: str
    bpm: int
    root: int  # pitch class of the tonic, 0 = C
    mode: str  # "major" | "minor"
    progression: tuple[int, ...]
    chords: str
    melody: str | None
    bass: str | None
    drums: bool

    @property
    def key(self) -> str:
        return NOTE_NAMES[self.root]

    @property
    def instruments(self) -> tuple[str, ...]:
        """MTG-Jamendo instrument tags of the voices that actually play, sorted."""
        tags = {VOICE_TAG[v] for v in (self.chords, self.melody, self.bass) if v}
        if self.drums:
            tags.add("drums")
        return tuple(sorted(tags))

    @property
    def tags(self) -> list[str]:
        """Tag columns as in raw_30s_cleantags.tsv, sorted like the real file."""
        return sorted([f"genre---{self.genre}", f"mood/theme---{self.mood}"]
                      + [f"instrument---{t}" for t in self.instruments])


def random_spec(rng: np.random.Generator, seconds: float, seed: int) -> TrackSpec:
    """Draw a consistent (genre, mood, tempo, key, mode, voices) combination."""
    genre = str(rng.choice(list(GENRES)))
    g = GENRES[genre]
    mood = str(rng.choice(g.moods))
    m = MOODS[mood]
    mode = str(rng.choice(m.modes))
    prog = PROGRESSIONS[mode][int(rng.integers(len(PROGRESSIONS[mode])))]
    return TrackSpec(
        seed=int(seed), seconds=float(seconds), genre=genre, mood=mood,
        bpm=int(rng.integers(m.bpm[0], m.bpm[1] + 1)), root=int(rng.integers(12)), mode=mode,
        progression=tuple(prog), chords=str(rng.choice(g.chords)),
        melody=g.melody[int(rng.integers(len(g.melody)))], bass=g.bass[int(rng.integers(len(g.bass)))],
        drums=g.drums is not None,
    )


# --- voices: (frequency, held samples, brightness) -> mono waveform including its release ----------
TABLE = 4096  # samples per single-cycle wavetable (>= 16 x the highest partial used: no audible error)


def _midi_hz(m: float) -> float:
    return 440.0 * 2.0 ** ((m - 69) / 12.0)


@functools.lru_cache(maxsize=256)
def _table(amps: tuple[float, ...]) -> np.ndarray:
    """Single cycle of ``sum_k amps[k-1] sin(2 pi k x)``: ``[TABLE] float32``."""
    x = np.arange(TABLE) / TABLE
    k = np.arange(1, len(amps) + 1)[:, None]
    return (np.asarray(amps)[:, None] * np.sin(2 * np.pi * k * x[None, :])).sum(0).astype(np.float32)


def _osc(amps, f0: float, n: int, sr: int = SAMPLE_RATE, vib: float = 0.0, detune=(1.0,)) -> np.ndarray:
    """Wavetable oscillator (float32 phase, nearest sample): ``[n] float32``, ~100x cheaper than sin()."""
    t = np.arange(n, dtype=np.float32) / np.float32(sr)
    if vib:  # 5.5 Hz vibrato of relative depth ``vib``, as phase modulation
        t = t - np.float32(vib / (2 * np.pi * 5.5)) * np.cos(np.float32(2 * np.pi * 5.5) * t)
    tab = _table(tuple(round(float(a), 4) for a in amps))
    out = np.zeros(n, dtype=np.float32)
    for d in detune:
        ph = t * np.float32(f0 * d)
        ph -= np.floor(ph)
        ph *= TABLE
        out += tab.take(ph.astype(np.intp), mode="wrap")
    return out / len(detune)


def _decay(rate: float, n: int, sr: int = SAMPLE_RATE) -> np.ndarray:
    return np.exp(np.arange(n, dtype=np.float32) * np.float32(-rate / sr))


def _env(n_hold, attack_s, release_s, sr=SAMPLE_RATE):
    a, r = max(1, int(attack_s * sr)), max(1, int(release_s * sr))
    e = np.ones(n_hold + r, dtype=np.float32)
    e[:a] = np.linspace(0.0, 1.0, a, endpoint=False)[: n_hold + r]
    e[n_hold:] *= np.linspace(1.0, 0.0, r, dtype=np.float32)
    return e


def _voice(name: str, f0: float, n: int, bright: float) -> np.ndarray:
    """One note of ``name`` held ``n`` samples, plus its release tail: ``[n + tail] float32``.

    Decaying timbres are two wavetable layers (low partials decay slowly, upper ones fast), the
    two-rate picture of a struck or plucked string.
    """
    k = np.arange(1, 13, dtype=np.float64)
    roll = 1.0 + 1.5 * (1.0 - bright)  # darker moods: steeper harmonic roll-off
    nyq = k * f0 < 0.45 * SAMPLE_RATE  # keep partials below Nyquist (no aliasing)
    if name in ("piano", "guitar"):
        if name == "piano":
            amps, slow, fast, tail, atk = k ** -(roll + 0.5), 1.5, 6.0, 4410, 0.004
        else:  # plucked at 1/5 of the string: |sin(pi k p)| / k
            amps, slow, fast, tail, atk = np.abs(np.sin(np.pi * k * 0.2)) / k ** roll, 2.5, 10.0, 2205, 0.002
        amps = amps * nyq
        low, high = np.where(k <= 2, amps, 0.0), np.where(k > 2, amps, 0.0)
        m = n + tail
        w = _osc(low, f0, m) * _decay(slow, m) + _osc(high, f0, m) * _decay(fast, m)
        return w * _env(n, atk, tail / SAMPLE_RATE)
    if name == "organ":  # drawbars 8' 4' 2 2/3' 2' 1 3/5' 1 1/3', sustained
        amps = np.array([1, 0.6, 0.35 * bright, 0.3, 0.12 * bright, 0.1]) * nyq[:6]
        return _osc(amps, f0, n + 2205) * _env(n, 0.02, 0.05)
    if name == "strings":  # bowed: sawtooth spectrum, vibrato, slow attack
        return _osc(k[:10] ** -(roll + 0.2) * nyq[:10], f0, n + 6615, vib=0.004) * _env(n, 0.12, 0.15)
    if name == "pad":  # detuned saws, very slow attack and release
        amps = k[:8] ** -(roll + 0.8) * nyq[:8]
        return _osc(amps, f0, n + 13230, detune=(0.996, 1.0, 1.004)) * _env(n, 0.35, 0.3)
    if name == "lead":  # square-ish (odd partials), slight detune, gentle decay
        amps = np.where(k % 2 == 1, k ** -roll, 0.0) * nyq
        m = n + 2205
        return _osc(amps, f0, m, detune=(0.998, 1.002)) * _decay(0.3, m) * _env(n, 0.01, 0.05)
    if name == "bass":  # round bass: fundamental + two partials, moderate decay
        m = n + 2205
        return _osc((1, 0.35 * bright + 0.1, 0.12), f0, m) * _decay(1.5, m) * _env(n, 0.005, 0.05)
    raise ValueError(f"unknown voice {name!r}; known: {sorted(VOICE_TAG)}")


# --- drums ------------------------------------------------------------------------------------------
def _drum_kit(rng: np.random.Generator, sr: int = SAMPLE_RATE) -> dict[str, np.ndarray]:
    t = np.arange(int(0.45 * sr)) / sr
    f = 48 + 110 * np.exp(-t * 35)  # kick: falling pitch
    kick = np.sin(2 * np.pi * np.cumsum(f) / sr) * np.exp(-t * 9) + 0.3 * np.exp(-t * 400)
    noise = rng.standard_normal(t.size)
    hp = np.diff(noise, prepend=0.0)  # first difference = crude high-pass
    snare = 0.7 * hp * np.exp(-t * 22) + 0.6 * np.sin(2 * np.pi * 190 * t) * np.exp(-t * 30)
    hat = np.diff(hp, prepend=0.0)[: int(0.09 * sr)] * np.exp(-t[: int(0.09 * sr)] * 55) * 0.25
    bell = sum(np.sin(2 * np.pi * fr * t) for fr in (3150.0, 4420.0, 5960.0)) / 3.0
    ride = (0.12 * np.diff(hp, prepend=0.0) + 0.25 * bell) * np.exp(-t * 10)
    return {"kick": kick, "snare": snare, "hat": hat, "ride": ride}


# --- arrangement ------------------------------------------------------------------------------------
def _events(spec: TrackSpec, rng: np.random.Generator):
    """Note events per part: ``{part: [(onset_s, dur_s, midi, velocity)]}`` plus drum hits."""
    beat = 60.0 / spec.bpm
    bar = 4 * beat
    g, m = GENRES[spec.genre], MOODS[spec.mood]
    scale = SCALES[spec.mode]
    n_bars = int(np.ceil(spec.seconds / bar))
    tonic = 48 + spec.root  # C3..B3

    def degree_midi(d: int, base: int) -> int:
        return base + 12 * (d // 7) + scale[d % 7]

    chords_of_bar = []
    for b in range(n_bars):
        d = spec.progression[(b // g.bars_per_chord) % len(spec.progression)]
        chords_of_bar.append(0 if b >= n_bars - 2 else d)  # end on the tonic chord
    parts: dict[str, list] = {"chords": [], "melody": [], "bass": []}
    jazz7 = spec.genre == "jazz"
    for b, d in enumerate(chords_of_bar):
        t0 = b * bar
        tones = [degree_midi(d + i, tonic) for i in ((0, 2, 4, 6) if jazz7 else (0, 2, 4))]
        if spec.mode == "minor" and d % 7 == 4:
            tones[1] += 1  # harmonic-minor dominant: major third = the leading tone
        tones = [x + 12 if x < 55 else x for x in tones]
        if spec.chords == "guitar":  # strummed eighths (energetic) or quarters
            step = beat / 2 if spec.mood == "energetic" else beat
            for s in np.arange(0, bar - 1e-9, step):
                for i, x in enumerate(tones):
                    parts["chords"].append((t0 + s + 0.008 * i, step * 0.95, x, 0.5))
        elif spec.chords == "piano":
            if spec.genre == "classical":  # broken-chord eighths
                for j, s in enumerate(np.arange(0, bar - 1e-9, beat / 2)):
                    parts["chords"].append((t0 + s, beat, tones[j % len(tones)], 0.55))
            else:
                for s in (0.0, 2 * beat):
                    for x in tones:
                        parts["chords"].append((t0 + s, 2 * beat * 0.95, x, 0.45))
        else:  # organ, strings, pad: sustained for the bar
            for x in tones:
                parts["chords"].append((t0, bar, x, 0.4))
        root = degree_midi(d, tonic - 12)  # bass octave 2
        if spec.bass:
            if spec.genre == "jazz":  # walking quarters: root, third, fifth, sixth
                for i, j in enumerate((0, 2, 4, 5)):
                    parts["bass"].append((t0 + i * beat, beat * 0.9, degree_midi(d + j, tonic - 12), 0.8))
            elif spec.genre == "electronic":  # off-beat eighths
                for i in range(4):
                    parts["bass"].append((t0 + i * beat + beat / 2, beat / 2 * 0.8, root, 0.9))
            elif spec.genre in ("rock", "pop"):
                for i in range(8):
                    parts["bass"].append((t0 + i * beat / 2, beat / 2 * 0.9, root, 0.8))
            else:  # classical / ambient: long root notes
                parts["bass"].append((t0, bar * 0.98, root if spec.bass == "pad" else root + 12, 0.7))
    if spec.melody:
        deg = 7  # start on the tonic of octave 4 (scale degrees counted from tonic 3)
        motif = None
        for b, d in enumerate(chords_of_bar):
            if b == 0:
                continue  # one bar of accompaniment before the tune enters
            if motif is None or b % 4 == 1 or rng.random() < 0.25:  # a new rhythm every phrase
                motif = RHYTHMS[m.density][int(rng.integers(len(RHYTHMS[m.density])))]
            s = 0.0
            for i, dur8 in enumerate(motif):
                on_beat = (s % 1.0) == 0.0
                chord_degs = [d + 7 + j for j in (0, 2, 4)] + [d + 14]
                if i == 0 or (on_beat and rng.random() < 0.6):
                    deg = min(chord_degs, key=lambda c: abs(c - deg) + 0.1 * rng.random())
                else:
                    deg = int(np.clip(deg + rng.choice((-2, -1, -1, 1, 1, 2)), 5, 16))
                if b == n_bars - 1 and i == 0:
                    deg = 14  # tonic on the last bar
                if rng.random() > 0.08:
                    dur = dur8 * beat / 2
                    parts["melody"].append((b * bar + s * beat, dur * 0.92, degree_midi(deg, tonic), 0.7))
                s += dur8 / 2
    drums = []
    if spec.drums:
        kick, snare, hat, ride = DRUM_PATTERNS[g.drums]
        vel = 1.0 if spec.mood == "energetic" else 0.8 if spec.genre != "jazz" else 0.55
        dense_hats = spec.mood == "energetic" and g.drums in ("rock", "pop")  # 16th hats
        if spec.bpm < 100 and g.drums in ("rock", "pop"):
            hat = (0, 4, 8, 12)  # slow songs: quarter-note hats, so the beat is not heard at 2x
        if dense_hats:
            hat = tuple(range(16))
        for b in range(n_bars):
            for name, steps in (("kick", kick), ("snare", snare), ("hat", hat), ("ride", ride)):
                for st in steps:
                    acc = 1.0 if st % 4 == 0 else 0.7
                    drums.append((b * bar + st * beat / 4, name, vel * acc * (0.9 + 0.1 * rng.random())))
    return parts, drums


def render(spec: TrackSpec, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Synthesise ``spec``: ``[2, round(seconds * sr)] float32``, peak = the mood's level (< 1)."""
    rng = np.random.default_rng(spec.seed)
    n = int(round(spec.seconds * sr))
    m = MOODS[spec.mood]
    parts, drums = _events(spec, rng)
    voices = {"chords": spec.chords, "melody": spec.melody, "bass": spec.bass}
    gains = {"chords": 0.28, "melody": 0.45, "bass": 0.55}
    pans = {"chords": float(rng.uniform(-0.4, 0.4)), "melody": float(rng.uniform(-0.25, 0.25)), "bass": 0.0}
    mix = np.zeros((2, n), dtype=np.float32)
    for part, events in parts.items():
        voice = voices[part]
        if not voice or not events:
            continue
        mono = np.zeros(n, dtype=np.float32)
        cache: dict[tuple[int, int], np.ndarray] = {}
        for onset, dur, midi, vel in events:
            start = int(round(onset * sr))
            if start >= n:
                continue
            key = (midi, int(round(dur * sr)))
            if key not in cache:
                cache[key] = _voice(voice, _midi_hz(midi), key[1], m.bright)
            w = cache[key]
            stop = min(n, start + w.size)
            mono[start:stop] += vel * w[: stop - start]
        mono *= gains[part] / max(1e-9, np.percentile(np.abs(mono), 99.5))
        p = (pans[part] + 1) * np.pi / 4  # constant-power pan
        mix += np.stack([np.cos(p) * mono, np.sin(p) * mono])
    if drums:
        kit = _drum_kit(rng, sr)
        dmix = np.zeros((2, n), dtype=np.float32)
        dpan = {"kick": 0.0, "snare": 0.1, "hat": 0.45, "ride": -0.4}
        for onset, name, vel in drums:
            start = int(round(onset * sr))
            if start >= n:
                continue
            w = kit[name]
            stop = min(n, start + w.size)
            p = (dpan[name] + 1) * np.pi / 4
            dmix[0, start:stop] += np.cos(p) * vel * w[: stop - start]
            dmix[1, start:stop] += np.sin(p) * vel * w[: stop - start]
        mix += 0.6 * dmix / max(1e-9, np.abs(dmix).max())
    # Small stereo room: two early reflections, then fades and normalisation to the mood's level.
    d1, d2 = int(0.031 * sr), int(0.047 * sr)
    mix[0, d1:] += 0.18 * mix[1, :-d1]
    mix[1, d2:] += 0.18 * mix[0, :-d2]
    fade_in, fade_out = int(0.01 * sr), min(n // 4, int(1.5 * sr))
    mix[:, :fade_in] *= np.linspace(0, 1, fade_in)
    mix[:, n - fade_out:] *= np.linspace(1, 0, fade_out) ** 2
    mix *= m.level / max(1e-9, np.abs(mix).max())
    return mix.astype(np.float32)
