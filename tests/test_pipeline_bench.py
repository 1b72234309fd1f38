"""bench.pipeline: the bench's "ours" is built by the pipeline's own functions, its keys
are the documented ones, and its arithmetic is right. Timings are never asserted."""


from bench import pipeline
from bench.batching import SEED_MAX_LENGTH, stage2_rows
from utils.config import get_profile
from utils.data.collate import stage2_collator
from utils.train import savers

THROUGHPUT_KEYS = {"model", "path", "baseline_tokens_per_s", "ours_tokens_per_s", "ratio",
                   "ours_padding_share", "cpu_mfu"}
MEMORY_KEYS = {"workload", "full_peak_mb", "lora_peak_mb", "ours_peak_mb", "ratio", "full_step_s", "ours_step_s"}


def test_padding_uses_the_pipelines_collator_and_the_seeds_padding():
    out = pipeline.pipeline_padding("tiny")
    profile = get_profile("tiny")
    tok, rows = stage2_rows(profile)
    assert out["ours_collator"] == type(stage2_collator(pipeline.bench_model("tiny", profile, tok), tok)).__name__
    real = sum(len(r["input_ids"]) for r in rows)
    assert out["baseline_padding_share"] == 1 - real / (len(rows) * SEED_MAX_LENGTH)
    assert out["ours_padding_share"] <= 0.01
    assert set(pipeline.bench_sections()) == {"padding", "throughput", "memory"}


def test_throughput_runs_the_pipeline_trainer_with_the_documented_keys():
    out = pipeline.pipeline_throughput("tiny", "tiny", n_rows=4, repeats=1)
    assert THROUGHPUT_KEYS <= set(out) and out["path"] == "pipeline"
    assert out["collator"] == "DataCollatorWithFlattening"  # stage2_collator packs the tiny model
    assert out["ratio"] == out["ours_tokens_per_s"] / out["baseline_tokens_per_s"]
    assert out["ours_padding_share"] == 0 < out["baseline_padding_share"]
    assert 0 < out["cpu_mfu"] and out["cpu_mfu"] == (out["flops_per_token"] * out["ours_tokens_per_s"]
                                                    / (out["peak_gemm_gflops"] * 1e9))


def test_peak_gemm_flops_is_measured():
    assert pipeline.peak_gemm_flops(n=128, repeats=2) > 0


def test_seed_rows_copy_the_inputs_as_labels():
    rows = [{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}]
    assert pipeline.seed_rows(rows) == [{"input_ids": [1, 2, 3]}]


def test_stage1_memory_runs_full_lora_ours_and_each_saver_alone(monkeypatch):
    """The wiring: which settings each fresh process gets, and which result lands under which key.

    The measurement itself (a fresh process per run, in turns, with these settings) is tested in
    tests/test_memory_measure.py; here it is replaced by a recorder, to spare six processes."""
    calls = []

    def fake_in_turn(*runs, rounds):
        calls.append((runs, rounds))
        return [{"total_mb": 100.0 + i, "step_s": 1.0 + i, "threads": 2} for i in range(len(runs))]

    monkeypatch.setattr(pipeline, "measure_in_turn", fake_in_turn)
    out = pipeline.stage1_memory(batch_size=1, seq_len=32, steps=3, model="tiny", rounds=2)
    (runs, rounds), = calls
    saver_sets = [{k for k in ("checkpointing", "chunked_loss", "fused_gelu") if run.get(k)} for run in runs]
    assert [run["strategy"] for run in runs] == ["full", "lora", "lora", "lora", "lora", "lora"]
    assert saver_sets == [set(), set(), {"checkpointing", "chunked_loss", "fused_gelu"},
                      {"checkpointing"}, {"chunked_loss"}, {"fused_gelu"}]
    assert runs[2]["every_n_layers"] == runs[3]["every_n_layers"] == savers.EVERY_N_LAYERS == 2
    assert all(r["model"] == "tiny" and (r["batch_size"], r["seq_len"], r["steps"]) == (1, 32, 3) for r in runs)
    assert rounds == 2 and MEMORY_KEYS <= set(out)
    assert out["workload"] == {"batch_size": 1, "seq_len": 32, "model": "tiny", "every_n_layers": 2,
                               "threads": 2, "steps_timed": 2, "rounds": 2, "one_process_at_a_time": True}
    assert [out[f"{name}_peak_mb"] for name in ("full", "lora", "ours", "lora_checkpointing",
                                                "lora_chunked_loss", "lora_fused_gelu")] == [100, 101, 102, 103, 104, 105]
    assert out["ratio"] == 102 / 100 and out["step_ratio"] == 3 / 1
