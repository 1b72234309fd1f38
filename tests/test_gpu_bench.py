"""bench.gpu: the peak-FLOPs table, the CUDA guard, the CPU code path."""

import pytest
import torch

from bench import gpu as gpu_bench
from utils.config import IGNORE_INDEX


@pytest.mark.parametrize("name, flops", [
    ("Tesla T4", 65e12), ("NVIDIA L4", 121e12), ("NVIDIA A100-SXM4-40GB", 312e12),
    ("NVIDIA A100 80GB PCIe", 312e12), ("NVIDIA H100 80GB HBM3", 989e12),
    ("NVIDIA H100 PCIe", 756e12), ("NVIDIA H100 NVL", 835e12), ("NVIDIA H200", 989e12),
    ("NVIDIA H200 NVL", 835e12), ("NVIDIA L40S", None), ("NVIDIA GeForce RTX 4090", None)])
def test_peak_flops_table(name, flops):
    assert gpu_bench.peak_flops(name) == flops


def test_gpu_benchmark_refuses_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        gpu_bench.gpu_benchmark()


def test_gpu_benchmark_refuses_a_cpu_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        gpu_bench.gpu_benchmark(device="cpu")


def test_benchmark_rows_keep_lengths_and_prompt_masks():
    rows = [{"input_ids": [5, 6, 7, 8], "labels": [IGNORE_INDEX, IGNORE_INDEX, 7, 8]}]
    out = gpu_bench.benchmark_rows(rows, vocab_size=10)
    assert len(out[0]["input_ids"]) == 4
    assert out[0]["labels"][:2] == [IGNORE_INDEX, IGNORE_INDEX]
    assert out[0]["labels"][2:] == out[0]["input_ids"][2:]
    assert max(out[0]["input_ids"]) < 10


def test_benchmark_run_code_path_on_cpu(gpt2_tok):
    """The GPU benchmark's loop, on the CPU and a tiny model: shapes and keys, no timing."""
    from utils.config import get_profile
    from utils.models.loading import tiny_config

    config = tiny_config(get_profile("tiny").replace(model={"n_positions": 512}), gpt2_tok)
    rows = [{"input_ids": list(range(1, n + 1)), "labels": [IGNORE_INDEX] * 3 + list(range(4, n + 1))}
            for n in (20, 30, 40, 50)]
    for setting, positions in ((gpu_bench.BASELINE, 2 * 2 * 64), (gpu_bench.OURS, 2 * 50 + 2 * 30)):
        out = gpu_bench.benchmark_run(config, rows, setting, "cpu", max_length=64, warmup=0)
        assert out["real_tokens"] == 140 and out["positions"] == positions
        assert out["tokens_per_s"] > 0 and out["mfu"] is None and out["peak_memory_gb"] is None


def test_write_gpu_results(tmp_path):
    import json

    path = gpu_bench.write_gpu_results({"device": "NVIDIA H100", "models": {}}, tmp_path / "r" / "g.json")
    assert json.loads(path.read_text()) == {"device": "NVIDIA H100", "models": {}}
