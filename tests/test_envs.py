from ssmttm import envs


def test_envs_match_lock(repo):
    """envs/*.yaml are generated from requirements/lock-gpu.txt (and gpu-kernels.txt); a stale file fails here."""
    pins = envs.read_lock(repo / "requirements" / "lock-gpu.txt")
    kernels = envs.read_lock(repo / envs.KERNELS_FILE)
    for stage in envs.STAGES:
        expected = envs.render(stage, pins, "requirements/lock-gpu.txt", kernels)
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


def test_gpu_env_carries_the_mamba_kernels(repo):
    """The env of the GPU stages installs mamba-ssm and causal-conv1d at the gpu-kernels.txt versions,
    as the prebuilt wheels for the lock's torch and the env's Python; the other envs do not."""
    import yaml
    from packaging.requirements import Requirement

    kernels = envs.read_lock(repo / envs.KERNELS_FILE)
    torch_mm = ".".join(envs.read_lock(repo / "requirements" / "lock-gpu.txt")["torch"].split(".")[:2])
    assert set(kernels) == {"mamba-ssm", "causal-conv1d"}
    for stage in envs.STAGES:
        spec = yaml.safe_load((repo / "envs" / f"{stage}.yaml").read_text())
        pip = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict))
        reqs = {envs._norm(Requirement(r).name): Requirement(r) for r in pip}
        if stage not in envs.KERNEL_STAGES:
            assert not set(kernels) & set(reqs), stage
            continue
        for name, version in kernels.items():
            req = reqs[name]
            wheel = req.url.rsplit("/", 1)[1]
            assert req.url.startswith("https://github.com/") and f"/releases/download/v{version}/" in req.url
            py = "cp" + spec["dependencies"][0].split("=")[1].replace(".", "")
            assert wheel == (f"{name.replace('-', '_')}-{version}+cu12torch{torch_mm}cxx11abiTRUE-"
                             f"{py}-{py}-linux_x86_64.whl")
            assert req.marker.evaluate({"sys_platform": "linux", "platform_machine": "x86_64"})
            assert not req.marker.evaluate({"sys_platform": "darwin", "platform_machine": "arm64"})


def test_gpu_rules_use_the_kernel_env(repo):
    """Every rule that builds the LM (train, train-refiner, generate) runs in a KERNEL_STAGES env."""
    import re

    seen = set()
    for smk in (repo / "rules").glob("*.smk"):
        for block in re.split(r"^rule ", smk.read_text(), flags=re.M)[1:]:
            cmd = re.search(r'shell:\s*\n\s*"python -m ssmttm ([\w-]+)', block)
            env = re.search(r'conda:\s*\n\s*"\.\./envs/(\w+)\.yaml"', block)
            if cmd and cmd.group(1) in ("train", "train-refiner", "generate"):
                seen.add(cmd.group(1))
                assert env and env.group(1) in envs.KERNEL_STAGES, f"{smk.name}: {block.splitlines()[0]}"
    assert seen == {"train", "train-refiner", "generate"}
