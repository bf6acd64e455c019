"""Progress output of stages: plain timestamped lines in log files, tqdm's bar on a terminal."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from ssmttm import logs

LOOP = """
from ssmttm import logs
bar = logs.progress(total=50, desc="train", initial=10)
for i in range(40):
    bar.update(1)
    bar.set_postfix(loss=f"{1 / (i + 1):.4f}")
bar.close()
for _ in logs.progress(range(7), desc="clips", unit="clip"):
    pass
with logs.progress(total=3_000_000, unit="B", unit_scale=True, desc="f.bin", leave=False) as b:
    for _ in range(3):
        b.update(1_000_000)
"""
STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"


def _run(repo, interval: str, stderr) -> None:
    env = dict(os.environ, PYTHONPATH=str(repo), SSMTTM_PROGRESS_INTERVAL=interval)
    subprocess.run([sys.executable, "-c", LOOP], cwd=repo, env=env, stderr=stderr, stdout=subprocess.DEVNULL,
                   check=True, timeout=120)


def test_log_file_gets_plain_lines_with_rate_eta_and_final_count(repo, tmp_path):
    log = tmp_path / "stage.log"
    with open(log, "wb") as f:
        _run(repo, "0", f)  # interval 0: a line on every update, so the count of lines does not depend on speed
    text = log.read_text()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert all(re.match(STAMP + " ", ln) for ln in lines), text
    train = [ln for ln in lines if " train: " in ln]
    assert len(train) == 41  # 40 updates + the final line
    eta = r"ETA (\d+:\d\d:\d\d|\?)"  # "?" only if no time at all could be measured yet
    assert re.search(r" train: 11/50 it \(22%\) \S+ (it/s|s/it), " + eta + "$", train[0]), train[0]
    assert re.search(r" train: 12/50 it \(24%\) .*, " + eta + r", loss=1\.0000$", train[1]), train[1]
    assert re.search(r" train: 50/50 it \(100%\) \S+ it/s, done in \d+:\d\d:\d\d, loss=0\.0250$", train[-1]), train[-1]
    clips = [ln for ln in lines if " clips: " in ln]
    assert len(clips) == 8 and " clips: 7/7 clip (100%) " in clips[-1] and "done in" in clips[-1]
    assert re.search(r" f\.bin: 3\.00M/3\.00MB \(100%\) \S+B/s, done in \d+:\d\d:\d\d$", lines[-1]), lines[-1]


def test_log_lines_are_rate_bounded(repo, tmp_path):
    log = tmp_path / "stage.log"
    with open(log, "wb") as f:
        _run(repo, "3600", f)  # nothing between the final lines: the loops take far less than an hour
    lines = log.read_text().splitlines()
    assert len(lines) == 3, lines
    assert " train: 50/50 it (100%)" in lines[0] and " clips: 7/7 clip (100%)" in lines[1]


def test_terminal_keeps_tqdm_bar(repo):
    pty = pytest.importorskip("pty")
    import fcntl
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a new pty is 0 columns wide
    env = dict(os.environ, PYTHONPATH=str(repo), SSMTTM_PROGRESS_INTERVAL="0")
    try:
        proc = subprocess.Popen([sys.executable, "-c", LOOP], cwd=repo, env=env, stderr=slave,
                                stdout=subprocess.DEVNULL)
    finally:
        os.close(slave)  # the child holds the only copy: reads end (EIO) when it exits
    out = b""
    try:
        while True:  # read while it runs, so a full pty buffer can never block the child
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(master)
        assert proc.wait(timeout=120) == 0
    assert b"\r" in out and b"50/50" in out


def test_plain_progress_interface(capsys):
    """The tqdm methods the stages call work on the plain writer too."""
    bar = logs.PlainProgress(total=4, desc="x", interval=0, file=sys.stderr)
    with bar:
        bar.update(2)
        bar.set_postfix({"a": 1}, b=0.5)
        bar.set_description("y")
        bar.refresh()
        bar.write("a message")
        bar.update(2)
    bar.close()  # idempotent: no second final line
    err = capsys.readouterr().err.splitlines()
    assert err[1] == "a message" and len(err) == 4
    assert " y: 4/4 it (100%) " in err[-1] and err[-1].endswith(", a=1, b=0.5")
    assert list(logs.PlainProgress(iter("ab"), disable=True)) == ["a", "b"] and not capsys.readouterr().err
    assert len(logs.PlainProgress([1, 2, 3])) == 3
