"""Downloads against a loopback server with scripted faults; tar safety; one shard end to end."""

from __future__ import annotations

import hashlib
import io as pyio
import json
import os
import tarfile

import pytest

from ssmttm.data import fetch
from ssmttm.data.sources import jamendo as J

try:
    from httpfault import Fault, fault_server  # noqa: F401 (fixture)
except ImportError:  # tests/ imported as a package
    from tests.httpfault import Fault, fault_server  # noqa: F401

FAST = dict(backoff=0.01, timeout=5, chunk=4096)
DATA = bytes((i * 7 + i // 251) % 256 for i in range(200_000))
SHA = hashlib.sha256(DATA).hexdigest()


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --- download: faults ----------------------------------------------------------------------------


def test_plain_download_writes_file_and_pin(fault_server, tmp_path):
    url = fault_server.add("/f.bin", DATA)
    dest = tmp_path / "f.bin"
    assert fetch.download(url, dest, sha256=SHA, **FAST) == SHA
    assert dest.read_bytes() == DATA
    assert fetch.read_pin(dest) == SHA
    assert leftovers(tmp_path) == ["f.bin", "f.bin.sha256"]


@pytest.mark.parametrize("kind", ["reset", "truncate"])
def test_interrupted_body_resumes_with_range(fault_server, tmp_path, kind):
    url = fault_server.add("/f.bin", DATA, [Fault(kind, after=50_000)])
    dest = tmp_path / "f.bin"
    assert fetch.download(url, dest, sha256=SHA, retries=3, **FAST) == SHA
    assert dest.read_bytes() == DATA
    reqs = fault_server.requests("/f.bin")
    assert len(reqs) == 2
    assert reqs[0].range is None
    # the second request resumed where the first one stopped, at a chunk boundary
    assert reqs[1].range is not None and reqs[1].range.startswith("bytes=")
    offset = int(reqs[1].range[len("bytes="):-1])
    assert 0 < offset <= 50_000 and reqs[1].status == 206
    assert fault_server.bytes_sent("/f.bin") < 2 * len(DATA)
    assert not (tmp_path / "f.bin.part").exists()


def test_server_errors_are_retried_and_counted(fault_server, tmp_path):
    url = fault_server.add("/f.bin", DATA, [Fault("status", status=500), Fault("status", status=503)])
    dest = tmp_path / "f.bin"
    fetch.download(url, dest, sha256=SHA, retries=5, **FAST)
    assert dest.read_bytes() == DATA
    assert [r.status for r in fault_server.requests("/f.bin")] == [500, 503, 200]


def test_server_errors_exhaust_retries_leave_no_file(fault_server, tmp_path):
    url = fault_server.add("/f.bin", DATA, [Fault("status", status=500, always=True)])
    dest = tmp_path / "f.bin"
    with pytest.raises(fetch.FetchError) as e:
        fetch.download(url, dest, sha256=SHA, retries=2, **FAST)
    assert not isinstance(e.value, fetch.NotFound)
    assert len(fault_server.requests("/f.bin")) == 3
    assert not dest.exists()


def test_404_raises_notfound_without_retries(fault_server, tmp_path):
    url = fault_server.add("/gone.bin", None)
    with pytest.raises(fetch.NotFound):
        fetch.download(url, tmp_path / "gone.bin", sha256=SHA, retries=5, **FAST)
    assert len(fault_server.requests("/gone.bin")) == 1
    assert leftovers(tmp_path) == []


def test_wrong_bytes_fail_after_retries_and_leave_nothing(fault_server, tmp_path):
    url = fault_server.add("/f.bin", DATA, [Fault("wrong", always=True)])
    dest = tmp_path / "f.bin"
    with pytest.raises(fetch.FetchError, match="sha256"):
        fetch.download(url, dest, sha256=SHA, retries=2, **FAST)
    reqs = fault_server.requests("/f.bin")
    assert len(reqs) == 3
    assert all(r.range is None for r in reqs)  # a bad hash restarts from byte 0, never resumes
    assert leftovers(tmp_path) == []


def test_wrong_bytes_once_then_correct(fault_server, tmp_path):
    url = fault_server.add("/f.bin", DATA, [Fault("wrong")])
    dest = tmp_path / "f.bin"
    assert fetch.download(url, dest, sha256=SHA, retries=2, **FAST) == SHA
    assert dest.read_bytes() == DATA


def test_server_ignoring_range_restarts_from_zero(fault_server, tmp_path):
    url = fault_server.add("/f.bin", DATA, [Fault("reset", after=30_000), Fault("ignore_range")])
    dest = tmp_path / "f.bin"
    fetch.download(url, dest, sha256=SHA, retries=2, **FAST)
    assert dest.read_bytes() == DATA  # appending the full body to the .part would corrupt it
    reqs = fault_server.requests("/f.bin")
    assert reqs[1].range is not None and reqs[1].status == 200


def test_stalled_body_times_out_and_resumes(fault_server, tmp_path):
    # the stall outlasts the read timeout many times over (the server holds it until it stops), and the
    # timeout is not so short that a busy machine trips it on the resumed request as well
    url = fault_server.add("/f.bin", DATA, [Fault("stall", after=40_000, seconds=30)])
    dest = tmp_path / "f.bin"
    fetch.download(url, dest, sha256=SHA, retries=2, backoff=0.01, timeout=2, chunk=4096)
    assert dest.read_bytes() == DATA
    assert fault_server.requests("/f.bin")[1].range is not None


def test_complete_part_answered_416_is_verified(fault_server, tmp_path):
    url = fault_server.add("/f.bin", DATA)
    dest = tmp_path / "f.bin"
    (tmp_path / "f.bin.part").write_bytes(DATA)
    fetch.download(url, dest, sha256=SHA, **FAST)
    assert dest.read_bytes() == DATA
    assert [r.status for r in fault_server.requests("/f.bin")] == [416]


def test_mirror_used_when_primary_missing(fault_server, tmp_path):
    primary = fault_server.add("/a/f.bin", None)
    mirror = fault_server.add("/b/f.bin", DATA)
    dest = tmp_path / "f.bin"
    fetch.download(primary, dest, sha256=SHA, mirrors=[mirror], **FAST)
    assert dest.read_bytes() == DATA
    assert len(fault_server.requests("/a/f.bin")) == 1


def test_verified_file_is_skipped_on_rerun(fault_server, tmp_path):
    url = fault_server.add("/f.bin", DATA)
    dest = tmp_path / "f.bin"
    fetch.download(url, dest, sha256=SHA, **FAST)
    fetch.download(url, dest, sha256=SHA, **FAST)
    assert len(fault_server.requests("/f.bin")) == 1


def test_corrupt_final_file_is_replaced(fault_server, tmp_path):
    url = fault_server.add("/f.bin", DATA)
    dest = tmp_path / "f.bin"
    dest.write_bytes(b"garbage")
    fetch.download(url, dest, sha256=SHA, **FAST)
    assert dest.read_bytes() == DATA


def test_prefix_sha256_accepted_and_bad_value_rejected(fault_server, tmp_path):
    url = fault_server.add("/f.bin", DATA)
    assert fetch.download(url, tmp_path / "f.bin", sha256=SHA[:8].upper(), **FAST) == SHA
    with pytest.raises(ValueError, match="sha256"):
        fetch.download(url, tmp_path / "g.bin", sha256="abc", **FAST)
    with pytest.raises(fetch.FetchError):
        fetch.download(url, tmp_path / "h.bin", sha256="deadbeef", retries=0, **FAST)
    assert not (tmp_path / "h.bin").exists()


def test_pin_written_then_enforced(fault_server, tmp_path):
    url = fault_server.add("/f.bin", DATA)
    dest = tmp_path / "f.bin"
    assert fetch.download(url, dest, sha256=None, **FAST) == SHA
    assert fetch.read_pin(dest) == SHA
    # the source changes under the same name: the pin refuses the new content
    dest.unlink()
    fault_server.files["/f.bin"] = DATA[::-1]
    with pytest.raises(fetch.FetchError, match="sha256"):
        fetch.download(url, dest, sha256=None, retries=1, **FAST)
    assert not dest.exists()


def test_local_source_copy_verify_and_missing(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(DATA)
    out = tmp_path / "out"
    assert fetch.download(str(src), out / "f.bin", sha256=SHA, **FAST) == SHA
    assert (out / "f.bin").read_bytes() == DATA
    with pytest.raises(fetch.NotFound):
        fetch.download(str(tmp_path / "nope.bin"), out / "g.bin", **FAST)
    with pytest.raises(fetch.FetchError):
        fetch.download(str(src), out / "h.bin", sha256="0" * 64, **FAST)
    assert leftovers(out) == ["f.bin", "f.bin.sha256"]


def test_fetch_file_cli(fault_server, tmp_path):
    url = fault_server.add("/m.tsv", DATA)
    out = tmp_path / "meta" / "m.tsv"
    assert fetch.main_file(["--url", url, "--out", str(out), "--retries", "1", "--timeout-s", "5"]) == 0
    assert fetch.read_pin(out) == SHA
    missing = fault_server.add("/none.tsv", None)
    assert fetch.main_file(["--url", missing, "--out", str(tmp_path / "x"), "--retries", "1", "--timeout-s", "5"]) == 1


# --- extract_members ------------------------------------------------------------------------------


def _tar(path, members):
    """members: (name, bytes | None, type) with type in "file", "dir", "symlink", "hardlink"."""
    with tarfile.open(path, "w") as tf:
        for name, data, kind in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(data)
                tf.addfile(info, pyio.BytesIO(data))
            elif kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(info)
            else:
                info.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
                info.linkname = data
                tf.addfile(info)
    return path


def test_extract_rejects_malicious_members(tmp_path):
    tar = _tar(tmp_path / "evil.tar", [
        ("07/7.mp3", b"good", "file"),
        ("../evil", b"x", "file"),
        ("07/../../evil2", b"x", "file"),
        ("/tmp/abs_evil_ssmttm", b"x", "file"),
        ("07/link", "/etc/passwd", "symlink"),
        ("07/hard", "07/7.mp3", "hardlink"),
        ("08/107.mp3", b"other shard", "file"),
    ])
    out = tmp_path / "out"
    names, _ = fetch.extract_members(tar, out, allowed_prefix="07")
    assert names == ["07/7.mp3"]
    assert (out / "07" / "7.mp3").read_bytes() == b"good"
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if not p.is_dir())
    assert files == ["evil.tar", "out/07/7.mp3"]
    assert not os.path.exists("/tmp/abs_evil_ssmttm")
    _, rejected = fetch.extract_members(tar, tmp_path / "out2", allowed_prefix="07")
    assert set(rejected) == {"../evil", "07/../../evil2", "/tmp/abs_evil_ssmttm", "07/link", "07/hard", "08/107.mp3"}
    assert "symlink" in rejected["07/link"]


def test_extract_does_not_follow_symlinked_folder(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "07").symlink_to(outside)
    tar = _tar(tmp_path / "t.tar", [("07/7.mp3", b"x", "file")])
    assert fetch.extract_members(tar, out)[0] == []
    assert list(outside.iterdir()) == []


# a file NN/x.mp3 and a folder of the same name (or a member below it), in every order
CONFLICTS = {
    "file first": [("07/7.mp3", b"seven", "file"), ("07/7.mp3/inner.mp3", b"below", "file")],
    "member below first": [("07/7.mp3/inner.mp3", b"below", "file"), ("07/7.mp3", b"seven", "file")],
    "folder member": [("07/7.mp3", "dir", "dir"), ("07/7.mp3", b"seven", "file")],
    "folder member with content": [("07/7.mp3", b"seven", "file"), ("07/7.mp3", "dir", "dir"),
                                   ("07/7.mp3/inner.mp3", b"below", "file")],
}


@pytest.mark.parametrize("order", sorted(CONFLICTS))
def test_extract_refuses_a_file_and_a_folder_of_the_same_name(tmp_path, order):
    good = [("07", None, "dir"), ("07/107.mp3", b"good", "file")]
    tar = _tar(tmp_path / "raw_30s_audio-07.tar", good[:1] + CONFLICTS[order] + good[1:])
    out = tmp_path / "out"
    written, rejected = fetch.extract_members(tar, out, allowed_prefix="07")
    assert written == ["07/107.mp3"] and (out / "07" / "107.mp3").read_bytes() == b"good"
    assert set(rejected) == {m for m, _, _ in CONFLICTS[order]}
    for reason in rejected.values():
        assert "'07/7.mp3'" in reason and "raw_30s_audio-07.tar" in reason and "track 07/7.mp3" in reason
    assert any("07/7.mp3/inner.mp3" in r or "folder member" in r for r in rejected.values())
    assert not (out / "07" / "7.mp3").exists()


# --- fetch_shard ----------------------------------------------------------------------------------

GOOD = {"07/7.mp3": b"track seven" * 50, "07/107.mp3": b"track 107" * 80}
BAD = ("07/207.mp3", b"corrupted bytes")
MISSING = "07/307.mp3"


def _corpus(root, listed_tar=True):
    """A one-shard mirror: raw_30s/audio/raw_30s_audio-07.tar + the two checksum lists."""
    tar_dir = root / "raw_30s" / "audio"
    tar_dir.mkdir(parents=True)
    tar = _tar(tar_dir / "raw_30s_audio-07.tar",
               [(k, v, "file") for k, v in GOOD.items()]
               + [(BAD[0], BAD[1], "file"), ("07/999.mp3", b"unlisted", "file"), ("07/sub/1.mp3", b"deep", "file")])
    lines = [f"{sha(v)} {k}" for k, v in GOOD.items()]
    lines += [f"{sha(b'the real 207')} {BAD[0]}", f"{sha(b'307')} {MISSING}", f"{sha(b'other')} 08/8.mp3"]
    (root / "tracks.txt").write_text("\n".join(lines) + "\n")
    tar_line = f"{sha(tar.read_bytes())} raw_30s_audio-07.tar\n" if listed_tar else ""
    (root / "tars.txt").write_text(tar_line + f"{'0' * 64} raw_30s_audio-08.tar\n")
    return tar


def _check_receipt(rec, out):
    assert rec["status"] == "ok" and rec["shard"] == "07" and rec["tar"] == "raw_30s_audio-07.tar"
    assert rec["tracks"]["07/7.mp3"] == "ok" and rec["tracks"]["07/107.mp3"] == "ok"
    assert "sha256 mismatch" in rec["tracks"][BAD[0]]
    assert rec["tracks"][MISSING] == "missing from tar"
    assert "08/8.mp3" not in rec["tracks"]
    assert rec["tracks"]["07/999.mp3"].startswith("not in track sha256 list")
    assert (rec["n_ok"], rec["n_bad"]) == (2, 3)
    assert sorted(p.name for p in (out / "07").iterdir()) == ["107.mp3", "7.mp3"]
    assert (out / "07" / "7.mp3").read_bytes() == GOOD["07/7.mp3"]
    assert not (out / "raw_30s_audio-07.tar").exists()


def _shard_args(root, base, out):
    return ["--shard", "07", "--base-url", base, "--dataset", "raw_30s", "--audio-type", "audio",
            "--metadata", f"tar_sha256={root / 'tars.txt'}", f"track_sha256={root / 'tracks.txt'}",
            "--out-dir", str(out), "--receipt", str(out / "07.json"), "--retries", "2", "--timeout-s", "5",
            "--backoff-s", "0.01"]


def test_fetch_shard_http_end_to_end_and_rerun(fault_server, tmp_path):
    tar = _corpus(tmp_path / "src")
    path = "/mtg/raw_30s/audio/raw_30s_audio-07.tar"
    fault_server.add(path, tar.read_bytes(), [Fault("reset", after=1000)])
    out = tmp_path / "audio"
    assert fetch.main_shard(_shard_args(tmp_path / "src", fault_server.url("/mtg"), out)) == 0
    rec = json.loads((out / "07.json").read_text())
    _check_receipt(rec, out)
    assert rec["url"] == fault_server.url(path) and rec["tar_sha256"] == sha(tar.read_bytes())
    n = len(fault_server.requests(path))
    assert n == 2
    # rerun: tracks already verified are kept; the tar is fetched again only for the missing ones
    mtime = (out / "07" / "7.mp3").stat().st_mtime_ns
    assert fetch.main_shard(_shard_args(tmp_path / "src", fault_server.url("/mtg"), out)) == 0
    assert (out / "07" / "7.mp3").stat().st_mtime_ns == mtime
    _check_receipt(json.loads((out / "07.json").read_text()), out)


def test_fetch_shard_skips_tar_when_all_tracks_verified(tmp_path):
    src = tmp_path / "src"
    _corpus(src)
    lines = [f"{sha(v)} {k}" for k, v in GOOD.items()]
    (src / "tracks.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path / "audio"
    args = dict(shard="07", base_url=str(src), dataset="raw_30s", audio_type="audio",
                tar_sums_path=src / "tars.txt", track_sums_path=src / "tracks.txt", out_dir=out,
                receipt_path=out / "07.json", backoff=0.01)
    assert J.fetch_shard(**args)["n_ok"] == 2
    (src / "raw_30s" / "audio" / "raw_30s_audio-07.tar").unlink()  # a refetch would now fail
    rec = J.fetch_shard(**args)
    assert rec["status"] == "ok" and rec["n_ok"] == 2 and "not fetched" in rec["reason"]


def test_fetch_shard_local_mirror_keep_tars(tmp_path):
    _corpus(tmp_path / "src")
    out = tmp_path / "audio"
    args = _shard_args(tmp_path / "src", str(tmp_path / "src"), out)[:-6]
    assert fetch.main_shard([*args, "--keep-tars", "true"]) == 0
    rec = json.loads((out / "07.json").read_text())
    assert rec["n_ok"] == 2 and rec["tracks"][MISSING] == "missing from tar"
    assert (out / "raw_30s_audio-07.tar").exists()


def test_fetch_shard_missing_tar_is_recorded_not_fatal(fault_server, tmp_path):
    _corpus(tmp_path / "src")
    out = tmp_path / "audio"
    args = _shard_args(tmp_path / "src", fault_server.url("/empty"), out)
    args[1] = "08"
    args[args.index("--receipt") + 1] = str(out / "08.json")
    assert fetch.main_shard(args) == 0
    rec = json.loads((out / "08.json").read_text())
    assert rec["status"] == "missing" and "not found" in rec["reason"]
    assert rec["tracks"] == {"08/8.mp3": "tar missing"} and rec["n_ok"] == 0
    assert (out / "08").is_dir() and list((out / "08").iterdir()) == []
    assert len(fault_server.requests("/empty/raw_30s/audio/raw_30s_audio-08.tar")) == 1
    # local mirror without the tar: same outcome
    args[args.index("--base-url") + 1] = str(tmp_path / "src")
    assert fetch.main_shard(args) == 0
    assert json.loads((out / "08.json").read_text())["status"] == "missing"


def test_fetch_shard_unlisted_tar(tmp_path):
    _corpus(tmp_path / "src", listed_tar=False)
    out = tmp_path / "audio"
    args = dict(shard="07", base_url=str(tmp_path / "src"), dataset="raw_30s", audio_type="audio",
                tar_sums_path=tmp_path / "src" / "tars.txt", track_sums_path=tmp_path / "src" / "tracks.txt",
                out_dir=out, receipt_path=out / "07.json", backoff=0.01)
    with pytest.raises(fetch.FetchError, match="not listed"):
        J.fetch_shard(**args)
    assert list((out / "07").iterdir()) == []


@pytest.mark.parametrize("order", ["file first", "member below first"])
def test_fetch_shard_name_conflict_rejects_the_track_and_keeps_the_rest(tmp_path, order):
    src, out = tmp_path / "src", tmp_path / "audio"
    tar_dir = src / "raw_30s" / "audio"
    tar_dir.mkdir(parents=True)
    tar = _tar(tar_dir / "raw_30s_audio-07.tar", [("07/107.mp3", GOOD["07/107.mp3"], "file")] + CONFLICTS[order])
    (src / "tracks.txt").write_text(f"{sha(GOOD['07/107.mp3'])} 07/107.mp3\n{sha(b'seven')} 07/7.mp3\n")
    (src / "tars.txt").write_text(f"{sha(tar.read_bytes())} raw_30s_audio-07.tar\n")
    args = dict(shard="07", base_url=str(src), dataset="raw_30s", audio_type="audio", tar_sums_path=src / "tars.txt",
                track_sums_path=src / "tracks.txt", out_dir=out, receipt_path=out / "07.json", backoff=0.01)
    for _ in range(2):  # a rerun (the tar fetched again for the rejected track) ends the same way
        rec = J.fetch_shard(**args)
        assert rec["status"] == "ok" and rec["tracks"]["07/107.mp3"] == "ok" and rec["n_ok"] == 1
        reason = rec["tracks"]["07/7.mp3"]
        assert reason.startswith("rejected tar member: ") and "track 07/7.mp3" in reason
        assert "'07/7.mp3'" in reason and "'07/7.mp3/inner.mp3'" in reason and "raw_30s_audio-07.tar" in reason
        assert sorted(p.name for p in (out / "07").iterdir()) == ["107.mp3"]
        assert json.loads((out / "07.json").read_text()) == rec


def test_fetch_shard_replaces_a_folder_left_in_a_tracks_way(tmp_path):
    src, out = tmp_path / "src", tmp_path / "audio"
    _corpus(src)
    (out / "07" / "7.mp3").mkdir(parents=True)  # e.g. what a crashed earlier run left
    (out / "07" / "7.mp3" / "inner.mp3").write_bytes(b"x")
    assert fetch.main_shard(_shard_args(src, str(src), out)[:-6]) == 0
    _check_receipt(json.loads((out / "07.json").read_text()), out)


@pytest.mark.parametrize("which", ["tracks.txt", "tars.txt"])
def test_fetch_shard_fails_on_a_malformed_checksum_line(tmp_path, capfd, which):
    src, out = tmp_path / "src", tmp_path / "audio"
    _corpus(src)
    lines = (src / which).read_text().splitlines()
    lines.insert(1, "not-a-hash 07/7.mp3")
    (src / which).write_text("\n".join(lines) + "\n")
    with pytest.raises(J.JamendoFormatError) as e:
        J.fetch_shard("07", str(src), "raw_30s", "audio", src / "tars.txt", src / "tracks.txt", out,
                          out / "07.json", backoff=0.01)
    assert f"{which}: line 2: expected '<sha256> <name>'" in str(e.value) and "not-a-hash" in str(e.value)
    assert not out.exists()  # nothing fetched, nothing unpacked
    capfd.readouterr()
    assert fetch.main_shard(_shard_args(src, str(src), out)[:-6]) == 1
    errors = _errors(capfd)
    assert len(errors) == 1 and f"{which}: line 2" in errors[0]
    assert not (out / "07.json").exists()


def test_fetch_shard_server_down_fails_job(fault_server, tmp_path):
    tar = _corpus(tmp_path / "src")
    path = "/mtg/raw_30s/audio/raw_30s_audio-07.tar"
    fault_server.add(path, tar.read_bytes(), [Fault("status", status=503, always=True)])
    out = tmp_path / "audio"
    assert fetch.main_shard(_shard_args(tmp_path / "src", fault_server.url("/mtg"), out)) == 1
    assert not (out / "07.json").exists()


# --- content checked before the first download is pinned --------------------------------------------

ERROR_PAGE = (b"<!DOCTYPE html>\n<html><head><title>429 Too Many Requests</title></head>\n"
              b"<body><h1>Slow down</h1></body></html>\n")
META_TSV = (b"TRACK_ID\tARTIST_ID\tALBUM_ID\tTRACK_NAME\tARTIST_NAME\tALBUM_NAME\tRELEASEDATE\tURL\n"
            b"track_0000214\tartist_000014\talbum_000031\tIntro\tDavid\tAlbum\t2004-12-28\thttps://www.jamendo.com/track/214\n")
FORMATS = {
    "raw_30s_cleantags.tsv": b"TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS\r\n"
                             b"track_0000214\tartist_000014\talbum_000031\t14/214.mp3\t124.6\tgenre---punkrock\r\n",
    "raw.meta.tsv": META_TSV,
    "audio_licenses.txt": "14/214.mp3\nIntro chiante by David TMX from Jamendo: http://www.jamendo.com/track/214\n"
                          "Available under a Creative Commons Attribution-NonCommercial-ShareAlike license: "
                          "http://creativecommons.org/licenses/by-nc-sa/3.0/\n\n".encode(),
    "raw_30s_audio_sha256_tars.txt": f"{'a' * 64} raw_30s_audio-00.tar\n{'b' * 64} raw_30s_audio-01.tar\n".encode(),
    "raw_30s_audio_sha256_tracks.txt": f"{'c' * 64}  14/214.mp3\n".encode(),
    "song_describer.csv": "\ufeffcaption_id,track_id,caption,is_valid_subset,familiarity,artist_id,album_id,path,"
                          "duration\n1,214,\"A slow, calm piano piece.\",True,0,14,31,14/214.2min.mp3,120.0\n".encode(),
    "musiccaps-public.csv": b"ytid,start_s,end_s,audioset_positive_labels,aspect_list,caption,author_id,"
                            b"is_balanced_subset,is_audioset_eval\n"
                            b"-0Gj8-vB1q4,30,40,\"/m/0140xf\",\"['low quality']\",\"A song.\",4,False,True\n",
}


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_content_check_accepts_each_metadata_format(tmp_path, name):
    p = tmp_path / name
    p.write_bytes(FORMATS[name])
    assert fetch.content_problem(p) is None


def test_content_check_accepts_generated_metadata(tmp_path):
    """The synthetic metadata of the scale check (same writers' format as the demo corpus)."""
    from ssmttm.demo.scale import write_metadata

    for path in write_metadata(tmp_path, n_tracks=50, n_song_describer=5).values():
        assert fetch.content_problem(path) is None, path.name


def test_every_metadata_file_has_a_format_check():
    from ssmttm.data.sources import metadata_files

    assert set(metadata_files().values()) <= set(fetch.metadata_formats())


@pytest.mark.parametrize("name", sorted(FORMATS))
@pytest.mark.parametrize("body, why", [
    (ERROR_PAGE, "HTML"),
    (b"  \n<html><body>Sign in</body></html>", "HTML"),
    (b"", "empty"),
    (b"\n\n  \n", "blank"),
    (b"\xff\xfeT\x00R\x00A\x00", "UTF-8"),
])
def test_content_check_rejects_error_pages_and_non_text(tmp_path, name, body, why):
    p = tmp_path / name
    p.write_bytes(body)
    problem = fetch.content_problem(p)
    assert problem is not None and why in problem and name in problem


@pytest.mark.parametrize("name, body", [
    ("raw_30s_cleantags.tsv", META_TSV),  # another metadata file under this name
    ("raw.meta.tsv", FORMATS["raw_30s_cleantags.tsv"]),
    ("audio_licenses.txt", b"Not Found\n"),
    ("audio_licenses.txt", b"14/214.mp3\nsomething else\n"),
    ("raw_30s_audio_sha256_tars.txt", b"404: Not Found"),
    ("raw_30s_audio_sha256_tracks.txt", f"{'c' * 64}  14/214.mp3\nnot a hash line\n".encode()),
    ("raw_30s_audio_sha256_tars.txt", f"{'a' * 64} raw_30s_audio-00.tar trailing words\n".encode()),
    ("song_describer.csv", b"error,message\nrate limited,try later\n"),
    ("musiccaps-public.csv", b"ytid,caption\nabc,def\n"),
])
def test_content_check_rejects_wrong_header_or_record(tmp_path, name, body):
    p = tmp_path / name
    p.write_bytes(body)
    assert fetch.content_problem(p) is not None


def test_other_files_are_only_checked_for_html(tmp_path):
    (tmp_path / "w.pth").write_bytes(DATA)
    assert fetch.content_problem(tmp_path / "w.pth") is None
    (tmp_path / "w.pth").write_bytes(ERROR_PAGE)
    assert "HTML" in fetch.content_problem(tmp_path / "w.pth")
    (tmp_path / "page.html").write_bytes(ERROR_PAGE)
    assert fetch.content_problem(tmp_path / "page.html") is None


def test_error_page_with_status_200_is_not_pinned(fault_server, tmp_path):
    url = fault_server.add("/data/raw.meta.tsv", ERROR_PAGE)
    dest = tmp_path / "metadata" / "raw.meta.tsv"
    with pytest.raises(fetch.BadContent) as e:
        fetch.download(url, dest, sha256=None, retries=3, **FAST)
    msg = str(e.value)
    assert "raw.meta.tsv" in msg and url in msg and "HTML" in msg and "Nothing was pinned" in msg
    assert len(fault_server.requests("/data/raw.meta.tsv")) == 1  # the same page again would not help
    assert leftovers(dest.parent) == []  # no file, no pin, no .part to resume from
    # the server recovers: the real file is fetched and pinned
    fault_server.files["/data/raw.meta.tsv"] = META_TSV
    assert fetch.download(url, dest, sha256=None, **FAST) == sha(META_TSV)
    assert fetch.read_pin(dest) == sha(META_TSV)


def test_error_page_from_first_mirror_falls_back_to_the_next(fault_server, tmp_path):
    bad = fault_server.add("/a/raw.meta.tsv", ERROR_PAGE)
    good = fault_server.add("/b/raw.meta.tsv", META_TSV)
    dest = tmp_path / "raw.meta.tsv"
    assert fetch.download(bad, dest, sha256=None, mirrors=[good], **FAST) == sha(META_TSV)
    assert dest.read_bytes() == META_TSV


def test_unpinned_error_page_left_at_dest_is_fetched_again(fault_server, tmp_path):
    url = fault_server.add("/raw.meta.tsv", META_TSV)
    dest = tmp_path / "raw.meta.tsv"
    dest.write_bytes(ERROR_PAGE)  # e.g. written by an older version, never pinned
    assert fetch.download(url, dest, sha256=None, **FAST) == sha(META_TSV)
    assert dest.read_bytes() == META_TSV and fetch.read_pin(dest) == sha(META_TSV)


def test_given_sha256_skips_the_content_check(fault_server, tmp_path):
    url = fault_server.add("/raw.meta.tsv", ERROR_PAGE)
    # whoever wrote the sha256 into the config vouched for these exact bytes
    assert fetch.download(url, tmp_path / "raw.meta.tsv", sha256=sha(ERROR_PAGE), **FAST) == sha(ERROR_PAGE)


def _errors(capfd) -> list[str]:
    """ERROR lines the stage logged to stderr (logs.setup replaces pytest's log capture)."""
    return [ln for ln in capfd.readouterr().err.splitlines() if " ERROR " in ln]


def test_fetch_file_cli_rejects_error_page(fault_server, tmp_path, capfd):
    url = fault_server.add("/audio_licenses.txt", ERROR_PAGE)
    out = tmp_path / "meta" / "audio_licenses.txt"
    assert fetch.main_file(["--url", url, "--out", str(out), "--retries", "0", "--timeout-s", "5"]) == 1
    errors = _errors(capfd)
    assert len(errors) == 1 and "audio_licenses.txt" in errors[0] and url in errors[0]
    assert not out.exists() and not fetch.pin_path(out).exists()


def test_pin_mismatch_says_how_to_repin(fault_server, tmp_path, capfd):
    url = fault_server.add("/raw.meta.tsv", META_TSV)
    out = tmp_path / "raw.meta.tsv"
    args = ["--url", url, "--out", str(out), "--retries", "0", "--timeout-s", "5"]
    assert fetch.main_file(args) == 0
    out.unlink()
    changed = META_TSV + b"track_0000215\tartist_000014\talbum_000031\tB\tDavid\tAlbum\t2004-12-28\thttps://x/215\n"
    fault_server.files["/raw.meta.tsv"] = changed
    capfd.readouterr()
    assert fetch.main_file(args) == 1
    msg = _errors(capfd)[0]
    pin = str(fetch.pin_path(out))
    assert f"delete {pin}" in msg and sha(changed) in msg and "source.metadata.meta.sha256" in msg
    assert not out.exists() and fetch.read_pin(out) == sha(META_TSV)  # the old pin stays until deleted
    # following the advice: delete the pin, rerun, the new version is pinned
    os.unlink(pin)
    assert fetch.main_file(args) == 0 and fetch.read_pin(out) == sha(changed)


def test_config_sha256_mismatch_names_the_config_key(fault_server, tmp_path):
    url = fault_server.add("/song_describer.csv", FORMATS["song_describer.csv"])
    with pytest.raises(fetch.FetchError) as e:
        fetch.download(url, tmp_path / "song_describer.csv", sha256="0" * 64, retries=0,
                       sha256_key="source.metadata.song_describer.sha256 in the config", **FAST)
    msg = str(e.value)
    assert e.value.kind == "mismatch"
    assert "set source.metadata.song_describer.sha256 in the config to the new sha256" in msg
    assert sha(FORMATS["song_describer.csv"]) in msg


def test_describe_error_names_the_innermost_cause():
    try:
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except OSError as inner:
            raise RuntimeError("pool: max retries exceeded (caused by ...)") from inner
    except RuntimeError as exc:
        assert fetch.describe_error(exc) == "RuntimeError: [Errno 111] Connection refused"
