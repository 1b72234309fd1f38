"""Tests for utils/course/plots.py: the loss curves and their uniform-guess line."""

import math

import matplotlib

matplotlib.use("Agg")

from utils.course.plots import loss_curves

HISTORY = [{"step": 1, "loss": 9.0}, {"step": 2, "loss": 7.5}, {"step": 2, "eval_loss": 8.0}]


def test_loss_curves_draws_training_and_validation():
    ax = loss_curves(HISTORY)
    assert [line.get_label() for line in ax.get_lines()] == ["training", "validation"]
    assert list(ax.get_lines()[0].get_ydata()) == [9.0, 7.5]


def test_vocab_size_adds_the_ln_v_line():
    ax = loss_curves(HISTORY, vocab_size=50257)
    line = ax.get_lines()[-1]
    assert list(line.get_ydata()) == [math.log(50257)] * 2
    assert line.get_label() == "uniform guess: ln 50,257 = 10.82"
