"""Efficient-training measurements: batching, padding share, accumulation, MFU, GPU guard.

Timings are never asserted (the CPU is shared); padding shares and the accumulation
difference are deterministic, so they are.
"""

import pytest
import torch

from utils import efficiency as eff
from utils.data import IGNORE_INDEX


def test_batchers_cover_every_row_once():
    lengths = [5, 50, 7, 48, 6, 49, 30, 31, 2]
    for batches in (eff.shuffled_batches(len(lengths), 2), eff.length_grouped_batches(lengths, 2, mega=50)):
        assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
        assert max(map(len, batches)) == 2
    grouped = eff.length_grouped_batches(lengths, 2, mega=50)
    # one megabatch holds every row, so partners are neighbours in length order
    assert sorted(sorted(lengths[i] for i in b) for b in grouped) == [[2], [5, 6], [7, 30], [31, 48], [49, 50]]


def test_epoch_padding_share_counts_positions_not_batches():
    batches = [{"attention_mask": torch.tensor([[1, 1, 1, 0]])},  # 1 pad of 4
               {"attention_mask": torch.tensor([[1, 0], [1, 0]])}]  # 2 pads of 4
    assert eff.epoch_padding_share(batches) == 3 / 8


def test_padding_comparison():
    out = eff.padding_comparison("tiny")
    assert {"baseline_padding_share", "ours_padding_share"} <= set(out)
    # the seed pads every row to 512: the share follows from the real tokens alone
    batches = -(-out["rows"] // 2)
    assert out["baseline_positions"] == batches * 2 * 512
    assert out["baseline_padding_share"] == pytest.approx(1 - out["real_tokens"] / out["baseline_positions"])
    assert out["ours_padding_share"] <= 0.05
    assert out["ours_padding_share"] < out["dynamic_padding_share"] < out["baseline_padding_share"]


def test_accumulation_weighted_by_tokens_matches_the_big_batch():
    out = eff.accumulation_equivalence("tiny", n_rows=4, accumulation=2)
    assert len(set(out["label_tokens"])) == 2  # micro-batches of unequal token counts...
    assert out["max_abs_diff"] < 1e-6  # ...still give the big batch's update
    assert out["naive_max_abs_diff"] > 1e-5  # averaging per micro-batch does not


def test_accumulation_needs_equal_micro_batches():
    with pytest.raises(ValueError, match="equal micro-batches"):
        eff.accumulation_equivalence("tiny", n_rows=5, accumulation=2)


def test_mfu_arithmetic():
    # GPT-2 on an A100: 6 * 124,439,808 * 10,000 tokens in 2 s over 312 TFLOP/s
    assert eff.training_flops(124_439_808, 10_000) == 7_466_388_480_000
    assert eff.mfu(124_439_808, 10_000, 2.0, 312e12) == pytest.approx(7.46638848e12 / 2 / 312e12, rel=1e-12)
    assert eff.mfu(124_439_808, 10_000, 2.0, None) is None


@pytest.mark.parametrize("name, flops", [
    ("Tesla T4", 65e12), ("NVIDIA L4", 121e12), ("NVIDIA A100-SXM4-40GB", 312e12),
    ("NVIDIA A100 80GB PCIe", 312e12), ("NVIDIA H100 80GB HBM3", 989e12),
    ("NVIDIA H100 PCIe", 756e12), ("NVIDIA H100 NVL", 835e12), ("NVIDIA H200", 989e12),
    ("NVIDIA H200 NVL", 835e12), ("NVIDIA L40S", None), ("NVIDIA GeForce RTX 4090", None)])
def test_peak_flops_table(name, flops):
    assert eff.peak_flops(name) == flops


def test_gpu_benchmark_refuses_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        eff.gpu_benchmark()


def test_gpu_benchmark_refuses_a_cpu_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        eff.gpu_benchmark(device="cpu")


def test_benchmark_rows_keep_lengths_and_prompt_masks():
    rows = [{"input_ids": [5, 6, 7, 8], "labels": [IGNORE_INDEX, IGNORE_INDEX, 7, 8]}]
    out = eff.benchmark_rows(rows, vocab_size=10)
    assert len(out[0]["input_ids"]) == 4
    assert out[0]["labels"][:2] == [IGNORE_INDEX, IGNORE_INDEX]
    assert out[0]["labels"][2:] == out[0]["input_ids"][2:]
    assert max(out[0]["input_ids"]) < 10


def test_benchmark_run_code_path_on_cpu(gpt2_tok):
    """The GPU benchmark's loop, on the CPU and a tiny model: shapes and keys, no timing."""
    from utils.config import get_profile
    from utils.modeling import tiny_config

    config = tiny_config(get_profile("tiny").replace(model={"n_positions": 512}), gpt2_tok)
    rows = [{"input_ids": list(range(1, n + 1)), "labels": [IGNORE_INDEX] * 3 + list(range(4, n + 1))}
            for n in (20, 30, 40, 50)]
    for setting, positions in ((eff.BASELINE, 2 * 2 * 64), (eff.OURS, 2 * 50 + 2 * 30)):
        out = eff.benchmark_run(config, rows, setting, "cpu", max_length=64, warmup=0)
        assert out["real_tokens"] == 140 and out["positions"] == positions
        assert out["tokens_per_s"] > 0 and out["mfu"] is None and out["peak_memory_gb"] is None


def test_throughput_comparison_keys():
    out = eff.throughput_comparison("tiny", n_rows=2, repeats=1)
    assert {"baseline_tokens_per_s", "ours_tokens_per_s", "ratio"} <= set(out)
    assert out["ratio"] == out["ours_tokens_per_s"] / out["baseline_tokens_per_s"]
    assert out["baseline_positions"] == 1024 and out["ours_positions"] < 512


def test_write_gpu_results(tmp_path):
    import json

    path = eff.write_gpu_results({"device": "NVIDIA H100", "models": {}}, tmp_path / "r" / "g.json")
    assert json.loads(path.read_text()) == {"device": "NVIDIA H100", "models": {}}


def test_bench_sections_return_exactly_the_documented_keys():
    sections = eff.bench_sections()
    assert set(sections) == {"padding", "throughput", "memory"}
    assert set(sections["padding"]()) == {"baseline_padding_share", "ours_padding_share"}
