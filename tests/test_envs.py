from ssmttm import envs


def test_envs_match_lock(repo):
    """envs/*.yaml are generated from requirements/lock-gpu.txt; a stale file fails here."""
    pins = envs.read_lock(repo / "requirements" / "lock-gpu.txt")
    for stage in envs.STAGES:
        expected = envs.render(stage, pins, "requirements/lock-gpu.txt")
        actual = (repo / "envs" / f"{stage}.yaml").read_text()
        assert actual == expected, f"envs/{stage}.yaml is stale: run `make envs`"


def test_locks_pin_the_named_packages(repo):
    named = ["snakemake", "torch", "descript-audio-codec", "laion-clap", "frechet-audio-distance", "pandas", "yt-dlp"]
    for lock in ("lock-cpu.txt", "lock-gpu.txt"):
        pins = envs.read_lock(repo / "requirements" / lock)
        for name in named:
            assert name in pins, f"{lock} does not pin {name}"
    gpu = envs.read_lock(repo / "requirements" / "lock-gpu.txt")
    assert (gpu["torch"], gpu["torchvision"], gpu["torchaudio"]) == ("2.9.1", "0.24.1", "2.9.1")
    kernels = (repo / "requirements" / "gpu-kernels.txt").read_text()
    assert "mamba-ssm==" in kernels and "causal-conv1d==" in kernels


def test_every_rule_names_an_existing_env(repo):
    import re

    for smk in (repo / "rules").glob("*.smk"):
        text = smk.read_text()
        n_rules_with_shell = len(re.findall(r"^\s+shell:", text, re.M))
        envs_named = re.findall(r'conda:\s*\n\s*"([^"]+)"', text)
        assert len(envs_named) == n_rules_with_shell, f"{smk.name}: a rule without conda:"
        for rel in envs_named:
            assert (smk.parent / rel).resolve().is_file(), f"{smk.name}: {rel} missing"
