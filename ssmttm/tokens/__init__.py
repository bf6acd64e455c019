"""Audio tokens: the per-shard token store, the tokenize and codec-ceiling stages, the token Dataset.

- :mod:`ssmttm.tokens.store`: uint16 memory-mapped codes + index per shard (writer and readers);
- :mod:`ssmttm.tokens.tokenize`: stage ``tokenize`` (encode every clip of one shard once, all K codebooks);
- :mod:`ssmttm.tokens.ceiling`: stages ``ceiling`` / ``ceiling-summary`` (codec re-synthesis quality);
- :mod:`ssmttm.tokens.dataset`: the PyTorch Dataset training reads (delay pattern applied there).
"""
