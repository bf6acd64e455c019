# Shared wiring: shard list, paths, and the input functions that connect config to rules.
import shlex
import re
from ssmttm.config import allowed_licences, shard_ids
from ssmttm.constants import METADATA_FILES

SHARDS = shard_ids(config)
RESULTS = "results"
LOGS = f"{RESULTS}/logs"
BENCH = f"{RESULTS}/benchmarks"
META_DIR = f"{RESULTS}/data/source/metadata"
AUDIO_DIR = f"{RESULTS}/data/source/audio"
WEIGHTS_DIR = config["weights"]["dir"]

FILE_TO_META_KEY = {v: k for k, v in METADATA_FILES.items()}


wildcard_constraints:
    shard=r"\d{2}",
    name=r"[A-Za-z0-9_.-]+",
    metafile="|".join(re.escape(f) for f in METADATA_FILES.values()),


def meta(key):
    """Local path of a fetched metadata file, by its config key (source.metadata.<key>)."""
    return f"{META_DIR}/{METADATA_FILES[key]}"


def weight_receipt(name):
    return f"{WEIGHTS_DIR}/{name}.json"


def device_gpus(device):
    """Scheduling resource: a job that may use CUDA takes one `gpu` (map it with --resources gpu=N)."""
    return 0 if device == "cpu" else 1


def opt(flag, value):
    """`--flag 'value'` (shell-quoted) or nothing when the config value is null/empty."""
    return f"{flag} {shlex.quote(str(value))}" if value not in (None, "") else ""
