"""LM training: plain PyTorch, torchrun for several GPUs or nodes.

- :mod:`ssmttm.train.loop`: the :class:`~ssmttm.train.loop.Trainer` and the ``train`` stage;
- :mod:`ssmttm.train.options`: the stage's flags (:class:`~ssmttm.train.options.TrainConfig`);
- :mod:`ssmttm.train.data`: deterministic epoch order sharded by rank, CFG dropout, OOV checks;
- :mod:`ssmttm.train.schedule`: linear warm-up + cosine learning rate, per optimizer step;
- :mod:`ssmttm.train.state`: ``trainer_state.pt`` (optimizer, scheduler, RNG, data position);
- :mod:`ssmttm.train.flops`: 6·N·D accounting and measured forward FLOPs;
- :mod:`ssmttm.train.card`: MODEL_CARD.md / card.json written next to every checkpoint.

Importing this package imports no torch.
"""
