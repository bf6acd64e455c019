"""The weights manifest: local file/folder sources, pinning, receipts, resolve and offline mode."""

from __future__ import annotations

import hashlib
import json
import os
import sys

import pytest

from ssmttm import io, weights

try:
    from httpfault import Fault, fault_server  # noqa: F401 (fixture)
except ImportError:  # tests/ imported as a package
    from tests.httpfault import Fault, fault_server  # noqa: F401


@pytest.fixture
def cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _folder(root, files):
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def test_local_file_receipt_and_resolve(cwd):
    src = cwd / "src" / "htdemucs_tiny.th"
    src.parent.mkdir()
    src.write_bytes(b"tiny weights" * 100)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    rec = weights.fetch("htdemucs", str(src), "results/weights", sha256=digest[:10], licence="MIT",
                        receipt_path="results/weights/htdemucs.json")
    assert rec == {
        "name": "htdemucs", "source": str(src), "revision": None, "sha256": digest,
        "path": "results/weights/htdemucs/htdemucs_tiny.th", "licence": "MIT", "kind": "file", "bytes": 1200,
    }
    assert json.loads((cwd / "results/weights/htdemucs.json").read_text()) == rec
    assert sorted(os.listdir(cwd / "results/weights/htdemucs")) == ["htdemucs_tiny.th"]
    p = weights.resolve("results/weights", "htdemucs")
    assert p.read_bytes() == src.read_bytes()
    assert weights.resolve("results/weights/htdemucs.json", "htdemucs") == p


def test_local_folder_pinned_then_enforced(cwd):
    src = _folder(cwd / "src" / "qwen_tiny", {"config.json": b"{}", "sub/model.safetensors": b"\x00" * 64})
    rec = weights.fetch("qwen2_audio", str(src), "w", licence="Apache-2.0")
    assert rec["kind"] == "folder" and rec["path"] == "w/qwen2_audio"
    assert rec["sha256"] == io.sha256_tree(src)
    assert (cwd / "w/qwen2_audio/sub/model.safetensors").read_bytes() == b"\x00" * 64
    assert weights.resolve("w", "qwen2_audio").resolve() == (cwd / "w/qwen2_audio").resolve()
    # the source changes; the verified copy is kept (no refetch needed) ...
    (src / "config.json").write_bytes(b'{"changed": 1}')
    assert weights.fetch("qwen2_audio", str(src), "w", licence="Apache-2.0")["sha256"] == rec["sha256"]
    assert (cwd / "w/qwen2_audio/config.json").read_bytes() == b"{}"
    # ... and once it is gone, a refetch with sha256 None enforces the pin in the receipt
    import shutil

    shutil.rmtree(cwd / "w/qwen2_audio")
    with pytest.raises(weights.WeightError, match="'qwen2_audio'"):
        weights.fetch("qwen2_audio", str(src), "w", licence="Apache-2.0")
    assert not (cwd / "w/qwen2_audio").exists()
    assert not any(p.name.startswith(".") for p in (cwd / "w").iterdir())


def test_file_pin_enforced_on_refetch(cwd):
    src = cwd / "m.bin"
    src.write_bytes(b"version one")
    first = weights.fetch("clap", str(src), "w")
    assert first["sha256"] == hashlib.sha256(b"version one").hexdigest()
    again = weights.fetch("clap", str(src), "w")  # unchanged: verified, same receipt
    assert again == first
    src.write_bytes(b"version two")
    (cwd / "w/clap/m.bin").unlink()
    with pytest.raises(weights.WeightError, match="'clap'"):
        weights.fetch("clap", str(src), "w")
    assert not (cwd / "w/clap/m.bin").exists()


def test_explicit_mismatch_names_the_weight(cwd):
    src = cwd / "m.bin"
    src.write_bytes(b"data")
    with pytest.raises(weights.WeightError, match="'dac_44khz'"):
        weights.fetch("dac_44khz", str(src), "w", sha256="0" * 64)
    assert not (cwd / "w/dac_44khz.json").exists()
    assert not (cwd / "w/dac_44khz/m.bin").exists()
    folder = _folder(cwd / "f", {"a": b"1"})
    with pytest.raises(weights.WeightError, match="'flan_t5'"):
        weights.fetch("flan_t5", str(folder), "w", sha256="deadbeef")
    assert not (cwd / "w/flan_t5").exists()


def test_missing_source_names_the_weight(cwd):
    with pytest.raises(weights.WeightError, match="'vggish'.*not found"):
        weights.fetch("vggish", str(cwd / "nope.pth"), "w")


def test_missing_weight_error_says_where_and_how(cwd):
    with pytest.raises(weights.MissingWeightError) as e:
        weights.resolve("results/weights", "htdemucs")
    msg = str(e.value)
    assert "'htdemucs'" in msg
    assert "results/weights/htdemucs/" in msg
    assert "snakemake --cores 1 results/weights/htdemucs.json" in msg
    assert "python -m ssmttm weights --name htdemucs" in msg
    # receipt present but the files are gone
    src = cwd / "m.bin"
    src.write_bytes(b"data")
    weights.fetch("htdemucs", str(src), "results/weights")
    (cwd / "results/weights/htdemucs/m.bin").unlink()
    with pytest.raises(weights.MissingWeightError, match="gone"):
        weights.resolve("results/weights", "htdemucs")


def test_resolve_detects_truncated_file(cwd):
    src = cwd / "m.bin"
    src.write_bytes(b"0123456789")
    weights.fetch("m", str(src), "w")
    (cwd / "w/m/m.bin").write_bytes(b"01234")
    with pytest.raises(weights.MissingWeightError, match="bytes"):
        weights.resolve("w", "m")


def test_cli(cwd, capsys):
    src = cwd / "m.bin"
    src.write_bytes(b"cli")
    rc = weights.main(["--name", "m", "--source", str(src), "--licence", "CC-BY-4.0", "--dir", "w",
                       "--receipt", "w/m.json"])
    assert rc == 0
    assert json.loads((cwd / "w/m.json").read_text())["licence"] == "CC-BY-4.0"
    base = ["--name", "m", "--licence", "MIT", "--dir", "w"]
    assert weights.main([*base, "--source", str(src), "--sha256", "1" * 64]) == 2
    # the same settings as the rule's JSON (weights + weights.models.<name>); typed flags override it
    js = json.dumps({"dir": "w", "source": str(src), "licence": "MIT", "sha256": "1" * 64})
    assert weights.main(["--name", "m", "--settings", js]) == 2
    assert weights.main(["--name", "m", "--settings", js, "--sha256", io.sha256_file(src)]) == 0
    for bad, msg in ((["--source", str(src), "--sha256", "xyz"], "--sha256 / config key weights.models.*.sha256"),
                     (["--source", str(src), "--timeout-s", "0"], "--timeout-s / config key weights.timeout_s"),
                     (["--source", "hf://only-owner"], "hf://owner/repo")):
        with pytest.raises(SystemExit):
            weights.main([*base, *bad])
        assert msg in capsys.readouterr().err
    with pytest.raises(SystemExit):  # licence: a required key of a weights entry, so a required flag
        weights.main(["--name", "m", "--source", str(src), "--dir", "w"])
    assert "--licence / config key weights.models.*.licence: required" in capsys.readouterr().err


def test_parse_hf():
    assert weights.parse_hf("hf://google/flan-t5-base") == ("google/flan-t5-base", None)
    assert weights.parse_hf("hf://lukewys/laion_clap/music_audioset_epoch_15_esc_90.14.pt") == (
        "lukewys/laion_clap", "music_audioset_epoch_15_esc_90.14.pt")
    assert weights.parse_hf("hf://o/r/sub/dir/f.bin") == ("o/r", "sub/dir/f.bin")
    with pytest.raises(ValueError):
        weights.parse_hf("hf://google")


def test_hf_arguments_and_staging(cwd, monkeypatch):
    """No network: stand-ins record the huggingface_hub calls and write what the hub would."""
    import huggingface_hub

    calls = []

    def fake_snapshot(repo_id, *, revision=None, local_dir=None, **kw):
        calls.append(("snapshot", repo_id, revision, str(local_dir)))
        _folder(local_dir, {"config.json": b"{}", ".cache/huggingface/x.metadata": os.urandom(8)})
        return str(local_dir)

    def fake_file(repo_id, filename, *, revision=None, local_dir=None, **kw):
        calls.append(("file", repo_id, filename, revision, str(local_dir)))
        _folder(local_dir, {filename: b"ckpt", ".cache/huggingface/y.metadata": os.urandom(8)})
        return os.path.join(local_dir, filename)

    class FakeApi:
        def model_info(self, repo_id, **kw):
            calls.append(("info", repo_id))
            return type("Info", (), {"sha": "c0ffee" * 6 + "abcd"})()

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_file)
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    rec = weights.fetch("flan_t5", "hf://google/flan-t5-base", "w", revision="7bcac57", licence="Apache-2.0")
    assert calls[0][:3] == ("snapshot", "google/flan-t5-base", "7bcac57")
    assert rec["kind"] == "folder" and rec["path"] == "w/flan_t5"
    assert sorted(os.listdir(cwd / "w/flan_t5")) == ["config.json"]  # hub bookkeeping not kept
    rec2 = weights.fetch("flan_t5", "hf://google/flan-t5-base", "w", revision="7bcac57")
    assert len(calls) == 1 and rec2["sha256"] == rec["sha256"]  # verified copy: no hub call
    assert rec["resolved_revision"] == "7bcac57"  # a given revision is used as is, no hub query
    rec3 = weights.fetch("clap", "hf://lukewys/laion_clap/sub/music.pt", "w", revision=None)
    head = "c0ffee" * 6 + "abcd"
    assert calls[1] == ("info", "lukewys/laion_clap")  # no revision: the head commit is resolved ...
    assert calls[2][:4] == ("file", "lukewys/laion_clap", "sub/music.pt", head)  # ... and downloaded
    assert rec3["resolved_revision"] == head
    assert rec3["kind"] == "file" and rec3["path"] == "w/clap/sub/music.pt"
    assert rec3["sha256"] == hashlib.sha256(b"ckpt").hexdigest()


def test_offline_env_sets_and_restores(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    import huggingface_hub.constants as hc

    before = hc.HF_HUB_OFFLINE
    with weights.offline_env():
        assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["TRANSFORMERS_OFFLINE"] == "1"
        assert hc.HF_HUB_OFFLINE is True
    assert "HF_HUB_OFFLINE" not in os.environ and os.environ["TRANSFORMERS_OFFLINE"] == "0"
    assert hc.HF_HUB_OFFLINE == before


def test_import_is_cheap():
    heavy = "('requests', 'torch', 'huggingface_hub', 'transformers')"
    code = f"import sys, ssmttm.weights, ssmttm.data.fetch; print(sorted(m for m in {heavy} if m in sys.modules))"
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_local_path_resolves_receipts_and_plain_paths(tmp_path):
    from ssmttm import weights

    src = tmp_path / "model.bin"
    src.write_bytes(b"abc" * 100)
    receipt = tmp_path / "w" / "tiny.json"
    weights.fetch("tiny", str(src), tmp_path / "w", licence="MIT", receipt_path=receipt)
    resolved = weights.local_path(receipt)
    assert resolved.exists() and resolved.read_bytes() == src.read_bytes()
    assert weights.local_path(src) == src
    with pytest.raises(weights.MissingWeightError, match="nope"):
        weights.local_path(tmp_path / "w" / "nope.json")
    with pytest.raises(weights.MissingWeightError):
        weights.local_path(tmp_path / "absent.th")


# --- network and hub failures: one paragraph, exit 2, nothing at the final path ----------------------


def _closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_stage(cwd, args, **env):
    """``python -m ssmttm weights ...`` in a fresh process (HF_ENDPOINT is read when the hub imports)."""
    import subprocess

    full = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_", "HUGGINGFACE_"))}
    full.update(HF_HOME=str(cwd / "hf_home"), PYTHONPATH=os.pathsep.join(sys.path), **env)
    args = [*args, "--licence", "test"] if "--licence" not in args else args
    return subprocess.run([sys.executable, "-m", "ssmttm", "weights", *args], cwd=cwd, env=full,
                          capture_output=True, text=True, timeout=120)


def _one_paragraph(res, *names):
    """rc 2, no traceback, exactly one ERROR paragraph naming ``names``; returns it."""
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    errors = [ln for ln in res.stderr.splitlines() if " ERROR " in ln]
    assert len(errors) == 1, res.stderr
    for n in names:
        assert n in errors[0], (n, errors[0])
    assert "Nothing was written to" in errors[0] and "--source" in errors[0]
    return errors[0]


def _nothing_left(weights_dir, name):
    left = sorted(p.name for p in weights_dir.iterdir()) if weights_dir.exists() else []
    assert left == [], left  # no <name>/, no <name>.json, no empty .<name>.partdir


def test_unreachable_https_source(cwd):
    url = f"http://127.0.0.1:{_closed_port()}/weights.pth"
    res = _run_stage(cwd, ["--name", "dac_44khz", "--source", url, "--dir", "w", "--retries", "0", "--timeout-s", "5"])
    msg = _one_paragraph(res, "'dac_44khz'", url, "refused", "proxy", f"curl -L -o weights.pth {url}",
                         "weights.models.dac_44khz.source")
    assert "w/dac_44khz/" in msg and "w/dac_44khz.json" in msg
    _nothing_left(cwd / "w", "dac_44khz")


def test_unreachable_hub_when_resolving_the_revision(cwd):
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    res = _run_stage(cwd, ["--name", "flan_t5_base", "--source", "hf://google/flan-t5-base", "--dir", "w"],
                     HF_ENDPOINT=endpoint)
    _one_paragraph(res, "'flan_t5_base'", "hf://google/flan-t5-base", "google/flan-t5-base", "default branch",
                   endpoint, "HF_TOKEN", "hf download google/flan-t5-base")
    _nothing_left(cwd / "w", "flan_t5_base")


def test_unreachable_hub_when_downloading_a_snapshot(cwd):
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    res = _run_stage(cwd, ["--name", "t5", "--source", "hf://google/flan-t5-base", "--revision", "7bcac57",
                           "--dir", "w"], HF_ENDPOINT=endpoint)
    _one_paragraph(res, "'t5'", "google/flan-t5-base", "revision 7bcac57", endpoint, "--revision 7bcac57")
    _nothing_left(cwd / "w", "t5")


def test_hub_repository_not_found(cwd, fault_server):
    """A hub that answers 404 for everything: the advice is to check the configured source."""
    endpoint = fault_server.url("").rstrip("/")
    res = _run_stage(cwd, ["--name", "t5", "--source", "hf://nobody/nothing", "--dir", "w"], HF_ENDPOINT=endpoint)
    _one_paragraph(res, "'t5'", "nobody/nothing", "weights.models.t5.source")
    _nothing_left(cwd / "w", "t5")


def test_hub_offline_mode_is_named(cwd):
    res = _run_stage(cwd, ["--name", "t5", "--source", "hf://google/flan-t5-base", "--revision", "7bcac57",
                           "--dir", "w"], HF_HUB_OFFLINE="1")
    _one_paragraph(res, "'t5'", "HF_HUB_OFFLINE")
    _nothing_left(cwd / "w", "t5")


def test_programming_errors_are_not_disguised(cwd, monkeypatch):
    def broken(source, revision):
        raise TypeError("a bug, not the network")

    monkeypatch.setattr(weights, "resolve_hf_revision", broken)
    with pytest.raises(TypeError, match="a bug"):
        weights.fetch("t5", "hf://google/flan-t5-base", "w")


def test_partial_https_download_is_kept_for_resume_outside_the_final_path(cwd, fault_server):
    data = os.urandom(3 << 20)  # the stage reads 1 MiB chunks: a cut after 1.5 MiB keeps one
    url = fault_server.add("/big.pth", data, [Fault("truncate", after=3 << 19, always=True)])
    with pytest.raises(weights.WeightError) as e:
        weights.fetch("big", url, "w", retries=1, timeout=5)
    msg = str(e.value)
    assert "Partial data is kept in w/.big.partdir" in msg and url in msg
    assert sorted(p.name for p in (cwd / "w").iterdir()) == [".big.partdir"]  # no w/big/, no receipt
    fault_server.plans["/big.pth"] = []  # the server recovers: the rerun resumes and completes
    rec = weights.fetch("big", url, "w", retries=1, timeout=5)
    assert (cwd / rec["path"]).read_bytes() == data
    assert sorted(p.name for p in (cwd / "w").iterdir()) == ["big", "big.json"]
    assert any(r.range for r in fault_server.requests("/big.pth"))


def test_receipt_pin_mismatch_says_how_to_repin(cwd):
    src = cwd / "m.bin"
    src.write_bytes(b"version one")
    weights.fetch("clap", str(src), "w")
    (cwd / "w/clap/m.bin").unlink()
    src.write_bytes(b"version two")
    with pytest.raises(weights.WeightError) as e:
        weights.fetch("clap", str(src), "w")
    msg = str(e.value)
    assert "delete w/clap.json" in msg and hashlib.sha256(b"version two").hexdigest() in msg
    assert "weights.models.clap.sha256" in msg
