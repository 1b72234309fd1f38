"""The seed's two practical prompts, answered by several models side by side. Notebooks 06-08.

The seed tried its models on a generic line to continue and on a poem request; stage 2 was
trained on requests in the dataset's `User: ...\\nAssistant:` format, so the request is asked
in that format. Every model answers with the same decoding settings and the same seed, so
only the weights differ between the columns.
"""

from __future__ import annotations

import pandas as pd

from utils.generate.batched import generate_texts

SEED_PROMPTS = {
    "generic": "The sea is blue, the sky is red",
    "poem request": "User: Write a poem about the sea and the sky\nAssistant:",
}


def side_by_side(models: dict, tokenizer, settings, seed: int, prompts: dict | None = None) -> pd.DataFrame:
    """One row per prompt, one column per model: each model's continuation with the same seed.

    `models` maps a column name (e.g. "base", "stage 1", "stage 2") to a model; generate_texts
    reseeds before each prompt, so a column does not depend on the columns before it.
    """
    prompts = prompts or SEED_PROMPTS
    if not models:
        raise ValueError("side_by_side needs at least one model: pass {'base': model, ...}")
    table = pd.DataFrame({name: generate_texts(model, tokenizer, list(prompts.values()), settings, seed=seed)
                          for name, model in models.items()}, index=list(prompts))
    table.index.name = "prompt"
    return table


def show(table: pd.DataFrame):
    """The table with line breaks kept and text left-aligned (a pandas Styler for display)."""
    return table.style.set_properties(**{"white-space": "pre-wrap", "text-align": "left",
                                         "vertical-align": "top"})
