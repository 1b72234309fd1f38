"""Human preference statistics: win rates with bootstrap intervals, Bradley-Terry, agreement.

Each function takes the ratings table of utils.prefer.ratings.load_ratings (one rating a row) and
returns a small table; the figures are in utils/course/plots.py. Introduced in notebook 09.
"""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pandas as pd

# ---------------------------------------------------------------- win rates


def _compared(df: pd.DataFrame) -> pd.DataFrame:
    """The ratings that compare (a, b or tie), skips dropped; ValueError if none is left."""
    if df is None or len(df) == 0:
        raise ValueError("no ratings to analyse: the table is empty")
    kept = df[df["choice"].isin(["a", "b", "tie"])]
    if kept.empty:
        raise ValueError(f"all {len(df)} ratings are skips: nothing to compare")
    return kept


def _pairs(df: pd.DataFrame) -> list[tuple[str, str]]:
    """Each rating's two systems in sorted order: (greedy, sampled) whichever was shown as A."""
    return [tuple(sorted(pair)) for pair in zip(df["system_a"], df["system_b"])]


def bootstrap_ci(scores, n_boot: int = 1000, seed: int = 0, confidence: float = 0.95):
    """Percentile bootstrap interval (low, high) of the mean of scores; seeded. Notebook 09."""
    scores = np.asarray(scores, dtype=float)
    if scores.size == 0:
        raise ValueError("bootstrap_ci needs at least one score")
    rng = np.random.default_rng(seed)
    means = scores[rng.integers(0, scores.size, size=(n_boot, scores.size))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100  # 95%: the 2.5th and 97.5th percentiles
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def win_rates(df: pd.DataFrame, n_boot: int = 1000, seed: int = 0,
              confidence: float = 0.95) -> pd.DataFrame:
    """Per pair of systems: wins, ties, losses, win rate (ties count half) and a bootstrap CI.

    Each row names the pair's leader as `system` (win rate >= 0.5). The bootstrap resamples
    ratings as if independent. Notebook 09.
    """
    df = _compared(df)
    by_pair = {}  # (first, second) sorted -> winners
    for pair, winner in zip(_pairs(df), df["winner"]):
        by_pair.setdefault(pair, []).append(winner)
    rows = []
    for k, ((first, second), winners) in enumerate(sorted(by_pair.items())):
        scores = np.array([1.0 if w == first else 0.5 if w == "tie" else 0.0 for w in winners])
        if scores.mean() < 0.5:
            first, second, scores = second, first, 1.0 - scores
        low, high = bootstrap_ci(scores, n_boot, seed + k, confidence)
        rows.append({"system": first, "opponent": second, "n": len(scores),
                     "wins": int((scores == 1).sum()), "ties": int((scores == 0.5).sum()),
                     "losses": int((scores == 0).sum()), "win_rate": float(scores.mean()),
                     "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows)


def wilson_interval(wins: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval (low, high) of a win rate from `wins` of `n` (ties as half wins).

    Unlike the bootstrap, it does not collapse to one point when every rating agrees: 12 wins
    of 12 give about [0.76, 1.00], not [1.00, 1.00]. Notebook 09.
    """
    if n < 1 or not 0 <= wins <= n:
        raise ValueError(f"wilson_interval needs 0 <= wins <= n and n >= 1, got wins={wins}, n={n}")
    z = _normal_quantile(0.5 + confidence / 2)
    rate = wins / n
    centre = (rate + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def _normal_quantile(p: float) -> float:
    """The standard normal's p-quantile, by bisection on erf (1.95996 for p = 0.975)."""
    low, high = -10.0, 10.0
    for _ in range(100):
        mid = (low + high) / 2
        low, high = (mid, high) if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < p else (low, mid)
    return (low + high) / 2


# ---------------------------------------------------------------- Bradley-Terry


def win_matrix(df: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    """Systems (sorted) and W[i, j] = times i beat j, a tie counting half a win to each."""
    df = _compared(df)
    systems = sorted(set(df["system_a"]) | set(df["system_b"]))
    index = {name: n for n, name in enumerate(systems)}
    wins = np.zeros((len(systems), len(systems)))
    for a, b, winner in zip(df["system_a"], df["system_b"], df["winner"]):
        i, j = index[a], index[b]
        if winner == "tie":
            wins[i, j] += 0.5
            wins[j, i] += 0.5
        else:
            loser = j if winner == a else i
            wins[index[winner], loser] += 1
    return systems, wins


def _strongly_connected(wins: np.ndarray) -> bool:
    """True if every system beat, through a chain of wins, every other (the MLE then exists)."""
    def reach(adjacency):
        seen, todo = {0}, [0]
        while todo:
            i = todo.pop()
            for j in np.flatnonzero(adjacency[i] > 0):
                if j not in seen:
                    seen.add(j)
                    todo.append(j)
        return len(seen) == len(adjacency)
    return reach(wins) and reach(wins.T)


def bradley_terry(df: pd.DataFrame, prior: float = 0.0, max_iter: int = 10_000,
                  tol: float = 1e-10) -> pd.DataFrame:
    """Bradley-Terry strengths by Hunter's (2004) MM updates; geometric mean 1. Notebook 09.

    P(i beats j) = p_i / (p_i + p_j). Update: p_i <- W_i / sum_j N_ij / (p_i + p_j), with W_i
    the wins of i (ties half) and N_ij the comparisons of i and j. `prior` adds that many
    virtual wins each way to every pair of systems, compared or not: a never-winning system
    stays finite, and groups of systems never compared with each other are tied together
    (pulled towards equal strength) instead of having no common scale. Any prior > 0 fits.
    """
    systems, wins = win_matrix(df)
    if len(systems) < 2:
        raise ValueError(f"Bradley-Terry needs two systems or more, got {systems}")
    raw_wins, raw_games = wins.sum(axis=1), (wins + wins.T).sum(axis=1)
    if prior < 0 or not np.isfinite(prior):
        raise ValueError(f"prior must be 0 or more, got {prior}")
    wins = wins + prior * (1 - np.eye(len(systems)))
    if not _strongly_connected(wins):
        raise ValueError("some system never beat (or never lost to) the others, or two groups of "
                         "systems were never compared with each other, so strengths are 0, "
                         "infinite or on no common scale; collect more ratings or pass prior=0.5 "
                         "(half a virtual win each way between every two systems)")
    games = wins + wins.T
    strength = np.ones(len(systems))
    for step in range(1, max_iter + 1):
        new = wins.sum(axis=1) / (games / (strength[:, None] + strength[None, :])).sum(axis=1)
        new /= np.exp(np.log(new).mean())  # geometric mean 1: only ratios are identified
        done = np.max(np.abs(np.log(new) - np.log(strength))) < tol
        strength = new
        if done:
            break
    table = pd.DataFrame({"system": systems, "strength": strength, "log_strength": np.log(strength),
                          "wins": raw_wins, "comparisons": raw_games})
    table.attrs["iterations"] = step
    return table.sort_values("strength", ascending=False, ignore_index=True)


def bt_probability(strengths: pd.DataFrame, system: str, opponent: str) -> float:
    """P(system beats opponent) = p_s / (p_s + p_o) under fitted Bradley-Terry strengths."""
    p = dict(zip(strengths["system"], strengths["strength"]))
    return p[system] / (p[system] + p[opponent])


# ---------------------------------------------------------------- rater agreement


def cohen_kappa(labels_1, labels_2) -> float:
    """Cohen's kappa (p_o - p_e) / (1 - p_e) of two raters' labels on the same items. Notebook 09.

    NaN when p_e is 1 (both raters used one same label throughout: chance explains it all).
    """
    labels_1, labels_2 = list(labels_1), list(labels_2)
    if len(labels_1) != len(labels_2) or not labels_1:
        raise ValueError(f"need two equally long, non-empty label lists, got {len(labels_1)} "
                         f"and {len(labels_2)}")
    n = len(labels_1)
    observed = sum(x == y for x, y in zip(labels_1, labels_2)) / n
    categories = set(labels_1) | set(labels_2)
    expected = sum(labels_1.count(c) * labels_2.count(c) for c in categories) / n**2
    return float("nan") if expected == 1 else (observed - expected) / (1 - expected)


LABELS = ("first", "second", "tie")


def gwet_ac1(labels_1, labels_2, categories=LABELS) -> float:
    """Gwet's AC1 (p_o - p_e) / (1 - p_e) of two raters, p_e = sum pi_q (1 - pi_q) / (Q - 1).

    pi_q is the two raters' mean share of category q, Q the number of categories. Unlike
    Cohen's kappa, p_e stays small when one label dominates, so high agreement on a lopsided
    label (the prevalence paradox) is not scored as chance (Gwet 2008). Notebook 09.
    """
    labels_1, labels_2 = list(labels_1), list(labels_2)
    if len(labels_1) != len(labels_2) or not labels_1:
        raise ValueError(f"need two equally long, non-empty label lists, got {len(labels_1)} "
                         f"and {len(labels_2)}")
    unknown = (set(labels_1) | set(labels_2)) - set(categories)
    if unknown or len(categories) < 2:
        raise ValueError(f"labels {sorted(unknown)} are not among the categories {list(categories)}")
    n = len(labels_1)
    observed = sum(x == y for x, y in zip(labels_1, labels_2)) / n
    shares = [(labels_1.count(c) + labels_2.count(c)) / (2 * n) for c in categories]
    expected = sum(pi * (1 - pi) for pi in shares) / (len(categories) - 1)
    return (observed - expected) / (1 - expected)


def _flipped(item: str, seed: int) -> bool:
    """A seeded coin per item: the same item and seed always give the same side."""
    return random.Random(f"{seed}|{item}").random() < 0.5


def rater_labels(df: pd.DataFrame, orient_seed: int | None = None) -> pd.DataFrame:
    """Items (prompt and pair) x raters; a label says which of the item's pair won: first/second/tie.

    Labels name the systems, not the letters, so raters who saw A and B swapped still agree.
    "first" is the pair's sorted first system, or, with `orient_seed`, a system drawn per item
    by a seeded coin: when one system wins nearly every item, sorted labels are all "second"
    and kappa's chance term swallows the agreement (the prevalence paradox); drawn sides
    balance the labels. A rater's last rating of an item counts.
    """
    df = _compared(df)
    pairs = _pairs(df)
    items = [f"{pid}|{first}|{second}" for pid, (first, second) in zip(df["prompt_id"], pairs)]
    if orient_seed is not None:
        pairs = [pair[::-1] if _flipped(item, orient_seed) else pair for pair, item in zip(pairs, items)]
    label = ["tie" if w == "tie" else "first" if w == pair[0] else "second"
             for pair, w in zip(pairs, df["winner"])]
    table = pd.DataFrame({"item": items, "rater": list(df["rater"]), "label": label})
    return table.drop_duplicates(["item", "rater"], keep="last").pivot(
        index="item", columns="rater", values="label")


def rater_agreement(df: pd.DataFrame, orient_seed: int | None = None) -> pd.DataFrame:
    """Per pair of raters: shared items, percent agreement, Cohen's kappa, Gwet's AC1. Notebook 09."""
    labels = rater_labels(df, orient_seed)
    if labels.shape[1] < 2:
        raise ValueError(f"agreement needs two raters or more, found {list(labels.columns)}")
    rows = []
    for one, two in itertools.combinations(labels.columns, 2):
        shared = labels[[one, two]].dropna()
        rows.append({"rater_1": one, "rater_2": two, "shared_items": len(shared),
                     "agreement": (shared[one] == shared[two]).mean() if len(shared) else np.nan,
                     "kappa": cohen_kappa(shared[one], shared[two]) if len(shared) else np.nan,
                     "ac1": gwet_ac1(shared[one], shared[two]) if len(shared) else np.nan})
    return pd.DataFrame(rows)


def fleiss_kappa(df: pd.DataFrame, orient_seed: int | None = None) -> float:
    """Fleiss' kappa over the items that every rater labelled (any number of raters >= 2)."""
    labels = rater_labels(df, orient_seed).dropna()
    raters = labels.shape[1]
    if raters < 2 or labels.empty:
        raise ValueError("Fleiss' kappa needs two raters or more who labelled the same items")
    counts = np.stack([(labels == c).sum(axis=1).to_numpy() for c in LABELS], 1)
    per_item = ((counts * (counts - 1)).sum(axis=1) / (raters * (raters - 1))).mean()
    shares = counts.sum(axis=0) / counts.sum()
    expected = (shares ** 2).sum()
    return float("nan") if expected == 1 else float((per_item - expected) / (1 - expected))
