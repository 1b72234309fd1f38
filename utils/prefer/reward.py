"""A reinforcement stage with a verifiable reward: the model learns to rhyme from a program.

DPO (utils/dpo.py) learns from pairs a rater chose between. Here no rater is needed: the
reward is computed from each sampled answer by `utils/evaluate/poetry.py`, so it can be
checked by anyone. For each prompt the model samples a group of answers; an answer's
advantage is its reward minus the mean reward of its group (divided by the group's spread,
as GRPO does), and the policy-gradient step makes the answers that beat their group more
likely (REINFORCE with a group baseline, Williams 1992; GRPO, Shao et al. 2024). A KL penalty
to the starting model (weight beta) keeps it from drifting into one safe answer.
`group_advantages` is the baseline by hand; tests/test_reward.py checks it against TRL's
GRPOTrainer. Introduced in notebook 12.
"""

from __future__ import annotations

import copy
import math
import random
import time
from dataclasses import dataclass, fields
from statistics import fmean

import torch

from utils.config import DecodeConfig
from utils.generate.decoding import context_length, encode_prompt
from utils.env import set_seed
from utils.evaluate.poetry import rhyme_pair_rate, stanzas, words
from utils.evaluate.metrics import distinct_n, repetition_rate
from utils.prefer.scripted_rater import sample_answers

REWARD_RHYMES = ("perfect",)  # spelling guesses would pay for made-up words that look alike


@dataclass(frozen=True)
class RewardConfig:
    """The reward stage's settings: rollouts, the policy-gradient step, the reward's weights."""

    max_steps: int = 30
    prompts_per_step: int = 8
    group_size: int = 8  # answers sampled per prompt; their mean reward is the baseline
    learning_rate: float = 2e-4
    beta: float = 0.04  # weight of the KL penalty to the starting model (0: none, no copy kept)
    temperature: float = 1.0  # rollouts sample the model's own distribution, no top-p
    max_new_tokens: int = 40
    scale_rewards: bool = True  # divide advantages by the group's standard deviation (GRPO)
    repetition_weight: float = 0.5  # times (repeated-line share + repeated-bigram share)
    degenerate_penalty: float = 0.5  # reward of an empty or one-line answer
    max_grad_norm: float = 1.0
    eval_samples_per_prompt: int = 4  # answers per held-out prompt to measure the rhyme rate
    seed: int = 42

    def __post_init__(self):
        at_least = {"max_steps": 1, "prompts_per_step": 1, "group_size": 2, "max_new_tokens": 1,
                    "eval_samples_per_prompt": 2}
        for name, low in at_least.items():
            if getattr(self, name) < low:
                raise ValueError(f"{name} must be >= {low}, got {getattr(self, name)}")
        positive = ("learning_rate", "temperature", "max_grad_norm")
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{f.name} must be a finite number, got {value}")
            if f.name in positive and value <= 0:
                raise ValueError(f"{f.name} must be > 0, got {value}")
            if f.name in ("beta", "repetition_weight", "degenerate_penalty") and value < 0:
                raise ValueError(f"{f.name} must be >= 0, got {value}")


# ---------------------------------------------------------------- the reward


def repeated_line_share(text: str) -> float:
    """Share of a text's non-empty lines that repeat an earlier line (case and punctuation ignored)."""
    keys = [" ".join(words(line)) for stanza in stanzas(text) for line in stanza]
    return (len(keys) - len(set(keys))) / len(keys) if keys else 0.0


def poem_reward(text: str, config: RewardConfig = RewardConfig()) -> float:
    """The verifiable reward of one answer: its consecutive-line rhyme rate (perfect rhymes),
    minus repetition_weight x (repeated-line share + repeated-bigram share); an answer with
    fewer than two lines gets -degenerate_penalty. Introduced in notebook 12."""
    lines = [line for stanza in stanzas(text) for line in stanza]
    if len(lines) < 2:  # empty, or one line: no pair to rhyme, nothing to learn from
        return -config.degenerate_penalty
    repetition = repeated_line_share(text) + repetition_rate([text], 2)
    return rhyme_pair_rate(text, accept=REWARD_RHYMES) - config.repetition_weight * repetition


def group_advantages(rewards, group_size: int, scale: bool = True) -> torch.Tensor:
    """Each reward minus the mean of its group (divided by the group's standard deviation when
    `scale`), groups being consecutive runs of group_size answers to one prompt. Notebook 12.

    The 1e-4 is TRL's: a group whose rewards are all equal gets advantages 0, not 0 / 0.
    """
    rewards = torch.as_tensor(rewards, dtype=torch.float32)
    if group_size < 2 or rewards.numel() % group_size:
        raise ValueError(f"need group_size >= 2 dividing the {rewards.numel()} rewards, got {group_size}")
    groups = rewards.view(-1, group_size)
    advantages = groups - groups.mean(dim=1, keepdim=True)
    if scale:
        advantages = advantages / (groups.std(dim=1, keepdim=True) + 1e-4)  # Bessel, as TRL
    return advantages.view(-1)


# ---------------------------------------------------------------- rollouts and the step


def _left_padded(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad_id)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row):], mask[i, width - len(row):] = torch.tensor(row), 1
    return ids, mask


@torch.no_grad()
def rollouts(model, tokenizer, prompts, config: RewardConfig) -> dict:
    """group_size sampled answers per prompt (rows grouped by prompt): token ids, masks, texts.

    Plain sampling at `temperature`, so the log-probabilities the step raises are those of the
    distribution the answers came from. An answer ends at its first EOS, which it keeps.
    """
    limit = context_length(model)
    rows = [encode_prompt(tokenizer, p, config.max_new_tokens, limit)[0].tolist()
            for p in prompts for _ in range(config.group_size)]
    ids, mask = _left_padded(rows, tokenizer.pad_token_id)
    device = next(model.parameters()).device
    out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=True,
                         temperature=config.temperature, top_k=0, top_p=1.0,
                         max_new_tokens=config.max_new_tokens, pad_token_id=tokenizer.pad_token_id)
    completion = out[:, ids.shape[1]:].cpu()
    is_eos = completion == tokenizer.eos_token_id
    # tokens up to and including the first EOS; generate pads finished rows with EOS after it
    completion_mask = (is_eos.cumsum(dim=1) - is_eos.long() == 0).long()
    texts = [tokenizer.decode(row[keep.bool()], skip_special_tokens=True)
             for row, keep in zip(completion, completion_mask)]
    return {"prompt_ids": ids, "prompt_mask": mask, "completion_ids": completion,
            "completion_mask": completion_mask, "texts": texts}


def completion_token_logps(model, batch: dict, temperature: float) -> torch.Tensor:
    """log p(token | everything before it) of each completion token at `temperature` (that of
    the rollouts), [rows, completion length]."""
    device = next(model.parameters()).device
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1).to(device)
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1).to(device)
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)  # left padding: count from the first real token
    n = batch["completion_ids"].shape[1]
    # logits_to_keep: only the n + 1 last positions go through the 50,257-way head
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions,
                   logits_to_keep=n + 1).logits[:, :-1].float()
    logps = torch.log_softmax(logits / temperature, dim=-1)
    return logps.gather(-1, ids[:, -n:].unsqueeze(-1)).squeeze(-1)


def policy_loss(logps, ref_logps, advantages, mask, beta: float):
    """REINFORCE with a group baseline, averaged over the batch's completion tokens, plus beta x
    the per-token KL estimate exp(r) - r - 1 with r = ref - policy (GRPO's "k3", >= 0)."""
    mask = mask.to(logps.dtype)
    per_token = -advantages.unsqueeze(1) * logps
    kl = torch.zeros_like(logps)
    if ref_logps is not None:
        diff = ref_logps - logps
        kl = torch.exp(diff) - diff - 1
        per_token = per_token + beta * kl
    tokens = mask.sum().clamp(min=1)
    return (per_token * mask).sum() / tokens, ((kl * mask).sum() / tokens).item()


def reinforce_step(model, ref_model, tokenizer, prompts, optimizer, config: RewardConfig) -> dict:
    """Sample a group of answers per prompt, score them, take one policy-gradient step."""
    device = next(model.parameters()).device
    batch = rollouts(model, tokenizer, prompts, config)
    rewards = [poem_reward(t, config) for t in batch["texts"]]
    advantages = group_advantages(rewards, config.group_size, config.scale_rewards).to(device)
    ref_logps = None
    if ref_model is not None:
        with torch.no_grad():
            ref_logps = completion_token_logps(ref_model, batch, config.temperature)
    loss, kl = policy_loss(completion_token_logps(model, batch, config.temperature), ref_logps, advantages,
                           batch["completion_mask"].to(device), config.beta)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
    optimizer.step()
    return {"reward": fmean(rewards), "rhyme": fmean(rhyme_pair_rate(t) for t in batch["texts"]),
            "kl": kl, "loss": loss.item()}


# ---------------------------------------------------------------- the stage


def prompt_batches(prompts, size: int, seed: int):
    """Endless batches of `size` different prompts, in a new shuffled order each pass (the
    pass's last, smaller batch is dropped; fewer prompts than `size`: all of them each time)."""
    order, rng = list(prompts), random.Random(seed)
    if not order:
        raise ValueError("no prompts to train on")
    while True:
        rng.shuffle(order)
        for start in range(0, max(len(order) - size, 0) + 1, size):
            yield order[start:start + size]


def measure_rhyme(model, tokenizer, prompts, decode: DecodeConfig, n_samples: int, seed: int) -> dict:
    """Mean consecutive-line rhyme-pair rate and distinct-2 of n_samples answers per prompt,
    sampled with the decoding a reader sees (`decode`), and the answers. Notebook 12."""
    answers = sample_answers(model, tokenizer, prompts, decode, n_samples, seed)
    texts = [t for group in answers for t in group]
    return {"rhyme_pair_rate": fmean(map(rhyme_pair_rate, texts)),
            "distinct_2": distinct_n(texts, 2), "answers": answers}


def train_reward(model, tokenizer, prompts, config: RewardConfig, *, eval_prompts,
                 decode: DecodeConfig, verbose: bool = True) -> dict:
    """Tune `model` in place on `prompts` with the verifiable reward; measure the rhyme-pair
    rate and distinct-2 on `eval_prompts` before and after. Introduced in notebook 12.

    Dropout stays off throughout (eval mode, gradients on): with it, the log-probabilities
    raised would not be those of the distribution that sampled the answers.
    """
    say = print if verbose else (lambda *a, **k: None)
    start = time.perf_counter()
    measure = dict(decode=decode, n_samples=config.eval_samples_per_prompt, seed=config.seed)
    before = measure_rhyme(model, tokenizer, eval_prompts, **measure)
    ref_model = copy.deepcopy(model).requires_grad_(False).eval() if config.beta > 0 else None
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=0.0)
    batches = prompt_batches(prompts, config.prompts_per_step, config.seed)
    set_seed(config.seed)
    model.eval()
    train_start, log = time.perf_counter(), []
    for step in range(config.max_steps):
        log.append(reinforce_step(model, ref_model, tokenizer, next(batches), optimizer, config))
        say(f"step {step + 1}/{config.max_steps}: reward {log[-1]['reward']:.3f}, rhyme-pair rate "
            f"{log[-1]['rhyme']:.3f}, KL {log[-1]['kl']:.4f} ({time.perf_counter() - train_start:.0f} s)")
    train_seconds = time.perf_counter() - train_start
    after = measure_rhyme(model, tokenizer, eval_prompts, **measure)
    result = {"rhyme_pair_rate_before": before["rhyme_pair_rate"],
              "rhyme_pair_rate_after": after["rhyme_pair_rate"],
              "distinct_2_before": before["distinct_2"], "distinct_2_after": after["distinct_2"],
              "steps": config.max_steps, "train_seconds": train_seconds,
              "wall_seconds": time.perf_counter() - start, "log": log,
              "answers_after": after["answers"]}
    say("rhyme-pair rate {rhyme_pair_rate_before:.3f} -> {rhyme_pair_rate_after:.3f}; distinct-2 "
        "{distinct_2_before:.3f} -> {distinct_2_after:.3f}; {steps} steps, {wall_seconds:.0f} s".format(**result))
    return result
