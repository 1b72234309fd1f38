"""bench.cli: the JSON report has its keys and our beam search matches generate (timings never asserted)."""

import json

import pytest

from bench import cli as bench
from bench import timing


def test_sampling_report_compares_the_same_texts(capsys):
    bench.main(["--json", "--only", "sampling", "--repeats", "1", "--sampling-rows", "8", "--profile", "tiny"])
    report = json.loads(capsys.readouterr().out)["sampling"]
    assert report["identical"] is True and report["rows"] == 8
    assert report["ours_s"] > 0 and report["hf_s"] > 0 and report["speedup"] > 0


def test_beam_json_report(capsys):
    bench.main(["--json", "--only", "beam", "--repeats", "1", "--max-new-tokens", "6", "--profile", "tiny"])
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"beam"}
    beam = report["beam"]
    assert {"identical", "ours_s", "hf_s", "ratio"} <= set(beam)
    assert beam["identical"] is True
    assert beam["ours_s"] > 0 and beam["hf_s"] > 0


def test_table_output_and_registry(capsys, monkeypatch):
    monkeypatch.setitem(bench.BENCHMARKS, "fake", lambda args: {"answer": 42, "repeats": args.repeats})
    results = bench.main(["--only", "fake", "--repeats", "2"])
    assert results == {"fake": {"answer": 42, "repeats": 2}}
    out = capsys.readouterr().out
    assert "== fake" in out and "answer" in out and "42" in out


@pytest.mark.parametrize("argv", [["--only", "no-such-benchmark"], ["--repeats", "0"]])
def test_bad_arguments_exit(argv):
    with pytest.raises(SystemExit):
        bench.parse_args(argv)


def test_side_by_side_takes_the_median():
    calls = []
    seconds = bench.side_by_side({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3)
    assert calls == ["a", "b"] * 3 and set(seconds) == {"a", "b"}


def test_turns_can_come_in_a_new_order_each_round():
    calls = []
    fns = {name: (lambda name=name: calls.append(name) or 1.0) for name in "abcdef"}
    times = timing.turn_times(fns, 4, self_timed=True, shuffle_seed=0)
    rounds = [calls[i:i + 6] for i in range(0, 24, 6)]
    assert all(sorted(r) == list("abcdef") for r in rounds) and len({tuple(r) for r in rounds}) > 1
    assert times == {name: [1.0] * 4 for name in "abcdef"}  # each function's own seconds


def test_efficiency_sections_are_registered(capsys):
    assert {"beam", "padding", "throughput", "memory"} <= set(bench.BENCHMARKS)
    bench.main(["--json", "--only", "padding"])
    padding = json.loads(capsys.readouterr().out)["padding"]
    assert set(padding) == {"baseline_padding_share", "ours_padding_share"}
    assert padding["ours_padding_share"] <= 0.05 < padding["baseline_padding_share"]


def test_output_file_records_the_machine(tmp_path, monkeypatch):
    monkeypatch.setitem(bench.BENCHMARKS, "fake", lambda args: {"answer": 42})
    out = tmp_path / "bench.json"
    bench.main(["--only", "fake", "--output", str(out)])
    record = json.loads(out.read_text())
    assert record["results"] == {"fake": {"answer": 42}}
    assert record["cpu_count"] >= 1 and record["date"] and "torch" in record["versions"]
