"""Tests for utils/course/exercises.py: right answers pass, wrong ones fail with the exercise's hint."""

import math

import pytest
import torch

from utils.course import exercises as ex


def test_check_all_passes_right_answers_and_skips_unanswered(capsys):
    checks = {1: ex.Check(3.0, "add"), 2: ex.Check("rare", "count it"), 3: ex.Check(True, "look")}
    status = ex.check_all("00", {1: 3.0001, 2: "Rare "}, checks)
    assert status == {1: "correct", 2: "correct", 3: "not answered yet"}
    assert "3: not answered yet" in capsys.readouterr().out


def test_a_wrong_answer_names_the_exercise_and_gives_the_hint():
    with pytest.raises(ex.ExerciseError, match=r"exercise 1: 4.0 is not right yet. Hint: add"):
        ex.check_all("00", {1: 4.0}, {1: ex.Check(3.0, "add")})
    with pytest.raises(ex.ExerciseError):
        ex.check_all("00", {1: 1}, {1: ex.Check(True, "a bool is not a number here")})
    with pytest.raises(ValueError, match="no exercise \\[7\\]"):
        ex.check_all("00", {7: 1}, {1: ex.Check(1, "")})


def test_skipgram_helpers():
    assert ex.skipgram_pairs(5, 1) == 8  # 4 neighbours to the right, 4 to the left
    assert ex.skipgram_pairs(5, 2) == 8 + 6
    assert ex.untrained_skipgram_loss(0) == pytest.approx(math.log(2))
    assert ex.untrained_skipgram_loss(5) == pytest.approx(6 * 0.693147, rel=1e-5)


def test_repetition_penalty_check_tells_once_from_per_occurrence():
    def once(logits, ids, penalty):
        seen = torch.gather(logits, 1, ids)
        return logits.scatter(1, ids, torch.where(seen < 0, seen * penalty, seen / penalty))

    def per_occurrence(logits, ids, penalty):
        for token in ids[0].tolist():
            value = logits[0, token]
            logits[0, token] = value * penalty if value < 0 else value / penalty
        return logits

    assert ex.repetition_penalty_matches_transformers(once)
    assert not ex.repetition_penalty_matches_transformers(per_occurrence)


def test_lora_weights_counts_linear_and_conv1d():
    from transformers.pytorch_utils import Conv1D

    model = torch.nn.Sequential()
    model.add_module("c_attn", Conv1D(12, 4))  # GPT-2 style: weight (in 4, out 12)
    model.add_module("q_proj", torch.nn.Linear(4, 6))
    assert ex.lora_weights(model, ["c_attn"], r=2) == 2 * (4 + 12)
    assert ex.lora_weights(model, ["c_attn", "q_proj"], r=2) == 2 * 16 + 2 * 10


def test_naive_accumulation_weights():
    assert ex.naive_accumulation_weights([10, 30]) == [2.0, pytest.approx(2 / 3)]
    assert ex.naive_accumulation_weights([8, 8]) == [1.0, 1.0]


def test_real_token_loss_inverts_the_padded_mean():
    from utils.course import exercises as ex
    # 200 real tokens at 0.5 nats and 312 padding positions at 0.01: the mean over 512 positions
    reported = (200 * 0.5 + 312 * 0.01) / 512
    assert abs(ex.real_token_loss(reported, 200, 512, padding_loss=0.01) - 0.5) < 1e-12
    assert abs(ex.real_token_loss(0.0157, 200, 512) - 0.0157 * 512 / 200) < 1e-12
    with pytest.raises(ValueError, match="real_tokens"):
        ex.real_token_loss(0.1, 0, 512)
