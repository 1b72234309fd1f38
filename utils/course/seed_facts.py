"""The seed deck's published figures, as tables to set beside ours (notebooks 05, 06, 07 and 10).

Every number here is quoted from the deck "Conversational LLMs" (as transcribed in the
course's SEED_FACTS.md); none is measured by the course. Bottom layer: pandas and stdlib only.
"""

from __future__ import annotations

import math

import pandas as pd

SOURCE = ("the seed deck 'Conversational LLMs', slides 'Results' (one loss table per model, "
          "dataset isaacrehg/poetry-instructions) and 'Best results'; quoted, not measured here")
GPT2 = "openai-community/gpt2"
DEEPSEEK = "deepseek-ai/deepseek-coder-1.3b-base"
SPLIT_SIZES = {"train": 1764, "validation": 111, "test": 331}  # hub splits shown in the deck
# peft's line for LoRA r=8 on GPT-2 124M, as the deck prints it (slide on stage 1).
LORA_GPT2 = {"trainable": 294_912, "total": 124_734_720, "percent": 0.2364}
LORA_GPT2_LINE = "trainable params: 294,912 || all params: 124,734,720 || trainable%: 0.2364"
COLUMNS = ("model", "batch", "accumulation", "epochs", "learning rate", "training loss", "val loss")

# model, per-device batch, gradient accumulation, epochs, learning rate, training loss, validation loss
_RUNS = (
    (GPT2, 2, 4, 1, 1e-4, 2.3700, 2.1700),
    (GPT2, 2, 8, 3, 5e-5, 2.4758, 2.1564),
    (GPT2, 2, 16, 5, 3e-5, 2.4570, 2.1580),
    (DEEPSEEK, 2, 4, 1, 1e-4, 0.0163, 0.0157),
    (DEEPSEEK, 4, 4, 2, 2e-4, 0.0163, 0.0160),
)
# The deck's "Best results" block (it labels the block "ChatGPT"): training, validation, test.
_BEST = ((DEEPSEEK, 0.0163, 0.01575, 0.01577), (GPT2, 2.4758, 2.1564, 2.1512))
# The deck's "final setup" per model: the hyperparameters its profiles use.
FINAL_SETUP = {GPT2: {"epochs": 5, "learning rate": 3e-5}, DEEPSEEK: {"epochs": 3, "learning rate": 1e-4}}


def _lr_text(lr: float) -> str:
    mantissa, exponent = f"{lr:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"  # 1e-04 -> 1e-4


def experiment_name(model: str, batch: int, accumulation: int, epochs: float, lr: float) -> str:
    """The sweep's peft-style name of a deck run, e.g. gpt2-b2-acc16-e5-lr3e-5. Notebook 10."""
    short = "gpt2" if model == GPT2 else "deepseek"
    return f"{short}-b{batch}-acc{accumulation}-e{epochs:g}-lr{_lr_text(lr)}"


def _results() -> pd.DataFrame:
    rows = [dict(zip(COLUMNS, run)) for run in _RUNS]
    table = pd.DataFrame(rows)
    table.insert(0, "experiment", [experiment_name(*run[:5]) for run in _RUNS])
    table["effective batch"] = table["batch"] * table["accumulation"]
    table["val perplexity"] = [round(math.exp(v), 4) for v in table["val loss"]]
    table["source"] = "seed deck (published)"
    table.attrs["source"] = SOURCE
    return table


def _best() -> pd.DataFrame:
    table = pd.DataFrame(_BEST, columns=["model", "training loss", "val loss", "test loss"])
    table["test perplexity"] = [round(math.exp(v), 4) for v in table["test loss"]]
    table["source"] = "seed deck (published)"
    table.attrs["source"] = SOURCE + "; the deck labels this block 'ChatGPT'"
    table.attrs["split sizes"] = dict(SPLIT_SIZES)
    return table


SEED_RESULTS = _results()
SEED_BEST = _best()


def careful_reader_notes(results: pd.DataFrame = SEED_RESULTS) -> list[str]:
    """What a careful reader notices in the deck's tables, each computed from the table itself."""
    notes = []
    for model, runs in results.groupby("model", sort=False):
        best = runs.loc[runs["val loss"].idxmin()]
        final = FINAL_SETUP[model]
        is_final = (runs["epochs"] == final["epochs"]) & (runs["learning rate"] == final["learning rate"])
        final_text = (f"row {runs[is_final]['experiment'].iloc[0]}" if is_final.any()
                      else "a row the table does not show")
        notes.append(f"{model}: best validation loss {best['val loss']} in {best['experiment']}; "
                     f"the final setup ({final['epochs']} epochs, lr {final['learning rate']:g}) is {final_text}")
    below = (results["val loss"] < results["training loss"]).sum()
    notes.append(f"validation loss is below training loss in {below} of {len(results)} rows")
    return notes
