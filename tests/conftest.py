import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# Loaders run with hub access switched off; tests never touch the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture
def one_thread():
    """Tiny ops on a shared 2-core machine: one thread avoids oversubscription stalls."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def receipts(tmp_path_factory):
    """Weights receipts (dac, t5) of a tiny DAC and a tiny T5, fetched through the real weights stage."""
    from ssmttm import weights
    from ssmttm.codec.dac import build_tiny_dac
    from ssmttm.text.encoder import build_tiny_t5

    root = tmp_path_factory.mktemp("weights")
    dac = build_tiny_dac(root / "src" / "dac_tiny.pth", seed=0)
    t5 = build_tiny_t5(root / "src" / "t5_tiny", seed=0)
    weights.fetch("dac_tiny", str(dac), root / "weights", licence="MIT")
    weights.fetch("t5_tiny", str(t5), root / "weights", licence="Apache-2.0")
    return root / "weights" / "dac_tiny.json", root / "weights" / "t5_tiny.json"


def assert_settings_cover_their_sections(cls, not_settings: set[str]) -> None:
    """A stage's settings dataclass holds exactly the keys of its config section(s) minus ``not_settings``
    (keys read elsewhere), and keeps no default of its own: a key cannot be added in one place only."""
    import dataclasses

    from ssmttm import settings

    keys = set(settings.key_schemas(cls.SCHEMA_NODES))
    fields = settings.setting_fields(cls)
    names = {f.name for f in fields}
    assert names | not_settings == keys, "a config key without a field, or a field without a key"
    assert not names & not_settings
    assert all(f.default is dataclasses.MISSING for f in fields), "a second default beside the schema's"


def pytest_collection_modifyitems(config, items):
    """The slow end-to-end tests first: under pytest-xdist (`make test` runs ``-n CORES --dist loadfile``)
    the file that runs the demo DAG then starts at once on one worker while the others share the rest,
    instead of starting last and running alone. The order within each group is kept."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
