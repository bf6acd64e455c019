"""PaSST, the AudioSet tagger behind the KL metric: 32 kHz mono, 10 s windows, 527 logits per window.

docs/reference.md §3: KL uses the PaSST AudioSet classifier (hear21passt), 32 kHz mono, 10 s windows
with 5 s overlap, logits mean-pooled then softmax, KL(ref || gen) per pair. :class:`PaSSTEmbedder`
returns the per-window LOGITS; the caller pools, softmaxes and computes KL (ssmttm.eval.stats).

Model: the released ``passt-s-f128-p16-s10-ap.476-swa.pt`` (hear21passt arch
``passt_s_swa_p16_128_ap476``): hear21passt's own classes, the mel front end ``AugmentMelSTFT`` with the
arguments of ``hear21passt.base.get_basic_model`` and the ``PaSST`` net (patch 16, stride 10x10, 128 mel
bins x 998 frames, distilled, 527 classes), wrapped in ``PasstBasicWrapper(mode="logits")``. They are
built here WITHOUT hear21passt's downloader; the local file is read with ``torch.load(weights_only=True)``
and loaded strictly into the net. hear21passt's own loader (``load_pretrained`` + ``checkpoint_filter_fn``)
loads the released file straight into the net's ``state_dict`` layout (``patch_embed.proj.weight``,
``cls_token``, ``dist_token``, ``new_pos_embed``, ``freq_new_pos_embed``, ``time_new_pos_embed``,
``blocks.<i>.*``, ``norm.*``, ``head.0/1.*``, ``head_dist.*``), unwrapping a ``{"model": ...}`` dict
when present; :func:`read_state_dict` accepts the same two layouts.

The architecture is read from tensor shapes (no sidecar file): width from ``cls_token``, depth from the
``blocks.<i>`` keys, MLP ratio from ``blocks.0.mlp.fc1``, classes from ``head.1``; heads = width / 64
(ViT/DeiT-B's head size: 768 / 12). :func:`build_tiny_passt` writes a random-init net of the same classes
(width 128, 2 blocks, 2 heads, still 527 classes) in the same file layout for the offline demo.

Windowing follows stable-audio-metrics ``src/passt_kld.py`` (``return_probabilities``, window 10 s,
overlap 5 s): window starts ``range(0, max(hop, N - hop), hop)`` (25 s -> 0, 5, 10, 15 s); a window
shorter than 10 s is zero-padded to 10 s when it is longer than 15 % of the window (1.5 s), else it is
fed unpadded (so a clip of at most 10 s is one window, padded when over 1.5 s). audiocraft's
``PasstKLDivergenceMetric`` instead cuts non-overlapping 10 s pieces, never pads, drops pieces of at most
0.15 s and averages per-piece softmax probabilities; we follow stable-audio-metrics because
docs/reference.md §3 asks for 5 s overlap and logit pooling. Audio shorter than 0.15 s (fewer than 16 STFT
frames, one patch) cannot be tagged and raises :class:`EmbedderError`. stable-audio-metrics also
peak-normalises each file to -1 dBFS before tagging; that is the caller's choice, not done here.
"""

from __future__ import annotations

import contextlib
import io as _io
import os
import re
import warnings
from pathlib import Path

import numpy as np

from ssmttm.eval.embedders.base import Embedder, EmbedderError

SAMPLE_RATE = 32000  # PaSST was trained on 32 kHz AudioSet
WINDOW_S = 10.0  # the released model's receptive field (998 mel frames)
HOP_S = 5.0  # 5 s overlap between 10 s windows (stable-audio-metrics)
PAD_MIN_FRACTION = 0.15  # stable-audio-metrics pads a short window only above 15 % of the window
MIN_S = 0.15  # shorter audio gives < 16 mel frames: not one 16-frame patch (audiocraft's minimum too)
N_CLASSES = 527  # AudioSet ontology
HEAD_DIM = 64  # ViT/DeiT-B head size; PaSST-S: 768 wide, 12 heads
BATCH = 8  # windows per forward pass

# hear21passt.base.get_basic_model: the mel front end the released checkpoint was trained with
MEL_ARGS = dict(n_mels=128, sr=SAMPLE_RATE, win_length=800, hopsize=320, n_fft=1024, freqm=48, timem=192,
                htk=False, fmin=0.0, fmax=None, norm=1, fmin_aug_range=10, fmax_aug_range=2000)
# hear21passt.models.passt.get_model(arch="passt_s_swa_p16_128_ap476") defaults: 128 x 998 input,
# 16x16 patches with stride 10 in both axes, one input channel, distillation token + head
NET_ARGS = dict(img_size=(128, 998), patch_size=16, stride=(10, 10), in_chans=1, distilled=True)
PASST_S = dict(embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0, num_classes=N_CLASSES)
TINY = dict(embed_dim=128, depth=2, num_heads=2, mlp_ratio=4.0, num_classes=N_CLASSES)


@contextlib.contextmanager
def _quiet():
    """hear21passt prints shapes on its first forward and warns about the 1000 vs 998 frame input."""
    with contextlib.redirect_stdout(_io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _classes():
    """(AugmentMelSTFT, PaSST, PasstBasicWrapper) from hear21passt (imports timm and torchaudio)."""
    from ssmttm.compat import prepare_torchvision

    prepare_torchvision()  # timm imports torchvision (ssmttm/compat.py)
    try:
        with _quiet():
            from hear21passt.models.passt import PaSST
            from hear21passt.models.preprocess import AugmentMelSTFT
            from hear21passt.wrapper import PasstBasicWrapper
    except ImportError as exc:
        raise EmbedderError(f"passt: hear21passt is not installed ({exc}); pip install hear21passt==0.0.26") from exc
    return AugmentMelSTFT, PaSST, PasstBasicWrapper


def read_state_dict(path: str | os.PathLike) -> dict:
    """The net's tensors from a PaSST checkpoint (plain state_dict or ``{"model": state_dict}``).

    ``torch.load(weights_only=True)``: a file holding pickled objects is refused (EmbedderError naming it).
    """
    import torch

    from ssmttm.weight_cache import load_torch_file

    obj = load_torch_file(path, EmbedderError, "passt")
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]  # hear21passt's checkpoint_filter_fn: DeiT-style {"model": state_dict}
    if not isinstance(obj, dict) or not obj:
        raise EmbedderError(f"passt: {path} holds no state_dict (got {type(obj).__name__})")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise EmbedderError(f"passt: {path}: non-tensor entries {bad[:5]} (not a PaSST state_dict)")
    return obj


def infer_config(sd: dict, source: str = "checkpoint") -> dict:
    """PaSST size from tensor shapes: {embed_dim, depth, num_heads, mlp_ratio, num_classes}."""
    for key in ("cls_token", "blocks.0.mlp.fc1.weight", "head.1.weight", "patch_embed.proj.weight"):
        if key not in sd:
            raise EmbedderError(f"passt: {source} has no {key!r}: not a PaSST net state_dict")
    embed_dim = int(sd["cls_token"].shape[-1])
    depth = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k)))
    if embed_dim % HEAD_DIM:
        raise EmbedderError(f"passt: {source}: width {embed_dim} is not a multiple of the {HEAD_DIM}-wide heads")
    return {
        "embed_dim": embed_dim,
        "depth": depth,
        "num_heads": embed_dim // HEAD_DIM,
        "mlp_ratio": sd["blocks.0.mlp.fc1.weight"].shape[0] / embed_dim,
        "num_classes": int(sd["head.1.weight"].shape[0]),
    }


def build_passt(config: dict):
    """``PasstBasicWrapper(mel=AugmentMelSTFT(...), net=PaSST(**NET_ARGS, **config), mode="logits")``,
    random init, eval mode: forward(audio [B, N] at 32 kHz) -> logits [B, num_classes]."""
    AugmentMelSTFT, PaSST, PasstBasicWrapper = _classes()
    with _quiet():
        mel = AugmentMelSTFT(**MEL_ARGS)
        net = PaSST(**NET_ARGS, **config)
        model = PasstBasicWrapper(mel=mel, net=net, mode="logits")
    return model.eval()


def load_passt(path: str | os.PathLike, device: str = "cpu"):
    """The wrapper of :func:`build_passt` with the checkpoint's net weights (strict), on ``device``."""
    sd = read_state_dict(path)
    model = build_passt(infer_config(sd, str(path)))
    try:
        model.net.load_state_dict(sd, strict=True)
    except RuntimeError as exc:  # names the missing / unexpected / mis-shaped keys
        raise EmbedderError(f"passt: {path} does not match the PaSST net: {str(exc)[:600]}") from exc
    model.requires_grad_(False)
    return model.to(device).eval()


def window_starts(n: int, sample_rate: int = SAMPLE_RATE, hop_s: float = HOP_S) -> list[int]:
    """Start samples of the analysis windows of an n-sample clip (stable-audio-metrics' rule).

    ``range(0, max(hop, n - hop), hop)``: 25 s -> [0, 5, 10, 15] s; 10 s or less -> [0].
    """
    hop = int(round(hop_s * sample_rate))
    return list(range(0, max(hop, n - hop), hop))


def windows(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> list[np.ndarray]:
    """audio [N] -> the analysis windows, each [10 s] (zero-padded) or, at most 1.5 s long, as is."""
    win = int(round(WINDOW_S * sample_rate))
    out = []
    for s in window_starts(len(audio), sample_rate):
        w = audio[s:s + win]
        if len(w) < win and len(w) > PAD_MIN_FRACTION * win:
            w = np.concatenate([w, np.zeros(win - len(w), dtype=w.dtype)])
        out.append(w)
    return out


class PaSSTEmbedder(Embedder):
    """audio [N] float32 mono at 32 kHz -> per-window AudioSet logits [windows, 527] float32."""

    name = "passt"
    sample_rate = SAMPLE_RATE
    window_s = WINDOW_S
    hop_s = HOP_S
    has_model = True

    def __init__(self, weights, device: str = "cpu", lazy: bool = False, **aux):
        super().__init__(weights, device=device, **aux)
        if self.weights is None:
            raise EmbedderError("passt: a checkpoint file is required (passt-s-f128-p16-s10-ap.476-swa.pt)")
        if not lazy:
            self.load()

    def _load(self) -> None:
        self.model = load_passt(self.weights, self.device)

    def embed(self, audio: np.ndarray) -> np.ndarray:
        """audio [N] float32 at 32 kHz -> logits [windows, 527] float32 (windows: see module doc)."""
        import torch

        self.load()
        x = np.asarray(audio, dtype=np.float32)
        if x.ndim != 1:
            raise EmbedderError(f"passt: expected mono audio [N], got shape {x.shape}")
        if len(x) < MIN_S * self.sample_rate:
            raise EmbedderError(f"passt: audio of {len(x) / self.sample_rate:.3f} s is shorter than {MIN_S} s")
        if not np.isfinite(x).all():
            raise EmbedderError("passt: audio contains NaN or infinite samples")
        segs = windows(x, self.sample_rate)
        out = []
        with torch.no_grad(), _quiet():
            i = 0
            while i < len(segs):
                # one batch holds windows of one length (only a lone clip of <= 1.5 s is unpadded)
                j = i + 1
                while j < len(segs) and j - i < BATCH and len(segs[j]) == len(segs[i]):
                    j += 1
                batch = torch.from_numpy(np.stack(segs[i:j])).to(self.device)
                out.append(self.model(batch).float().cpu().numpy())
                i = j
        return np.concatenate(out, axis=0).astype(np.float32)


def build_tiny_passt(out_path: str | os.PathLike, seed: int = 0) -> Path:
    """Write a tiny random-init PaSST net (width 128, 2 blocks, 2 heads, 527 classes, ~2.4 MB) as a plain
    state_dict with ``torch.save``, the layout of the released file, so :func:`load_passt` reads it.

    PaSST's own init zeroes the classifier heads (every clip would get the same logits); the tiny model
    draws them at random (std 0.02) so different audio gives different class distributions.
    """
    import torch

    from ssmttm import io

    torch.manual_seed(seed)
    net = build_passt(TINY).net
    with torch.no_grad():
        for lin in (net.head[1], net.head_dist):
            lin.weight.normal_(0.0, 0.02)
            lin.bias.normal_(0.0, 0.02)
    out = Path(out_path)
    # Through memory: torch names the zip's inner folder after the file's stem, which for the atomic
    # temporary file is random; a buffer gets the fixed name "archive" (same bytes for the same seed).
    buf = _io.BytesIO()
    torch.save({k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}, buf)
    with io.atomic_open(out, "wb") as f:
        f.write(buf.getvalue())
    return out
