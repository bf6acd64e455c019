"""bench/gpu_check.py on a CPU: the parts a CPU can run end to end, the skipped ones named, the CUDA
refusal, and the parity machinery (the pure-PyTorch Mamba2 on both sides, and a tampered kernel side
that it must catch). No wall-clock assertions."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
import torch


def _load(repo, name: str):
    spec = importlib.util.spec_from_file_location(name, repo / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def check(repo):
    return _load(repo, "gpu_check")


@pytest.fixture(scope="module")
def protocol(repo):
    return _load(repo, "_protocol")


# Every part at its smallest: tiny preset, one thread, no warm-up, the minimum 5 rounds.
CPU_ARGS = ["--device", "cpu", "--size", "tiny", "--threads", "1", "--warmup", "0", "--rounds", "5", "--seq", "64",
            "--text-len", "8", "--gen-tokens", "4", "--gen-batches", "1", "--refiner-steps", "2", "1",
            "--refiner-seconds", "0.1"]


def test_cpu_tiny_run_end_to_end(check, protocol, capsys):
    rc = check.main(CPU_ARGS)
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert rc == 0, out
    assert lines[0].startswith("machine: ") and lines[1].startswith("protocol: ")
    assert any(ln.startswith("setup: ") and "mamba_ssm" in ln and "torch " in ln for ln in lines)
    fig = protocol.parse_figures(lines[-1])
    # kernel parity needs CUDA and mamba_ssm: skipped on --device cpu, and said so
    assert fig["skipped"] == "parity" and fig["parity"] == "skipped" and fig["checks"] == "pass"
    assert "parity: skipped: needs a CUDA device and mamba_ssm" in out
    assert "mamba_ssm" in fig and fig["device"] == "cpu" and fig["size"] == "tiny" and fig["mamba2_backend"] == "torch"
    for key in ("train_ssm_step_s", "train_transformer_step_s", "train_ssm_over_transformer", "train_ssm_tflops",
                "gen_tok_s_ssm_b1", "gen_tok_s_transformer_b1", "gen_ssm_over_transformer_b1",
                "refiner_s_per_audio_s_2", "refiner_s_per_audio_s_1", "refiner_cost_1_over_2", "elapsed_s"):
        assert float(fig[key]) > 0, key
    assert fig["train_ssm_mfu"] == fig["train_transformer_mfu"] == "n/a"  # no bf16 peak for a CPU
    assert fig["train_precision"] == "bf16" and fig["train_seq"] == "64" and fig["rounds"] == "5"


def test_one_part_alone(check, protocol, capsys):
    assert check.main(CPU_ARGS + ["--parts", "parity"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    fig = protocol.parse_figures(lines[-1])
    assert lines[0].startswith("machine: ") and fig["skipped"] == "parity"
    assert not any(k.startswith(("train_", "gen_", "refiner_")) for k in fig)
    assert check.parse_args(["--parts", "refiner,train"]).parts == ["refiner", "train"]
    with pytest.raises(SystemExit):
        check.parse_args(["--parts", "train,bogus"])


def test_cuda_asked_without_cuda_is_refused_before_anything_runs(check, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert check.main(["--device", "cuda"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # not even the machine line
    assert "CUDA is not available" in captured.err and "--device cpu --size tiny" in captured.err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_refusal_is_the_exit_status_of_the_script(repo):
    r = subprocess.run([sys.executable, str(repo / "bench" / "gpu_check.py")], capture_output=True, text=True,
                       cwd=repo, timeout=120)
    assert r.returncode == 2 and "CUDA is not available" in r.stderr and r.stdout == ""


def _tiny_env(check):
    return check.Env(torch.device("cpu"), "torch", "absent", False)


def test_parity_part_runs_with_the_torch_layer_on_both_sides(check, capsys, one_thread):
    args = check.parse_args(["--device", "cpu", "--size", "tiny", "--warmup", "0"])
    out = check.parity_part(args, _tiny_env(check), kernel_backend="torch")
    assert out.ok and out.figures["parity"] == "pass"
    for key, _, _ in check.PARITY_CHECKS:
        assert out.figures[f"parity_{key}_rel"].hi == 0.0, key  # the same layer and weights: bitwise equal
    assert capsys.readouterr().out.count("pass") == len(check.PARITY_CHECKS)


def test_parity_sides_catch_a_wrong_kernel(check, one_thread):
    """A kernel side that drops the conv bias must fail every check by a wide margin."""
    from ssmttm.models.mamba2 import make_mamba2

    widths = check.mamba_widths("tiny")
    torch.manual_seed(0)
    ours = make_mamba2(backend="torch", **widths)
    theirs = make_mamba2(backend="torch", **widths)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    with torch.no_grad():
        theirs.conv1d.bias.zero_()
    worst = {}
    sides = check.parity_sides(ours, theirs, check.PARITY_SHAPES["tiny"], torch.device("cpu"), worst)
    figures = {**sides["train"](), **sides["masked"](), **sides["decode"]()}
    for key, _, tol_class in check.PARITY_CHECKS:
        assert figures[f"{key}_rel"] > 10 * check.PARITY_TOL[tol_class], key
        assert figures[f"{key}_abs"] > 0, key
    assert sum(worst.values()) == 1


def test_diff_is_normwise_and_flags_a_missing_gradient(check):
    ref = torch.tensor([4.0, -2.0, 0.0])
    assert check.diff(ref + torch.tensor([0.0, 0.0, 1e-3]), ref) == pytest.approx((1e-3, 2.5e-4))
    assert check.diff(None, ref) == (float("inf"), float("inf"))
    assert check.diff(torch.zeros(3), torch.zeros(3)) == (0.0, 0.0)


@pytest.mark.parametrize("name, peak", [("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0),
                                        ("NVIDIA H200", 989.0), ("NVIDIA A100-SXM4-80GB", 312.0),
                                        ("NVIDIA A100 80GB PCIe", 312.0), ("NVIDIA H100 NVL", None),
                                        ("NVIDIA H200 NVL", None), ("NVIDIA GH200 480GB", None),
                                        ("NVIDIA GeForce RTX 4090", None), (None, None)])
def test_peak_table(check, name, peak):
    assert check.peak_tflops(name) == peak
