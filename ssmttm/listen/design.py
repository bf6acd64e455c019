"""The seeded design of a listening test: which prompts are rated, the anonymous clip ids and rater codes,
which items each rater hears and in what order, and where the attention checks sit.

Pure functions of (inputs, seed): no files, no audio. Every random choice draws from its own stream
(:func:`rng`: ``numpy.random.default_rng([seed, stream, ...])``), so changing one part of the design (say
the number of raters) leaves the others (the prompts chosen, the clip ids) as they were. Inputs are sorted
before any draw, so nothing depends on the order flags or index entries were given in.

Assignment (:func:`balanced_assignment`): one seeded permutation of all items laid out cyclically, rater r
taking the ``per_rater`` entries from position ``r * per_rater``; every item is then rated
``floor(raters * per_rater / n_items)`` or one more times (a balanced incomplete design, as in ITU-T P.800
practice of spreading raters evenly over conditions), and no rater gets one item twice because
``per_rater <= n_items``. Attention checks come from a small pool of broken clips assigned the same way and
are inserted at seeded positions other than the first (a rater's first clip is where they learn the page).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

CLIP_PATTERN = re.compile(r"^[0-9a-f]{10}$")
RATER_PATTERN = re.compile(r"^r[0-9]{2,4}-[0-9a-f]{4}$")
CLIP_ID_HEX = 10
RATER_HEX = 4
MAX_RATERS = 9999              # RATER_PATTERN allows rater numbers of up to 4 digits
ATTENTION_POOL_FACTOR = 4      # distinct broken clips per attention check a rater hears (pool reused across raters)

# One stream per kind of choice (the second word of every seed sequence); never renumber.
STREAMS = {"prompts": 1, "clips": 2, "raters": 3, "assign": 4, "order": 5, "attention": 6, "noise": 7}


def rng(seed: int, stream: str, *extra: int) -> np.random.Generator:
    """The generator of one kind of choice (:data:`STREAMS`), e.g. ``rng(seed, "noise", k)`` for clip k."""
    return np.random.default_rng([int(seed), STREAMS[stream], *(int(e) for e in extra)])


def common_prompts(available: dict[str, Iterable[str]]) -> list[str]:
    """The prompt ids every system has a clip for, sorted. ``available``: system -> its prompt ids."""
    sets = [set(v) for v in available.values()]
    return sorted(set.intersection(*sets)) if sets else []


def choose_prompts(common: Sequence[str], n: int, seed: int) -> list[str]:
    """``n`` of ``common`` (a seeded choice without replacement), returned sorted."""
    pool = sorted(common)
    if n > len(pool):
        raise ValueError(f"choose_prompts: {n} wanted, {len(pool)} available")
    pick = rng(seed, "prompts").choice(len(pool), size=n, replace=False)
    return sorted(pool[i] for i in pick)


def _hex(g: np.random.Generator, digits: int) -> str:
    return f"{int(g.integers(0, 16 ** digits)):0{digits}x}"


def clip_ids(n: int, seed: int) -> list[str]:
    """``n`` distinct clip ids, 10 lowercase hex each (:data:`CLIP_PATTERN`), in draw order."""
    g, out, seen = rng(seed, "clips"), [], set()
    while len(out) < n:
        cid = _hex(g, CLIP_ID_HEX)
        if cid not in seen:  # 2**40 ids: a collision is rare, but an id must name one clip
            seen.add(cid)
            out.append(cid)
    return out


def rater_codes(n: int, seed: int) -> list[str]:
    """``r01-3fa2``, ``r02-...``: rater number (2 digits, more when ``n`` > 99) and 4 seeded hex, so a rater
    cannot guess another's code from their own (:data:`RATER_PATTERN`)."""
    if not 1 <= n <= MAX_RATERS:
        raise ValueError(f"rater_codes: {n} raters (1..{MAX_RATERS})")
    width = max(2, len(str(n)))
    g = rng(seed, "raters")
    return [f"r{i:0{width}d}-{_hex(g, RATER_HEX)}" for i in range(1, n + 1)]


def balanced_assignment(n_items: int, n_raters: int, per_rater: int, g: np.random.Generator) -> list[list[int]]:
    """Item indices (0..n_items-1) for each rater: ``per_rater`` distinct ones each (``per_rater <= n_items``),
    every item used ``floor(n_raters * per_rater / n_items)`` times or once more. Not shuffled."""
    if not 1 <= per_rater <= n_items:
        raise ValueError(f"balanced_assignment: per_rater {per_rater} must be in 1..{n_items}")
    perm = g.permutation(n_items)
    return [[int(perm[(r * per_rater + j) % n_items]) for j in range(per_rater)] for r in range(n_raters)]


def counts(assignment: list[list[int]], n_items: int) -> list[int]:
    """How many raters got each item index."""
    c = [0] * n_items
    for items in assignment:
        for i in items:
            c[i] += 1
    return c


def insert_attention(items: list, checks: list, g: np.random.Generator) -> list:
    """``items`` with ``checks`` inserted at seeded positions, never first (needs at least one item)."""
    if checks and not items:
        raise ValueError("insert_attention: attention checks need at least one rated item before them")
    total = len(items) + len(checks)
    slots = set(int(p) for p in g.choice(np.arange(1, total), size=len(checks), replace=False)) if checks else set()
    it, ch = iter(items), iter(checks)
    return [next(ch) if pos in slots else next(it) for pos in range(total)]


@dataclass(frozen=True)
class Orders:
    """Who hears what, in index form (the stage turns indices into clip ids).

    raters: rater codes; orders[r]: [("test", item index) | ("attention", pool index), ...] in play order;
    per_rater: test items per rater (the setting capped at n_items); attention_sources[k]: the item index
    pool clip k is a broken copy of; item_counts[i]: raters who rate item i.
    """

    raters: list[str]
    orders: list[list[tuple[str, int]]]
    per_rater: int
    attention_sources: list[int]
    item_counts: list[int]


def attention_pool_size(count: int, n_raters: int) -> int:
    """Distinct broken clips: :data:`ATTENTION_POOL_FACTOR` per check, no more than the raters can hear."""
    return min(ATTENTION_POOL_FACTOR * count, n_raters * count)


def plan_orders(n_items: int, n_raters: int, per_rater: int, attention_count: int, seed: int) -> Orders:
    """The whole per-rater design of ``n_items`` (system, prompt) items (see the module docstring)."""
    if n_items < 1:
        raise ValueError("plan_orders: no items")
    per = min(per_rater, n_items)
    codes = rater_codes(n_raters, seed)
    tests = balanced_assignment(n_items, n_raters, per, rng(seed, "assign"))
    pool = attention_pool_size(attention_count, n_raters)
    ga = rng(seed, "attention")
    sources = [int(i) for i in ga.choice(n_items, size=pool, replace=pool > n_items)] if pool else []
    checks = balanced_assignment(pool, n_raters, attention_count, ga) if pool else [[] for _ in range(n_raters)]
    go = rng(seed, "order")
    orders = []
    for mine, att in zip(tests, checks):
        mine = [("test", mine[int(k)]) for k in go.permutation(len(mine))]
        orders.append(insert_attention(mine, [("attention", k) for k in att], go))
    return Orders(codes, orders, per, sources, counts(tests, n_items))
