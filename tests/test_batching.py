"""bench.batching: the batchers cover every row once; padding shares of the seed's way and ours."""

import pytest
import torch

from bench import batching


def test_batchers_cover_every_row_once():
    lengths = [5, 50, 7, 48, 6, 49, 30, 31, 2]
    for batches in (batching.shuffled_batches(len(lengths), 2), batching.length_grouped_batches(lengths, 2, mega=50)):
        assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
        assert max(map(len, batches)) == 2
    grouped = batching.length_grouped_batches(lengths, 2, mega=50)
    # one megabatch holds every row, so partners are neighbours in length order
    assert sorted(sorted(lengths[i] for i in b) for b in grouped) == [[2], [5, 6], [7, 30], [31, 48], [49, 50]]


def test_epoch_padding_share_counts_positions_not_batches():
    batches = [{"attention_mask": torch.tensor([[1, 1, 1, 0]])},  # 1 pad of 4
               {"attention_mask": torch.tensor([[1, 0], [1, 0]])}]  # 2 pads of 4
    assert batching.epoch_padding_share(batches) == 3 / 8


def test_padding_comparison():
    out = batching.padding_comparison("tiny")
    assert {"baseline_padding_share", "ours_padding_share"} <= set(out)
    # the seed pads every row to 512: the share follows from the real tokens alone
    batches = -(-out["rows"] // 2)
    assert out["baseline_positions"] == batches * 2 * 512
    assert out["baseline_padding_share"] == pytest.approx(1 - out["real_tokens"] / out["baseline_positions"])
    assert out["ours_padding_share"] <= 0.05
    assert out["ours_padding_share"] < out["dynamic_padding_share"] < out["baseline_padding_share"]
