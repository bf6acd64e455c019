"""bench/_protocol.py: the alternation order, the median/spread arithmetic, the first and last lines.
No wall-clock assertions: sides here return made-up figures."""

from __future__ import annotations

import argparse
import importlib.util
import io
import os
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _load():
    spec = importlib.util.spec_from_file_location("_protocol", BENCH / "_protocol.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("_protocol", mod)
    spec.loader.exec_module(mod)
    return mod


P = _load()


def _side(name, log, values):
    it = iter(values)

    def run():
        log.append(name)
        return next(it)

    return run


def test_sides_alternate_after_the_warm_up():
    log = []
    sides = {"a": _side("a", log, range(100)), "b": _side("b", log, range(100, 200))}
    r = P.alternate(sides, rounds=5, warmup=2)
    assert log == ["a", "b"] * 2 + ["a", "b"] * 5  # warm-up A B A B, then the kept rounds A B A B ...
    assert r.order == ["a", "b"] * 5
    assert r.values("a") == [2, 3, 4, 5, 6]  # the warm-up results are dropped
    assert r.values("b") == [102, 103, 104, 105, 106]


def test_warm_up_can_be_limited_to_some_sides():
    log = []
    sides = {"cheap": _side("cheap", log, range(10)), "dear": _side("dear", log, range(10)),
             "third": _side("third", log, range(10))}
    r = P.alternate(sides, rounds=5, warmup=1, warm=["cheap"])
    assert log == ["cheap"] + ["cheap", "dear", "third"] * 5
    assert r.values("cheap") == [1, 2, 3, 4, 5] and r.values("dear") == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="unknown sides"):
        P.alternate(sides, rounds=5, warm=["nope"])


def test_progress_is_reported_per_kept_call():
    seen = []
    P.alternate({"a": lambda: 1.0, "b": lambda: 2.0}, rounds=5, warmup=1, on_call=lambda i, n, x: seen.append((i, n, x)))
    assert seen == [(i, n, x) for i in range(5) for n, x in (("a", 1.0), ("b", 2.0))]


def test_a_side_must_return_numbers():
    with pytest.raises(TypeError, match="timed"):
        P.alternate({"a": lambda: None}, rounds=5, warmup=0)
    with pytest.raises(TypeError):
        P.alternate({"a": lambda: True}, rounds=5, warmup=0)


def test_timed_returns_seconds():
    calls = []
    side = P.timed(lambda: calls.append(1))
    assert isinstance(side(), float) and calls == [1]


def test_median_and_range():
    s = P.Spread.of([3.0, 1.0, 2.0, 10.0, 4.0])
    assert (s.median, s.lo, s.hi, s.n) == (3.0, 1.0, 10.0, 5)
    assert P.Spread.of([1, 2, 3, 4]).median == 2.5  # an even count: the mean of the middle two
    assert s.scaled(1000) == P.Spread(3000.0, 1000.0, 10000.0, 5)
    assert s.text() == "3.00 [1.00–10.0] over 5 rounds"
    assert s.text("{:.1f}", "s") == "3.0 s [1.0–10.0] over 5 rounds"
    assert P.figure_line("step", s, "s") == "step: 3.00 s [1.00–10.0] over 5 rounds"
    with pytest.raises(ValueError):
        P.Spread.of([])


def test_ratios_pair_rounds_not_medians():
    # medians 2 and 2 (ratio of medians 1.0), but every round's A is half or double its B
    r = P.Rounds(("a", "b"), {"a": [1.0, 2.0, 4.0, 2.0, 1.0], "b": [2.0, 4.0, 2.0, 1.0, 2.0]}, [])
    ratio = r.ratio("a", "b")
    assert (ratio.median, ratio.lo, ratio.hi, ratio.n) == (0.5, 0.5, 2.0, 5)
    with pytest.raises(ValueError, match="pair round i"):
        P.ratio_spread([1, 2], [1, 2, 3])


def test_sides_with_several_figures():
    it = iter(range(1, 100))
    r = P.alternate({"x": lambda: {100: next(it), 2500: 10 * next(it)}}, rounds=5, warmup=0)
    assert r.values("x", 100) == [1, 3, 5, 7, 9]
    assert r.values("x", 2500) == [20, 40, 60, 80, 100]
    assert r.ratio("x", "x", 2500, 100).median == pytest.approx(60 / 5)
    with pytest.raises(KeyError, match="several figures"):
        r.values("x")
    with pytest.raises(KeyError, match="no side"):
        r.values("y")


def test_number_format():
    assert [P.num(x) for x in (0.00123456, 0.9234, 1.0, 12.345, 1234.5, 5, 0.0)] == [
        "0.00123", "0.923", "1.00", "12.3", "1234", "5", "0"]
    assert P.num(-0.0341) == "-0.0341"


def test_last_line_format():
    s = P.Spread.of([0.9, 1.0, 1.1, 0.95, 1.05])
    line = P.figures_line({"ssm_over_transformer_d256": s, "seq": 2588, "greedy_equal": "True", "note": "n/a"})
    assert line == "ssm_over_transformer_d256=1.00 seq=2588 greedy_equal=True note=n/a"
    assert P.parse_figures(line) == {"ssm_over_transformer_d256": "1.00", "seq": "2588", "greedy_equal": "True",
                                     "note": "n/a"}
    for bad in ({"Bad-Key": 1}, {"k": "two words"}, {"k": "a=b"}, {}):
        with pytest.raises(ValueError):
            P.figures_line(bad)
    with pytest.raises(ValueError):
        P.parse_figures("k=1 loose")


def test_rounds_below_the_minimum_are_refused():
    ap = P.add_protocol_args(argparse.ArgumentParser(), threads=1)
    a = ap.parse_args([])
    assert (a.threads, a.rounds, a.warmup) == (1, P.MIN_ROUNDS, 1)
    assert ap.parse_args(["--rounds", "7", "--warmup", "0"]).rounds == 7
    with pytest.raises(SystemExit):
        ap.parse_args(["--rounds", str(P.MIN_ROUNDS - 1)])
    with pytest.raises(SystemExit):
        ap.parse_args(["--warmup", "-1"])


def test_the_machine_line_comes_first_and_threads_are_pinned(monkeypatch):
    import torch

    before = torch.get_num_threads()
    for var in P.THREAD_ENV:
        monkeypatch.delenv(var, raising=False)
    out = io.StringIO()
    try:
        P.begin(argparse.Namespace(threads=1, rounds=5, warmup=1), out)
        assert torch.get_num_threads() == 1
        assert all(os.environ[v] == "1" for v in P.THREAD_ENV)
    finally:
        torch.set_num_threads(before)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("machine: ") and "cores" in lines[0] and "torch " in lines[0]
    assert lines[0].rsplit(", ", 1)[1].count("-") == 2  # ends with the UTC date
    assert lines[1].startswith("protocol: threads=1 ") and "5 rounds" in lines[1] and "A B A B" in lines[1]
    assert "allocator: " in lines[1]
    with pytest.raises(ValueError):
        P.pin_threads(0)


def test_the_allocator_is_pinned_by_one_re_execution(monkeypatch):
    calls = []
    monkeypatch.setattr(P.os, "execv", lambda exe, argv: calls.append((exe, argv)))
    monkeypatch.setattr(P.platform, "system", lambda: "Linux")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=1")
    P.pin_allocator()  # a setting of the caller's own is kept (and printed), no re-execution
    assert calls == [] and P.allocator() == "allocator: GLIBC_TUNABLES=glibc.malloc.arena_max=1"
    monkeypatch.delenv("GLIBC_TUNABLES")
    assert P.allocator() == "allocator: default"
    monkeypatch.setattr(P.sys, "argv", ["bench/x.py", "--rounds", "5"])
    P.pin_allocator()
    assert calls == [(sys.executable, [sys.executable, "bench/x.py", "--rounds", "5"])]
    assert os.environ["GLIBC_TUNABLES"] == P.ALLOCATOR_TUNABLES  # so the re-executed script does not loop


# Benches that time whole commands on fresh clones (tens of minutes): each command runs once, nothing is
# compared side by side, so they do not alternate; their protocol line says rounds=1 (docs/performance.md).
END_TO_END = {"quickstart.py"}


@pytest.mark.parametrize("script", sorted(p.name for p in BENCH.glob("*.py") if not p.name.startswith("_")))
def test_every_bench_uses_the_protocol(script):
    text = (BENCH / script).read_text(encoding="utf-8")
    if script in END_TO_END:  # whole commands, minutes each, run once: the same first, second and last lines
        for name in ("machine_line()", '"protocol: ', "rounds=1", "figures_line("):
            assert name in text, f"bench/{script} does not print {name}"
        return
    for name in ("add_protocol_args", "begin(", "alternate(", "figures_line("):
        assert name in text, f"bench/{script} does not call {name}"
    # the benches timing torch in their own process pin the allocator; dag_scale times Snakemake processes
    # as a user runs them
    assert ("pin_allocator()" in text) == ("import torch" in text), script


def test_ssm_levers_bench_compares_every_tile_with_the_default(capsys):
    spec = importlib.util.spec_from_file_location("ssm_levers", BENCH / "ssm_levers.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    from ssmttm.models import mamba2

    default = mamba2.CPU_SCAN_CHUNK
    assert bench.main(["--widths", "64", "--seq", "96", "--no-compile", "--threads", "1", "--warmup", "0"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    figures = P.parse_figures(lines[-1])
    assert lines[0].startswith("machine: ") and lines[1].startswith("protocol: ")
    for q in (32, 128, 256):
        assert float(figures[f"chunk{q}_over_default_d64"]) > 0
    assert "compiled_over_default_d64" not in figures and float(figures["default_s_d64"]) > 0
    assert mamba2.CPU_SCAN_CHUNK == default  # the sides put the module's tile back
