"""The one definition of every dataset, codec and token constant used across the package."""

# --- MTG-Jamendo (docs/reference.md §2) -------------------------------------------------------
# raw_30s_cleantags.tsv holds every track longer than 30 s; audio ships as 100 tar archives,
# raw_30s_audio-00.tar .. -99.tar, tar NN holding folder NN/ with tracks whose number % 100 == NN.
JAMENDO_N_TARS = 100
JAMENDO_N_TRACKS_RAW_30S = 55_701
SONG_DESCRIBER_N_TRACKS = 706

# --- Audio ---------------------------------------------------------------------------------------
# DAC 44.1 kHz (descript-audio-codec, model_type 44khz): hop 512 -> 86.13 frames/s.
SAMPLE_RATE = 44_100

# --- Licences ------------------------------------------------------------------------------------
# The six Creative Commons variants present in MTG-Jamendo, in the order used in every report.
CC_CODES = ("by", "by-sa", "by-nd", "by-nc", "by-nc-sa", "by-nc-nd")
LICENCE_PRESETS = {
    # What the paper used: every CC variant in the corpus.
    "paper": CC_CODES,
    # Licences that allow commercial use of a derived model's outputs.
    "commercial-ok": ("by", "by-sa"),
}

# --- Manifest ------------------------------------------------------------------------------------
MANIFEST_VERSION = 2  # 2: source columns (format, channels, rate, clipped fraction, flags)

# --- Source metadata files -----------------------------------------------------------------------
# config key under source.metadata -> local file name under results/data/source/metadata/
METADATA_FILES = {
    "cleantags": "raw_30s_cleantags.tsv",
    "meta": "raw.meta.tsv",
    "licenses": "audio_licenses.txt",
    "tar_sha256": "raw_30s_audio_sha256_tars.txt",
    "track_sha256": "raw_30s_audio_sha256_tracks.txt",
    "song_describer": "song_describer.csv",
    "musiccaps": "musiccaps-public.csv",
}
# Header of musiccaps-public.csv (Agostinelli et al. 2023; read by ssmttm.eval.promptsets, checked at fetch).
MUSICCAPS_COLUMNS = (
    "ytid", "start_s", "end_s", "audioset_positive_labels", "aspect_list", "caption", "author_id",
    "is_balanced_subset", "is_audioset_eval",
)

# --- Codec tokens (docs/reference.md §1-2) ----------------------------------------------------
# DAC 44.1 kHz: 9 codebooks x 1024 codes, hop 512 -> 44100 / 512 = 86.13 frames/s; 30 s = 2584 frames.
DAC_44KHZ_N_CODEBOOKS = 9
DAC_44KHZ_HOP = 512
CODEBOOK_SIZE = 1024
# One id beyond the codebook: BOS, delay-pattern filler and padding; ignored by the loss.
SPECIAL_TOKEN = CODEBOOK_SIZE
VOCAB_SIZE = CODEBOOK_SIZE + 1  # per-codebook embedding table size (1025)
FRAME_RATE = SAMPLE_RATE / DAC_44KHZ_HOP  # 86.1328125 frames/s
TOKEN_STORE_VERSION = 1
TEXT_STORE_VERSION = 1
