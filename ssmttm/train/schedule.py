"""Learning-rate schedule: linear warm-up, then cosine decay to ``min_lr_ratio`` x lr.

docs/reference.md §1: lr 1e-4, 500 warm-up steps, cosine to 0.005 x lr, stepped PER OPTIMIZER
STEP (the authors' code steps its scheduler once per epoch, a bug not reproduced here).

``s`` counts optimizer updates already applied (the first update uses ``s = 0``):

- warm-up, ``s < warmup``: ``factor = (s + 1) / warmup`` (so the first update is not wasted at
  lr 0, and update ``warmup - 1`` runs at the full lr);
- cosine, ``warmup <= s < total``: ``progress = (s - warmup) / (total - 1 - warmup)``,
  ``factor = r + (1 - r) * (1 + cos(pi * progress)) / 2`` with ``r = min_lr_ratio``, so the last
  update (``s = total - 1``) runs at exactly ``r`` x lr;
- after ``total``: stays at ``r``.

The scheduler's state is one integer, saved in ``trainer_state.pt``. No torch import here.
"""

from __future__ import annotations

import math


def lr_factor(s: int, warmup: int, total: int, min_lr_ratio: float) -> float:
    """Multiplier of the base lr for optimizer update ``s`` (0-based); see the module docstring."""
    if s < 0:
        raise ValueError(f"lr_factor: step {s} < 0")
    if warmup > 0 and s < warmup:
        return (s + 1) / warmup
    span = total - 1 - warmup
    if span <= 0:
        return 1.0 if s < total else float(min_lr_ratio)
    progress = min(1.0, (s - warmup) / span)
    return float(min_lr_ratio) + (1.0 - float(min_lr_ratio)) * 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupCosine:
    """Sets ``group["lr"] = base_lr * lr_factor(s, ...)`` on every param group of ``optimizer``.

    Call :meth:`apply` before each ``optimizer.step()`` and :meth:`step` after it. ``state_dict``
    / ``load_state_dict`` hold the update counter (and the settings, checked on load so a resumed
    run cannot silently change its schedule).
    """

    def __init__(self, optimizer, base_lr: float, warmup: int, total: int, min_lr_ratio: float):
        if warmup < 0 or total < 1:
            raise ValueError(f"--warmup {warmup} / --steps {total}: need warmup >= 0 and steps >= 1")
        if not 0.0 <= min_lr_ratio <= 1.0:
            raise ValueError(f"--min-lr-ratio {min_lr_ratio}: must be in [0, 1]")
        self.optimizer, self.base_lr = optimizer, float(base_lr)
        self.warmup, self.total, self.min_lr_ratio = int(warmup), int(total), float(min_lr_ratio)
        self.s = 0

    @property
    def lr(self) -> float:
        """Learning rate of the next update."""
        return self.base_lr * lr_factor(self.s, self.warmup, self.total, self.min_lr_ratio)

    def apply(self) -> float:
        lr = self.lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def step(self) -> None:
        self.s += 1

    def state_dict(self) -> dict:
        return {"s": self.s, "base_lr": self.base_lr, "warmup": self.warmup, "total": self.total,
                "min_lr_ratio": self.min_lr_ratio}

    def load_state_dict(self, state: dict) -> None:
        for key in ("base_lr", "warmup", "total", "min_lr_ratio"):
            if float(state[key]) != float(getattr(self, key)):
                raise ValueError(f"resume: the checkpoint's schedule has {key}={state[key]}, this run "
                                 f"{getattr(self, key)}; resume with the same flags or start a new run folder")
        self.s = int(state["s"])
