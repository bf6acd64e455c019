"""descript-audio-codec's ``DAC`` behind the :class:`ssmttm.codec.Codec` interface, loaded safely.

Weights file format (what ``DAC.save(path, package=False)`` writes, and what the released
``weights.pth`` of model_type 44khz / 8kbps holds): a ``torch.save`` zip of the plain dict
``{"state_dict": {name: Tensor}, "metadata": {"kwargs": {DAC constructor arguments}}}``.
We read it with ``torch.load(weights_only=True)`` only, so a file that pickles anything but
tensors and plain containers is refused (dac's own ``DAC.load`` first tries ``torch.package``,
which executes code from the file; we never do). The model is built from the recorded kwargs and
the state dict is loaded strictly, mapping weight-norm keys between the two PyTorch spellings
(``weight_g``/``weight_v`` of ``torch.nn.utils.weight_norm``, which dac uses, and
``parametrizations.weight.original0/1`` of the newer parametrization API), so a renamed key can
never leave a layer silently at its random initialisation.

The demo codec is the same class with small dimensions (:data:`TINY_DAC_KWARGS`), saved by
:func:`build_tiny_dac` in the same format and loaded back by the same :func:`load`.

Frames and samples: ``DAC.preprocess`` right-pads the waveform with zeros to a multiple of the hop
(``prod(encoder_rates)`` = 512), and the encoder emits one frame per hop, so ``N`` samples give
``ceil(N / 512)`` frames: 30 s at 44.1 kHz = 1,323,000 samples -> 2584 frames (docs/reference.md §2).
Decoding ``T`` frames gives ``T * 512`` samples; callers trim to the original length.
"""

from __future__ import annotations

import io as _io
import logging
import os
import pickle
from pathlib import Path

from ssmttm import io
from ssmttm.codec import Codec, CodecError, resolve_device
from ssmttm.constants import CODEBOOK_SIZE, SAMPLE_RATE

log = logging.getLogger("ssmttm.codec.dac")

# The same DAC class at demo size: 4 codebooks x 1024 codes, hop 8*8*4*2 = 512 at 44.1 kHz, so its
# frame rate (86.13/s) and codebook size equal the real model's. encoder_dim 2 with the large
# strides first keeps the full-rate layers tiny: ~70k parameters, a ~0.4 MB file, and 30 s of
# audio encodes in ~0.3 s on 2 CPU cores.
TINY_DAC_KWARGS = {
    "encoder_dim": 2,
    "encoder_rates": [8, 8, 4, 2],
    "latent_dim": 16,
    "decoder_dim": 32,
    "decoder_rates": [8, 8, 4, 2],
    "n_codebooks": 4,
    "codebook_size": CODEBOOK_SIZE,
    "codebook_dim": 8,
    "quantizer_dropout": False,
    "sample_rate": SAMPLE_RATE,
}

# weight-norm parameter names: old hook API  <->  parametrization API
_WN_OLD_TO_NEW = {"weight_g": "parametrizations.weight.original0", "weight_v": "parametrizations.weight.original1"}


def _import_dac():
    """Import descript-audio-codec (its audiotools dependency imports torchaudio/torchvision)."""
    from ssmttm.compat import prepare_torchvision

    prepare_torchvision()
    try:
        import dac
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise CodecError(
            f"descript-audio-codec is not importable ({exc}); install it with "
            "`pip install descript-audio-codec` (and run `python -m ssmttm.compat --fix-install`)"
        ) from exc
    return dac


def read_checkpoint(path: str | os.PathLike) -> tuple[dict, dict]:
    """(kwargs, state_dict) from a DAC weights file, loaded with ``weights_only=True``.

    Raises CodecError naming the file when it is not a readable weights-only checkpoint of the
    ``{"state_dict", "metadata": {"kwargs"}}`` layout.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise CodecError(f"{path}: DAC weights file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CodecError(
            f"{path}: refused: the file pickles objects other than tensors and plain containers "
            f"(loaded with weights_only=True; torch.package archives are not accepted either): {exc}"
        ) from exc
    except Exception as exc:  # zip/format errors: RuntimeError, EOFError, ...
        raise CodecError(f"{path}: not a readable PyTorch weights file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, dict) or not isinstance(obj.get("state_dict"), dict):
        raise CodecError(f"{path}: expected a dict with 'state_dict' and 'metadata' (DAC.save(package=False) format)")
    kwargs = (obj.get("metadata") or {}).get("kwargs")
    if not isinstance(kwargs, dict):
        raise CodecError(f"{path}: no metadata['kwargs'] (the DAC constructor arguments) in the weights file")
    state = obj["state_dict"]
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CodecError(f"{path}: state_dict entries that are not tensors: {bad[:5]}")
    return dict(kwargs), state


def match_weight_norm(state: dict, model_keys) -> dict:
    """Rename weight-norm keys of ``state`` to the spelling used by ``model_keys`` (either API)."""
    model_keys = set(model_keys)
    out = {}
    for k, v in state.items():
        if k not in model_keys:
            prefix, _, leaf = k.rpartition(".")
            for old, new in _WN_OLD_TO_NEW.items():
                alt = None
                if leaf == old:
                    alt = f"{prefix}.{new}" if prefix else new
                elif k.endswith("." + new) or k == new:
                    alt = k[: len(k) - len(new)] + old
                if alt is not None and alt in model_keys:
                    k = alt
                    break
        out[k] = v
    return out


def build_model(path: str | os.PathLike):
    """A ``dac.DAC`` built from the file's recorded kwargs with its weights loaded strictly (eval mode)."""
    import inspect

    dac = _import_dac()
    kwargs, state = read_checkpoint(path)
    allowed = set(inspect.signature(dac.DAC).parameters)
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        log.warning("%s: ignoring constructor arguments this dac version does not take: %s", path, unknown)
    try:
        model = dac.DAC(**{k: v for k, v in kwargs.items() if k in allowed})
    except Exception as exc:
        raise CodecError(f"{path}: cannot build DAC from the recorded kwargs {kwargs}: {exc}") from exc
    state = match_weight_norm(state, model.state_dict().keys())
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CodecError(f"{path}: weights do not fit DAC({kwargs}): {exc}") from exc
    return model.eval()


def save_dac(model, path: str | os.PathLike) -> Path:
    """Write ``model`` with ``DAC.save(package=False)`` (the released weights' format), atomically.

    Saved through a memory buffer so the zip's internal record names do not depend on the (temporary)
    file name: the same model always gives byte-identical files.
    """
    buf = _io.BytesIO()
    model.save(buf, package=False)
    with io.atomic_open(path, "wb") as f:
        f.write(buf.getvalue())
    return Path(path)


def build_tiny_dac(path: str | os.PathLike, seed: int = 0, **overrides) -> Path:
    """Build the demo DAC (:data:`TINY_DAC_KWARGS`, random init from ``seed``) and save it to ``path``.

    Deterministic: the same seed gives a byte-identical file.
    """
    import torch

    dac = _import_dac()
    kwargs = {**TINY_DAC_KWARGS, **overrides}
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = dac.DAC(**kwargs)
    finally:
        torch.random.set_rng_state(state)
    return save_dac(model, path)


class DacCodec(Codec):
    """DAC (descript-audio-codec) in eval mode, fp32, no autograd."""

    name = "dac"

    def __init__(self, model, weights_path: str | os.PathLike = "", weights_sha256: str = "", device: str = "cpu"):
        import torch

        self.device = device
        if device.startswith("cuda"):
            # fp32 exactness and run-to-run identical codes: no TF32, deterministic cuDNN kernels.
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True
        self.model = model.to(device).eval()
        self.sample_rate = int(model.sample_rate)
        self.hop_length = int(model.hop_length)
        self.n_codebooks = int(model.n_codebooks)
        self.cardinality = int(model.codebook_size)
        self.weights_path = str(weights_path)
        self.weights_sha256 = weights_sha256

    def encode(self, audio):
        """``audio: [B, 1, N]`` float tensor or array -> ``codes: [B, K, ceil(N / hop)]`` int64 (CPU)."""
        import torch

        x = torch.as_tensor(audio, dtype=torch.float32)
        if x.ndim != 3 or x.shape[1] != 1:
            raise CodecError(f"DAC.encode expects mono audio [B, 1, N], got shape {tuple(x.shape)}")
        if x.shape[-1] == 0:
            raise CodecError("DAC.encode got zero samples")
        with torch.inference_mode():
            x = self.model.preprocess(x.to(self.device), self.sample_rate)  # right-pad to a hop multiple
            _, codes, *_ = self.model.encode(x)
        return codes.to("cpu", torch.int64)

    def decode(self, codes):
        """``codes: [B, kappa, T]``, ``kappa <= K`` -> ``audio: [B, 1, T * hop]`` float32 (CPU).

        Sums the first ``kappa`` quantizers' output projections (``ResidualVectorQuantize.from_codes``).
        """
        import torch

        c = torch.as_tensor(codes).to(torch.int64)
        if c.ndim != 3:
            raise CodecError(f"DAC.decode expects codes [B, kappa, T], got shape {tuple(c.shape)}")
        kappa = c.shape[1]
        if not 1 <= kappa <= self.n_codebooks:
            raise CodecError(f"cannot decode from {kappa} codebooks: this DAC has {self.n_codebooks}")
        if c.numel() and (int(c.min()) < 0 or int(c.max()) >= self.cardinality):
            raise CodecError(f"codes outside [0, {self.cardinality}): min {int(c.min())}, max {int(c.max())}")
        with torch.inference_mode():
            z, _, _ = self.model.quantizer.from_codes(c.to(self.device))
            audio = self.model.decode(z)
        return audio.to("cpu", torch.float32)


    def codebook_tables(self):
        """``[K, 1024, codebook_dim]`` float32 (CPU): ``quantizers[k].codebook.weight``, the projected
        latents ``decode_code`` looks up (DAC-44k: 9 x 1024 x 8)."""
        import torch

        with torch.no_grad():
            return torch.stack([q.codebook.weight.detach().float().cpu() for q in self.model.quantizer.quantizers])


def load(weights_path: str | os.PathLike, device: str = "auto") -> DacCodec:
    """Registry factory for ``dac``: the weights file (released ``weights.pth`` or a tiny demo file)."""
    path = Path(weights_path)
    model = build_model(path)
    return DacCodec(model, path, io.sha256_file(path), resolve_device(device))
