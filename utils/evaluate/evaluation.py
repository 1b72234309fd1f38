"""Evaluate models on the test split: loss, perplexity, text metrics and generations.

`evaluate_model` generates completions for (prompt, completion) pairs with the profile's
decoding settings (utils.generate.batched) and scores them with utils.evaluate.metrics; the pipeline's
evaluate stage writes its numbers under "eval" in metrics.json. `compare_models` puts several
models side by side. Introduced in notebook 08 (the deck's published results: utils.course.seed_facts).
"""

from __future__ import annotations

import math
from statistics import fmean

import pandas as pd

from utils.config import DecodeConfig
from utils.data.collate import SFTCollator, batches
from utils.data.tokenize import encode_pairs
from utils.evaluate.poetry import MemorisationIndex, rhyme_pair_rate, scanning_share
from utils.evaluate.metrics import (
    completion_loss,
    evaluate_generations,
    perplexity_from_loss,
)
from utils.generate.batched import generate_batched
from utils.generate.decoding import context_length

# The keys every evaluation has (evaluate_generations adds a few more, e.g. rouge_1).
EVAL_KEYS = ("bleu", "rouge_l", "exact_match", "distinct_1", "distinct_2", "self_bleu",
             "rhyme_rate", "rhyme_pair_rate", "meter_score", "perplexity")
# Measured only when the training poems are given (the pipeline's evaluate stage, notebook 08).
MEMORISED = "memorised_words"
# A cap for the pipeline's evaluate stage: 200 prompts / 8 per batch = 25 generate calls of at
# most 80 new tokens each on the real profiles; the tiny test split (31 rows) is used whole.
EVAL_MAX_EXAMPLES = 200


# ---------------------------------------------------------------- one model on test pairs


def _check_pairs(pairs) -> list[tuple[str, str]]:
    pairs = list(pairs)
    if not pairs:
        raise ValueError("pairs is empty; pass at least one (prompt, completion) pair, e.g. "
                         "prepare_data(profile, tokenizer).instructions['test']")
    for i, pair in enumerate(pairs):
        if len(pair) != 2 or not all(isinstance(text, str) for text in pair):
            raise ValueError(f"pairs[{i}] must be a (prompt, completion) pair of str, got {pair!r}")
    return [tuple(pair) for pair in pairs]


def completion_loss_on_pairs(model, tokenizer, pairs, max_length: int | None = None) -> tuple[float, int]:
    """(mean loss per completion token, rows too long to score) of (prompt, completion) pairs.
    Notebook 08."""
    rows, dropped = encode_pairs(pairs, tokenizer, max_length or context_length(model))
    if not rows:
        raise ValueError(f"all {len(pairs)} pairs are longer than max_length; raise max_length")
    return split_loss(model, rows, tokenizer.pad_token_id), dropped


def poetry_scores(texts, training_poems=()) -> dict:
    """The poetic measures of generated texts (utils.evaluate.poetry), means over the texts.
    Notebook 08.

    rhyme_pair_rate: the share of consecutive line pairs that rhyme (GPoeT's measure);
    meter_score: the share of lines that scan as iambic pentameter; memorised_words: the longest
    run of words a text shares with a training poem (the longest over all texts; with no
    training poems given, it is not measured).
    """
    texts = list(texts)
    scores = {"rhyme_pair_rate": fmean(rhyme_pair_rate(t) for t in texts) if texts else 0.0,
              "meter_score": fmean(scanning_share(t) for t in texts) if texts else 0.0}
    if training_poems:
        index = MemorisationIndex(training_poems)
        scores[MEMORISED] = max((index.longest_run(t).words for t in texts), default=0)
    return scores


def evaluate_model(model, tokenizer, pairs, decode: DecodeConfig, max_new_tokens=None,
                   max_examples=None, seed: int = 42, batch_size: int = 8,
                   max_length: int | None = None, training_poems=()) -> dict:
    """Loss, perplexity and every text metric of a model on test pairs, plus its generations.
    Notebook 08.

    The first `max_examples` pairs (all when None) are scored: the loss on their completion
    tokens (prompt and padding masked), and the metrics of utils.evaluate.metrics.evaluate_generations
    for completions sampled with `decode` (seeded) against the reference completions. The
    generations come back under "generations" as {prompt, reference, generation} dicts; pop
    them before writing the numbers to metrics.json. With `training_poems` (stage 1's poems)
    the longest run of words copied from them is measured too (poetry_scores).
    """
    pairs = _check_pairs(pairs)[:max_examples]
    prompts, references = [p for p, _ in pairs], [c for _, c in pairs]
    loss, dropped = completion_loss_on_pairs(model, tokenizer, pairs, max_length)
    texts = generate_batched(model, tokenizer, prompts, decode, max_new_tokens, seed, batch_size)
    result = {**evaluate_generations(texts, references), **poetry_scores(texts, training_poems),
              "loss": loss,
              "perplexity": perplexity_from_loss(loss), "n_examples": len(pairs),
              "loss_rows_dropped": dropped, "max_new_tokens": max_new_tokens or decode.max_new_tokens,
              "seed": seed}
    result["generations"] = [{"prompt": p, "reference": r, "generation": g}
                             for p, r, g in zip(prompts, references, texts)]
    return result


def metrics_only(result: dict) -> dict:
    """evaluate_model's result without the generations: what goes into metrics.json."""
    return {k: v for k, v in result.items() if k != "generations"}


def compare_models(models: dict, pairs, decode: DecodeConfig, **kwargs) -> pd.DataFrame:
    """One row per model (name -> (model, tokenizer)), one column per metric. Notebook 08.

    The generations of each model are kept in `table.attrs["generations"][name]`.
    """
    from tqdm.auto import tqdm

    if not models:
        raise ValueError("models is empty; pass {name: (model, tokenizer)}")
    rows, generations = {}, {}
    for name, (model, tokenizer) in tqdm(models.items(), desc="evaluating", unit="model"):
        result = evaluate_model(model, tokenizer, pairs, decode, **kwargs)
        generations[name] = result.pop("generations")
        rows[name] = result
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "model"
    table.attrs["generations"] = generations
    return table


def plot_metric_bars(table: pd.DataFrame, metrics=None, ncols: int = 4):
    """One bar panel per metric column, one bar per row of `table`. Notebooks 08 and 10."""
    import matplotlib.pyplot as plt

    metrics = list(metrics or [c for c in table.columns if c in EVAL_KEYS or c == "loss"])
    nrows = math.ceil(len(metrics) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.6 * nrows), squeeze=False,
                             layout="constrained")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, metric in zip(axes.flat, metrics):
        values = table[metric].astype(float)
        ax.bar([str(i) for i in table.index], values,
               color=[colours[i % len(colours)] for i in range(len(values))])
        ax.set_title(metric)
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    for ax in list(axes.flat)[len(metrics):]:
        ax.set_visible(False)
    return fig


def split_loss(model, rows, pad_token_id: int, batch_size: int = 8) -> float:
    """Mean loss per completion token of encoded rows (utils.evaluate.metrics.completion_loss)."""
    # Rows of similar length share a batch, so little is padded; the token-weighted mean does
    # not depend on the order (sample data, batches of 8: the test split pads 12% of positions
    # instead of 29%).
    rows = sorted(rows, key=lambda r: len(r["input_ids"]))
    return completion_loss(model, list(batches(rows, SFTCollator(pad_token_id), batch_size)))
