"""The delay pattern: round trip, a hand-written example, masks, numpy/torch agreement."""

import numpy as np
import pytest
import torch

from ssmttm import pattern
from ssmttm.constants import CODEBOOK_SIZE, SPECIAL_TOKEN

S = SPECIAL_TOKEN


def _codes(K, T, seed=0, dtype=np.int64):
    return np.random.default_rng([seed, K, T]).integers(0, CODEBOOK_SIZE, size=(K, T)).astype(dtype)


@pytest.mark.parametrize("K", range(1, 10))
@pytest.mark.parametrize("T", [0, 1, 7, 2584])
def test_round_trip_every_kappa_and_length(K, T):
    codes = _codes(K, T)
    seq = pattern.build(codes)
    assert seq.shape == (K, T + K)
    assert seq.dtype == codes.dtype
    np.testing.assert_array_equal(pattern.revert(seq), codes)
    # BOS column is all special
    assert (seq[:, 0] == S).all()
    mask = pattern.valid_mask(K, T)
    assert mask.shape == (K, T + K) and mask.dtype == bool
    assert int(mask.sum()) == K * T
    # real codes exactly where the mask says, SPECIAL elsewhere
    assert (seq[~mask] == S).all()
    np.testing.assert_array_equal(np.sort(seq[mask]), np.sort(codes.ravel()))


def test_paper_length():
    # kappa = 4, 30 s = 2584 frames -> 2588 steps (docs/reference.md §2)
    assert pattern.build(_codes(4, 2584)).shape == (4, 2588)
    assert pattern.delayed_length(2584, 4) == 2588


def test_hand_written_example():
    codes = np.array([[1, 2, 3],
                      [4, 5, 6]])
    expected = np.array([[S, 1, 2, 3, S],
                         [S, S, 4, 5, 6]])
    np.testing.assert_array_equal(pattern.build(codes), expected)
    np.testing.assert_array_equal(pattern.revert(expected), codes)
    np.testing.assert_array_equal(pattern.valid_mask(2, 3), expected != S)
    k3 = np.array([[7], [8], [9]])
    np.testing.assert_array_equal(
        pattern.build(k3), np.array([[S, 7, S, S], [S, S, 8, S], [S, S, S, 9]])
    )


def test_code_equal_to_nothing_special_survives():
    # code 0 and code 1023 (the extremes) round trip; only the filler is SPECIAL_TOKEN
    codes = np.array([[0, 1023, 0], [1023, 0, 1023]], dtype=np.uint16)
    seq = pattern.build(codes)
    assert seq.dtype == np.uint16
    np.testing.assert_array_equal(pattern.revert(seq), codes)


@pytest.mark.parametrize("K,T", [(1, 0), (1, 5), (4, 13), (9, 31)])
def test_torch_matches_numpy_and_batches(K, T):
    codes = np.stack([_codes(K, T, seed=s) for s in range(3)])  # [B, K, T]
    t = torch.from_numpy(codes)
    seq_np, seq_t = pattern.build(codes), pattern.build(t)
    assert isinstance(seq_t, torch.Tensor) and seq_t.dtype == torch.int64
    np.testing.assert_array_equal(seq_t.numpy(), seq_np)
    np.testing.assert_array_equal(pattern.revert(seq_t).numpy(), codes)
    m = pattern.valid_mask(K, T, like=t)
    assert isinstance(m, torch.Tensor) and m.dtype == torch.bool
    np.testing.assert_array_equal(m.numpy(), pattern.valid_mask(K, T))
    # batched build equals per-item build
    for b in range(3):
        np.testing.assert_array_equal(seq_np[b], pattern.build(codes[b]))


def test_random_round_trip_int32_torch():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        K = int(torch.randint(1, 10, (1,), generator=g))
        T = int(torch.randint(0, 200, (1,), generator=g))
        codes = torch.randint(0, CODEBOOK_SIZE, (2, K, T), generator=g, dtype=torch.int32)
        assert torch.equal(pattern.revert(pattern.build(codes)), codes)


def test_bad_shapes():
    with pytest.raises(ValueError, match="K, T"):
        pattern.build(np.zeros(5, dtype=np.int64))
    with pytest.raises(ValueError, match="K \\+ 1"):
        pattern.revert(np.zeros((4, 3), dtype=np.int64))
    with pytest.raises(ValueError):
        pattern.valid_mask(0, 3)
