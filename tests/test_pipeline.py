"""python -m utils.pipeline: every stage writes the run registry; bad input stops with a clear message."""

import json

import pytest
import torch

from utils.config import get_profile
from utils.models.loading import load_model
from utils.models.tokenizers import load_tokenizer
from utils.options import DEFAULT_STAGES, RunOptions
from utils.pipeline import job as pipeline
from utils.runs import registry

STAGE1_KEYS = {"trainable_params", "all_params", "train_loss", "val_loss"}
STAGE2_KEYS = {"train_loss", "val_loss", "test_loss", "test_perplexity", "tokens_per_second", "padding_share"}


def run(tmp_path, *argv):
    return pipeline.main(["--runs-dir", str(tmp_path), *argv])


def refused(tmp_path, *argv) -> str:
    with pytest.raises(SystemExit) as stop:
        pipeline.cli(["--runs-dir", str(tmp_path), *argv])
    return str(stop.value)


@pytest.fixture(scope="module")
def runs(tiny_full_run):
    """The folder of the session's whole tiny run, `full` (conftest.py: the profile's own steps,
    one sample a model), shared with the tests of what it learned."""
    return tiny_full_run.run_dir.parent


def test_all_stages_write_the_registry(runs):
    folder = runs / "full"
    steps = get_profile("tiny").stage2.max_steps
    config = json.loads((folder / "config.json").read_text())
    assert config["profile"]["name"] == "tiny" and config["profile"]["stage2"]["max_steps"] == steps
    assert {"git_commit", "library_versions", "command"} <= set(config)
    assert config["stages"] == list(DEFAULT_STAGES)  # prefer runs only when named
    metrics = json.loads((folder / "metrics.json").read_text())
    assert STAGE1_KEYS <= set(metrics["stage1"]) and STAGE2_KEYS <= set(metrics["stage2"])
    assert metrics["stage1"]["trainable_params"] < metrics["stage1"]["all_params"]
    assert metrics["stage2"]["global_step"] == steps and metrics["stage2"]["padding_share"] == 0.0
    assert metrics["stage2"]["packing"] is True and metrics["stage2"]["tokens_per_second"] > 0
    assert metrics["eval"]["test_loss"] == metrics["stage2"]["test_loss"]
    learned = metrics["learning"]  # its thresholds are checked on a whole run in test_learning.py
    assert set(learned["poem_loss"]) == {"base", "stage1", "stage2"} == set(learned["completion_loss"])
    assert set(learned["eos_rate"]) == {"base", "stage2"} and learned["pocket_val_loss"] > 0
    # Stage 2's validation loss is the Trainer's last evaluation on packed batches; evaluate
    # recomputes it on padded batches with utils.evaluate.metrics: the same number, per token.
    assert metrics["eval"]["validation_loss"] == pytest.approx(metrics["stage2"]["val_loss"], rel=1e-5)
    assert metrics["eval"]["test_perplexity"] == pytest.approx(torch.tensor(metrics["eval"]["test_loss"]).exp().item())
    history = json.loads((folder / "log_history.json").read_text())
    assert set(history) == {"stage1", "stage2"} and history["stage2"][-1]["step"] == steps
    samples = registry.read_samples(folder)
    assert [s["model"] for s in samples] == ["stage1", "stage2"]
    assert samples[-1]["decode"]["repetition_penalty"] == get_profile("tiny").decode.repetition_penalty
    assert "reference" in samples[-1]
    for weights in ("stage1/adapter/adapter_model.safetensors", "merged/model.safetensors",
                    "stage2/model/model.safetensors", "loss_curves.png"):
        assert (folder / weights).stat().st_size > 0
    report = (folder / "report.md").read_text()
    assert "| batch | accumulation | epochs | learning rate | training loss | val loss |" in report
    assert not list(folder.glob("**/*.tmp"))


def test_merged_model_reloads_with_the_adapters_logits(runs):
    from peft import PeftModel

    tok = load_tokenizer("tiny")
    adapter = PeftModel.from_pretrained(load_model("tiny", tokenizer=tok), str(runs / "full" / registry.STAGE1_ADAPTER))
    merged = load_model("tiny", tokenizer=tok, path=runs / "full" / registry.MERGED)
    batch = tok(["The tide comes in", "Moss on a stone by the"], return_tensors="pt", padding=True)
    adapter.eval(), merged.eval()
    with torch.no_grad():
        assert torch.allclose(adapter(**batch).logits, merged(**batch).logits, atol=1e-5)
    lora_b = [p for n, p in adapter.named_parameters() if "lora_B" in n]
    assert any(p.abs().max() > 0 for p in lora_b)  # the adapter trained, so the check means something


def test_stage2_starts_from_another_runs_merged_model(runs):
    run(runs, "--run-name", "b", "--stages", "stage2", "--from-run", "full", "--max-steps", "1", "--max-rows", "8")
    stage2 = json.loads((runs / "b" / "metrics.json").read_text())["stage2"]
    assert stage2["start_model"].endswith("full/merged") and stage2["global_step"] == 1


def test_tiny_llama_runs_every_stage(tmp_path):
    run(tmp_path, "--profile", "tiny-llama", "--run-name", "l", "--max-steps", "1", "--num-samples", "1",
        "--max-rows", "16")
    metrics = json.loads((tmp_path / "l" / "metrics.json").read_text())
    assert STAGE1_KEYS <= set(metrics["stage1"]) and STAGE2_KEYS <= set(metrics["stage2"])
    assert (tmp_path / "l" / "report.md").exists()


def test_unknown_stage_is_refused(tmp_path):
    message = refused(tmp_path, "--stages", "data,train")
    assert message == ("error: unknown stage 'train'; valid stages: "
                       "data, stage1, merge, stage2, evaluate, report, prefer, reward")
    assert not tmp_path.joinpath("train").exists() and list(tmp_path.iterdir()) == []


def test_existing_run_is_refused_naming_overwrite(runs):
    message = refused(runs, "--run-name", "full", "--stages", "data")
    assert "already exists" in message and "--overwrite" in message
    assert (runs / "full" / "stage2" / "model").exists()  # nothing was touched


def test_stage2_from_a_missing_run_is_refused(runs):
    message = refused(runs, "--run-name", "c", "--stages", "stage2", "--from-run", "ghost")
    assert "run 'ghost' not found" in message and "full" in message.split("existing runs:")[1]
    assert not (runs / "c").exists()


def test_stage2_from_a_run_without_stage1_is_refused(tmp_path):
    run(tmp_path, "--run-name", "data-only", "--stages", "data")
    message = refused(tmp_path, "--run-name", "d", "--stages", "stage2", "--from-run", "data-only")
    assert "has no stage 1 model" in message and "--stages data,stage1,merge" in message


def test_from_run_cannot_be_combined_with_stage1(tmp_path):
    message = refused(tmp_path, "--run-name", "e", "--stages", "stage1,stage2", "--from-run", "a")
    assert "--from-run" in message and "stage1" in message


def test_absurd_learning_rate_stops_with_a_clear_message(tmp_path):
    message = refused(tmp_path, "--run-name", "nan", "--stages", "stage2", "--max-steps", "2",
                      "--learning-rate", "1e30", "--max-rows", "8")
    assert "loss became" in message and "learning_rate=1e+30" in message and "dtype=float32" in message


def test_a_class_out_of_order_makes_06_and_07s_runs_that_they_may_replace(tmp_path, monkeypatch):
    """Notebook 08 (or 12, 13) opened first makes 06's and 07's runs as those notebooks would;
    07 and 06 then take their runs over without a run-guard error, while the pipeline still may
    not delete them (they are the notebooks' runs)."""
    from utils.pipeline import class_runs
    from utils.runs import guard as run_guard

    monkeypatch.setenv("POET_RUNS_DIR", str(tmp_path))
    model = class_runs.class_stage2_model("tiny", options=RunOptions(max_steps=1, max_rows=8))
    stage1, stage2 = registry.run_path("06-stage1-tiny"), registry.run_path("07-stage2-tiny")
    assert model == stage2 / registry.STAGE2_MODEL and (model / "config.json").exists()
    assert (stage1 / registry.MERGED / "config.json").exists()
    config = json.loads((stage2 / "config.json").read_text())
    assert (config["notebook"], config["stage1_run"]) == (class_runs.STAGE2_NOTEBOOK, "06-stage1-tiny")
    run_guard.check_overwrite(stage2, owner=class_runs.STAGE2_NOTEBOOK)  # 07's parameters cell
    run_guard.check_overwrite(stage1, owner=class_runs.STAGE1_NOTEBOOK)
    with pytest.raises(run_guard.RunGuardError, match="was made by 07_stage2_full_finetuning"):
        run_guard.check_overwrite(stage2)  # python -m utils.pipeline --overwrite
    assert class_runs.class_stage2_model("tiny") == model  # found now, not made again
