"""``evaluate``: one metric on one system's audio, against the reference clips of the prompt set.

A *system* is what a table row describes:

- ``generated``: the clips an experiment generated, one folder per (training seed, checkpoint step)
  (``results/generate/<exp>/seed<S>/step_N/<set>/``); each folder gives one score row;
- ``ground_truth``: the reference clips themselves (audiocraft's ``use_gt``): CLAP / attributes
  give the ceiling a perfect model would reach, KL is 0 by construction (a broken metric shows),
  and Fréchet distances are split-half (two seeded halves of the references), the floor a finite
  sample allows;
- ``resynth``: the reference clips through the codec at kappa codebooks, the codec's ceiling;
- ``musicgen`` / ``external``: a baseline (config ``systems``): MusicGen generated here by
  :mod:`ssmttm.generate.musicgen`, or a folder of another model's clips gathered by
  :mod:`ssmttm.generate.external`; both in generate's folder layout, scored exactly like ``generated``.

Each generated or re-synthesised clip is paired with its prompt (text) and the reference clip
its prompt describes (``ref_id``). Every clip is cut to the reference clips' duration before it is
embedded (``duration_s`` in every row): 862 generated DAC frames are 10.008 s, and without the cut
such a clip gets a second, almost all-padding 10 s PaSST window that its 10.000 s reference does
not, which alone moved the KL of a clip against itself by 0.007. The KL is audiocraft's, with
``evaluation.kl_epsilon`` (recorded in the row). Embeddings come from the per-file cache
(:mod:`ssmttm.eval.cache`), so adding a metric that shares a model costs nothing to embed again.
Rows carry their protocol and a bootstrap 95 % interval over clips (docs/reference.md §3: FAD
is biased by sample size, so n and the interval are always printed). Rows from random-init
metric models (the demo) say ``status: pipeline check, not a score``.

Settings (:class:`ssmttm.eval.options.EvaluateSettings`, defaults in the schema): ``evaluation.bootstrap``,
``seed``, ``device`` and ``truth``; the rule passes them as ``--settings`` JSON, by hand they are flags.
"""

from __future__ import annotations

import argparse
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ssmttm import io, logs, settings
from ssmttm.errors import SsmttmError
from ssmttm.eval.metrics import ATTRIBUTE_ROWS, METRICS
from ssmttm.eval.options import EvaluateSettings

PIPELINE_CHECK = "pipeline check, not a score"
SYSTEMS = ("generated", "ground_truth", "resynth", "musicgen", "external")
SET_SYSTEMS = ("generated", "musicgen", "external")  # scored from folders in generate's layout
ROW_KEYS = ("metric", "value", "ci_low", "ci_high", "n", "n_ref", "lower_is_better", "status", "model",
            "checkpoint", "checkpoint_sha256", "sample_rate", "window_s", "hop_s", "duration_s", "kl_epsilon",
            "bootstrap", "system_kind",
            "experiment", "variant", "preset", "kappa", "stages", "seed", "step", "prompt_set", "params", "flops_6nd",
            "flops_measured", "source")


class EvaluateError(SsmttmError, ValueError):
    """A set, prompt file or argument that cannot be evaluated; the message names it."""


@dataclass
class Item:
    """One scored clip: its audio, its prompt and the reference clip the prompt describes."""

    audio: Path
    prompt_id: str
    text: str
    ref_id: str | None


def read_prompts(path: str | Path) -> dict[str, dict]:
    """prompt_id -> {"text", "ref_id", ...} from a prompt-set JSON (ssmttm prompt-set)."""
    obj = io.read_json(path)
    return {str(p["prompt_id"]): p for p in obj.get("prompts", [])}


def read_reference(ref_dir: str | Path) -> dict[str, Path]:
    """ref_id -> wav path of a reference (or resynth) set folder (index.json ``clips``)."""
    ref_dir = Path(ref_dir)
    index = io.read_json(ref_dir / "index.json")
    out = {}
    for c in index.get("clips", []):
        path = ref_dir / c["file"]
        if path.is_file():
            out[str(c.get("ref_id") or c["id"])] = path
    return out


def generated_items(set_dir: Path, prompts: dict[str, dict]) -> tuple[list[Item], dict]:
    """Items of one generated folder + its run metadata (checkpoint meta.json merged over index.json)."""
    index = io.read_json(set_dir / "index.json")
    meta = dict(index)
    ckpt_meta = Path(str(index["checkpoint"])) / "meta.json" if index.get("checkpoint") else None
    if ckpt_meta is not None and ckpt_meta.is_file():
        meta.update(io.read_json(ckpt_meta))  # experiment, training seed, step, params, FLOPs
    else:
        m = re.search(r"seed(\d+)/step_(\d+)", set_dir.as_posix())
        meta.update({"seed": int(m.group(1)), "step": int(m.group(2))} if m else {"seed": None})
    items = []
    for it in index.get("items", []):
        pid = str(it["prompt_id"])
        p = prompts.get(pid, {})
        items.append(Item(set_dir / it["audio"], pid, p.get("text", it.get("prompt", "")), p.get("ref_id")))
    return items, meta


def reference_items(clips: dict[str, Path], prompts: dict[str, dict]) -> list[Item]:
    """One item per prompt whose reference clip exists in ``clips`` (ground truth / resynth)."""
    return [Item(clips[str(p.get("ref_id"))], pid, p.get("text", ""), str(p.get("ref_id")))
            for pid, p in prompts.items() if str(p.get("ref_id")) in clips]


def metric_embedder(m, models: dict[str, str], device: str, lazy: bool = False):
    """The embedder metric ``m`` runs, from ``models`` (role -> local weights path); ``lazy``: see
    :meth:`ssmttm.eval.embedders.Embedder.load`."""
    from ssmttm.eval.embedders import build_embedder

    for role in m.weights:
        if role not in models:
            raise EvaluateError(f"metric {m.name} needs --model {role}=PATH")
    aux = {"text_model": models["clap_text"]} if "clap_text" in m.weights else {}
    weights = models.get(m.weights[0]) if m.weights else None
    return build_embedder(m.embedder, weights, device=_device(device), lazy=lazy, **aux)


class Scorer:
    """Computes one metric's rows; metric models are loaded once, embeddings come from the cache."""

    def __init__(self, metric: str, models: dict[str, str], reference: dict[str, Path], cache_dir: Path,
                 s: EvaluateSettings):
        if metric not in METRICS:
            raise EvaluateError(f"--metric {metric!r}: unknown; known: {', '.join(METRICS)}")
        self.m = METRICS[metric]
        self.reference, self.cache_dir = reference, Path(cache_dir)
        self.n_boot, self.seed = s.bootstrap, s.seed
        self.kl_epsilon = float(s.kl_epsilon)
        self.duration_s = reference_seconds(reference.values())
        self.models = models
        self.embedder = None
        self.truth = _read_truth(s.truth) if self.m.kind == "attributes" else None
        if self.m.embedder is not None:
            # lazy: the model is loaded only if a file (or prompt text) is not in the cache; after the
            # embed_eval job of its model (ssmttm.eval.embed) has run, a score job imports no model at all
            self.embedder = metric_embedder(self.m, models, s.device, lazy=True)

    # -- embeddings ---------------------------------------------------------------------------------
    def _embed(self, paths: list[Path]) -> dict[Path, np.ndarray]:
        from ssmttm.eval.cache import embed_files, uncached

        uniq = sorted(set(paths))
        if not self.embedder.loaded and uncached(self.embedder, uniq, self.cache_dir, self.duration_s):
            self.embedder.load()  # now, so a broken checkpoint fails the job instead of skipping every clip
        out, _ = embed_files(self.embedder, uniq, self.cache_dir, self.duration_s)  # skipped files are logged there
        return {p: e for p, e in zip(uniq, out) if e is not None}

    def protocol(self) -> dict:
        if self.embedder is not None:
            return self.embedder.protocol()
        import librosa

        return {"model": f"librosa {librosa.__version__}", "checkpoint": None, "checkpoint_sha256": None,
                "sample_rate": None, "window_s": None, "hop_s": None}

    # -- metrics ------------------------------------------------------------------------------------
    def score(self, items: list[Item], split_half: bool = False) -> list[dict]:
        """Rows (without system columns) for ``items``; ``split_half``: FD of two reference halves."""
        kind = self.m.kind
        if kind == "fd":
            return [self._fd(items, split_half)]
        if kind == "kl":
            return [self._paired(items, self._kl_pairs)]
        if kind == "clap_score":
            return [self._paired(items, self._clap_pairs)]
        return self._attributes(items)

    def _row(self, metric: str, value: float | None, ci: tuple, n: int, n_ref: int, lower: bool) -> dict:
        return {"metric": metric, "value": None if value is None else float(value),
                "ci_low": None if ci[0] is None else float(ci[0]), "ci_high": None if ci[1] is None else float(ci[1]),
                "n": int(n), "n_ref": int(n_ref), "lower_is_better": lower, "bootstrap": self.n_boot,
                "duration_s": self.duration_s if self.embedder is not None else None,
                "kl_epsilon": self.kl_epsilon if self.m.kind == "kl" else None, **self.protocol()}

    def _ci(self, values: np.ndarray) -> tuple:
        """Percentile bootstrap interval of the mean of per-clip ``values`` (pairs resampled)."""
        from ssmttm.eval.stats import mean_ci

        if self.n_boot <= 0 or len(values) < 2:
            return (None, None)
        try:
            return mean_ci(values, self.n_boot, self.seed)
        except ValueError:  # non-finite values
            return (None, None)

    def _fd(self, items: list[Item], split_half: bool) -> dict:
        from ssmttm.eval.stats import fd_from_embeddings

        ref = self._embed(list(self.reference.values()))
        ref_list = [ref[p] for p in sorted(ref)]
        if split_half:
            rng = np.random.default_rng(self.seed)
            order = rng.permutation(len(ref_list))
            half = len(order) // 2
            gen_list, ref_list = [ref_list[i] for i in order[:half]], [ref_list[i] for i in order[half:]]
        else:
            gen = self._embed([it.audio for it in items])
            gen_list = [gen[p] for p in sorted(gen)]
        if not gen_list or not ref_list:
            return self._row(self.m.name, None, (None, None), len(gen_list), len(ref_list), True)
        from ssmttm.eval.stats import fd_bootstrap_ci

        value = fd_from_embeddings(gen_list, ref_list)
        ci = (None, None)
        if self.n_boot > 0 and len(gen_list) >= 2:
            try:  # resample generated clips, reference statistics fixed
                ci = fd_bootstrap_ci(gen_list, ref_list, self.n_boot, self.seed)
            except ValueError:
                pass
        return self._row(self.m.name, value, ci, len(gen_list), len(ref_list), True)

    def _paired(self, items: list[Item], pairs_fn) -> dict:
        values, n_ref = pairs_fn(items)
        if not values:
            return self._row(self.m.name, None, (None, None), 0, n_ref, self.m.lower_is_better)
        v = np.asarray(values, dtype=np.float64)
        ci = self._ci(v)
        return self._row(self.m.name, v.mean(), ci, len(v), n_ref, self.m.lower_is_better)

    def _kl_pairs(self, items: list[Item]) -> tuple[list[float], int]:
        from ssmttm.eval.stats import kl_per_pair

        items = [it for it in items if it.ref_id in self.reference]
        emb = self._embed([it.audio for it in items] + [self.reference[it.ref_id] for it in items])
        values, refs = [], set()
        for it in items:
            g, r = emb.get(it.audio), emb.get(self.reference[it.ref_id])
            if g is None or r is None:
                continue
            # PaSST protocol: logits mean-pooled over windows, then softmax, KL(ref || gen) per pair
            values.append(kl_per_pair(r.mean(axis=0), g.mean(axis=0), self.kl_epsilon))
            refs.add(it.ref_id)
        return values, len(refs)

    def _clap_pairs(self, items: list[Item]) -> tuple[list[float], int]:
        emb = self._embed([it.audio for it in items])
        kept = [it for it in items if it.audio in emb and it.text]
        if not kept:
            return [], 0
        from ssmttm.eval.cache import embed_texts

        text = embed_texts(self.embedder, [it.text for it in kept], self.cache_dir)
        audio = np.stack([emb[it.audio].mean(axis=0) for it in kept])
        audio = audio / np.maximum(np.linalg.norm(audio, axis=1, keepdims=True), 1e-12)
        text = text / np.maximum(np.linalg.norm(text, axis=1, keepdims=True), 1e-12)
        return [float(x) for x in (audio * text).sum(axis=1)], len({it.ref_id for it in kept if it.ref_id})

    def _attributes(self, items: list[Item]) -> list[dict]:
        from ssmttm.eval.attributes import adherence

        pairs = [(it.audio, {**self.truth[_track_key(it.ref_id)], "prompt_id": it.prompt_id})
                 for it in items if it.ref_id is not None and _track_key(it.ref_id) in self.truth]
        per_clip, _, _ = adherence(pairs)  # unreadable clips are skipped and logged there
        refs = {r.get("track_id") for r in per_clip}
        rows = []
        for k in ATTRIBUTE_ROWS:
            v = np.asarray([r[k] for r in per_clip if r.get(k) is not None], dtype=np.float64)
            ci = self._ci(v)
            rows.append(self._row(k, v.mean() if len(v) else None, ci, len(v), len(refs), False))
        return rows


def reference_seconds(paths) -> float | None:
    """The protocol duration: the longest reference clip, in seconds (None: no readable clip)."""
    import soundfile as sf

    longest = None
    for p in paths:
        try:
            info = sf.info(str(p))
        except RuntimeError:  # unreadable reference: its own metric rows skip and name it
            continue
        sec = info.frames / info.samplerate
        longest = sec if longest is None else max(longest, sec)
    return longest


def _track_key(ref_id) -> str:
    """Truth tables name tracks ``track_0705501``; Song Describer names them ``705501``."""
    digits = re.sub(r"\D", "", str(ref_id))
    return str(int(digits)) if digits else str(ref_id)


def _read_truth(path: str | None) -> dict[str, dict]:
    if not path:
        raise EvaluateError("metric attributes needs --truth TSV (track_id, bpm, key, mode, drums)")
    import pandas as pd

    try:
        df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except Exception as exc:
        raise EvaluateError(f"--truth {path}: cannot read ({exc})") from exc
    missing = {"track_id", "bpm", "key", "mode", "drums"} - set(df.columns)
    if missing:
        raise EvaluateError(f"--truth {path}: missing columns {sorted(missing)}")
    return {_track_key(r["track_id"]): r for r in df.to_dict("records")}


def system_columns(kind: str, experiment: str | None, meta: dict, prompt_set: str | None) -> dict:
    return {"system_kind": kind, "experiment": experiment or meta.get("experiment"),
            "variant": meta.get("variant"), "preset": meta.get("preset"), "kappa": meta.get("kappa"),
            "stages": meta.get("stages"),
            "seed": meta.get("seed"), "step": meta.get("step"), "prompt_set": prompt_set,
            "params": meta.get("n_params"), "flops_6nd": meta.get("flops_6nd"),
            "flops_measured": meta.get("measured_flops_total"), "source": meta.get("source")}


def evaluate(metric: str, system: str, sets: list[Path], reference: Path, prompts_path: Path,
             models: dict[str, str], cache_dir: Path, s: EvaluateSettings, experiment: str | None = None,
             pipeline_check: bool = False, kappa: int | None = None) -> list[dict]:
    """All rows of ``metric`` for ``system`` (see the module docstring), with the settings ``s``."""
    log = logging.getLogger("ssmttm.evaluate")
    if system not in SYSTEMS:
        raise EvaluateError(f"--system {system!r}: one of {', '.join(SYSTEMS)}")
    prompts = read_prompts(prompts_path)
    prompt_set = io.read_json(prompts_path).get("name")
    ref = read_reference(reference)
    if not ref:
        raise EvaluateError(f"--reference {reference}: no reference clips (see its availability.tsv)")
    scorer = Scorer(metric, models, ref, cache_dir, s)
    status = PIPELINE_CHECK if pipeline_check else "score"
    rows = []
    if system in SET_SYSTEMS:
        for d in sets:
            items, meta = generated_items(Path(d), prompts)
            cols = system_columns(system, experiment, meta, prompt_set)
            for r in scorer.score(items):
                rows.append({**r, **cols, "status": status})
            log.info("%s %s seed %s step %s: %s", metric, cols["experiment"], cols["seed"], cols["step"],
                     ", ".join(f"{r['metric']}={r['value']}" for r in rows[-len(ATTRIBUTE_ROWS):]))
    else:
        clips = ref if system == "ground_truth" else read_reference(sets[0])
        meta = {"kappa": kappa, "source": str(reference if system == "ground_truth" else sets[0])}
        cols = system_columns(system, experiment or (system if kappa is None else f"{system}_k{kappa}"), meta,
                              prompt_set)
        for r in scorer.score(reference_items(clips, prompts), split_half=system == "ground_truth"):
            rows.append({**r, **cols, "status": status})
    for r in rows:
        for k in ROW_KEYS:
            r.setdefault(k, None)
    return rows


def _flag_bool(text: str) -> bool:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def main(argv: list[str]) -> int | None:
    p = argparse.ArgumentParser(prog="ssmttm evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--metric", required=True, choices=sorted(METRICS))
    p.add_argument("--system", required=True, choices=SYSTEMS)
    p.add_argument("--experiment", default=None, help="experiment name (generated) or row label")
    p.add_argument("--set", dest="sets", action="extend", nargs="*", default=[],
                   help="generated set folders (one per seed x step) or the resynth folder")
    p.add_argument("--reference", required=True, help="reference set folder (ssmttm reference-audio)")
    p.add_argument("--prompts", required=True, help="prompt-set JSON")
    p.add_argument("--model", action="extend", nargs="*", default=[],
                   help="ROLE=PATH ... (a weights receipt, file or folder per evaluation.models role)")
    p.add_argument("--kappa", type=int, default=None, help="codebooks of the resynth system")
    p.add_argument("--pipeline-check", type=_flag_bool, nargs="?", const=True, default=False,
                   help="true: the metric models are random-init stand-ins (rows say so)")
    p.add_argument("--cache-dir", required=True, help="per-file embedding cache")
    p.add_argument("--out", required=True, help="score JSON {rows: [...]}")
    settings.add_arguments(p, EvaluateSettings)
    args = p.parse_args(argv)
    s = settings.from_args(p, EvaluateSettings, args)
    log = logs.setup("ssmttm.evaluate")
    from ssmttm.weight_cache import MissingWeightError

    try:
        models = parse_models(args.model)
        if args.system != "ground_truth" and not args.sets:
            raise EvaluateError(f"--system {args.system} needs --set")
        rows = evaluate(args.metric, args.system, [Path(d) for d in args.sets], Path(args.reference),
                        Path(args.prompts), models, Path(args.cache_dir), s, args.experiment, args.pipeline_check,
                        args.kappa)
    except (EvaluateError, MissingWeightError) as exc:
        log.error("%s", exc)
        return 2
    io.write_json(args.out, {"rows": rows})
    log.info("%d rows -> %s", len(rows), args.out)
    return 0


def parse_models(specs: list[str]) -> dict[str, str]:
    """``--model ROLE=PATH ...`` -> {role: local path} (a receipt resolves to its cached file)."""
    from ssmttm.weight_cache import local_path

    models = {}
    for spec in specs:
        role, sep, path = spec.partition("=")
        if not sep:
            raise EvaluateError(f"--model {spec!r}: expected ROLE=PATH")
        models[role] = str(local_path(path))
    return models


def _device(device: str) -> str:
    if device in ("", "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device
