"""Text states for imported checkpoints whose LM keeps padded T5 states (``CompatConfig.text_keep_padding``).

The authors' generation (github.com/Lonian6/SSM-TTM, pl_model.py:117-143) tokenises each prompt in
one call with the empty prompt "" (``padding=True``: pad id 0, attention mask 0, up to the longer of
the two), appends id 1 (T5's ``</s>``) with mask 0 up to 60 tokens, runs T5 with that mask and hands
the LM EVERY position's state: their Prefix SiMBA never reads the mask (simba.py:224-248). So the
padded positions' states (T5 outputs at masked queries, which depend on the pad ids) are part of
the prefix and count positions; the unconditional rows differ from prompt to prompt (their
length follows the prompt's).

:func:`compat_rows` builds those token rows for one prompt, :func:`encode_padded` runs T5 on them
keeping every position (float32, not rounded through float16 as the text store's states are: the
authors run T5 on the fly), and :func:`prompt_states` gives what
:func:`ssmttm.generate.generate.generate_cached` takes: per prompt, the conditional and the
unconditional states, every row all real (the LM then keeps them as they are).
"""

from __future__ import annotations

import numpy as np

TEXT_BATCH = 64  # rows per T5 forward


def compat_rows(ids: list[int], empty: list[int], compat, pad_id: int) -> tuple[tuple[list[int], int], tuple[list[int], int]]:
    """((cond ids, real tokens), (uncond ids, real tokens)) for one prompt.

    ids: the prompt's token ids (ending in ``</s>``); empty: the empty prompt's (``[</s>]``). With
    ``uncond_padded_to_prompt`` both rows are first padded with ``pad_id`` to the longer of the two
    (one tokenizer call); then ``text_fill_id`` is appended up to ``text_min_tokens``. Without it each
    row is padded on its own, and the two may differ in length (the LM aligns rows by their masks).
    """
    shared = max(len(ids), len(empty)) if compat.uncond_padded_to_prompt else 0
    rows = []
    for seq in (ids, empty):
        n = len(seq)
        row = list(seq) + [pad_id] * max(0, shared - n)
        row += [compat.text_fill_id] * max(0, compat.text_min_tokens - len(row))
        rows.append((row, n))
    return rows[0], rows[1]


def encode_padded(model, rows: list[tuple[list[int], int]], pad_id: int) -> list[np.ndarray]:
    """T5 states of EVERY position of each row: rows are (ids, n_real), attention mask 1 on the first
    n_real ids, 0 on the rest. Returns float32 arrays [len(ids), d_model]. Rows of one batch are
    padded further (mask 0) to the longest; masked keys do not reach other positions, so a row's
    states do not depend on its batch."""
    import torch

    dev = next(model.parameters()).device
    out: list[np.ndarray] = []
    for s in range(0, len(rows), TEXT_BATCH):
        chunk = rows[s:s + TEXT_BATCH]
        L = max(len(ids) for ids, _ in chunk)
        x = torch.full((len(chunk), L), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), L), dtype=torch.long)
        for i, (ids, n_real) in enumerate(chunk):
            x[i, :len(ids)] = torch.tensor(ids, dtype=torch.long)
            mask[i, :n_real] = 1
        with torch.no_grad():
            h = model(input_ids=x.to(dev), attention_mask=mask.to(dev)).last_hidden_state
        h = h.float().cpu().numpy()
        out.extend(h[i, :len(ids)].copy() for i, (ids, _) in enumerate(chunk))
    return out


def prompt_states(model, tokenizer, texts: list[str], compat, max_length: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{text: (cond states [P, D], uncond states [P, D])} for each unique text, laid out as ``compat``
    says (prompts truncated at ``max_length`` tokens like every prompt here; the authors never truncate)."""
    from ssmttm.text.embed import tokenize

    uniq = list(dict.fromkeys(texts))
    ids, _ = tokenize(tokenizer, uniq + [""], max_length)
    empty = ids.pop()
    rows = []
    for seq in ids:
        rows.extend(compat_rows(seq, empty, compat, tokenizer.pad_token_id))
    states = encode_padded(model, rows, tokenizer.pad_token_id)
    return {t: (states[2 * i], states[2 * i + 1]) for i, t in enumerate(uniq)}
