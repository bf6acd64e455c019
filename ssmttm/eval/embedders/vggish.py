"""VGGish, the FAD embedding model, as the frechet-audio-distance / torchvggish protocol runs it.

Protocol (docs/reference.md §3; Hershey et al., ICASSP 2017): 16 kHz mono; the log-mel front end
of :mod:`ssmttm.eval.embedders.logmel` (25 ms periodic Hann, 10 ms hop, 512-point FFT magnitude,
64 HTK-mel bands 125-7500 Hz, log(mel + 0.01)); non-overlapping 0.96 s examples of 96 frames x 64
bands (only complete examples, as AudioSet's ``mel_features.frame``); the VGG net

    conv64-pool-conv128-pool-conv256-conv256-pool-conv512-conv512-pool   (3x3 convs, ReLU, 2x2 pools)
    -> flatten in (time, mel, channel) order, 6 x 4 x 512 = 12288
    -> fc 4096 - ReLU - fc 4096 - ReLU - fc 128

and the 128-d output of the last fc WITHOUT its ReLU and WITHOUT the PCA/quantisation
post-processing: frechet_audio_distance 0.3.4 (fad.py, ``FrechetAudioDistance.__init__`` defaults
``use_pca=False, use_activation=False``; ``__get_model`` then sets ``model.postprocess = False`` and
rebuilds ``model.embeddings`` without its last child, the ReLU). One 128-d row per 0.96 s example.

Checkpoint: the released torchvggish ``vggish-10086976.pth`` is a bare state_dict of 18 tensors,
``features.{0,3,6,8,11,13}.{weight,bias}`` (convs) and ``embeddings.{0,2,4}.{weight,bias}`` (fcs);
:class:`VGGishNet` has exactly those keys and shapes, and :func:`load_vggish` reads the file with
``torch.load(weights_only=True)`` and loads it strictly. Widths are not stored in the file, so
:meth:`VGGishConfig.from_state_dict` infers them from tensor shapes: the tiny demo model written by
:func:`build_tiny_vggish` (same class, narrow widths, same 128-d output) loads through the same
loader. Full size: 72,141,184 parameters (:func:`param_count`).

Short clips: fewer than 96 frames (< 400 + 95 x 160 = 15,600 samples, 0.975 s) are zero-padded at
the end to exactly one example, so every clip gives at least one row (torchvggish would give none).
aux options: ``batch_size`` (examples per forward pass, default 64).
"""

from __future__ import annotations

import dataclasses
import functools
import io as _io
import os
from pathlib import Path

import numpy as np

from ssmttm import io
from ssmttm.eval.embedders.base import Embedder, EmbedderError
from ssmttm.eval.embedders.logmel import (
    MEL_MAX_HZ,
    MEL_MIN_HZ,
    N_MELS,
    check_audio,
    frame_params,
    log_mel_spectrogram,
    pad_to,
)

SAMPLE_RATE = 16_000
EXAMPLE_FRAMES = 96  # 0.96 s of 10 ms frames per example (vggish_params.EXAMPLE_WINDOW_SECONDS)
EXAMPLE_S = 0.96
# conv widths in order; a 2x2 max-pool follows convs 1, 2, 4 and 6 (VGG configuration "A"-like)
_POOL_AFTER = (0, 1, 3, 5)
# flattened feature map after 4 pools of [96, 64]: 6 x 4 positions (x channels)
_MAP_POSITIONS = (EXAMPLE_FRAMES // 16) * (N_MELS // 16)


@dataclasses.dataclass(frozen=True)
class VGGishConfig:
    """Widths of the VGGish net; the input (96 x 64 log-mel example) and layer pattern are fixed."""

    channels: tuple[int, ...] = (64, 128, 256, 256, 512, 512)
    fc: tuple[int, int] = (4096, 4096)
    embed_dim: int = 128

    def __post_init__(self):
        if len(self.channels) != 6 or len(self.fc) != 2 or min((*self.channels, *self.fc, self.embed_dim)) < 1:
            raise EmbedderError(f"vggish: bad config {self} (6 conv widths, 2 fc widths, all >= 1)")

    def conv_keys(self) -> list[int]:
        """Index of each conv in ``features`` (each conv is followed by a ReLU, some by a pool)."""
        idx, out = 0, []
        for i in range(6):
            out.append(idx)
            idx += 3 if i in _POOL_AFTER else 2
        return out  # [0, 3, 6, 8, 11, 13]

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """state_dict key -> tensor shape, in torchvggish's layout."""
        out: dict[str, tuple[int, ...]] = {}
        c_in = 1
        for idx, c in zip(self.conv_keys(), self.channels):
            out[f"features.{idx}.weight"] = (c, c_in, 3, 3)
            out[f"features.{idx}.bias"] = (c,)
            c_in = c
        dims = (self.channels[-1] * _MAP_POSITIONS, *self.fc, self.embed_dim)
        for j in range(3):
            out[f"embeddings.{2 * j}.weight"] = (dims[j + 1], dims[j])
            out[f"embeddings.{2 * j}.bias"] = (dims[j + 1],)
        return out

    @classmethod
    def from_state_dict(cls, state: dict) -> "VGGishConfig":
        """Widths read off the tensor shapes (the released file is a bare state_dict)."""
        probe = cls()
        try:
            channels = tuple(int(state[f"features.{i}.weight"].shape[0]) for i in probe.conv_keys())
            fc = (int(state["embeddings.0.weight"].shape[0]), int(state["embeddings.2.weight"].shape[0]))
            embed_dim = int(state["embeddings.4.weight"].shape[0])
        except (KeyError, AttributeError, IndexError) as exc:
            raise EmbedderError(f"vggish: state_dict lacks the torchvggish layout ({type(exc).__name__}: {exc})") from exc
        return cls(channels=channels, fc=fc, embed_dim=embed_dim)


TINY_CONFIG = VGGishConfig(channels=(4, 8, 8, 8, 16, 16), fc=(32, 32), embed_dim=128)


def param_count(config: VGGishConfig = VGGishConfig()) -> int:
    """Closed-form parameter count (full size: 4,499,712 conv + 67,641,472 fc = 72,141,184)."""
    return int(sum(int(np.prod(s)) for s in config.shapes().values()))


@functools.lru_cache(maxsize=None)
def _net_class():
    """VGGishNet, defined on first use so importing this module does not import torch."""
    import torch
    from torch import nn

    class VGGishNet(nn.Module):
        """examples [B, 1, 96, 64] log-mel -> [B, embed_dim] (last fc, no ReLU)."""

        def __init__(self, config: VGGishConfig):
            super().__init__()
            self.config = config
            layers: list[nn.Module] = []
            c_in = 1
            for i, c in enumerate(config.channels):
                layers += [nn.Conv2d(c_in, c, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                if i in _POOL_AFTER:
                    layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                c_in = c
            self.features = nn.Sequential(*layers)
            d_in = config.channels[-1] * _MAP_POSITIONS
            # Linear-ReLU-Linear-ReLU-Linear: indices 0, 2, 4 as in the checkpoint; frechet_audio_distance
            # drops the final ReLU (use_activation=False), so it is not built at all.
            self.embeddings = nn.Sequential(
                nn.Linear(d_in, config.fc[0]), nn.ReLU(inplace=True),
                nn.Linear(config.fc[0], config.fc[1]), nn.ReLU(inplace=True),
                nn.Linear(config.fc[1], config.embed_dim),
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.features(x)  # [B, C, 6, 4]
            # the TF original flattens NHWC: (time, mel, channel) order; the fc weights expect it
            x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)
            return self.embeddings(x)

    return VGGishNet


def build_net(config: VGGishConfig = VGGishConfig()):
    """A randomly initialised :class:`VGGishNet` (build under ``torch.device('meta')`` to size it free)."""
    return _net_class()(config)


def read_state_dict(path: str | os.PathLike) -> dict:
    """A bare state_dict {name: Tensor} from ``path`` (``torch.load(weights_only=True)``).

    A folder must hold exactly one ``.pth``/``.pt`` file. Raises EmbedderError naming the file when
    the file pickles anything but tensors and plain containers, is unreadable, or is not a dict of
    tensors.
    """
    import torch

    path = Path(path)
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix in (".pth", ".pt") and p.is_file())
        if len(found) != 1:
            raise EmbedderError(f"vggish: {path} must hold exactly one .pth/.pt file, found {[p.name for p in found]}")
        path = found[0]
    from ssmttm.weight_cache import load_torch_file

    obj = load_torch_file(path, EmbedderError, "vggish")
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise EmbedderError(f"vggish: {path} is not a bare state_dict of tensors (torchvggish vggish-10086976.pth layout)")
    return obj


def check_state_dict(state: dict, config: VGGishConfig, path: str | os.PathLike = "") -> None:
    """EmbedderError naming every missing, unexpected or mis-shaped key."""
    want = config.shapes()
    missing = sorted(set(want) - set(state))
    extra = sorted(set(state) - set(want))
    wrong = sorted(f"{k} {tuple(state[k].shape)} != {want[k]}" for k in set(want) & set(state)
                   if tuple(state[k].shape) != want[k])
    if missing or extra or wrong:
        raise EmbedderError(f"vggish: {path} does not match the VGGish layout: missing keys {missing}, "
                            f"unexpected keys {extra}, wrong shapes {wrong}")


def load_vggish(path: str | os.PathLike, device: str = "cpu"):
    """(VGGishNet in eval mode on ``device``, config) from a torchvggish-format state_dict, strictly."""
    state = read_state_dict(path)
    config = VGGishConfig.from_state_dict(state)
    check_state_dict(state, config, path)
    net = build_net(config)
    net.load_state_dict(state, strict=True)
    return net.to(device).eval(), config


def build_tiny_vggish(out_path: str | os.PathLike, seed: int = 0, config: VGGishConfig = TINY_CONFIG) -> Path:
    """Write a random-init VGGish state_dict (``torch.save`` of a plain dict, the released format).

    He-normal weights (so activations neither vanish nor blow up through the narrow random net),
    zero biases; deterministic: the same seed gives a byte-identical file (~100 KB).
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in config.shapes().items():
        if key.endswith(".bias"):
            state[key] = torch.zeros(shape)
        else:
            fan_in = int(np.prod(shape[1:]))
            gain = 1.0 if key == "embeddings.4.weight" else 2.0
            state[key] = torch.randn(shape, generator=gen) * float(np.sqrt(gain / fan_in))
    buf = _io.BytesIO()  # through memory: zip record names must not depend on the temporary file name
    torch.save(state, buf)
    with io.atomic_open(out_path, "wb") as f:
        f.write(buf.getvalue())
    return Path(out_path)


def examples(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """audio [N] at 16 kHz -> log-mel examples [max(1, F // 96), 96, 64] float32, F = 1 + (N - 400) // 160.

    Non-overlapping 0.96 s examples, incomplete tail dropped; a clip with fewer than 96 frames is
    zero-padded at the end to exactly one example.
    """
    win, hop, _ = frame_params(sample_rate)
    x = pad_to(check_audio(audio, "vggish"), win + (EXAMPLE_FRAMES - 1) * hop)
    logmel = log_mel_spectrogram(x, sample_rate, N_MELS, MEL_MIN_HZ, MEL_MAX_HZ)  # [F, 64]
    n = logmel.shape[0] // EXAMPLE_FRAMES
    return logmel[: n * EXAMPLE_FRAMES].reshape(n, EXAMPLE_FRAMES, N_MELS).astype(np.float32)


class VGGishEmbedder(Embedder):
    """audio [N] float32 mono at 16 kHz -> [max(1, F // 96), 128] float32, one row per 0.96 s."""

    name = "vggish"
    sample_rate = SAMPLE_RATE
    window_s = EXAMPLE_S
    hop_s = EXAMPLE_S

    has_model = True

    def __init__(self, weights: str | os.PathLike, device: str = "cpu", lazy: bool = False, **aux):
        super().__init__(weights, device=device, **aux)
        if self.weights is None:
            raise EmbedderError("vggish: needs a weights file (torchvggish vggish-10086976.pth)")
        unknown = sorted(set(self.aux) - {"batch_size"})
        if unknown:
            raise EmbedderError(f"vggish: unknown options {unknown} (batch_size)")
        self.batch_size = int(self.aux.get("batch_size", 64))
        if self.batch_size < 1:
            raise EmbedderError(f"vggish: batch_size must be >= 1, got {self.batch_size}")
        if not lazy:
            self.load()

    def _load(self) -> None:
        self.net, self.config = load_vggish(self.weights, self.device)

    def embed(self, audio: np.ndarray) -> np.ndarray:
        import torch

        self.load()
        ex = torch.from_numpy(examples(audio, self.sample_rate))[:, None]  # [E, 1, 96, 64]
        out = []
        with torch.inference_mode():
            for i in range(0, ex.shape[0], self.batch_size):
                out.append(self.net(ex[i: i + self.batch_size].to(self.device)).float().cpu())
        return torch.cat(out).numpy()
