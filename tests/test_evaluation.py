"""Tests for utils/evaluation.py: evaluate_model, the runs table, the seed's sweep."""

import json
import math

import pandas as pd
import pytest

from utils import evaluation, pipeline, registry
from utils.config import get_profile
from utils.metrics import evaluate_generations

PAIRS = [("User: Write a poem about the sea\nAssistant:", " The sea is grey,\nthe gulls are loud."),
         ("User: Write a poem about snow\nAssistant:", " Snow on the sill,\nthe kettle sings."),
         ("User: A haiku about rain, please\nAssistant:", " Rain on the tin roof\ncounting"),
         ("User: Continue: The moon\nAssistant:", " The moon is a coin\nin the well of night.")]


@pytest.fixture(scope="module")
def tiny():
    from utils.modeling import load_model_and_tokenizer

    profile = get_profile("tiny")
    model, tokenizer = load_model_and_tokenizer(profile)
    return profile, model, tokenizer


def _evaluate(tiny, pairs=PAIRS, **kwargs):
    profile, model, tokenizer = tiny
    kwargs = {"max_new_tokens": 8, "batch_size": 4, **kwargs}
    return evaluation.evaluate_model(model, tokenizer, pairs, profile.decode, **kwargs)


# ---------------------------------------------------------------- evaluate_model


def test_evaluate_model_returns_every_key_finite(tiny):
    result = _evaluate(tiny)
    for key in (*evaluation.EVAL_KEYS, "loss", "rouge_1", "distinct_3"):
        assert math.isfinite(result[key]), key
    assert result["n_examples"] == 4
    assert result["loss_rows_dropped"] == 0
    assert [g["prompt"] for g in result["generations"]] == [p for p, _ in PAIRS]
    assert [g["reference"] for g in result["generations"]] == [c for _, c in PAIRS]
    assert all(isinstance(g["generation"], str) for g in result["generations"])


def test_evaluate_model_is_deterministic_for_a_fixed_seed(tiny):
    first, second = _evaluate(tiny, seed=7), _evaluate(tiny, seed=7)
    assert first == second
    other = _evaluate(tiny, seed=8)
    assert [g["generation"] for g in other["generations"]] != [g["generation"] for g in first["generations"]]


def test_perplexity_is_exp_of_the_loss(tiny):
    result = _evaluate(tiny)
    assert result["perplexity"] == math.exp(result["loss"])


def test_loss_is_the_completion_loss_of_the_encoded_pairs(tiny):
    from utils.data import SFTCollator, encode_pairs
    from utils.metrics import completion_loss

    _, model, tokenizer = tiny
    rows, _ = encode_pairs(PAIRS, tokenizer, 256)
    by_hand = completion_loss(model, SFTCollator(tokenizer.pad_token_id)(rows))
    assert _evaluate(tiny)["loss"] == pytest.approx(by_hand, rel=1e-5)


def test_max_examples_takes_the_first_pairs(tiny):
    result = _evaluate(tiny, max_examples=2)
    assert result["n_examples"] == 2
    assert [g["prompt"] for g in result["generations"]] == [PAIRS[0][0], PAIRS[1][0]]


def test_metrics_only_drops_the_generations(tiny):
    result = _evaluate(tiny)
    assert set(evaluation.metrics_only(result)) == set(result) - {"generations"}
    json.dumps(evaluation.metrics_only(result))  # ready for metrics.json


def test_evaluate_model_leaves_model_and_tokenizer_as_they_were(tiny):
    profile, model, tokenizer = tiny
    config_before = model.generation_config.to_dict()
    model.train()
    _evaluate(tiny)
    assert model.training
    model.eval()
    assert model.generation_config.to_dict() == config_before
    assert tokenizer.padding_side == "right"


@pytest.mark.parametrize("name", ["tiny", "tiny-llama"])
def test_batched_left_padded_generation_matches_one_prompt_at_a_time(name):
    import dataclasses

    from utils.modeling import load_model_and_tokenizer
    from utils.training import generate_texts

    profile = get_profile(name)
    model, tokenizer = load_model_and_tokenizer(profile)
    greedy = dataclasses.replace(profile.decode, do_sample=False, max_new_tokens=6)
    prompts = [p for p, _ in PAIRS]  # different lengths: the short ones get left padding
    batched = evaluation.generate_batched(model, tokenizer, prompts, greedy, batch_size=4)
    assert batched == generate_texts(model, tokenizer, prompts, greedy)


def test_evaluate_model_with_no_pairs_is_a_clear_error(tiny):
    with pytest.raises(ValueError, match="pairs is empty"):
        _evaluate(tiny, pairs=[])


def test_a_pair_that_is_not_prompt_and_completion_is_refused(tiny):
    with pytest.raises(ValueError, match=r"pairs\[1\] must be a \(prompt, completion\) pair"):
        _evaluate(tiny, pairs=[PAIRS[0], ("only a prompt",)])


def test_references_and_hypotheses_of_different_lengths_are_refused():
    with pytest.raises(ValueError, match="hypotheses has 1 texts but references has 2"):
        evaluate_generations(["a poem"], ["a poem", "another"])


def test_compare_models_gives_one_row_per_model(tiny):
    profile, model, tokenizer = tiny
    table = evaluation.compare_models({"a": (model, tokenizer), "b": (model, tokenizer)}, PAIRS[:2],
                                      profile.decode, max_new_tokens=4)
    assert list(table.index) == ["a", "b"]
    assert set(evaluation.EVAL_KEYS) <= set(table.columns)
    assert "generations" not in table.columns
    assert len(table.attrs["generations"]["b"]) == 2
    assert table.loc["a", "loss"] == table.loc["b", "loss"]


# ---------------------------------------------------------------- runs_table


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
    with pytest.warns(evaluation.BrokenRunWarning) as caught:
        table = evaluation.runs_table(tmp_path)
    messages = sorted(str(w.message) for w in caught)
    assert len(messages) == 3
    assert "'c-missing'" in messages[0] and "metrics.json is missing" in messages[0]
    assert "'d-corrupt'" in messages[1]
    assert "'f-mistyped'" in messages[2] and "metrics.json['stage2'] holds list" in messages[2]
    assert list(table["run"]) == ["a-run", "b-run"]
    a, b = table.iloc[0], table.iloc[1]
    assert (a["experiment"], a["model"], a["batch"], a["accumulation"]) == (
        "gpt2-b2-acc4-e1-lr1e-4", "tiny gpt2 (random init)", 2, 4)
    assert (a["epochs"], a["learning rate"], a["training loss"], a["val loss"]) == (0.5, 1e-4, 2.5, 2.75)
    assert (a["test loss"], a["perplexity"], a["effective batch"], a["steps"]) == (3.0, math.exp(3.0), 8, 4)
    assert a["val perplexity"] == math.exp(2.75)
    # b has no stage 2: hyperparameters from config.json, losses NaN, test loss from its eval
    assert (b["batch"], b["accumulation"], b["epochs"], b["learning rate"]) == (4, 8, 3, 5e-5)
    assert math.isnan(b["training loss"]) and math.isnan(b["val loss"])
    assert (b["test loss"], b["bleu"], b["rhyme_rate"], b["stages"]) == (1.5, 12.5, 0.25, "stage1,eval")
    assert math.isnan(a["bleu"])
    assert set(table["source"]) == {"measured here"}


def test_final_model_paths_finds_the_latest_model_of_runs_of_this_profile(tmp_path):
    for name in ("both", "merged-only", "no-model"):
        _fake_run(tmp_path, name, {})
    for sub in ("both/stage2/model", "both/merged", "merged-only/merged"):
        (tmp_path / sub).mkdir(parents=True)
        (tmp_path / sub / "config.json").write_text("{}")
    other = tmp_path / "llama-run"
    registry.write_config(other, get_profile("tiny-llama"))
    (other / "merged").mkdir()
    (other / "merged" / "config.json").write_text("{}")
    _fake_run(tmp_path, "corrupt", {})
    (tmp_path / "corrupt" / registry.CONFIG).write_text("{not json")
    assert evaluation.final_model_paths("tiny", tmp_path) == {
        "both": tmp_path / "both" / "stage2" / "model", "merged-only": tmp_path / "merged-only" / "merged"}
    assert evaluation.final_model_paths("tiny-llama", tmp_path) == {"llama-run": other / "merged"}


def test_runs_table_of_an_empty_registry_has_the_seed_columns(tmp_path):
    table = evaluation.runs_table(tmp_path / "nothing-here")
    assert len(table) == 0
    assert set(evaluation.SEED_COLUMNS) <= set(table.columns)


# ---------------------------------------------------------------- the seed's runs and the sweep


def test_sweep_names_follow_the_seed_runs():
    assert list(evaluation.SWEEP) == ["gpt2-b2-acc4-e1-lr1e-4", "gpt2-b2-acc8-e3-lr5e-5",
                                      "gpt2-b2-acc16-e5-lr3e-5", "deepseek-b2-acc4-e1-lr1e-4",
                                      "deepseek-b4-acc4-e2-lr2e-4"]
    assert evaluation.SWEEP["deepseek-b4-acc4-e2-lr2e-4"].stage2 == {
        "per_device_train_batch_size": 4, "gradient_accumulation_steps": 4,
        "num_train_epochs": 2, "learning_rate": 2e-4}
    assert evaluation.experiments_for("tiny") == list(evaluation.SWEEP)[:3]
    assert evaluation.experiments_for("tiny-llama") == list(evaluation.SWEEP)[3:]


def test_unknown_experiment_lists_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="unknown experiment 'gpt2-huge'.*gpt2-b2-acc4-e1-lr1e-4"):
        evaluation.run_sweep("tiny", ["gpt2-huge"], tmp_path)


def test_deepseek_experiment_on_a_gpt2_profile_is_refused(tmp_path):
    with pytest.raises(ValueError, match="needs a llama profile.*gpt2-b2-acc4-e1-lr1e-4"):
        evaluation.run_sweep("tiny", ["deepseek-b2-acc4-e1-lr1e-4"], tmp_path)
    assert not any(tmp_path.iterdir())


def test_run_sweep_never_overwrites_a_run(tmp_path, monkeypatch):
    seen = []

    def fake_stage2(ctx):  # stands in for training: records what it was given
        seen.append((ctx.run_dir.name, ctx.profile.stage2))
        registry.update_metrics(ctx.run_dir, "stage2", {"val_loss": 1.0})

    monkeypatch.setitem(pipeline.STAGES, "stage2", fake_stage2)
    name = "gpt2-b2-acc4-e1-lr1e-4"
    assert evaluation.run_sweep("tiny", [name], tmp_path, max_steps=1) == [name]
    again = evaluation.run_sweep("tiny", [name], tmp_path, max_steps=1, overrides={"learning_rate": 3e-4})
    assert again == [f"{name}-v2"]
    assert evaluation.run_sweep("tiny", [name], tmp_path, max_steps=1) == [f"{name}-v3"]
    assert sorted(registry.list_runs(tmp_path)) == [name, f"{name}-v2", f"{name}-v3"]
    first, second = seen[0][1], seen[1][1]
    assert (first.per_device_train_batch_size, first.gradient_accumulation_steps,
            first.learning_rate, first.max_steps) == (2, 4, 1e-4, 1)
    assert second.learning_rate == 3e-4
    config = json.loads((tmp_path / f"{name}-v2" / registry.CONFIG).read_text())
    assert config["experiment"] == name
    assert config["overrides"]["learning_rate"] == 3e-4
    assert config["profile"]["stage2"]["learning_rate"] == 3e-4
    assert json.loads((tmp_path / name / registry.METRICS).read_text()) == {"stage2": {"val_loss": 1.0}}


def test_run_sweep_trains_through_the_pipeline_stage2(tmp_path):
    name = "gpt2-b2-acc4-e1-lr1e-4"
    assert evaluation.run_sweep("tiny", [name], tmp_path, max_steps=1, max_rows=8) == [name]
    stage2 = json.loads((tmp_path / name / registry.METRICS).read_text())["stage2"]
    assert (stage2["per_device_train_batch_size"], stage2["gradient_accumulation_steps"],
            stage2["learning_rate"], stage2["global_step"]) == (2, 4, 1e-4, 1)
    assert (tmp_path / name / registry.STAGE2_MODEL / "model.safetensors").exists()
    history = evaluation.read_log_history(name, tmp_path)
    assert history[-1]["step"] == 1
    row = evaluation.runs_table(tmp_path).iloc[0]
    assert (row["experiment"], row["val loss"]) == (name, stage2["val_loss"])


def test_new_run_name_counts_up(tmp_path):
    assert evaluation.new_run_name("x", tmp_path) == "x"
    (tmp_path / "x").mkdir()
    (tmp_path / "x-v2").mkdir()
    assert evaluation.new_run_name("x", tmp_path) == "x-v3"
    with pytest.raises(ValueError, match="plain folder name"):
        evaluation.new_run_name("../x", tmp_path)


def test_plot_metric_bars_draws_one_panel_per_metric():
    table = pd.DataFrame({"bleu": [1.0, 2.0], "rhyme_rate": [0.5, 0.25], "note": ["a", "b"]},
                         index=["base", "stage2"])
    fig = evaluation.plot_metric_bars(table, ncols=4)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["bleu", "rhyme_rate"]
