"""utils.pipeline.sweep: each experiment trained through the pipeline's Python API, never overwriting a run."""

import json

import pytest

from utils.pipeline import stages, sweep
from utils.runs import registry
from utils.runs import table as runs


def test_unknown_experiment_lists_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="unknown experiment 'gpt2-huge'.*gpt2-b2-acc4-e1-lr1e-4"):
        sweep.run_sweep("tiny", ["gpt2-huge"], tmp_path)


def test_deepseek_experiment_on_a_gpt2_profile_is_refused(tmp_path):
    with pytest.raises(ValueError, match="needs a llama profile.*gpt2-b2-acc4-e1-lr1e-4"):
        sweep.run_sweep("tiny", ["deepseek-b2-acc4-e1-lr1e-4"], tmp_path)
    assert not any(tmp_path.iterdir())


def test_run_sweep_never_overwrites_a_run(tmp_path, monkeypatch):
    seen = []

    def fake_stage2(ctx):  # stands in for training: records what it was given
        seen.append((ctx.run_dir.name, ctx.profile.stage2))
        registry.update_metrics(ctx.run_dir, "stage2", {"val_loss": 1.0})

    monkeypatch.setitem(stages.STAGES, "stage2", fake_stage2)
    experiment, name = "gpt2-b2-acc4-e1-lr1e-4", "tiny-b2-acc4-e1-lr1e-4"  # the run carries the profile
    assert sweep.run_sweep("tiny", [experiment], tmp_path, max_steps=1) == [name]
    again = sweep.run_sweep("tiny", [experiment], tmp_path, max_steps=1, overrides={"learning_rate": 3e-4})
    assert again == [f"{name}-v2"]
    assert sweep.run_sweep("tiny", [experiment], tmp_path, max_steps=1) == [f"{name}-v3"]
    assert sorted(registry.list_runs(tmp_path)) == [name, f"{name}-v2", f"{name}-v3"]
    first, second = seen[0][1], seen[1][1]
    assert (first.per_device_train_batch_size, first.gradient_accumulation_steps,
            first.learning_rate, first.max_steps) == (2, 4, 1e-4, 1)
    assert second.learning_rate == 3e-4
    config = json.loads((tmp_path / f"{name}-v2" / registry.CONFIG).read_text())
    assert config["experiment"] == experiment
    assert config["overrides"]["learning_rate"] == 3e-4
    assert config["profile"]["stage2"]["learning_rate"] == 3e-4
    assert json.loads((tmp_path / name / registry.METRICS).read_text()) == {"stage2": {"val_loss": 1.0}}


def test_run_sweep_trains_through_the_pipeline_stage2(tmp_path):
    experiment, name = "gpt2-b2-acc4-e1-lr1e-4", "tiny-b2-acc4-e1-lr1e-4"
    assert sweep.run_sweep("tiny", [experiment], tmp_path, max_steps=1, max_rows=8) == [name]
    stage2 = json.loads((tmp_path / name / registry.METRICS).read_text())["stage2"]
    assert (stage2["per_device_train_batch_size"], stage2["gradient_accumulation_steps"],
            stage2["learning_rate"], stage2["global_step"]) == (2, 4, 1e-4, 1)
    assert (tmp_path / name / registry.STAGE2_MODEL / "model.safetensors").exists()
    history = runs.read_log_history(name, tmp_path)
    assert history[-1]["step"] == 1
    row = runs.runs_table(tmp_path).iloc[0]
    assert (row["experiment"], row["val loss"], row["model"]) == (
        experiment, stage2["val_loss"], "pocket gpt2 (pocket-gpt2)")
    assert row["epochs"] == stage2["epochs"]  # what the Trainer reached, from metrics.json


def test_new_run_name_counts_up(tmp_path):
    assert sweep.new_run_name("x", tmp_path) == "x"
    (tmp_path / "x").mkdir()
    (tmp_path / "x-v2").mkdir()
    assert sweep.new_run_name("x", tmp_path) == "x-v3"
    with pytest.raises(ValueError, match="plain folder name"):
        sweep.new_run_name("../x", tmp_path)


def test_seed_repeats_change_one_factor_and_the_seed(tmp_path, monkeypatch):
    """Each value once per seed, from the same start; the curves, their spread and the verdict
    read back what the runs logged."""
    from utils.runs import seeds

    seen = []

    def fake_stage2(ctx):  # a loss that falls with the learning rate, wobbling a little by seed
        s = ctx.profile.stage2
        seen.append((ctx.run_dir.name, s.learning_rate, s.seed, s.max_steps, s.eval_steps))
        log = [{"step": step, "eval_loss": 5.0 - 100 * s.learning_rate * step / 4 + 0.01 * s.seed}
               for step in (2, 4)]
        registry.write_json_atomic(ctx.run_dir / registry.LOG_HISTORY, {"stage2": log})

    monkeypatch.setitem(stages.STAGES, "stage2", fake_stage2)
    names = sweep.seed_repeats("tiny", "learning_rate", [1e-3, 3e-3], seeds=(0, 1), max_steps=4,
                               eval_steps=2, runs_root=tmp_path)
    assert names == ["tiny-learning-rate-0.001-seed0", "tiny-learning-rate-0.001-seed1",
                     "tiny-learning-rate-0.003-seed0", "tiny-learning-rate-0.003-seed1"]
    assert [(lr, seed, steps, every) for _, lr, seed, steps, every in seen] == [
        (1e-3, 0, 4, 2), (1e-3, 1, 4, 2), (3e-3, 0, 4, 2), (3e-3, 1, 4, 2)]
    curves = seeds.repeat_curves(names, tmp_path)
    assert len(curves) == 8 and set(curves["factor"]) == {"learning_rate"}
    summary = seeds.repeat_summary(curves)
    last = summary[summary["step"] == 4].set_index("value")
    assert last.loc[1e-3, "mean"] == pytest.approx(4.9 + 0.005)
    assert last.loc[1e-3, "sd"] == pytest.approx(0.01 / 2 ** 0.5)
    verdict = seeds.compare_values(curves).iloc[0]
    assert (verdict["lower"], verdict["higher"], verdict["step"]) == (3e-3, 1e-3, 4)
    assert verdict["difference"] == pytest.approx(0.2) and verdict["separated"]
    assert sweep.seed_repeats("tiny", "learning_rate", [1e-3], seeds=(0,), runs_root=tmp_path) == [
        "tiny-learning-rate-0.001-seed0-v2"]  # a repeat never overwrites
    with pytest.raises(ValueError, match="not a stage-2 setting"):
        sweep.seed_repeats("tiny", "learning_rte", [1e-3], runs_root=tmp_path)


def test_seed_curves_refuse_a_run_that_is_not_a_repeat(tmp_path):
    from utils.runs import seeds

    (tmp_path / "other").mkdir()
    registry.write_json_atomic(tmp_path / "other" / registry.CONFIG, {"profile": {}})
    with pytest.raises(ValueError, match="not made by seed_repeats"):
        seeds.repeat_curves(["other"], tmp_path)
