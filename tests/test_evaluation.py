"""Tests for utils/evaluate/evaluation.py: evaluate_model, compare_models, the seed's published results."""

import json
import math

import pandas as pd
import pytest

from utils.config import get_profile
from utils.evaluate import evaluation
from utils.evaluate.metrics import evaluate_generations

PAIRS = [("User: Write a poem about the sea\nAssistant:", " The sea is grey,\nthe gulls are loud."),
         ("User: Write a poem about snow\nAssistant:", " Snow on the sill,\nthe kettle sings."),
         ("User: A haiku about rain, please\nAssistant:", " Rain on the tin roof\ncounting"),
         ("User: Continue: The moon\nAssistant:", " The moon is a coin\nin the well of night.")]


@pytest.fixture(scope="module")
def tiny():
    from utils.models.loading import load_model_and_tokenizer

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


def test_poetry_scores_rhyme_meter_and_the_longest_copied_run():
    couplets = "The cat sat on the mat\nand then it wore a hat\n"
    poems = ["a lantern in the rain keeps watch above the quiet hill"]
    copied = "we saw a lantern in the rain keeps watch tonight"
    scores = evaluation.poetry_scores([couplets, copied], poems)
    assert scores["rhyme_pair_rate"] == 0.5  # mean of the couplet (1.0) and a one-line text (no pair: 0.0)
    assert 0.0 <= scores["meter_score"] <= 1.0
    assert scores[evaluation.MEMORISED] == 7  # "a lantern in the rain keeps watch"
    assert evaluation.MEMORISED not in evaluation.poetry_scores([couplets])


def test_evaluate_model_is_deterministic_for_a_fixed_seed(tiny):
    first, second = _evaluate(tiny, seed=7), _evaluate(tiny, seed=7)
    assert first == second
    other = _evaluate(tiny, seed=8)
    assert [g["generation"] for g in other["generations"]] != [g["generation"] for g in first["generations"]]


def test_perplexity_is_exp_of_the_loss(tiny):
    result = _evaluate(tiny)
    assert result["perplexity"] == math.exp(result["loss"])


def test_loss_is_the_completion_loss_of_the_encoded_pairs(tiny):
    from utils.data.collate import SFTCollator
    from utils.data.tokenize import encode_pairs
    from utils.evaluate.metrics import completion_loss

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


# ---------------------------------------------------------------- the seed's runs and the sweep




def test_plot_metric_bars_draws_one_panel_per_metric():
    table = pd.DataFrame({"bleu": [1.0, 2.0], "rhyme_rate": [0.5, 0.25], "note": ["a", "b"]},
                         index=["base", "stage2"])
    fig = evaluation.plot_metric_bars(table, ncols=4)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["bleu", "rhyme_rate"]
