"""The reward stage: the stage-2 model tuned on a reward a program computes (utils/prefer/reward.py).

Like prefer (DPO from clicks), it runs only when named (`--stages reward`), starts from this
run's stage-2 model and leaves stage 2 untouched: the tuned model goes to reward/model, the
measurements to metrics.json["reward"]. Notebook 13 runs the same function.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from utils.config import get_profile
from utils.env import pick_device
from utils.evaluate.evaluation import MEMORISED, poetry_scores
from utils.models.files import save_model_folder
from utils.models.loading import load_model
from utils.models.memory import estimate_memory, parameter_counts
from utils.pipeline.context import Context
from utils.pipeline.models import stage2_source
from utils.prefer.reward import RewardConfig, reward_config, train_reward
from utils.runs import registry

PROPERTY = "rhyme-pair rate"  # what the reward pays for (utils.evaluate.poetry.rhyme_pair_rate)


# Rollouts are left-padded to the longest prompt of the step. The sample data's instruction
# prompts ("User: ... Assistant:") run 16 to 122 GPT-2 tokens (median 24), so 128 covers them.
PROMPT_TOKENS = 128
MEMORY_LABEL = "reward stage (full fine-tuning, fp32, + the reference model)"


def memory_estimate(cfg: RewardConfig):
    """The reward stage's peak bytes for utils.models.fit's check, as estimate(config, shards):
    every weight trains in fp32 on prompts_per_step x group_size rollouts of PROMPT_TOKENS +
    max_new_tokens tokens, and a frozen fp32 copy of the starting model scores them for the KL
    penalty (none when beta is 0). Notebook 11's calculator, applied to this stage."""
    rows, seq = cfg.prompts_per_step * cfg.group_size, PROMPT_TOKENS + cfg.max_new_tokens

    def estimate(config, shards: int = 1) -> int:
        policy = estimate_memory(config, "full fp32", rows, seq, shards=shards)["total"]
        reference = 4 * parameter_counts(config)[0] // shards if cfg.beta > 0 else 0
        return policy + reference
    return estimate


def stage_reward(ctx: Context) -> None:
    """The reward stage of a pipeline run: from this run's stage-2 model, on its instructions."""
    source = stage2_source(ctx, "reward", "the reward stage")
    cfg = reward_config(ctx.profile, **ctx.options.reward_changes())
    data = ctx.data()
    metrics = reward_stage(source, ctx.tokenizer(), ctx.profile, ctx.run_dir / registry.REWARD_MODEL,
                           prompts=[p for p, _ in data.instructions["train"]],
                           eval_prompts=[p for p, _ in data.instructions["test"]], cfg=cfg,
                           training_poems=data.poems["train"])
    registry.update_metrics(ctx.run_dir, "reward", metrics)


def reward_stage(model_dir, tokenizer, profile, output_dir, prompts, eval_prompts,
                 cfg: RewardConfig | None = None, training_poems=(), verbose: bool = True) -> dict:
    """Tune the model in model_dir on the verifiable reward; save it to output_dir; return
    metrics.json's "reward" entry: the rhyme-pair rate and distinct-2 of answers sampled for
    eval_prompts before and after, the KL to the start, the longest run of words the answers
    after share with training_poems, steps and seconds."""
    profile = get_profile(profile)
    cfg = cfg or reward_config(profile)
    model = load_model(profile, tokenizer=tokenizer, path=model_dir, device=pick_device())
    result = train_reward(model, tokenizer, prompts, cfg, eval_prompts=eval_prompts,
                          decode=profile.decode, verbose=verbose)
    after = [t for group in result.pop("answers_after") for t in group]
    log = result.pop("log")
    save_model_folder(model, tokenizer, output_dir)
    metrics = {"config": dataclasses.asdict(cfg), "property": PROPERTY,
               "property_before": result["rhyme_pair_rate_before"],
               "property_after": result["rhyme_pair_rate_after"], **result,
               "reward_per_step": [round(row["reward"], 4) for row in log],
               "path": str(Path(output_dir).name)}
    if training_poems:
        metrics[MEMORISED] = poetry_scores(after, training_poems)[MEMORISED]
    return metrics
