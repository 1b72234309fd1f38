"""Figures and small HTML views shared by the notebooks and the pipeline's report."""

from __future__ import annotations

import html

from .data import IGNORE_INDEX


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
