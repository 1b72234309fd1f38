"""The run registry as a table: one row per run folder in the seed's format. Notebooks 08, 10, 12.

`runs_table` reads every run's config.json and metrics.json (utils/runs/registry.py writes them);
a broken run folder is skipped with a BrokenRunWarning instead of failing the whole table.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pandas as pd

from utils.config import runs_dir
from utils.evaluate.evaluation import EVAL_KEYS, MEMORISED
from utils.evaluate.metrics import perplexity_from_loss
from utils.runs import registry

SEED_COLUMNS = ("model", "batch", "accumulation", "epochs", "learning rate", "training loss",
                "val loss")


# metrics.json["preference"] (stage 3, DPO) -> runs-table column; shown once any run has it
PREFERENCE_COLUMNS = {"property": "DPO property", "property_before": "property before",
                      "property_after": "property after", "pairs": "DPO pairs",
                      "simulated": "simulated rater", "reward_accuracy": "reward accuracy"}


# metrics.json["reward"] (the reward stage) -> runs-table column; shown once any run has it
REWARD_COLUMNS = {"rhyme_pair_rate_before": "reward: rhyme before",
                  "rhyme_pair_rate_after": "reward: rhyme after",
                  "distinct_2_after": "reward: distinct-2 after", "kl_last_step": "reward: KL"}


class BrokenRunWarning(UserWarning):
    """A run folder whose metrics.json or config.json is missing or unreadable; it is skipped."""


def _read_json_strict(path: Path) -> dict:
    """A run file that must be there (registry.read_json otherwise)."""
    data = registry.read_json(path)
    if data is None:
        raise FileNotFoundError(f"{path.name} is missing")
    return data


def _model_label(profile: dict) -> str:
    model = profile.get("model", {})
    if model.get("model_name_or_path"):
        return model["model_name_or_path"]
    if model.get("pretrained_dir"):
        return f"pocket {model.get('architecture', '?')} ({Path(model['pretrained_dir']).name})"
    return f"tiny {model.get('architecture', '?')} (random init)"


def _section(data: dict, key: str, filename: str) -> dict:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ValueError(f"{filename}[{key!r}] holds {type(value).__name__}, not a JSON object")
    return value


def _number(value) -> float:
    return math.nan if value is None else float(value)


def _stage2_settings(s2: dict) -> dict:
    """What stage 2 ran with, from metrics.json only: a run without stage 2 has no settings.

    The epochs are the ones actually trained (the Trainer's epoch at the end, so a run cut short
    by max_steps shows 0.05, not the profile's 3); config.json only says what was planned.
    """
    if not s2:
        return dict.fromkeys(("batch", "accumulation", "epochs", "learning rate"), math.nan)
    return {"batch": s2.get("per_device_train_batch_size", math.nan),
            "accumulation": s2.get("gradient_accumulation_steps", math.nan),
            "epochs": _number(s2.get("epochs")), "learning rate": _number(s2.get("learning_rate"))}


def run_row(run_dir: Path) -> dict:
    """One run as a row in the seed's format (plus test loss, perplexity, eval metrics). Notebook 10.

    The stage-2 columns report what ran (metrics.json), never what config.json planned.
    """
    config = _read_json_strict(run_dir / registry.CONFIG)
    metrics = _read_json_strict(run_dir / registry.METRICS)
    profile = _section(config, "profile", registry.CONFIG)
    s2, ev = _section(metrics, "stage2", registry.METRICS), _section(metrics, "eval", registry.METRICS)
    test_loss = _number(s2.get("test_loss", ev.get("loss")))
    row = {"run": run_dir.name, "experiment": config.get("experiment", ""),
           "profile": profile.get("name"), "model": _model_label(profile), **_stage2_settings(s2),
           "training loss": _number(s2.get("train_loss")), "val loss": _number(s2.get("val_loss")),
           "val perplexity": perplexity_from_loss(_number(s2.get("val_loss"))),  # nan stays nan
           "test loss": test_loss, "perplexity": perplexity_from_loss(test_loss),
           "steps": _number(s2.get("global_step")), "stages": ",".join(metrics)}
    row["effective batch"] = _number(row["batch"]) * _number(row["accumulation"])  # nan if either is
    row.update({key: ev[key] for key in (*EVAL_KEYS, MEMORISED) if key in ev and key != "perplexity"})
    prefer = _section(metrics, "preference", registry.METRICS)
    row.update({column: prefer[key] for key, column in PREFERENCE_COLUMNS.items() if key in prefer})
    reward = _section(metrics, "reward", registry.METRICS)
    row.update({column: reward[key] for key, column in REWARD_COLUMNS.items() if key in reward})
    return row


def runs_table(root=None) -> pd.DataFrame:
    """Every run of the registry as one row; broken run folders are skipped with a warning.
    Notebooks 08 and 10."""
    root = Path(root or runs_dir())
    rows = []
    for name in registry.list_runs(root):
        try:
            rows.append(run_row(root / name))
        except (OSError, ValueError, TypeError) as error:  # missing, corrupt or mistyped files
            warnings.warn(f"skipping run {name!r} in {root}: {error}", BrokenRunWarning, stacklevel=2)
    columns = ["run", "experiment", "profile", *SEED_COLUMNS, "val perplexity", "effective batch",
               "steps", "test loss", "perplexity", "stages"]
    optional = [*EVAL_KEYS, MEMORISED, *PREFERENCE_COLUMNS.values(), *REWARD_COLUMNS.values()]
    columns += [k for k in optional if k not in columns and any(k in r for r in rows)]
    table = pd.DataFrame(rows, columns=columns)
    return table.assign(source="measured here")


def read_log_history(run: str, root=None, stage: str = "stage2") -> list[dict]:
    """The Trainer log entries of one stage of a run (empty list when there are none). Notebook 10."""
    histories = registry.read_json(registry.find_run(run, root) / registry.LOG_HISTORY, {})
    return histories.get(stage, [])
