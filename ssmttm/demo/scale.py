"""Synthetic metadata at the real corpus's scale (55,701 tracks), for DAG and filter scale checks.

Only metadata: a raw_30s_cleantags.tsv with realistic ids, paths and durations, a Song Describer
csv naming 706 of its tracks, and an audio_licenses.txt giving every track a CC licence.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ssmttm import io
from ssmttm.constants import CC_CODES, JAMENDO_N_TRACKS_RAW_30S, SONG_DESCRIBER_N_TRACKS

_CC_WORDS = {
    "by": "Attribution",
    "by-sa": "Attribution-ShareAlike",
    "by-nd": "Attribution-NoDerivatives",
    "by-nc": "Attribution-NonCommercial",
    "by-nc-sa": "Attribution-NonCommercial-ShareAlike",
    "by-nc-nd": "Attribution-NonCommercial-NoDerivatives",
}
# Reported licence mix of MTG-Jamendo (docs/reference.md §2), used as sampling weights.
_CC_MIX = {"by": 3122, "by-sa": 9933, "by-nd": 3303, "by-nc": 2274, "by-nc-sa": 21399, "by-nc-nd": 15584}


def write_metadata(
    out_dir: str | Path,
    n_tracks: int = JAMENDO_N_TRACKS_RAW_30S,
    n_song_describer: int = SONG_DESCRIBER_N_TRACKS,
    seed: int = 0,
) -> dict[str, Path]:
    """Write cleantags TSV, Song Describer csv and licence file; return their paths by config key."""
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    nums = np.sort(rng.choice(np.arange(1000, 1_500_000), size=n_tracks, replace=False))
    durations = np.round(rng.uniform(30.5, 600.0, size=n_tracks), 1)
    genres = np.array(["rock", "electronic", "pop", "classical", "ambient", "jazz"])
    g = rng.integers(0, len(genres), size=n_tracks)
    rows = ["TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS"]
    for i, (num, dur) in enumerate(zip(nums.tolist(), durations.tolist())):
        rows.append(
            f"track_{num:07d}\tartist_{num % 50000:06d}\talbum_{num % 90000:06d}\t{num % 100:02d}/{num}.mp3"
            f"\t{dur:.1f}\tgenre---{genres[g[i]]}"
        )
    paths = {
        "cleantags": out_dir / "raw_30s_cleantags.tsv",
        "song_describer": out_dir / "song_describer.csv",
        "licenses": out_dir / "audio_licenses.txt",
    }
    io.write_text(paths["cleantags"], "\n".join(rows) + "\n")

    sdd = rng.choice(nums, size=n_song_describer, replace=False)
    sdd_rows = ["caption_id,track_id,caption,is_valid_subset,familiarity,artist_id,album_id,path,duration"]
    for j, num in enumerate(sdd.tolist()):
        sdd_rows.append(f"{j},{num},A piece of music.,True,0,{num % 50000},{num % 90000},{num % 100:02d}/{num}.2min.mp3,120.0")
    io.write_text(paths["song_describer"], "\n".join(sdd_rows) + "\n")

    codes = list(_CC_MIX)
    weights = np.array([_CC_MIX[c] for c in codes], dtype=float)
    lic = rng.choice(len(codes), size=n_tracks, p=weights / weights.sum())
    recs = []
    for num, k in zip(nums.tolist(), lic.tolist()):
        code = codes[k]
        assert code in CC_CODES
        recs.append(
            f"{num % 100:02d}/{num}.mp3\n"
            f"Track {num} by Artist {num % 50000} from Jamendo: https://www.jamendo.com/track/{num}\n"
            f"Available under a Creative Commons {_CC_WORDS[code]} license: "
            f"http://creativecommons.org/licenses/{code}/3.0/\n"
        )
    io.write_text(paths["licenses"], "\n".join(recs))
    return paths
