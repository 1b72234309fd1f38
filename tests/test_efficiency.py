"""Efficient-training measurements: accumulation and the teaching throughput comparison.

Timings are never asserted (the CPU is shared); padding shares and the accumulation
difference are deterministic, so they are.
"""

import pytest

from bench import efficiency as eff


def test_accumulation_weighted_by_tokens_matches_the_big_batch():
    out = eff.accumulation_equivalence("tiny", n_rows=4, accumulation=2)
    assert len(set(out["label_tokens"])) == 2  # micro-batches of unequal token counts...
    assert out["max_abs_diff"] < 1e-6  # ...still give the big batch's update
    assert out["naive_max_abs_diff"] > 1e-5  # averaging per micro-batch does not


def test_accumulation_needs_equal_micro_batches():
    with pytest.raises(ValueError, match="equal micro-batches"):
        eff.accumulation_equivalence("tiny", n_rows=5, accumulation=2)


def test_throughput_comparison_keys():
    out = eff.throughput_comparison("tiny", n_rows=2, repeats=1)
    assert {"baseline_tokens_per_s", "ours_tokens_per_s", "ratio"} <= set(out)
    assert out["ratio"] == out["ours_tokens_per_s"] / out["baseline_tokens_per_s"]
    assert out["baseline_positions"] == 1024 and out["ours_positions"] < 512
