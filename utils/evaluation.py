"""Evaluate models on the test split, compare runs of the registry, and sweep the seed's runs.

`evaluate_model` generates completions for (prompt, completion) pairs with the profile's
decoding settings and scores them with utils.metrics; the pipeline's evaluate stage writes its
numbers under "eval" in metrics.json. `runs_table` gathers every run folder into one table in
the seed's format; `SWEEP` and `run_sweep` replay the seed's hyperparameter runs as named
experiments. Introduced in notebooks 08 (evaluation) and 10 (hyperparameter comparison).
"""

from __future__ import annotations

import copy
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from . import registry
from .config import DecodeConfig, Profile, get_profile, runs_dir
from .decoding import context_length
from .env import set_seed, torch_threads
from .metrics import evaluate_generations, perplexity_from_loss

# The keys every evaluation has (evaluate_generations adds a few more, e.g. rouge_1).
EVAL_KEYS = ("bleu", "rouge_l", "exact_match", "distinct_1", "distinct_2", "self_bleu",
             "rhyme_rate", "perplexity")
# A cap for the pipeline's evaluate stage: 200 prompts / 8 per batch = 25 generate calls of at
# most 80 new tokens each on the real profiles; the tiny test split (31 rows) is used whole.
EVAL_MAX_EXAMPLES = 200
SEED_COLUMNS = ("model", "batch", "accumulation", "epochs", "learning rate", "training loss",
                "val loss")


class BrokenRunWarning(UserWarning):
    """A run folder whose metrics.json or config.json is missing or unreadable; it is skipped."""


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


def _generation_config(model, tokenizer, decode: DecodeConfig, max_new_tokens: int):
    # A copy: evaluating must not change the decoding settings a notebook set on the model.
    config = copy.deepcopy(model.generation_config)
    for key, value in decode.generate_kwargs().items():
        setattr(config, key, value)
    config.max_new_tokens = max_new_tokens
    config.pad_token_id = tokenizer.pad_token_id
    if config.eos_token_id is None:
        config.eos_token_id = tokenizer.eos_token_id
    config.use_cache = True  # the Trainer switches the KV cache off for training
    return config


def generate_batched(model, tokenizer, prompts, decode: DecodeConfig, max_new_tokens=None,
                     seed: int = 42, batch_size: int = 8) -> list[str]:
    """Sampled continuations of prompts, batch_size at a time with left padding. Notebook 08.

    Each batch is reseeded with `seed`, so a rerun gives the same texts; a prompt's text depends
    on the batch it shares the random stream with (generate_texts reseeds per prompt instead).
    """
    max_new_tokens = max_new_tokens or decode.max_new_tokens
    config = _generation_config(model, tokenizer, decode, max_new_tokens)
    # Left padding: every prompt ends at the last column, where generation continues.
    old_side, old_trunc = tokenizer.padding_side, tokenizer.truncation_side
    tokenizer.padding_side, tokenizer.truncation_side = "left", "left"
    limit = context_length(model) - max_new_tokens  # prompt + new tokens must fit the context
    device, was_training, texts = next(model.parameters()).device, model.training, []
    model.eval()
    try:
        with torch_threads(1 if device.type == "cpu" else None), torch.no_grad():
            for start in range(0, len(prompts), batch_size):
                batch = tokenizer(list(prompts[start:start + batch_size]), return_tensors="pt",
                                  padding=True, truncation=True, max_length=limit).to(device)
                set_seed(seed)
                out = model.generate(**batch, generation_config=config)
                texts += tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:],
                                                skip_special_tokens=True)
    finally:
        tokenizer.padding_side, tokenizer.truncation_side = old_side, old_trunc
        model.train(was_training)
    return texts


def completion_loss_on_pairs(model, tokenizer, pairs, max_length: int | None = None) -> tuple[float, int]:
    """(mean loss per completion token, rows too long to score) of (prompt, completion) pairs.
    Notebook 08."""
    from .data import encode_pairs
    from .training import split_loss

    rows, dropped = encode_pairs(pairs, tokenizer, max_length or context_length(model))
    if not rows:
        raise ValueError(f"all {len(pairs)} pairs are longer than max_length; raise max_length")
    return split_loss(model, rows, tokenizer.pad_token_id), dropped


def evaluate_model(model, tokenizer, pairs, decode: DecodeConfig, max_new_tokens=None,
                   max_examples=None, seed: int = 42, batch_size: int = 8,
                   max_length: int | None = None) -> dict:
    """Loss, perplexity and every text metric of a model on test pairs, plus its generations.
    Notebook 08.

    The first `max_examples` pairs (all when None) are scored: the loss on their completion
    tokens (prompt and padding masked), and the metrics of utils.metrics.evaluate_generations
    for completions sampled with `decode` (seeded) against the reference completions. The
    generations come back under "generations" as {prompt, reference, generation} dicts; pop
    them before writing the numbers to metrics.json.
    """
    pairs = _check_pairs(pairs)[:max_examples]
    prompts, references = [p for p, _ in pairs], [c for _, c in pairs]
    loss, dropped = completion_loss_on_pairs(model, tokenizer, pairs, max_length)
    texts = generate_batched(model, tokenizer, prompts, decode, max_new_tokens, seed, batch_size)
    result = {**evaluate_generations(texts, references), "loss": loss,
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


# ---------------------------------------------------------------- the registry as a table


def _read_json_strict(path: Path):
    if not path.exists():
        raise FileNotFoundError(f"{path.name} is missing")
    data = json.loads(path.read_text(encoding="utf-8"))  # JSONDecodeError is a ValueError
    if not isinstance(data, dict):
        raise ValueError(f"{path.name} holds {type(data).__name__}, not a JSON object")
    return data


def _model_label(profile: dict) -> str:
    model = profile.get("model", {})
    return model.get("model_name_or_path") or f"tiny {model.get('architecture', '?')} (random init)"


def _section(data: dict, key: str, filename: str) -> dict:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ValueError(f"{filename}[{key!r}] holds {type(value).__name__}, not a JSON object")
    return value


def _number(value) -> float:
    return math.nan if value is None else float(value)


def run_row(run_dir: Path) -> dict:
    """One run as a row in the seed's format (plus test loss, perplexity, eval metrics). Notebook 10."""
    config = _read_json_strict(run_dir / registry.CONFIG)
    metrics = _read_json_strict(run_dir / registry.METRICS)
    profile = _section(config, "profile", registry.CONFIG)
    cfg = _section(profile, "stage2", registry.CONFIG)
    s2, ev = _section(metrics, "stage2", registry.METRICS), _section(metrics, "eval", registry.METRICS)
    test_loss = _number(s2.get("test_loss", ev.get("loss")))
    row = {"run": run_dir.name, "experiment": config.get("experiment", ""),
           "profile": profile.get("name"), "model": _model_label(profile),
           "batch": s2.get("per_device_train_batch_size", cfg.get("per_device_train_batch_size")),
           "accumulation": s2.get("gradient_accumulation_steps", cfg.get("gradient_accumulation_steps")),
           "epochs": s2.get("epochs", cfg.get("num_train_epochs")),
           "learning rate": s2.get("learning_rate", cfg.get("learning_rate")),
           "training loss": _number(s2.get("train_loss")), "val loss": _number(s2.get("val_loss")),
           "val perplexity": math.exp(_number(s2.get("val_loss"))),  # exp(nan) is nan
           "test loss": test_loss, "perplexity": math.exp(test_loss),
           "steps": _number(s2.get("global_step")), "stages": ",".join(metrics)}
    row["effective batch"] = (row["batch"] or 0) * (row["accumulation"] or 0) or math.nan
    row.update({key: ev[key] for key in EVAL_KEYS if key in ev and key != "perplexity"})
    return row


def final_model_paths(profile: Profile | str | None = None, root=None) -> dict[str, Path]:
    """{run: folder of its latest model (stage2/model, else merged)} for runs of this profile.
    Notebook 08."""
    profile, root, found = get_profile(profile), Path(root or runs_dir()), {}
    for name in registry.list_runs(root):
        try:
            config = _read_json_strict(root / name / registry.CONFIG)
        except (OSError, ValueError):
            continue  # runs_table warns about broken runs; here they simply have no model
        if config.get("profile", {}).get("name") != profile.name:
            continue  # another architecture or tokenizer: not comparable on the same footing
        for sub in (registry.STAGE2_MODEL, registry.MERGED):
            if (root / name / sub / "config.json").exists():
                found[name] = root / name / sub
                break
    return found


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
    columns += [k for k in EVAL_KEYS if k not in columns and any(k in r for r in rows)]
    table = pd.DataFrame(rows, columns=columns)
    return table.assign(source="measured here")


# ---------------------------------------------------------------- the seed's runs


@dataclass(frozen=True)
class Experiment:
    """One named run of the sweep: the seed's stage-2 hyperparameters as a small override."""

    name: str
    architecture: str  # "gpt2" or "llama": which profiles can run it
    model: str
    stage2: dict = field(default_factory=dict)  # overrides of the profile's stage-2 TrainConfig


def _lr_text(lr: float) -> str:
    mantissa, exponent = f"{lr:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"  # 1e-04 -> 1e-4


def _experiment(short: str, architecture: str, model: str, batch: int, accumulation: int,
                epochs: float, lr: float) -> Experiment:
    name = f"{short}-b{batch}-acc{accumulation}-e{epochs:g}-lr{_lr_text(lr)}"  # peft-style names
    return Experiment(name, architecture, model, {
        "per_device_train_batch_size": batch, "gradient_accumulation_steps": accumulation,
        "num_train_epochs": epochs, "learning_rate": lr})


_GPT2, _DEEPSEEK = "openai-community/gpt2", "deepseek-ai/deepseek-coder-1.3b-base"
# The deck's runs (utils.seed_facts holds their published losses): batch / accum. / epochs / lr.
SWEEP: dict[str, Experiment] = {e.name: e for e in (
    _experiment("gpt2", "gpt2", _GPT2, 2, 4, 1, 1e-4),
    _experiment("gpt2", "gpt2", _GPT2, 2, 8, 3, 5e-5),
    _experiment("gpt2", "gpt2", _GPT2, 2, 16, 5, 3e-5),
    _experiment("deepseek", "llama", _DEEPSEEK, 2, 4, 1, 1e-4),
    _experiment("deepseek", "llama", _DEEPSEEK, 4, 4, 2, 2e-4),
)}


def experiments_for(profile: Profile | str | None = None) -> list[str]:
    """Names of the sweep's experiments this profile can run (GPT-2 ones on tiny and gpt2)."""
    architecture = get_profile(profile).model.architecture
    return [name for name, e in SWEEP.items() if e.architecture == architecture]


def check_experiments(names, profile: Profile) -> list[Experiment]:
    """The experiments asked for, or a ValueError naming the unknown one and the valid ones."""
    chosen = []
    for name in names:
        if name not in SWEEP:
            raise ValueError(f"unknown experiment {name!r}; valid experiments: {', '.join(SWEEP)}")
        exp = SWEEP[name]
        if exp.architecture != profile.model.architecture:
            raise ValueError(f"experiment {name!r} needs a {exp.architecture} profile, but profile "
                             f"{profile.name!r} is {profile.model.architecture}; this profile runs: "
                             f"{', '.join(experiments_for(profile))}")
        chosen.append(exp)
    return chosen


def new_run_name(name: str, root=None) -> str:
    """`name`, or name-v2, name-v3, ... : the first that is not a folder under `root` yet."""
    root, candidate, n = Path(root or runs_dir()), registry.check_run_name(name), 1
    while (root / candidate).exists():
        n += 1
        candidate = f"{name}-v{n}"
    return candidate


def run_sweep(profile, names=None, runs_root=None, max_steps: int | None = None,
              overrides: dict | None = None, from_run: str | None = None,
              max_rows: int | None = None, stages=("stage2",)) -> list[str]:
    """Train each named experiment with the pipeline's stage-2 code; return the new run names.
    Notebook 10.

    Each experiment overrides the profile's stage-2 TrainConfig (then `overrides`, then
    `max_steps`, the scale-down for small machines). A run never overwrites another: when the
    name is taken the run is called name-v2, name-v3, ...; config.json records the experiment.
    """
    from . import pipeline

    profile = get_profile(profile)
    names = list(names) if names is not None else experiments_for(profile)
    experiments = check_experiments(names, profile)
    root, shared, created = Path(runs_root or runs_dir()), {}, []
    for exp in experiments:
        changes = {**exp.stage2, **(overrides or {})}
        if max_steps is not None:
            changes["max_steps"] = max_steps
        run_profile = profile.replace(stage2=changes)
        run_name = new_run_name(exp.name, root)
        run_dir = registry.prepare_run_dir(registry.run_path(run_name, root))
        registry.write_config(run_dir, run_profile, stages=list(stages), experiment=exp.name,
                              overrides=changes)
        flags = ["--profile", profile.name, "--run-name", run_name, "--runs-dir", str(root),
                 "--stages", ",".join(stages)]
        flags += ["--from-run", from_run] if from_run else []
        flags += ["--max-rows", str(max_rows)] if max_rows else []
        # Tokenizer and data are the same for every experiment: prepared once, shared.
        ctx = pipeline.Context(run_profile, run_dir, pipeline.parse_args(flags), state=dict(shared))
        print(f"\n=== {run_name}: stage 2 with {changes}")
        for stage in stages:
            pipeline.STAGES[stage](ctx)
        shared = {k: ctx.state[k] for k in ("tokenizer", "data") if k in ctx.state}
        created.append(run_name)
    return created


def read_log_history(run: str, root=None, stage: str = "stage2") -> list[dict]:
    """The Trainer log entries of one stage of a run (empty list when there are none). Notebook 10."""
    histories = registry.read_json(registry.find_run(run, root) / registry.LOG_HISTORY, {})
    return histories.get(stage, [])
