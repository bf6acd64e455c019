"""Music generation from a trained LM checkpoint (and, for two-stage systems, its refiner).

- :mod:`ssmttm.generate.sampling`: classifier-free guidance on logits, temperature, top-k, seeded
  per-row sampling;
- :mod:`ssmttm.generate.prompts`: the registry of prompt sets (lazy factories);
- :mod:`ssmttm.generate.generate`: the :class:`~ssmttm.generate.generate.Generator` (cached step
  decoding of the delay pattern with the cond and uncond halves in one batch, codec decoding) and
  the ``python -m ssmttm generate`` stage.

Importing this package imports no torch.
"""
