"""The LaTeX tables (``<study>.tex`` from ``ssmttm tables``, ``claims.tex`` from ``ssmttm claims``) are
pure ASCII with every special character escaped, and, where pdflatex is installed, compile inside a
minimal document with only the packages their header names and fit the text width."""

import json
import re
import shutil
import subprocess

import pandas as pd
import pytest

from ssmttm.report import claims, published, tables

# Text with every kind of character a score row or a title can bring in: LaTeX specials, Greek,
# typographic symbols, accented letters, a literal "--" and something with no LaTeX form at all.
ODD = "κ=4 ± 0.5 × 2 ≈ 1 – 2 — 3 · µs ≤ ≥ → 50% a&b #1 x_y {z} ~^\\ <|> é ñ ü ß Ω “q” --flag ♫"
PROTO = dict(model=ODD, checkpoint="weights/passt_tiny_κ4 (50% & #1).pt", checkpoint_sha256="c" * 64,
             sample_rate=32000, window_s=10.0, hop_s=5.0, bootstrap=200)


def _row(**kw):
    r = dict.fromkeys(published.ROW_KEYS)
    r.update(PROTO, ci_low=None, ci_high=None, n=8, n_ref=8, status="pipeline check, not a score",
             prompt_set="demo", source="test")
    r.update(kw)
    r["lower_is_better"] = r["metric"].startswith(("fad", "fd", "kl"))  # distances down, scores up
    return r


@pytest.fixture(scope="module")
def tex_files(tmp_path_factory):
    """Every .tex the two commands write for fixture scores: a kappa-4 experiment, a two-stage one,
    several seeds (+- intervals), many metrics (a wide study table) and odd characters everywhere."""
    tmp = tmp_path_factory.mktemp("tex")
    metrics = ["fad_vggish", "fd_openl3", "fd_clap", "fd_passt", "kl_passt", "clap_score", "tempo_acc", "key_acc",
               "mode_acc", "drums_acc"]
    exps = {"simba_k4": ("prefix-simba", 4, "single-stage"), "simba_k1_two": ("prefix-simba", 1, "two-stage"),
            "transformer_k4": ("cross-transformer", 4, "single-stage")}
    rows = []
    for metric in metrics:
        for exp, (variant, kappa, stages) in exps.items():
            for step in (100, 200):
                for seed in (0, 1, 2):
                    rows.append(_row(system_kind="generated", experiment=exp, variant=variant, kappa=kappa,
                                     stages=stages, preset="tiny", seed=seed, step=step, params=90904,
                                     flops_6nd=1e6 * step, metric=metric, value=1.0 + 0.1 * seed + step / 1e3))
        rows.append(_row(system_kind="ground_truth", metric=metric, value=1.5))
        rows.append(_row(system_kind="resynth", experiment="resynth_k4 pässt–tiny", metric=metric, value=2.5,
                         status="score"))
    scores = tmp / "scores.json"
    scores.write_text(json.dumps({"rows": rows}))
    studies = {
        "curves": {"kind": "curve", "experiments": list(exps), "title": f"Curves: {ODD}", "published": True},
        "kappa": {"kind": "comparison", "experiments": list(exps), "title": "κ = 4 vs κ = 1 + refiner",
                  "published": False},
        "matched": {"kind": "comparison", "experiments": list(exps), "step": 100, "title": "Matched steps",
                    "published": False},
    }
    out = tmp / "tables"
    assert tables.main(["--scores", str(scores), "--studies", json.dumps(studies), "--out-dir", str(out)]) == 0

    # claims: the main run plus two more (one row each), a long run folder name
    mg = 6.2e20  # any large FLOPs figure: this test is about the .tex files
    run_args = []
    for name in ("simba_k1", "transformer_k1", "simba_k4_two_stage_with_a_long_name"):
        d = tmp / "runs" / ("a_very_long_folder_name_for_a_training_run_" * 2 + name)
        d.mkdir(parents=True)
        (d / "done.json").write_text(json.dumps({
            "step": 200, "tokens_seen": 2000, "flops_6nd": mg / 100, "measured_forward_flops_per_token": 7.0,
            "measured_flops_total": mg / 50, "n_params": 281_040_000, "n_params_non_embedding": 279_990_400,
            "preset": "paper", "variant": "prefix-simba", "kappa": 1, "world_size": 1}))
        run_args.append(f"{name}={d}")
    manifest = tmp / "manifest.parquet"
    pd.DataFrame({"clip_id": ["a", "b"], "split": ["train", "valid"], "seconds": [3600.0, 60.0]}).to_parquet(manifest)
    cfg = {"variant": "prefix-simba", "preset": "paper", "kappa": 1, "steps": 100_000, "batch_size": 4,
           "grad_accum": 32, "max_frames": 2584}
    assert claims.main(["--settings", json.dumps(cfg), "--manifest", str(manifest), "--runs", *run_args,
                        "--experiment", "simba_k1", "--out-dir", str(out)]) == 0
    files = sorted(out.glob("*.tex"))
    assert [f.name for f in files] == ["claims.tex", "curves.tex", "kappa.tex", "matched.tex"]
    return files


def _body(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if not ln.startswith("%")]


def test_every_tex_file_is_ascii(tex_files):
    for f in tex_files:
        raw = f.read_bytes()
        bad = sorted({chr(b) for b in raw if b > 127})
        assert raw.isascii(), f"{f.name}: non-ASCII bytes {bad}"
        assert "\t" not in raw.decode()


def test_special_characters_are_escaped(tex_files):
    for f in tex_files:
        for ln in _body(f.read_text()):
            # a bare % would comment out the rest of the line; # and _ stop pdflatex outside macros
            for ch in "%#_":
                for m in re.finditer(re.escape(ch), ln):
                    before = ln[:m.start()]
                    ok = before.endswith("\\") or (ch == "%" and ln.endswith("{%") and m.start() == len(ln) - 1)
                    assert ok, f"{f.name}: unescaped {ch!r} in {ln!r}"
            assert ln.count("$") % 2 == 0 or "\\$" in ln, f"{f.name}: unbalanced math in {ln!r}"
    text = {f.name: f.read_text() for f in tex_files}
    kappa = text["kappa.tex"]
    assert r"prefix-simba ($\kappa$ 4)" in kappa and r"prefix-simba ($\kappa$ 1 + refiner)" in kappa
    assert r"\caption{$\kappa$ = 4 vs $\kappa$ = 1 + refiner}" in kappa
    assert r" $\pm$ " in kappa and r"$\downarrow$" in kappa and r"$\uparrow$" in kappa
    curves = text["curves.tex"]
    for piece in (r"$\kappa$=4 $\pm$ 0.5 $\times$ 2 $\approx$ 1 -- 2 --- 3 $\cdot$ $\mu$s $\leq$ $\geq$ "
                  r"$\rightarrow$ 50\% a\&b \#1 x\_y \{z\} \textasciitilde{}\textasciicircum{}\textbackslash{} "
                  r"\textless{}\textbar{}\textgreater{} \'{e} \~{n} \"{u} \ss{} $\Omega$ ``q'' -{}-flag [U+266B]",
                  r"p\"{a}sst--tiny",
                  r"weights/\allowbreak{}passt\_\allowbreak{}tiny\_\allowbreak{}$\kappa$4 (50\% \& \#1).pt"):
        assert piece in curves, piece
    # every header row and data row has as many cells as the column spec
    for name, t in text.items():
        spec = re.search(r"\\begin\{tabular\}\{(.*)\}\s*$", t, re.M).group(1)
        n_cols = len(re.findall(r"[lrcp](?:\{[^}]*\})?", re.sub(r">\{[^}]*\}", "", spec)))
        block = t[t.index(r"\toprule"):t.index(r"\bottomrule")]
        block = re.sub(r"\\begin\{tabular\}\[b\].*?\\end\{tabular\}", "H", block)  # stacked header cells
        for ln in block.splitlines():
            if ln.endswith(r"\\"):
                assert ln.count(" & ") == n_cols - 1, f"{name}: {ln!r}"
    assert r"\usepackage{booktabs,graphicx,array}" in curves


def test_escape_function():
    esc = tables.tex_escape
    assert esc("50% & $x_1$ #{a}~^\\") == r"50\% \& \$x\_1\$ \#\{a\}\textasciitilde{}\textasciicircum{}\textbackslash{}"
    assert esc("κ ± † ↓ ↑") == r"$\kappa$ $\pm$ \textsuperscript{\dag} $\downarrow$ $\uparrow$"
    assert esc("α β Γ Δ λ σ ς ω Ω Α") == (r"$\alpha$ $\beta$ $\Gamma$ $\Delta$ $\lambda$ $\sigma$ $\varsigma$ $\omega$ "
                                         r"$\Omega$ A")
    assert esc("µ μ") == r"$\mu$ $\mu$"
    assert esc("a--b") == "a-{}-b" and esc("–—") == "-----"
    assert esc("ﬁ Ｋ") == "fi K"  # compatibility forms
    assert esc("ç Ø å ï") == r"\c{c} \O{} \r{a} \"{\i{}}"
    assert esc("results/train/simba_k1") == r"results/\allowbreak{}train/\allowbreak{}simba\_\allowbreak{}k1"
    assert esc("a/b simba_k1.pt") == r"a/b simba\_k1.pt"  # short words: no break points
    for cp in [*range(0x20, 0x250), *range(0x370, 0x3D0), *range(0x2010, 0x2200)]:
        out = esc(chr(cp))
        assert out.isascii(), (chr(cp), out)


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed (e.g. apt-get install "
                    "texlive-latex-base texlive-latex-recommended); the ASCII checks above still run")
def test_tex_tables_compile_and_fit(tex_files, tmp_path):
    for f in tex_files:
        pkgs = re.search(r"^% .*?\\usepackage\{([^}]*)\}", f.read_text(), re.M)
        assert pkgs, f"{f.name}: the header comment names no packages"
        doc = tmp_path / f"doc_{f.stem}.tex"
        doc.write_text("\\documentclass{article}\n"
                       f"\\usepackage{{{pkgs.group(1)}}}\n"
                       "\\begin{document}\n"
                       f"\\input{{{f.as_posix()}}}\n"
                       "\\end{document}\n")
        res = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "-no-shell-escape",
                              doc.name], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        log = (tmp_path / f"doc_{f.stem}.log").read_text(errors="replace")
        assert res.returncode == 0, f"{f.name}: pdflatex failed:\n" + "\n".join(
            ln for ln in log.splitlines() if ln.startswith("!") or "Error" in ln)
        assert (tmp_path / f"doc_{f.stem}.pdf").is_file()
        over = [float(x) for x in re.findall(r"Overfull \\hbox \(([\d.]+)pt too wide\)", log)]
        assert all(x <= 1.0 for x in over), f"{f.name}: overfull boxes {over}"
        assert "Missing character" not in log
