"""Training batches: deterministic epoch order sharded by rank, CFG prompt dropout, OOV checks.

Order: epoch ``e`` visits the train split in ``permutation(seed, e)`` order; with ``world`` ranks,
rank ``r`` takes ``perm[r::world]`` cut to ``n // world`` items (every rank runs the same number
of micro-batches, as DDP needs), in micro-batches of ``batch_size`` (the last one may be shorter).
Crops and caption choice are the dataset's pure function of (seed, epoch, item)
(ssmttm.tokens.dataset), so the data position ``(epoch, batch_in_epoch)`` is all a resumed run
needs to read exactly the batches an uninterrupted run would.

Classifier-free guidance dropout (docs/reference.md §1, authors' training): with probability
``p_prompt`` a sample's whole prompt is replaced by the empty prompt's stored encoder states
(text-store caption id 0, ``""``), the unconditional input used at sampling time. The authors'
code also drops single text tokens with p 0.1 (``p_token``): here a dropped position is masked out
of the text mask (and its states zeroed), so prefix models skip it and cross-attention never
attends to it; at least one real token always stays. Both draws come from a generator seeded by
(seed, epoch, batch, rank): resume-exact and independent of the torch RNG.
"""

from __future__ import annotations

import numpy as np

from ssmttm.constants import CODEBOOK_SIZE, SPECIAL_TOKEN
from ssmttm.errors import SsmttmError


class TrainError(SsmttmError, RuntimeError):
    """Training cannot go on (non-finite loss, out-of-vocabulary token, bad resume); the message
    names the step and/or the clips."""


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order of the ``n`` train items in epoch ``epoch`` (int64 [n])."""
    return np.random.default_rng([int(seed), int(epoch), 0x0E90C]).permutation(int(n))


def rank_batches(n: int, seed: int, epoch: int, rank: int, world: int, batch_size: int) -> list[list[int]]:
    """Micro-batches (lists of item indices) of ``rank`` in ``epoch``; see the module docstring."""
    per_rank = n // world
    if per_rank < 1:
        raise TrainError(f"the train split has {n} clips, fewer than the {world} ranks")
    mine = epoch_permutation(n, seed, epoch)[rank::world][:per_rank]
    return [mine[i:i + batch_size].tolist() for i in range(0, per_rank, batch_size)]


def batch_rng(seed: int, epoch: int, batch: int, rank: int) -> np.random.Generator:
    """Generator for the CFG-dropout draws of one micro-batch."""
    return np.random.default_rng([int(seed), int(epoch), int(batch), int(rank), 0xCF6])


class MicroBatches:
    """Endless iterator of ``(epoch, batch_in_epoch, batch)`` from a TokenDataset, starting at a
    data position; :attr:`position` is the next micro-batch to read (saved in checkpoints).

    One DataLoader per epoch over that epoch's remaining micro-batches, its ``generator`` seeded
    so creating it never draws from the global torch RNG (which drives dropout and must match an
    uninterrupted run after resume).
    """

    def __init__(self, dataset, batch_size: int, seed: int, rank: int = 0, world: int = 1,
                 num_workers: int = 0, epoch: int = 0, batch_in_epoch: int = 0):
        self.ds, self.batch_size, self.seed = dataset, int(batch_size), int(seed)
        self.rank, self.world, self.num_workers = int(rank), int(world), int(num_workers)
        self.epoch, self.next_batch = int(epoch), int(batch_in_epoch)
        self.batches_per_epoch = len(rank_batches(len(dataset), seed, 0, rank, world, batch_size))

    @property
    def position(self) -> tuple[int, int]:
        """(epoch, next micro-batch in it); the end of an epoch reads as the start of the next."""
        if self.next_batch >= self.batches_per_epoch:
            return self.epoch + 1, 0
        return self.epoch, self.next_batch

    def __iter__(self):
        import torch

        from ssmttm.tokens.dataset import collate

        while True:
            batches = rank_batches(len(self.ds), self.seed, self.epoch, self.rank, self.world, self.batch_size)
            self.ds.set_epoch(self.epoch)  # before the loader pickles it into workers
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            loader = torch.utils.data.DataLoader(self.ds, batch_sampler=batches[self.next_batch:],
                                                 collate_fn=collate, num_workers=self.num_workers,
                                                 generator=gen, pin_memory=torch.cuda.is_available())
            for batch in loader:
                e, b = self.epoch, self.next_batch
                self.next_batch += 1
                yield e, b, batch
            self.epoch, self.next_batch = self.epoch + 1, 0


def check_codes(batch: dict) -> None:
    """Fail with the clip ids when a batch holds an out-of-vocabulary code: negative, above
    SPECIAL_TOKEN, or >= CODEBOOK_SIZE where a real code sits (codes_mask), which would index past
    the embedding tables (a CUDA assert far from the cause) or train on a filler id."""
    codes, mask = batch["codes"], batch["codes_mask"]
    bad = (codes < 0) | (codes > SPECIAL_TOKEN) | (mask & (codes >= CODEBOOK_SIZE))
    rows = bad.flatten(1).any(1)
    if bool(rows.any()):
        clips = [batch["clip_ids"][i] for i in rows.nonzero().flatten().tolist()]
        first = int(codes[bad][0])
        raise TrainError(f"out-of-vocabulary code {first} (codes must lie in 0..{CODEBOOK_SIZE - 1}) in clip(s) "
                         f"{clips}: the token store is corrupt or from another codec; re-run tokenize")


def cfg_dropout(batch: dict, empty, p_prompt: float, p_token: float, rng: np.random.Generator) -> dict:
    """Apply CFG prompt dropout and per-token text dropout to a collated batch (new dict returned).

    batch: text float32 [B, L, D], text_mask bool [B, L], caption_ids int64 [B]; empty: the empty
    prompt's states [L0, D] (text store caption 0). Adds ``cfg_dropped`` bool [B]; dropped rows get
    ``caption_ids`` 0.
    """
    import torch

    text, mask = batch["text"], batch["text_mask"]
    B, L, D = text.shape
    empty = torch.as_tensor(np.asarray(empty, dtype=np.float32))
    L0 = int(empty.shape[0])
    drop = torch.from_numpy(rng.random(B) < p_prompt)
    u = torch.from_numpy(rng.random((B, L)))
    if not bool(drop.any()) and p_token <= 0:
        return {**batch, "cfg_dropped": drop}
    if bool(drop.any()) and L0 > L:
        text = torch.cat([text, text.new_zeros(B, L0 - L, D)], dim=1)
        mask = torch.cat([mask, mask.new_zeros(B, L0 - L)], dim=1)
        u = torch.cat([u, torch.ones(B, L0 - L, dtype=u.dtype)], dim=1)
    text, mask = text.clone(), mask.clone()
    if p_token > 0:
        keep = mask & (u >= p_token)
        # never drop every token of a row: keep its real token with the largest draw
        empty_rows = ~keep.any(1) & mask.any(1)
        if bool(empty_rows.any()):
            best = torch.where(mask, u, torch.full_like(u, -1.0)).argmax(1)
            keep[empty_rows, best[empty_rows]] = True
        mask = keep
        text = text * mask[..., None].to(text.dtype)
    caption_ids = batch["caption_ids"].clone()
    for b in drop.nonzero().flatten().tolist():
        text[b] = 0.0
        text[b, :L0] = empty.to(text.dtype)
        mask[b] = False
        mask[b, :L0] = True
        caption_ids[b] = 0
    return {**batch, "text": text, "text_mask": mask, "caption_ids": caption_ids, "cfg_dropped": drop}
