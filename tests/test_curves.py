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
    rc = curves.main(["--run", f"a={tmp_path / 'a'}", f"b={tmp_path / 'b'}", "--settings", '{"smooth": 5}',
                      "--out-dir", str(tmp_path / "plots")])
    assert rc == 0
    assert "mean of 5" in (tmp_path / "plots" / "a.svg").read_text()  # the legend names the window
    for stem in ("a", "b", "all"):
        png = tmp_path / "plots" / f"{stem}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (tmp_path / "plots" / f"{stem}.svg").read_text().lstrip().startswith("<?xml")
    # run by hand: the schema's default window (plots.smooth), or --smooth
    assert curves.main(["--run", f"a={tmp_path / 'a'}", "--run", f"b={tmp_path / 'b'}", "--smooth", "3",
                        "--out-dir", str(tmp_path / "byhand")]) == 0
    assert "mean of 3" in (tmp_path / "byhand" / "a.svg").read_text()


def test_loss_label_says_the_runs_label_smoothing(tmp_path):
    import json

    from ssmttm.report.curves import loss_label

    assert loss_label(tmp_path) == "training loss"  # no done.json: say nothing it does not know
    (tmp_path / "done.json").write_text(json.dumps({"recipe": {"label_smoothing": 0.2}}))
    assert "label smoothing 0.2" in loss_label(tmp_path)
    (tmp_path / "done.json").write_text(json.dumps({"recipe": {"label_smoothing": 0.0}}))
    assert loss_label(tmp_path) == "cross-entropy"
