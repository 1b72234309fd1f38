"""The offline path learns visibly: metrics.json["learning"] of a whole tiny run, measured.

One full `tiny` pipeline run (the pocket base, the profile's own steps) is shared by the
checks; every threshold is a measured value of that run, never a stored result.
"""

import math

import pytest

from utils.config import get_profile
from utils.evaluate import learning
from utils.evaluate.metrics import block_loss
from utils.models.loading import load_model
from utils.runs import registry


def test_response_rates_count_eos_and_new_user_turns():
    answers = [("A poem.", True), ("Lines\nUser: and more", False), ("  User: again", True),
               ("The user: is not a turn", False)]
    rates = learning.response_rates(answers)
    assert rates == {"eos_rate": 0.5, "user_turn_rate": 0.5}
    with pytest.raises(ValueError, match="at least one prompt"):
        learning.response_rates([])


def test_block_loss_is_the_mean_over_predicted_tokens(gpt2_tok):
    model = load_model(get_profile("tiny"))
    rows = [{"input_ids": gpt2_tok("Shall I compare thee to a summer's day")["input_ids"]}] * 2
    one = block_loss(model, rows[:1])
    assert block_loss(model, rows) == pytest.approx(one, rel=1e-6)
    assert 0 < one < math.log(len(gpt2_tok))


def test_greedy_answers_stop_at_eos_and_respect_the_context(gpt2_tok):
    model = load_model(get_profile("tiny"))
    answers = learning.greedy_answers(model, gpt2_tok, ["To be, or not", "x " * 250], 64)
    assert len(answers) == 2 and all(isinstance(text, str) for text, _ in answers)
    assert gpt2_tok.padding_side == "right"  # restored after left-padded generation
    # The second prompt leaves 256 - 251 positions: the answer is cut to fit the context.
    assert len(gpt2_tok(answers[1][0])["input_ids"]) <= 6


def test_every_answer_gets_the_same_recorded_budget(gpt2_tok):
    class Model:  # only the context length matters here
        config = type("Config", (), {"n_positions": 256})()

    prompts = ["short", "x" + " x" * 149]  # 150 tokens leave 106 of 256 for every answer
    assert learning.answer_budget({"base": Model()}, gpt2_tok, prompts, 256) == 106
    assert learning.answer_budget({"base": Model()}, gpt2_tok, ["short"], 64) == 64


@pytest.fixture(scope="module")
def learned(tiny_full_run):
    return registry.read_json(tiny_full_run.run_dir / registry.METRICS)["learning"]


def test_the_pocket_base_is_a_real_pretrained_model(learned):
    assert learned["pocket_val_loss"] <= 5.5  # nats per token; ln 50257 = 10.8 is a uniform guess


def test_stage1_lowers_the_held_out_poem_loss(learned):
    loss = learned["poem_loss"]
    assert loss["stage1"] <= loss["base"] - 0.3


def test_stage2_lowers_the_completion_loss_and_learns_the_format(learned):
    loss, eos, user = learned["completion_loss"], learned["eos_rate"], learned["user_turn_rate"]
    assert loss["stage2"] <= loss["stage1"] - 0.3
    # The base never ends an answer within the budget; stage 2 ends nearly all of them with EOS
    # (the answers end with a newline and EOS; see utils.data.encode_example).
    assert eos["base"] <= 0.1 and eos["stage2"] >= 0.8
    assert user["stage2"] <= 0.05
    # Stopping is not the same as stopping at once: stage 2's answers have words in them.
    assert learned["answer_tokens"]["stage2"] >= 5
