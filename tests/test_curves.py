import numpy as np
import pandas as pd

from ssmttm.report import curves


def test_smooth_is_a_trailing_mean():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    assert np.allclose(curves.smooth(y, 2), [1.0, 1.5, 2.5, 3.5])
    assert np.allclose(curves.smooth(y, 1), y)


def test_plots_per_run_and_overlay(tmp_path):
    for name in ("a", "b"):
        d = tmp_path / name
        d.mkdir()
        steps = np.arange(1, 51)
        pd.DataFrame({"step": steps, "loss": 5 / np.sqrt(steps)}).to_csv(d / "log.csv", index=False)
        pd.DataFrame({"step": [25, 50], "val_loss": [1.2, 1.0], "n": [4, 4]}).to_csv(d / "val.csv", index=False)
    rc = curves.main(["--run", f"a={tmp_path / 'a'}", "--run", f"b={tmp_path / 'b'}", "--out-dir", str(tmp_path / "plots")])
    assert rc == 0
    for stem in ("a", "b", "all"):
        png = tmp_path / "plots" / f"{stem}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (tmp_path / "plots" / f"{stem}.svg").read_text().lstrip().startswith("<?xml")
