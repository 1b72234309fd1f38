"""Figures and small HTML views shared by the notebooks and the pipeline's report.

Small independent functions: each takes plain data and returns what it drew on. Matplotlib is
imported inside each function so that importing utils stays fast.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

from utils.config import IGNORE_INDEX


def token_length_histograms(lengths_by_name: dict[str, list[int]], max_length: int | None = None,
                            ax=None, bins: int = 30):
    """Overlaid histograms of tokens per row, one per tokenizer or split. Notebook 05."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.5))
    for name, lengths in lengths_by_name.items():
        ax.hist(lengths, bins=bins, alpha=0.5, label=f"{name} (median {sorted(lengths)[len(lengths) // 2]})")
    if max_length:
        ax.axvline(max_length, color="black", linestyle="--", label=f"max_length = {max_length}")
    ax.set_xlabel("tokens per row")
    ax.set_ylabel("rows")
    ax.legend()
    return ax


def token_loss_html(input_ids, labels, tokenizer) -> str:
    """Each token as a coloured chip: green counts in the loss, grey is masked (-100). Notebook 05."""
    chips = []
    for token_id, label in zip(input_ids, labels):
        text = tokenizer.decode([token_id]) if token_id is not None else ""
        text = html.escape(text).replace("\n", "↵<br>") or "&nbsp;"
        counted = label != IGNORE_INDEX
        colour = "#b7e4c7" if counted else "#e0e0e0"
        tip = f"id {token_id}, label {label}"
        chips.append(f'<span title="{tip}" style="background:{colour};border-radius:3px;'
                     f'margin:1px;padding:0 2px;font-family:monospace">{text}</span>')
    legend = ('<div style="margin-bottom:4px"><span style="background:#b7e4c7">counted in the '
              'loss</span> <span style="background:#e0e0e0">masked (label -100)</span></div>')
    return legend + '<div style="line-height:1.9">' + "".join(chips) + "</div>"


def _points(history: list[dict], key: str) -> tuple[list[int], list[float]]:
    rows = [(entry["step"], entry[key]) for entry in history if key in entry and "step" in entry]
    return [r[0] for r in rows], [r[1] for r in rows]


def loss_curves(history: list[dict], ax=None, title: str | None = None, vocab_size: int | None = None):
    """Training and validation loss against the optimizer step, from a Trainer log_history.

    With `vocab_size` V, a dashed line marks ln V: the loss of a uniform guess over the
    vocabulary, the level a model that learned nothing sits at. Introduced in notebook 06
    (learning curves of stage 1); used again in 07 and the report.
    """
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(6, 3.5))
    for key, label, style in (("loss", "training", "-o"), ("eval_loss", "validation", "-s")):
        steps, values = _points(history, key)
        if steps:
            ax.plot(steps, values, style, label=label, markersize=3)
    if vocab_size:
        ax.axhline(math.log(vocab_size), color="grey", linestyle="--",
                   label=f"uniform guess: ln {vocab_size:,} = {math.log(vocab_size):.2f}")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (nats per token)")
    ax.set_title(title or "learning curves")
    ax.grid(alpha=0.3)
    ax.legend()
    return ax


def save_loss_curves(histories: dict[str, list[dict]], path: str | Path) -> Path:
    """One loss-curve panel per stage, side by side, saved as a PNG (no display needed). Pipeline report."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5 * max(1, len(histories)), 3.5), layout="constrained")
    axes = fig.subplots(1, max(1, len(histories)), squeeze=False)[0]
    for ax, (stage, history) in zip(axes, histories.items()):
        loss_curves(history, ax=ax, title=stage)
    path = Path(path)
    fig.savefig(path, dpi=110)
    return path


def bar_compare(values: dict[str, float], ax=None, title: str = "", ylabel: str = ""):
    """Labelled bars, each annotated with its value: two or three numbers side by side. Notebook 07."""
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(5, 3))
    bars = ax.bar(list(values), list(values.values()), color=["tab:orange", "tab:blue", "tab:green"][:len(values)])
    for bar, value in zip(bars, values.values()):
        ax.annotate(f"{value:.3f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom")
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    return ax


# ---------------------------------------------------------------- human preferences (notebook 09)


def plot_win_rates(table, ax=None):
    """Horizontal bars of each pair's win rate with its bootstrap CI; 0.5 marks a coin flip."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 0.6 * len(table) + 1.2))
    labels = [f"{s} vs {o} (n={n})" for s, o, n in zip(table["system"], table["opponent"], table["n"])]
    errors = [table["win_rate"] - table["ci_low"], table["ci_high"] - table["win_rate"]]
    ax.barh(labels, table["win_rate"], xerr=errors, capsize=4, color="#8ecae6")
    ax.axvline(0.5, color="black", linestyle="--", linewidth=1, label="no preference")
    ax.set_xlim(0, 1)
    ax.set_xlabel("win rate of the first system (ties count half)")
    ax.legend(loc="lower right")
    return ax


def plot_strengths(strengths, ax=None):
    """Bars of Bradley-Terry log-strengths (0 = the geometric mean of all systems)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 0.5 * len(strengths) + 1.2))
    ordered = strengths.sort_values("log_strength")
    ax.barh(ordered["system"], ordered["log_strength"], color="#ffb703")
    ax.axvline(0, color="black", linewidth=1)
    ax.set_xlabel("Bradley-Terry log-strength (difference d: P(win) = 1 / (1 + e^-d))")
    return ax
