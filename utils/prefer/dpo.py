"""Stage 3, preference tuning: DPO pairs from the rater's clicks, TRL's DPOTrainer, the loss by hand.

The rater of notebook 09 writes one click a line to preferences.csv; `pairs_from_ratings`
turns the clicks into (prompt, chosen, rejected) pairs, with the texts of the rated items.
`train_dpo` runs TRL's DPOTrainer against a frozen copy of the starting model; `dpo_loss` is
the same loss in a few lines (tests/test_dpo.py checks it against TRL's). The pipeline's
`prefer` stage (utils/pipeline/stages.py) puts them together. Introduced in notebook 12.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import TrainerCallback

from utils.config import Profile, get_profile
from utils.env import pick_device, set_seed
from utils.prefer.ratings import (
    changed_since_rated,
    ratings_table,
    warn_contradictions,
    warn_if_changed,
)
from utils.prefer.scripted_rater import RATER_NAME
from utils.train.loss_guards import (
    DivergedLossError,
    DivergenceCallback,
    NonFiniteLossCallback,
    NonFiniteLossError,
)
from utils.train.savers import checkpointing_argument
from utils.train.trainer import precision_flags

MIN_PAIRS = 16  # below this, a DPO run learns noise: rate more pairs first


@dataclass(frozen=True)
class PreferenceConfig:
    """Stage 3's settings: DPO hyperparameters (TRL's names) and the scripted rater's sampling."""

    beta: float = 0.1  # the DPO paper's default (Rafailov et al. 2023, appendix B)
    learning_rate: float = 1e-6  # the DPO paper's rate for full fine-tuning
    max_steps: int = -1
    num_train_epochs: float = 1.0
    per_device_train_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    max_length: int = 512  # prompt + answer tokens; longer pairs are cut at the end
    lora: bool = False  # True: train LoRA adapters (stage 1's r and alpha), the base frozen
    logging_steps: int = 5
    seed: int = 42
    min_pairs: int = MIN_PAIRS
    eval_fraction: float = 0.2  # pairs held out to measure reward accuracy
    max_prompts: int | None = None  # scripted rater: training prompts it samples for (None: all)
    samples_per_prompt: int = 8  # scripted rater: answers sampled per training prompt
    max_pairs_per_prompt: int = 4
    eval_samples_per_prompt: int = 4  # answers per test prompt to measure the property

    def __post_init__(self):
        for name, low in PREFERENCE_MINIMA.items():
            _check_number(name, getattr(self, name), low)
        if self.max_steps != -1:
            _check_number("max_steps", self.max_steps, 1)
        if self.max_prompts is not None:
            _check_number("max_prompts", self.max_prompts, 1)
        if not 0.0 < self.eval_fraction < 1.0:
            raise ValueError(f"PreferenceConfig.eval_fraction must be in (0, 1), got {self.eval_fraction}")


# The smallest value of each number (a float: the bound itself is refused; max_steps is -1 or >= 1).
PREFERENCE_MINIMA = {"beta": 0.0, "learning_rate": 0.0, "num_train_epochs": 0.0,
                     "per_device_train_batch_size": 1, "gradient_accumulation_steps": 1,
                     "max_length": 2, "logging_steps": 1, "min_pairs": 1,
                     "samples_per_prompt": 2, "max_pairs_per_prompt": 1, "eval_samples_per_prompt": 1}


def _check_number(name: str, value, low) -> None:
    """ValueError naming the PreferenceConfig field for NaN, infinity, a non-number or too small."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"PreferenceConfig.{name} must be a finite number, got {value!r}")
    if value < low or (isinstance(low, float) and value == low):
        bound = f"above {low:g}" if isinstance(low, float) else f"at least {low}"
        raise ValueError(f"PreferenceConfig.{name} must be {bound}, got {value!r}")


# Tiny: the class's setting, the same in notebook 12 and in `--stages prefer`. Sampling the
# answers was 45% of the stage's time on a CPU (py-spy, 2026-12-05): 24 prompts x 6 answers (and
# 3 per test prompt) took 101-109 s on 2 cores (2026-12-04, short_lines 0.42 -> 0.83); 16 x 4
# (and 2) took 106 s with py-spy off, 0.37 -> 0.81 (2026-12-05), and notebook 12's run moves it
# past the 0.15 that tests/test_notebooks.py asserts. Top-p without the full sort
# (utils/generate/nucleus.py) samples the same texts: 70.8 s, the same numbers (2026-12-05).
# Training was then half the stage (TRL scores every position through its chunked head on a
# CPU): 4 pairs a step at twice the rate took 46.2 s and 43.3 s against 73.7 s for 8 pairs at
# 1e-4, measured in turn in one process (2026-12-05, README), short_lines 0.37 -> 0.87 (0.81
# before), distinct-2 kept.
PREFERENCE_CONFIGS = {
    "tiny": PreferenceConfig(learning_rate=2e-4, max_steps=12, max_length=256, max_prompts=16,
                             samples_per_prompt=4, eval_samples_per_prompt=2,
                             per_device_train_batch_size=4),
    "tiny-llama": PreferenceConfig(learning_rate=5e-5, max_steps=30, max_length=256, max_prompts=48),
    # 8 pairs * 8 accumulation = the paper's 64 pairs per update. Not run yet: no GPU here.
    "gpt2": PreferenceConfig(gradient_accumulation_steps=8),
    # LoRA needs a larger rate than full fine-tuning; 5e-6 is a guess to tune, not a measurement.
    "deepseek": PreferenceConfig(lora=True, learning_rate=5e-6, gradient_accumulation_steps=8),
}


def preference_config(profile: Profile | str | None = None, **changes) -> PreferenceConfig:
    """The PreferenceConfig of a profile, with `changes` applied (e.g. max_steps=10)."""
    import dataclasses

    profile = get_profile(profile)
    base = PREFERENCE_CONFIGS.get(profile.name, PreferenceConfig())
    return dataclasses.replace(base, **changes)


# ---------------------------------------------------------------- pairs from clicks


def check_enough_pairs(pairs, source: str, min_pairs: int = MIN_PAIRS, dropped=None,
                       simulated: bool | None = None) -> None:
    """ValueError naming the source, the count and what to do when there are too few pairs.

    `simulated` (default: the source is the scripted rater) gives the scripted rater's fix,
    not "rate more pairs", which no one can do for it.
    """
    if len(pairs) >= min_pairs:
        return
    why = ", ".join(f"{n} {reason}" for reason, n in (dropped or {}).items() if n) or "none"
    simulated = source == RATER_NAME if simulated is None else simulated
    fix = ("Give it more to compare: raise max_prompts or samples_per_prompt of the "
           "PreferenceConfig, or start from a model whose answers differ more (a longer stage 2)"
           if simulated else
           "Rate more pairs in notebook 09 (A or B clicks; ties and skips carry no preference), "
           "or use the scripted rater (utils.prefer.scripted_rater) for a SIMULATED run.")
    raise ValueError(f"{source}: only {len(pairs)} usable preference pair(s) (dropped: {why}); "
                     f"DPO needs at least {min_pairs}. {fix}")


def pairs_from_ratings(ratings, items, min_pairs: int = MIN_PAIRS) -> tuple[list[dict], dict]:
    """(pairs, dropped) from a preferences.csv (or its loaded table) and the rated items. Notebook 12.

    `items` ({prompt_id, prompt, outputs: {system: text}}, as given to the rater) supply the
    texts, matched on the prompt id and the system. Ties and skips carry no preference and are
    dropped, as are clicks whose texts are not in `items`, texts that changed since they were
    rated (the stored hash differs: samples regenerated), and pairs of two identical texts;
    `dropped` counts each reason. Raters who contradict each other are reported in a warning.
    """
    from utils.prefer.items import validate_items

    table, source = ratings_table(ratings)
    texts = {(item["prompt_id"], system): text for item in validate_items(items)
             for system, text in item["outputs"].items()}
    pairs, seen = [], {}
    dropped = {"tie": 0, "skip": 0, "text_not_in_items": 0, "text_changed": 0,
               "identical_texts": 0, "corrupted_lines": len(table.attrs.get("skipped", {}))}
    for row in table.itertuples(index=False):
        if row.choice in ("tie", "skip"):
            dropped[row.choice] += 1
            continue
        loser = row.system_b if row.winner == row.system_a else row.system_a
        chosen, rejected = texts.get((row.prompt_id, row.winner)), texts.get((row.prompt_id, loser))
        if chosen is None or rejected is None:
            dropped["text_not_in_items"] += 1
        elif changed_since_rated(row, texts):
            dropped["text_changed"] += 1
        elif chosen == rejected:
            dropped["identical_texts"] += 1
        else:
            pairs.append({"prompt": row.prompt, "chosen": chosen,
                          "rejected": rejected, "rater": row.rater, "simulated": False})
            seen.setdefault((row.prompt_id, frozenset((row.winner, loser))), []).append(
                (row.winner, row.rater))
    warn_if_changed(dropped["text_changed"], source)
    warn_contradictions(seen, source)
    check_enough_pairs(pairs, source, min_pairs, dropped, simulated=False)
    return pairs, dropped


# ---------------------------------------------------------------- the loss, by hand


def completion_logps(model, input_ids, attention_mask, completion_mask) -> torch.Tensor:
    """Each row's summed log-probability of its completion tokens (prompt and padding masked)."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1]
    logps = torch.log_softmax(logits.float(), dim=-1)
    token_logps = logps.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)  # p(token t | < t)
    return (token_logps * completion_mask[:, 1:]).sum(dim=-1)


def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta: float):
    """DPO's loss and implicit rewards: -log sigmoid(beta * (chosen log-ratio - rejected log-ratio))."""
    chosen_rewards = beta * (policy_chosen - ref_chosen)  # how much more likely than the reference
    rejected_rewards = beta * (policy_rejected - ref_rejected)
    loss = -F.logsigmoid(chosen_rewards - rejected_rewards).mean()
    return loss, chosen_rewards, rejected_rewards


def batch_dpo_loss(model, ref_model, batch: dict, beta: float):
    """dpo_loss of a batch collated by TRL (the chosen rows first, then the rejected rows)."""
    args = (batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    with torch.no_grad():
        ref = completion_logps(ref_model, *args)
    return dpo_loss(*completion_logps(model, *args).chunk(2), *ref.chunk(2), beta)


def answer_logps(model, tokenizer, prompts, answers, batch_size: int = 16) -> torch.Tensor:
    """Summed log-probability of each answer (then EOS) after its prompt, batch by batch."""
    out, device = [], next(model.parameters()).device
    for start in range(0, len(prompts), batch_size):
        rows = [(tokenizer(p)["input_ids"], tokenizer(a)["input_ids"] + [tokenizer.eos_token_id])
                for p, a in zip(prompts[start:start + batch_size], answers[start:start + batch_size])]
        width = max(len(p) + len(a) for p, a in rows)
        ids = torch.full((len(rows), width), tokenizer.pad_token_id)
        attention, completion = torch.zeros_like(ids), torch.zeros_like(ids)
        for n, (p, a) in enumerate(rows):
            ids[n, :len(p) + len(a)] = torch.tensor(p + a)
            attention[n, :len(p) + len(a)] = 1
            completion[n, len(p):len(p) + len(a)] = 1
        with torch.no_grad():
            out.append(completion_logps(model, *(t.to(device) for t in (ids, attention, completion))))
    return torch.cat(out)


def implicit_kl(model, ref_model, tokenizer, prompts, answers) -> float:
    """Estimate of KL(policy || reference) per answer: mean log-ratio on the policy's own samples."""
    return (answer_logps(model, tokenizer, prompts, answers)
            - answer_logps(ref_model, tokenizer, prompts, answers)).mean().item()


# ---------------------------------------------------------------- TRL


def dpo_arguments(cfg: PreferenceConfig, output_dir, **overrides):
    """TRL's DPOConfig from a PreferenceConfig: quiet, no checkpoints, fp32 on a CPU."""
    from trl import DPOConfig

    device = pick_device()
    args = dict(
        output_dir=str(output_dir), beta=cfg.beta, loss_type=["sigmoid"],
        learning_rate=cfg.learning_rate, max_steps=cfg.max_steps,
        num_train_epochs=cfg.num_train_epochs, max_length=cfg.max_length,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        per_device_eval_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        seed=cfg.seed, data_seed=cfg.seed, logging_steps=cfg.logging_steps,
        save_strategy="no", report_to="none", disable_tqdm=True,
        # TRL's defaults differ from the Trainer's: checkpointing on and bf16 on. A small model
        # needs no activation checkpointing, and a CPU trains in fp32 (precision_flags).
        use_cpu=device.type == "cpu", dataloader_num_workers=0,
        # The frozen reference's log-probabilities, once for every pair before the first step
        # (only the log-prob column of TRL's fused head), instead of a second forward pass at
        # every step and every evaluation: the reference never changes.
        precompute_ref_log_probs=True,
        **{checkpointing_argument(): False}, **precision_flags(device))
    args.update(overrides)
    return DPOConfig(**args)


@contextlib.contextmanager
def _quiet():
    """No dataset progress bars, transformers warnings or deprecation notes while TRL runs."""
    from datasets.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )
    from transformers.utils import logging

    bars, level = not are_progress_bars_disabled(), logging.get_verbosity()
    tqdm_disable = os.environ.get("TQDM_DISABLE")
    disable_progress_bars()
    logging.set_verbosity_error()
    os.environ["TQDM_DISABLE"] = "1"  # TRL's bar while it precomputes the reference log-probs
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # TRL's own calls of renamed APIs
            yield
    finally:
        if tqdm_disable is None:
            os.environ.pop("TQDM_DISABLE")
        else:
            os.environ["TQDM_DISABLE"] = tqdm_disable
        logging.set_verbosity(level)
        if bars:
            enable_progress_bars()


def split_pairs(pairs, eval_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, held-out) pairs, shuffled with seed; the held-out pairs measure reward accuracy."""
    import random

    shuffled = list(pairs)
    random.Random(seed).shuffle(shuffled)
    n_eval = max(1, round(len(shuffled) * eval_fraction))
    return shuffled[n_eval:], shuffled[:n_eval]


def build_dpo_trainer(model, tokenizer, train_pairs, eval_pairs, cfg: PreferenceConfig,
                      output_dir, ref_model=None, profile: Profile | str | None = None, **overrides):
    """TRL's DPOTrainer on the pairs; ref_model None: model itself before its first step (its
    log-probabilities are precomputed), a frozen copy without precompute, or LoRA off."""
    from datasets import Dataset
    from transformers import PrinterCallback
    from trl import DPOTrainer

    columns = ("prompt", "chosen", "rejected")
    data = [Dataset.from_list([{k: p[k] for k in columns} for p in rows]) if rows else None
            for rows in (train_pairs, eval_pairs)]
    args = dpo_arguments(cfg, output_dir, **overrides)
    peft_config = None
    if cfg.lora:
        from utils.models.lora import lora_config

        peft_config = lora_config(profile)  # reference = the same model with the adapters off
    elif ref_model is None and not args.precompute_ref_log_probs:
        ref_model = copy.deepcopy(model)  # precomputed: TRL scores the untrained model itself
    if ref_model is not None:
        ref_model.requires_grad_(False).eval()
    set_seed(cfg.seed)
    with _quiet():
        trainer = DPOTrainer(model=model, ref_model=ref_model, args=args,
                             train_dataset=data[0], eval_dataset=data[1],
                             processing_class=tokenizer, peft_config=peft_config)
    trainer.remove_callback(PrinterCallback)  # disable_tqdm=True would print every log line
    # The fine-tuning stages' loss guards: a NaN or exploding DPO loss stops with the learning
    # rate named, not later in sampling. DPO's loss starts at ln 2 = 0.69 (policy = reference),
    # so 3x the first logged loss is a loss no honest run reaches.
    trainer.add_callback(NonFiniteLossCallback())
    trainer.add_callback(DivergenceCallback())
    trainer.add_callback(RewardDivergenceCallback(cfg.beta, cfg.max_length))
    return trainer


class RewardDivergenceCallback(TrainerCallback):
    """Stops a DPO run whose policy runs away from the reference (the loss alone cannot tell).

    At learning rate 50 the DPO loss falls to 0.0 at step 2 (a tiny model, measured): the
    chosen answers became e^43,000 times likelier than the rejected ones. The rule: a logged
    reward margin / beta (a log-probability ratio, in nats) above max_length x 2 ln(vocab),
    e.g. 256 x 21.65 = 5,542 nats, more than every token moving by twice a uniform guess.
    """

    def __init__(self, beta: float, max_length: int):
        self.beta, self.max_length = beta, max_length

    def on_log(self, args, state, control, logs=None, model=None, **kwargs):
        margin = (logs or {}).get("rewards/margins")
        if margin is None:
            return
        vocab = getattr(getattr(model, "config", None), "vocab_size", None)
        ceiling = self.max_length * 2 * math.log(vocab) if vocab else math.inf
        if not math.isfinite(margin) or abs(margin) / self.beta > ceiling:
            raise DivergedLossError(
                f"DPO diverged at step {state.global_step}: a reward margin of {margin:.4g} is a "
                f"log-probability ratio of {margin / self.beta:.4g} nats, beyond {ceiling:.4g} = "
                f"{self.max_length} tokens x 2 ln(vocab) (learning_rate={args.learning_rate:g}). "
                "Lower the learning rate (--prefer-learning-rate), e.g. by 10x.")


def trl_loss(trainer, model, batch) -> float:
    """TRL's DPO loss of one batch outside training, quietly (notebook 12 checks ours against it)."""
    with _quiet(), torch.no_grad():
        return trainer.compute_loss(model, batch).item()


def check_finite_weights(trainer) -> None:
    """NonFiniteLossError naming the learning rate when training left a NaN or infinite weight
    (between two logged losses the guards above cannot see it; sampling would then fail)."""
    bad = next((name for name, p in trainer.model.named_parameters()
                if p.requires_grad and not torch.isfinite(p).all()), None)
    if bad is not None:
        raise NonFiniteLossError(
            f"DPO made the weight {bad} NaN or infinite by step {trainer.state.global_step} "
            f"(learning_rate={trainer.args.learning_rate:g}). Lower the learning rate "
            "(PreferenceConfig.learning_rate, --prefer-learning-rate), e.g. by 10x.")


def train_dpo(trainer) -> dict:
    """Train quietly; return the last logged training numbers and the held-out evaluation."""
    with _quiet():
        trainer.train()
        check_finite_weights(trainer)
        held_out = trainer.evaluate() if trainer.eval_dataset is not None else {}
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    return {"train": logs[-1] if logs else {}, "eval": held_out}


# ---------------------------------------------------------------- the pipeline stage


