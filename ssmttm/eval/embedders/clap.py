"""LAION-CLAP (HTSAT-base audio tower + RoBERTa text tower) for the CLAP score: 48 kHz mono, 512-d.

docs/reference.md §3: CLAP score = mean cosine(text, audio) with LAION-CLAP HTSAT-base and
``music_audioset_epoch_15_esc_90.14.pt`` (``music_speech_audioset_epoch_15_esc_89.98.pt`` is also common;
the checkpoint changes scores ~2.4x, so protocol() always names it and its sha256).

Building without the hub. laion_clap's ``CLAP`` class calls ``RobertaModel.from_pretrained('roberta-base')``
inside ``__init__`` and its ``CLAP_Module`` calls ``RobertaTokenizer.from_pretrained('roberta-base')``;
importing the ``laion_clap`` package even loads three hub tokenizers (training/data.py). So we load only
its ``clap_module`` subpackage (under the name laion_clap itself registers, ``clap_module``) and build
:class:`_LocalCLAP`, a subclass of laion_clap's ``CLAP`` whose constructor takes the towers instead of
names: laion_clap's ``HTSAT_Swin_Transformer`` (HTSAT-base's hyper-parameters, read from the checkpoint's
tensor shapes), a ``RobertaModel`` built from the LOCAL roberta folder's config.json (aux
``text_model=<folder>``, hub off), and laion_clap's ``MLPLayers`` / projection layers. All inference
methods (``get_audio_embedding``, ``get_text_embedding``) are laion_clap's own; the state_dict keys are
exactly those of ``CLAP(**HTSAT-base.json, text_cfg.model_type="roberta")``. RoBERTa's own weights are
never read: the CLAP checkpoint holds the fine-tuned ``text_branch.*``; the folder gives config + tokenizer.

Checkpoint: a dict ``{"state_dict": {"module.<key>": tensor}, ...}`` from DDP training (laion_clap's
``load_state_dict`` also takes a plain state_dict; both handled), read with ``torch.load(weights_only=True)``
while allowing only numpy's scalar/dtype reconstructors (the training metadata holds numpy scalars;
third-party loaders of music_audioset_epoch_15_esc_90.14.pt do the same). The old
``text_branch.embeddings.position_ids`` buffer (persistent before transformers 4.31) is dropped after
checking it is 0..L-1, as laion_clap's loader does.

Audio handling = laion_clap ``CLAP_Module.get_audio_embedding_from_data`` for the non-fusion model:
quantise to int16 and back, then ``get_audio_features(max_len=480000, data_truncating="rand_trunc",
data_filling="repeatpad")``: a clip longer than 10 s (480,000 samples) is cut to ONE random 10 s crop
(``np.random.randint(0, overflow + 1)``; we draw it from ``np.random.RandomState(crop_seed)``, aux
``crop_seed`` default 0, so scores are reproducible); a shorter clip is tiled ``int(480000 / N)`` times and
zero-padded to 10 s. One clip -> one L2-normalised 512-d vector. Text: padded/truncated to 77 tokens
(laion_clap's ``tokenizer``), RoBERTa pooler output -> projection -> L2-normalised.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io as _io
import json
import math
import os
import re
import sys
import warnings
from pathlib import Path

import numpy as np

from ssmttm.eval.embedders.base import EmbedderError, TextAudioEmbedder

SAMPLE_RATE = 48000  # LAION-CLAP audio config (HTSAT-base.json)
CLIP_SAMPLES = 480000  # 10 s: the model's input length
TEXT_MAX_LENGTH = 77  # laion_clap CLAP_Module.tokenizer: padding="max_length", max_length=77
SPEC_SIZE, PATCH_STRIDE = 256, (4, 4)  # every LAION HTSAT variant (htsat.create_htsat_model)
TEXT_BATCH = 64
# The deterministic position buffer older transformers saved with RobertaModel.
_OLD_BUFFERS = ("text_branch.embeddings.position_ids",)

# tiny demo model: HTSAT at width 8 (stages 8/16/32/64), a shifted-window block in stage 3, 16 classes
TINY_HTSAT = dict(embed_dim=8, patch_size=4, depths=[1, 1, 2, 1], num_heads=[1, 1, 2, 2], window_size=8,
                  num_classes=16, mlp_ratio=4.0)
TINY_ROBERTA = dict(vocab_size=512, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=64, max_position_embeddings=82, type_vocab_size=1,
                    pad_token_id=1, bos_token_id=0, eos_token_id=2)
_TINY_SENTENCES = [
    "a calm piano piece with soft strings and a slow rhythm",
    "an energetic rock song with electric guitar, bass and loud drums",
    "a dreamy ambient track with warm synthesizer pads",
    "upbeat electronic dance music with a driving beat",
    "a sad acoustic folk song with gentle guitar and violin",
    "jazz trio with piano, double bass and brushed drums, relaxed tempo",
    "orchestral cinematic music with brass, choir and timpani",
    "lo-fi hip hop beat with vinyl crackle and mellow keys",
    "a happy reggae groove with organ and offbeat guitar",
    "heavy metal with distorted guitars and fast double kick drums",
]


@contextlib.contextmanager
def _quiet():
    """laion_clap, timm and torchlibrosa warn about deprecated APIs on import and use."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _clap_module():
    """laion_clap's ``clap_module`` subpackage WITHOUT running ``laion_clap/__init__`` (whose import
    chain fetches hub tokenizers). Registered as ``clap_module``, the name laion_clap itself uses."""
    from ssmttm.compat import prepare_torchvision

    prepare_torchvision()  # clap_module imports torchvision and transformers
    if "clap_module" not in sys.modules:
        spec = importlib.util.find_spec("laion_clap")
        if spec is None or not spec.submodule_search_locations:
            raise EmbedderError("clap: laion_clap is not installed (pip install laion_clap==1.1.7)")
        folder = Path(list(spec.submodule_search_locations)[0]) / "clap_module"
        sub = importlib.util.spec_from_file_location("clap_module", folder / "__init__.py",
                                                     submodule_search_locations=[str(folder)])
        module = importlib.util.module_from_spec(sub)
        sys.modules["clap_module"] = module
        try:
            with _quiet():
                sub.loader.exec_module(module)
        except Exception:
            sys.modules.pop("clap_module", None)
            raise
    import clap_module.htsat  # noqa: F401
    import clap_module.model  # noqa: F401

    return sys.modules["clap_module"]


def audio_cfg() -> dict:
    """laion_clap's HTSAT-base audio config (model_configs/HTSAT-base.json): 48 kHz, 1024/480 STFT, 64 mels."""
    cm = _clap_module()
    cfg = json.loads((Path(cm.__file__).parent / "model_configs" / "HTSAT-base.json").read_text())
    return cfg["audio_cfg"]


def _np_scalar():
    """numpy's scalar reconstructor (numpy.core in numpy 1.x, numpy._core in 2.x)."""
    if np.lib.NumpyVersion(np.__version__) >= "2.0.0":
        from numpy._core.multiarray import scalar
    else:
        from numpy.core.multiarray import scalar
    return scalar


def read_checkpoint(path: str | os.PathLike) -> dict:
    """The CLAP tensors, keys without the DDP ``module.`` prefix (weights_only; pickled objects refused)."""
    import torch

    # numpy scalars/dtypes in the training metadata: data-only reconstructors, allowed for this load only
    safe = [np.dtype, (_np_scalar(), "numpy.core.multiarray.scalar"), (_np_scalar(), "numpy._core.multiarray.scalar")]
    safe += [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType")]
    from ssmttm.weight_cache import load_torch_file

    with _quiet():
        obj = load_torch_file(path, EmbedderError, "clap", safe)
    sd = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(sd, dict) or not sd:
        raise EmbedderError(f"clap: {path} holds no state_dict (got {type(obj).__name__})")
    sd = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise EmbedderError(f"clap: {path}: non-tensor entries {bad[:5]} (not a CLAP state_dict)")
    return sd


def infer_htsat(sd: dict, source: str = "checkpoint") -> dict:
    """HTSAT hyper-parameters from tensor shapes: {embed_dim, depths, num_heads, window_size, num_classes,
    mlp_ratio, patch_size}. Heads and window come from each stage's relative_position_bias_table
    [(2w-1)^2, heads]."""
    key = "audio_branch.patch_embed.proj.weight"
    if key not in sd or "audio_branch.head.weight" not in sd:
        raise EmbedderError(f"clap: {source} has no {key!r}: not a LAION-CLAP HTSAT checkpoint")
    blocks: dict[int, set[int]] = {}
    for k in sd:
        if m := re.match(r"audio_branch\.layers\.(\d+)\.blocks\.(\d+)\.", k):
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    stages = sorted(blocks)
    if not stages or stages != list(range(len(stages))):
        raise EmbedderError(f"clap: {source}: no HTSAT stages (audio_branch.layers.<i>.blocks.<j>)")
    tables = [sd[f"audio_branch.layers.{i}.blocks.0.attn.relative_position_bias_table"] for i in stages]
    embed_dim = int(sd[key].shape[0])
    return {
        "embed_dim": embed_dim,
        "patch_size": int(sd[key].shape[-1]),
        "depths": [1 + max(blocks[i]) for i in stages],
        "num_heads": [int(t.shape[1]) for t in tables],
        "window_size": (int(round(math.sqrt(tables[0].shape[0]))) + 1) // 2,
        "num_classes": int(sd["audio_branch.head.weight"].shape[0]),
        "mlp_ratio": sd["audio_branch.layers.0.blocks.0.mlp.fc1.weight"].shape[0] / embed_dim,
    }


def _build_clap(htsat: dict, text_config, joint: int = 512):
    """A :class:`_LocalCLAP` with random weights: HTSAT(**htsat) + RobertaModel(text_config)."""
    import torch

    _clap_module()
    from clap_module.htsat import HTSAT_Swin_Transformer
    from clap_module.model import CLAP, CLAPAudioCfp, MLPLayers
    from torch import nn
    from transformers import RobertaModel

    class _LocalCLAP(CLAP):
        """laion_clap's CLAP with injected towers (its __init__ would fetch roberta-base from the hub)."""

        def __init__(self, audio_branch, text_branch, audio_config, joint_embed_shape: int):
            nn.Module.__init__(self)
            # the attributes CLAP.__init__ sets for amodel HTSAT, tmodel roberta, no fusion, mlp_act relu
            self.audio_cfg, self.text_cfg = audio_config, None
            self.enable_fusion, self.fusion_type = False, "None"
            self.joint_embed_shape, self.mlp_act = joint_embed_shape, "relu"
            self.context_length = TEXT_MAX_LENGTH
            self.audio_branch = audio_branch
            self.text_branch = text_branch
            self.text_branch_type = "roberta"
            width = text_branch.config.hidden_size  # 768 for roberta-base (CLAP hardcodes 768)
            self.text_transform = MLPLayers(units=[joint_embed_shape] * 3, dropout=0.1)
            self.text_projection = nn.Sequential(nn.Linear(width, joint_embed_shape), nn.ReLU(),
                                                 nn.Linear(joint_embed_shape, joint_embed_shape))
            self.audio_transform = MLPLayers(units=[joint_embed_shape] * 3, dropout=0.1)
            self.audio_projection = nn.Sequential(nn.Linear(audio_branch.num_features, joint_embed_shape), nn.ReLU(),
                                                  nn.Linear(joint_embed_shape, joint_embed_shape))
            self.logit_scale_a = nn.Parameter(torch.ones([]) * np.log(1 / 0.07))
            self.logit_scale_t = nn.Parameter(torch.ones([]) * np.log(1 / 0.07))

    acfg = CLAPAudioCfp(**{**audio_cfg(), "class_num": htsat["num_classes"]})
    with _quiet():
        audio = HTSAT_Swin_Transformer(
            spec_size=SPEC_SIZE, patch_size=htsat["patch_size"], patch_stride=PATCH_STRIDE,
            num_classes=htsat["num_classes"], embed_dim=htsat["embed_dim"], depths=list(htsat["depths"]),
            num_heads=list(htsat["num_heads"]), window_size=htsat["window_size"],
            mlp_ratio=htsat.get("mlp_ratio", 4.0), config=acfg)
        text = RobertaModel(text_config, add_pooling_layer=True)
    return _LocalCLAP(audio, text, acfg, joint).eval()


def load_text_tower(folder: str | os.PathLike):
    """(RobertaConfig, tokenizer) from a local roberta folder (config.json + tokenizer files), hub off."""
    from ssmttm import weight_cache

    _clap_module()
    import transformers

    try:
        folder = weight_cache.local_path(folder)
    except FileNotFoundError as exc:  # MissingWeightError says how to fetch it
        raise EmbedderError(f"clap: text model: {exc}") from exc
    if not (folder / "config.json").is_file():
        raise EmbedderError(f"clap: text model folder {folder} has no config.json (expected a roberta-base snapshot)")
    with weight_cache.offline_env(), _quiet():
        try:
            config = transformers.RobertaConfig.from_pretrained(str(folder), local_files_only=True)
            tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise EmbedderError(f"clap: text model folder {folder}: {type(exc).__name__}: {exc}") from exc
    if tokenizer is None or isinstance(tokenizer, bool) or len(tokenizer) > config.vocab_size:
        raise EmbedderError(f"clap: text model folder {folder}: no tokenizer, or one larger than the "
                            f"model's {config.vocab_size}-row vocabulary")
    ids = tokenizer(_TINY_SENTENCES[0])["input_ids"]
    if tokenizer.pad_token_id is None or tokenizer.unk_token_id in ids[1:-1]:
        raise EmbedderError(f"clap: text model folder {folder}: tokenizer maps plain words to <unk> or has no <pad>")
    return config, tokenizer


def load_clap(path: str | os.PathLike, text_model: str | os.PathLike, device: str = "cpu"):
    """(model, tokenizer): the CLAP checkpoint loaded strictly into :func:`_build_clap`'s model."""
    import torch

    config, tokenizer = load_text_tower(text_model)
    sd = read_checkpoint(path)
    model = _build_clap(infer_htsat(sd, str(path)), config, joint=int(sd["audio_projection.2.weight"].shape[0])
                        if "audio_projection.2.weight" in sd else 512)
    own = model.state_dict()
    for k in _OLD_BUFFERS:
        if k in sd and k not in own:
            v = sd.pop(k)
            if not torch.equal(v.reshape(-1).long(), torch.arange(v.numel())):
                raise EmbedderError(f"clap: {path}: {k} is not 0..{v.numel() - 1}")
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as exc:  # names the missing / unexpected / mis-shaped keys
        raise EmbedderError(f"clap: {path} does not match LAION-CLAP HTSAT + the text model "
                            f"{text_model}: {str(exc)[:600]}") from exc
    model.requires_grad_(False)
    return model.to(device).eval(), tokenizer


def prepare_audio(audio: np.ndarray, crop_seed: int = 0) -> np.ndarray:
    """audio [N] -> [480000] float32 the way laion_clap's get_audio_embedding_from_data feeds HTSAT:
    int16 quantisation, then one seeded random 10 s crop (longer clips) or tile + zero-pad (shorter)."""
    x = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
    x = ((x * 32767.0).astype(np.int16) / 32767.0).astype(np.float32)  # float32_to_int16 -> int16_to_float32
    n = len(x)
    if n > CLIP_SAMPLES:  # rand_trunc
        start = np.random.RandomState(crop_seed).randint(0, n - CLIP_SAMPLES + 1)
        return x[start:start + CLIP_SAMPLES]
    if n < CLIP_SAMPLES:  # repeatpad
        x = np.tile(x, CLIP_SAMPLES // n)
        x = np.concatenate([x, np.zeros(CLIP_SAMPLES - len(x), dtype=np.float32)])
    return x


class CLAPEmbedder(TextAudioEmbedder):
    """audio [N] float32 mono at 48 kHz -> [1, 512] (one clip vector); texts -> [B, 512]; L2-normalised.

    aux: ``text_model`` (required): the local roberta-base folder (or its weights receipt);
    ``crop_seed`` (default 0): the seed of the 10 s crop of longer clips.
    """

    name = "clap"
    sample_rate = SAMPLE_RATE
    window_s = CLIP_SAMPLES / SAMPLE_RATE
    hop_s = None
    has_model = True

    def __init__(self, weights, device: str = "cpu", lazy: bool = False, **aux):
        super().__init__(weights, device=device, **aux)
        if self.weights is None:
            raise EmbedderError("clap: a checkpoint file is required (music_audioset_epoch_15_esc_90.14.pt)")
        if "text_model" not in self.aux:
            raise EmbedderError("clap: aux text_model=<local roberta-base folder> is required (the tokenizer "
                                "and text-tower config; weights entry roberta_base)")
        self.crop_seed = int(self.aux.get("crop_seed", 0))
        if not lazy:
            self.load()

    def _load(self) -> None:
        self.model, self.tokenizer = load_clap(self.weights, self.aux["text_model"], self.device)

    def text_protocol(self) -> dict:
        """What a cached text embedding depends on besides the CLAP checkpoint (whose text branch it runs):
        the text tower's folder (config and tokenizer), by name and content hash."""
        from ssmttm import io
        from ssmttm.weight_cache import local_path

        folder = Path(local_path(self.aux["text_model"]))
        return {"text_model": folder.name,
                "text_model_sha256": io.sha256_tree(folder) if folder.is_dir() else io.sha256_file(folder)}

    def embed(self, audio: np.ndarray) -> np.ndarray:
        """audio [N] float32 at 48 kHz -> [1, 512] float32, L2-normalised."""
        import torch

        self.load()
        x = np.asarray(audio, dtype=np.float32)
        if x.ndim != 1 or len(x) == 0:
            raise EmbedderError(f"clap: expected non-empty mono audio [N], got shape {x.shape}")
        if not np.isfinite(x).all():
            raise EmbedderError("clap: audio contains NaN or infinite samples")
        wav = torch.from_numpy(prepare_audio(x, self.crop_seed))
        sample = {"waveform": wav, "longer": torch.tensor([len(x) > CLIP_SAMPLES])}
        with torch.no_grad(), _quiet():
            out = self.model.get_audio_embedding([sample])
        return out.float().cpu().numpy().astype(np.float32)

    def embed_text(self, texts: list[str]) -> np.ndarray:
        """texts -> [B, 512] float32, L2-normalised (77-token RoBERTa input, as laion_clap)."""
        import torch

        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise EmbedderError("clap: embed_text takes a list of strings")
        self.load()
        out = []
        for i in range(0, len(texts), TEXT_BATCH):
            tok = self.tokenizer(list(texts[i:i + TEXT_BATCH]), padding="max_length", truncation=True,
                                 max_length=TEXT_MAX_LENGTH, return_tensors="pt")
            batch = {"input_ids": tok["input_ids"], "attention_mask": tok["attention_mask"]}
            with torch.no_grad(), _quiet():
                out.append(self.model.get_text_embedding(batch).float().cpu().numpy())
        if not out:
            return np.zeros((0, self.model.joint_embed_shape), dtype=np.float32)
        return np.concatenate(out, axis=0).astype(np.float32)


# --- tiny demo models ----------------------------------------------------------------------------


def build_tiny_roberta(out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """A tiny roberta folder (RobertaModel 32 wide, 2 layers + a byte-level BPE RobertaTokenizer trained
    on a few caption sentences), saved with save_pretrained like the roberta-base snapshot."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    _clap_module()
    import transformers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # RoBERTa's ids 0..3 (+ mask)
    trainer = trainers.BpeTrainer(vocab_size=TINY_ROBERTA["vocab_size"], special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_TINY_SENTENCES * 4, trainer)
    spec = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in spec["merges"]]
    tokenizer = transformers.RobertaTokenizer(vocab=spec["vocab"], merges=merges, model_max_length=512)
    config = transformers.RobertaConfig(**TINY_ROBERTA)
    torch.manual_seed(seed)
    model = transformers.RobertaModel(config, add_pooling_layer=True).eval()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


def build_tiny_clap(out_path: str | os.PathLike, seed: int = 0) -> Path:
    """Write a tiny random-init LAION-CLAP checkpoint (~6 MB, float16) in the released layout
    ``{"epoch", "state_dict": {"module.<key>": tensor}}`` (with the old position_ids buffer and a numpy
    scalar in the metadata, as in the release). Its text tower matches :func:`build_tiny_roberta`."""
    import torch
    import transformers

    from ssmttm import io

    _clap_module()
    torch.manual_seed(seed)
    model = _build_clap(TINY_HTSAT, transformers.RobertaConfig(**TINY_ROBERTA))
    # float16 on disk keeps the file small (the five 512x512 joint-space layers and the fixed 1024-point
    # DFT kernels dominate); load_state_dict casts into the model's float32 parameters as for any file.
    sd = {f"module.{k}": (v.half() if v.is_floating_point() else v).detach().clone().contiguous()
          for k, v in model.state_dict().items()}
    n_pos = TINY_ROBERTA["max_position_embeddings"]
    sd["module.text_branch.embeddings.position_ids"] = torch.arange(n_pos).unsqueeze(0)
    out = Path(out_path)
    # Through memory: torch names the zip's inner folder after the file's stem, which for the atomic
    # temporary file is random; a buffer gets the fixed name "archive" (same bytes for the same seed).
    buf = _io.BytesIO()
    torch.save({"epoch": 15, "state_dict": sd, "val_metric": np.float64(0.0)}, buf)
    with io.atomic_open(out, "wb") as f:
        f.write(buf.getvalue())
    return out
