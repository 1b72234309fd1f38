"""utils.runs.table: the run registry as one table in the seed's format."""

import json
import math

import pytest

from utils.config import get_profile
from utils.runs import registry
from utils.runs import table as runs


def _fake_run(root, name, metrics, experiment="", lr=1e-4, batch=2, accumulation=4, epochs=1.0):
    profile = get_profile("tiny").replace(stage2={"learning_rate": lr, "per_device_train_batch_size": batch,
                                                  "gradient_accumulation_steps": accumulation,
                                                  "num_train_epochs": epochs})
    run_dir = root / name
    registry.write_config(run_dir, profile, experiment=experiment)
    if metrics is not None:
        (run_dir / registry.METRICS).write_text(metrics if isinstance(metrics, str) else json.dumps(metrics))
    return run_dir


def test_runs_table_reads_fake_runs_and_skips_broken_ones(tmp_path):
    _fake_run(tmp_path, "a-run", {"stage2": {"train_loss": 2.5, "val_loss": 2.75, "test_loss": 3.0,
                                             "epochs": 0.5, "global_step": 4, "learning_rate": 1e-4,
                                             "per_device_train_batch_size": 2,
                                             "gradient_accumulation_steps": 4}},
              experiment="gpt2-b2-acc4-e1-lr1e-4")
    _fake_run(tmp_path, "b-run", {"stage1": {"train_loss": 9.0},
                                  "eval": {"bleu": 12.5, "rhyme_rate": 0.25, "loss": 1.5}},
              lr=5e-5, batch=4, accumulation=8, epochs=3)
    _fake_run(tmp_path, "c-missing", None)
    _fake_run(tmp_path, "d-corrupt", '{"stage2": {"train_loss": 1.0')
    _fake_run(tmp_path, "f-mistyped", {"stage2": [1.0, 2.0]})
    (tmp_path / "e-no-config").mkdir()  # not a run: no warning, no row
    with pytest.warns(runs.BrokenRunWarning) as caught:
        table = runs.runs_table(tmp_path)
    messages = sorted(str(w.message) for w in caught)
    assert len(messages) == 3
    assert "'c-missing'" in messages[0] and "metrics.json is missing" in messages[0]
    assert "'d-corrupt'" in messages[1]
    assert "'f-mistyped'" in messages[2] and "metrics.json['stage2'] holds list" in messages[2]
    assert list(table["run"]) == ["a-run", "b-run"]
    a, b = table.iloc[0], table.iloc[1]
    assert (a["experiment"], a["model"], a["batch"], a["accumulation"]) == (
        "gpt2-b2-acc4-e1-lr1e-4", "pocket gpt2 (pocket-gpt2)", 2, 4)
    assert (a["epochs"], a["learning rate"], a["training loss"], a["val loss"]) == (0.5, 1e-4, 2.5, 2.75)
    assert (a["test loss"], a["perplexity"], a["effective batch"], a["steps"]) == (3.0, math.exp(3.0), 8, 4)
    assert a["val perplexity"] == math.exp(2.75)
    # b has no stage 2: config.json plans batch 4 and 3 epochs, but nothing ran, so no settings
    for column in ("batch", "accumulation", "epochs", "learning rate", "effective batch"):
        assert math.isnan(b[column]), column
    assert math.isnan(b["training loss"]) and math.isnan(b["val loss"])
    assert (b["test loss"], b["bleu"], b["rhyme_rate"], b["stages"]) == (1.5, 12.5, 0.25, "stage1,eval")
    assert math.isnan(a["bleu"])
    assert set(table["source"]) == {"measured here"}


def test_runs_table_of_an_empty_registry_has_the_seed_columns(tmp_path):
    table = runs.runs_table(tmp_path / "nothing-here")
    assert len(table) == 0
    assert set(runs.SEED_COLUMNS) <= set(table.columns)


def test_runs_table_reports_the_epochs_trained_not_the_planned_ones(tmp_path):
    # planned: 3 epochs (config.json); max_steps stopped the Trainer at epoch 0.125
    _fake_run(tmp_path, "cut-short", {"stage2": {"epochs": 0.125, "global_step": 2,
                                                 "per_device_train_batch_size": 2,
                                                 "gradient_accumulation_steps": 4,
                                                 "learning_rate": 1e-4}}, epochs=3)
    row = runs.runs_table(tmp_path).iloc[0]
    assert (row["epochs"], row["steps"], row["effective batch"]) == (0.125, 2, 8)


def test_runs_table_labels_a_random_init_model(tmp_path):
    profile = get_profile("tiny").replace(model={"pretrained_dir": None})
    registry.write_config(tmp_path / "r", profile)
    (tmp_path / "r" / registry.METRICS).write_text("{}")
    assert runs.runs_table(tmp_path).iloc[0]["model"] == "tiny gpt2 (random init)"


def test_a_diverged_run_has_infinite_perplexity_and_the_table_still_works(tmp_path):  # C1
    run = _fake_run(tmp_path, "exploded", None)
    registry.update_metrics(run, "stage2", {"val_loss": 1.4e6, "test_loss": 1.4e6,
                                            "test_perplexity": math.inf})
    assert json.loads((run / registry.METRICS).read_text())["stage2"]["test_perplexity"] == "inf"
    _fake_run(tmp_path, "fine", {"stage2": {"val_loss": 2.0, "test_loss": 2.0}})
    table = runs.runs_table(tmp_path).set_index("run")
    assert table.loc["exploded", "perplexity"] == math.inf and table.loc["exploded", "val perplexity"] == math.inf
    assert table.loc["fine", "perplexity"] == pytest.approx(math.exp(2.0))


def test_runs_table_shows_the_prefer_stage_once_a_run_has_it(tmp_path):
    _fake_run(tmp_path, "a", {"stage2": {"test_loss": 3.0}})
    assert "DPO pairs" not in runs.runs_table(tmp_path).columns  # no run preferred: no columns
    _fake_run(tmp_path, "b", {"stage2": {"test_loss": 3.0}, "eval": {"loss": 3.0},
                              "preference": {"pairs": 120, "pairs_dropped": 4, "simulated": True,
                                             "property": "short_lines", "property_before": 0.5,
                                             "property_after": 0.75, "reward_accuracy": 0.875}})
    table = runs.runs_table(tmp_path).set_index("run")
    b = table.loc["b"]
    assert (b["DPO property"], b["property before"], b["property after"]) == ("short_lines", 0.5, 0.75)
    assert (b["DPO pairs"], b["simulated rater"], b["reward accuracy"]) == (120, True, 0.875)
    assert b["stages"] == "stage2,eval,preference" and math.isnan(table.loc["a", "property after"])
