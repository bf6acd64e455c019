import pytest
import torch

from ssmttm.models import build_lm
from ssmttm.models.checkpoint import CheckpointError, load_model, save_model
from ssmttm.models.config import from_preset


@pytest.mark.parametrize("variant", ["prefix-simba", "cross-transformer"])
def test_round_trip_and_kappa_check(tmp_path, variant):
    torch.manual_seed(0)
    lm = build_lm(from_preset("tiny", variant, n_codebooks=2, mamba_backend="torch"))
    save_model(tmp_path / "ck", lm, {"step": 7})
    lm2, meta = load_model(tmp_path / "ck", kappa=2)
    assert meta == {"step": 7}
    for (k, a), (k2, b) in zip(lm.state_dict().items(), lm2.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    with pytest.raises(CheckpointError, match="kappa=2 codebooks, but kappa=4"):
        load_model(tmp_path / "ck", kappa=4)
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_model(tmp_path / "nope")
