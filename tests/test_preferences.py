"""Tests for utils/prefer/statistics.py: win rates, Bradley-Terry and rater agreement."""

import math

import numpy as np
import pandas as pd
import pytest

from utils.prefer import statistics as prefs
from utils.prefer.ratings import FIELDS, rating_row


def _ratings(spec, rater="ana", prompt="p0"):
    """Rating rows from (system_a, system_b, choice) triples, as the rater would write them."""
    item = {"prompt_id": prompt, "prompt": f"prompt {prompt}"}
    return [rating_row(rater, item, a, b, choice, "2025-01-01T00:00:00+00:00")
            for a, b, choice in spec]


def _frame(rows):
    return pd.DataFrame(rows, columns=list(FIELDS))


def test_only_skips_leave_nothing_to_compare():
    with pytest.raises(ValueError, match="all 1 ratings are skips"):
        prefs.win_rates(_frame(_ratings([("x", "y", "skip")])))


# ---------------------------------------------------------------- win rates


def test_win_rates_count_ties_half_and_orient_to_the_leader():
    df = _frame(_ratings([("x", "y", "b"), ("y", "x", "a"), ("x", "y", "tie"), ("x", "y", "a"),
                          ("y", "x", "skip")]))
    table = prefs.win_rates(df, n_boot=200, seed=3)
    row = table.iloc[0]
    assert (row["system"], row["opponent"], row["n"], row["wins"], row["ties"], row["losses"]) == \
        ("y", "x", 4, 2, 1, 1)
    assert row["win_rate"] == 0.625  # (2 wins + 0.5 tie) / 4
    assert row["ci_low"] <= row["win_rate"] <= row["ci_high"]


def test_bootstrap_ci_contains_the_estimate_and_is_seeded():
    scores = np.array([1, 1, 1, 0, 0.5, 1, 0, 1, 1, 0.5])
    low, high = prefs.bootstrap_ci(scores, n_boot=1000, seed=7)
    assert low <= scores.mean() <= high and low < high
    assert prefs.bootstrap_ci(scores, n_boot=1000, seed=7) == (low, high)
    spread = np.linspace(0, 1, 37) ** 2  # many distinct means: another seed moves the ends
    assert prefs.bootstrap_ci(spread, seed=8) == prefs.bootstrap_ci(spread, seed=8)
    assert prefs.bootstrap_ci(spread, seed=8) != prefs.bootstrap_ci(spread, seed=9)
    assert prefs.bootstrap_ci([1.0, 1.0], seed=0) == (1.0, 1.0)


# ---------------------------------------------------------------- Bradley-Terry


def _games(wins):
    """Ratings from {(winner, loser): count}."""
    spec = [(w, l, "a") for (w, l), n in wins.items() for _ in range(n)]
    return _frame(_ratings(spec))


def test_bradley_terry_recovers_a_known_ordering():
    df = _games({("top", "mid"): 7, ("mid", "top"): 3, ("mid", "low"): 8, ("low", "mid"): 2,
                 ("top", "low"): 9, ("low", "top"): 1})
    table = prefs.bradley_terry(df)
    assert list(table["system"]) == ["top", "mid", "low"]
    assert list(table["wins"]) == [16, 11, 3] and list(table["comparisons"]) == [20, 20, 20]
    p = dict(zip(table["system"], table["strength"]))
    assert math.prod(p.values()) == pytest.approx(1.0)  # geometric mean 1
    # The MLE solves W_i = sum_j N_ij p_i / (p_i + p_j) for every system.
    for name, wins in zip(table["system"], table["wins"]):
        expected = sum(10 * p[name] / (p[name] + p[o]) for o in p if o != name)
        assert expected == pytest.approx(wins, rel=1e-8)
    assert prefs.bt_probability(table, "top", "low") > 0.5


def test_bradley_terry_two_systems_ratio_is_the_win_ratio():
    df = _frame(_ratings([("x", "y", "a")] * 6 + [("y", "x", "a")] * 2 + [("x", "y", "tie")] * 2))
    table = prefs.bradley_terry(df)
    p = dict(zip(table["system"], table["strength"]))
    assert p["x"] / p["y"] == pytest.approx(7 / 3)  # 6 wins + 2 half ties vs 2 wins + 2 half ties


def test_bradley_terry_without_a_win_needs_a_prior():
    df = _games({("x", "y"): 3})
    with pytest.raises(ValueError, match="prior=0.5"):
        prefs.bradley_terry(df)
    table = prefs.bradley_terry(df, prior=0.5)
    p = dict(zip(table["system"], table["strength"]))
    assert p["x"] / p["y"] == pytest.approx(3.5 / 0.5)


# ---------------------------------------------------------------- agreement


def test_cohen_kappa_hand_computed():
    one = list("ffffffssst")
    two = list("ffffsssstt")
    # p_o = 7/10; p_e = (6*4 + 3*4 + 1*2) / 100 = 0.38; kappa = 0.32 / 0.62 = 16/31
    assert prefs.cohen_kappa(one, two) == pytest.approx(16 / 31)
    assert prefs.cohen_kappa(one, one) == 1.0
    assert math.isnan(prefs.cohen_kappa("ff", "ff"))
    with pytest.raises(ValueError, match="equally long"):
        prefs.cohen_kappa("ab", "a")


def test_agreement_compares_systems_not_letters():
    ana = _ratings([("x", "y", "a")], "ana", "p0") + _ratings([("x", "y", "tie")], "ana", "p1") \
        + _ratings([("x", "y", "b")], "ana", "p2")
    ben = _ratings([("y", "x", "b")], "ben", "p0") + _ratings([("y", "x", "a")], "ben", "p1") \
        + _ratings([("y", "x", "a")], "ben", "p2")  # A and B swapped: same winners on p0 and p2
    table = prefs.rater_agreement(_frame(ana + ben))
    row = table.iloc[0]
    assert (row["rater_1"], row["rater_2"], row["shared_items"]) == ("ana", "ben", 3)
    assert row["agreement"] == pytest.approx(2 / 3)
    # labels ana: first, tie, second; ben: first, second, second -> p_o 2/3, p_e 3/9
    assert row["kappa"] == pytest.approx((2 / 3 - 1 / 3) / (1 - 1 / 3))
    with pytest.raises(ValueError, match="two raters"):
        prefs.rater_agreement(_frame(ana))


def test_fleiss_kappa_hand_computed():
    rows = []
    labels = {"p1": "fff", "p2": "ffs", "p3": "sss", "p4": "tss"}  # per item, raters r0 r1 r2
    for pid, item_labels in labels.items():
        for n, label in enumerate(item_labels):
            choice = {"f": "a", "s": "b", "t": "tie"}[label]
            rows += _ratings([("x", "y", choice)], f"r{n}", pid)
    # P_i = 1, 1/3, 1, 1/3 -> 2/3; shares 5/12, 6/12, 1/12 -> P_e = 62/144; kappa = 17/41
    assert prefs.fleiss_kappa(_frame(rows)) == pytest.approx(17 / 41)




def test_bradley_terry_on_groups_never_compared_works_with_the_advised_prior():  # catalogue: U5
    # Two runs' samples rated against each other, two other runs' likewise: no common scale.
    df = _games({("a", "b"): 2, ("b", "a"): 1, ("c", "d"): 3, ("d", "c"): 1})
    with pytest.raises(ValueError, match="never compared with each other.*prior=0.5"):
        prefs.bradley_terry(df)
    table = prefs.bradley_terry(df, prior=0.5)  # what the error (and notebook 09's cell) advise
    p = dict(zip(table["system"], table["strength"]))
    assert all(np.isfinite(list(p.values()))) and p["a"] > p["b"] and p["c"] > p["d"]
    assert math.prod(p.values()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="prior must be 0 or more"):
        prefs.bradley_terry(df, prior=-1)


def test_gwet_ac1_hand_computed_where_kappa_collapses():
    # 10 items, both raters say "first" on 8; they swap on the last two: p_o = 8/10.
    one = ["first"] * 8 + ["first", "second"]
    two = ["first"] * 8 + ["second", "first"]
    # kappa: p_e = 0.9*0.9 + 0.1*0.1 = 0.82 -> (0.8 - 0.82) / 0.18 = -1/9, the prevalence paradox
    assert prefs.cohen_kappa(one, two) == pytest.approx(-1 / 9)
    # AC1 over two categories: pi = 0.9, 0.1; p_e = 0.09 + 0.09 = 0.18 -> 0.62 / 0.82 = 31/41
    assert prefs.gwet_ac1(one, two, categories=("first", "second")) == pytest.approx(31 / 41)
    # over the rater's three labels (no tie used): p_e = 0.18 / 2 = 0.09 -> 0.71 / 0.91 = 71/91
    assert prefs.gwet_ac1(one, two) == pytest.approx(71 / 91)
    assert prefs.gwet_ac1(one, one) == 1.0
    with pytest.raises(ValueError, match="not among the categories"):
        prefs.gwet_ac1(["first", "maybe"], ["first", "first"])


def test_oriented_labels_balance_a_lopsided_pair_and_keep_agreement():
    rows = []
    for k in range(40):  # y wins every item for both raters: sorted labels are all "second"
        rows += _ratings([("x", "y", "b")], "ana", f"p{k}") + _ratings([("y", "x", "a")], "ben", f"p{k}")
    frame = _frame(rows)
    assert math.isnan(prefs.cohen_kappa(*prefs.rater_labels(frame).T.values))  # p_e = 1
    oriented = prefs.rater_labels(frame, orient_seed=0)
    assert set(oriented["ana"]) == {"first", "second"}  # both sides occur
    assert (oriented["ana"] == oriented["ben"]).all()  # the same system won, whatever the side
    assert oriented.equals(prefs.rater_labels(frame, orient_seed=0))  # seeded
    assert prefs.rater_agreement(frame, orient_seed=0).iloc[0]["kappa"] == 1.0


def test_wilson_interval_hand_computed():
    # 12 of 12, z = 1.95996: centre (1 + z^2/24) / (1 + z^2/12), half z/(1 + z^2/12) * sqrt(z^2/576)
    z = 1.959964
    centre = (1 + z * z / 24) / (1 + z * z / 12)
    half = z / (1 + z * z / 12) * math.sqrt(z * z / 576)
    low, high = prefs.wilson_interval(12, 12)
    assert low == pytest.approx(centre - half, abs=1e-5) and high == pytest.approx(1.0)
    assert low == pytest.approx(0.7575, abs=1e-4)
    low, high = prefs.wilson_interval(5, 10)
    assert (low + high) / 2 == pytest.approx(0.5) and high - low > 0.5  # 10 ratings: wide
    with pytest.raises(ValueError, match="wins"):
        prefs.wilson_interval(3, 2)
