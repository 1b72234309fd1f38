"""A reinforcement stage with a verifiable reward: the model learns to rhyme from a program.

DPO (utils/prefer/dpo.py) learns from pairs a rater chose between. Here no rater is needed: every
sampled answer is scored by `utils/evaluate/poetry.py`, a rule anyone can check. For each
prompt the model samples a group of answers, and two signals drive one policy-gradient step:

- rhyme, credited to the words that make it. A line's last word (with the line break after
  it) is the choice that rhymes or not, so it alone earns `pair_score(line before, line)`;
  its advantage is that score minus the mean over all end words of the group, divided by
  their spread.
- form, for the whole answer: an empty or one-line answer, repeated lines and repeated word
  pairs cost reward, and word pairs no other answer of the group uses earn some (without
  that, the group drifts into one poem). Its advantage is `group_advantages`: minus the
  group's mean, over the group's standard deviation, as GRPO computes it (Shao et al. 2024;
  tests/test_reward.py checks ours against TRL's GRPOTrainer).

This is REINFORCE with a group baseline (Williams 1992): one update per batch of samples,
so no importance ratio or clipping is needed, plus beta x a KL penalty to the starting model.
Why end words get the rhyme credit: a whole answer's reward, spread over all its tokens (GRPO's
way, `rhyme_credit="answer"`), says that the answer was good but not which word made the
rhyme; credit on the end word points at the choice. Notebook 13's exercise compares the two.
Introduced in notebook 13.
"""

from __future__ import annotations

import copy
import math
import random
import time
from dataclasses import dataclass, fields, replace
from statistics import fmean

import torch

from utils.config import DecodeConfig, get_profile
from utils.env import set_seed
from utils.evaluate.metrics import distinct_n, repetition_rate
from utils.evaluate.poetry import (WORD, assonance, end_word, line_pairs, rhyme_class, rhyme_pair_rate,
                                   stanzas, words)
from utils.generate.decoding import context_length, encode_prompt
from utils.generate.sampling import sample
from utils.prefer.scripted_rater import sample_answers


RHYME_CREDIT = ("end_words", "answer")  # which tokens a rhyme's advantage goes to


@dataclass(frozen=True)
class RewardConfig:
    """The reward stage's settings: rollouts, the policy-gradient step, the reward's weights."""

    max_steps: int = 40
    prompts_per_step: int = 4
    group_size: int = 8  # answers sampled per prompt: 4 x 8 = 32 rollouts a step
    learning_rate: float = 1e-3
    beta: float = 0.04  # weight of the KL penalty to the starting model (0: none, no copy kept)
    temperature: float = 0.7  # the rollouts' (and the profile's decoding), no top-p
    max_new_tokens: int = 32
    scale_rewards: bool = True  # divide advantages by the group's standard deviation (GRPO)
    rhyme_credit: str = "end_words"  # or "answer": the mean pair score joins the answer's reward
    near_rhyme_weight: float = 0.5  # what a slant rhyme or assonance earns (a perfect one: 1)
    repetition_weight: float = 0.5  # times (repeated-line share + repeated-bigram share)
    degenerate_penalty: float = 0.5  # taken from an answer without two lines in a stanza
    novelty_weight: float = 0.5  # times the share of bigrams no other answer of the group has
    form_weight: float = 0.25  # the form advantage's share beside the end words' rhyme (end_words credit)
    max_grad_norm: float = 1.0
    eval_samples_per_prompt: int = 4  # answers per held-out prompt to measure the rhyme rate
    seed: int = 42

    def __post_init__(self):
        if self.rhyme_credit not in RHYME_CREDIT:
            raise ValueError(f"rhyme_credit must be one of {', '.join(RHYME_CREDIT)}, got {self.rhyme_credit!r}")
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
            if isinstance(value, float) and value < 0 or f.name in positive and value <= 0:
                raise ValueError(f"{f.name} must be {'> 0' if f.name in positive else '>= 0'}, got {value}")


# The real profiles train every weight of a model 17x (gpt2) to 190x (deepseek) the pocket
# model's size: GRPO recipes use rates of 1e-6 to 1e-5 there. Not run yet: no GPU here.
REWARD_CONFIGS = {
    "gpt2": RewardConfig(learning_rate=1e-5, max_new_tokens=64),
    "deepseek": RewardConfig(learning_rate=2e-6, max_new_tokens=64, prompts_per_step=2),
}


def reward_config(profile=None, **changes) -> RewardConfig:
    """The RewardConfig of a profile (the defaults above are the tiny profiles'), with
    `changes` applied (e.g. max_steps=10)."""
    base = REWARD_CONFIGS.get(get_profile(profile).name, RewardConfig())
    return replace(base, **changes)


# ---------------------------------------------------------------- the reward

# Words that cannot end a finished line. The dictionary lets some of them rhyme ("of" AH1 V
# with "love", "a" EY1 with "day"): a model paid for those rhymes learns to break lines mid-phrase.
UNFINISHED_ENDINGS = frozenset("a an the and or nor of my thy your our their its".split())


def pair_score(a: str, b: str, near_rhyme_weight: float) -> float:
    """1 for two lines that rhyme perfectly, near_rhyme_weight for a slant rhyme or assonance
    ("day" / "gate"), else 0. Spelling guesses earn nothing: they would pay for made-up words;
    nor does a line that ends on one of UNFINISHED_ENDINGS. Introduced in notebook 13.

    Perfect rhymes alone are rare in a small model's samples (the tiny stage-2 model's
    held-out rhyme-pair rate: 0.000, notebook 13), so most groups would score all alike and
    teach nothing; near rhymes are more common and lead to perfect ones: with no consonant
    after the vowel ("be" / "sea"), assonance is rhyme.
    """
    if {end_word(a), end_word(b)} & UNFINISHED_ENDINGS:
        return 0.0
    kind = rhyme_class(a, b)
    if kind == "perfect":
        return 1.0
    return near_rhyme_weight if kind == "slant" or (kind != "identical" and assonance(a, b)) else 0.0


def rhyme_scores(text: str, near_rhyme_weight: float) -> list[tuple[int, int, float]]:
    """(start, end, score) for each line that follows a line of its stanza: the characters of
    its last word and the line break after it, and its pair_score with the line before.
    Introduced in notebook 13."""
    scored, previous, start = [], None, 0
    for line in text.split("\n"):
        if previous is not None and line.strip():
            found = list(WORD.finditer(line))
            first = start + (found[-1].start() if found else 0)
            # the line break after the word belongs to the choice: end the line here
            scored.append((first, start + len(line) + 1, pair_score(previous, line, near_rhyme_weight)))
        previous = line if line.strip() else None  # a blank line ends the stanza (poetry.stanzas)
        start += len(line) + 1
    return scored


def repeated_line_share(text: str) -> float:
    """Share of a text's non-empty lines that repeat an earlier line (case and punctuation ignored)."""
    keys = [" ".join(words(line)) for stanza in stanzas(text) for line in stanza]
    return (len(keys) - len(set(keys))) / len(keys) if keys else 0.0


def form_penalty(text: str, config: RewardConfig) -> float:
    """-degenerate_penalty for an answer with no two lines in a stanza (empty, one line, no
    line break), else -repetition_weight x (repeated-line share + repeated-bigram share)."""
    if not line_pairs(text):
        return -config.degenerate_penalty
    return -config.repetition_weight * (repeated_line_share(text) + repetition_rate([text], 2))


def poem_reward(text: str, config: RewardConfig = RewardConfig()) -> float:
    """The verifiable reward of one answer: the mean pair_score of its consecutive lines plus
    its form_penalty. Introduced in notebook 13."""
    scores = [score for _, _, score in rhyme_scores(text, config.near_rhyme_weight)]
    return (fmean(scores) if scores else 0.0) + form_penalty(text, config)


def _bigrams(text: str) -> list[tuple[str, ...]]:
    tokens = text.lower().split()  # distinct_n's tokens
    return list(zip(tokens, tokens[1:]))


def group_novelty(texts, group_size: int) -> list[float]:
    """Share of each answer's bigrams that no other answer of its group (consecutive runs of
    group_size) contains; 0.0 for an answer without bigrams."""
    novelty = []
    for first in range(0, len(texts), group_size):
        group = [_bigrams(t) for t in texts[first:first + group_size]]
        for i, mine in enumerate(group):
            others = {b for j, theirs in enumerate(group) if j != i for b in theirs}
            novelty.append(sum(b not in others for b in mine) / len(mine) if mine else 0.0)
    return novelty


# ---------------------------------------------------------------- advantages


def group_advantages(rewards, group_size: int, scale: bool = True) -> torch.Tensor:
    """Each reward minus the mean of its group (divided by the group's standard deviation when
    `scale`), groups being consecutive runs of group_size answers to one prompt. Notebook 13.

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


def end_word_advantages(scores: list[list[float]], group_size: int, scale: bool = True) -> list[list[float]]:
    """group_advantages for end words: each answer's list of end-word scores, centred on (and
    scaled by) the mean and spread of all end words in its group; a group with fewer than two
    end words has nothing to compare and gets zeros."""
    advantages = []
    for first in range(0, len(scores), group_size):
        group = scores[first:first + group_size]
        pooled = torch.tensor([s for answer in group for s in answer])
        if pooled.numel() < 2:
            advantages += [[0.0] * len(answer) for answer in group]
            continue
        mean, spread = pooled.mean().item(), (pooled.std().item() + 1e-4 if scale else 1.0)
        advantages += [[(s - mean) / spread for s in answer] for answer in group]
    return advantages


def token_advantages(batch: dict, tokenizer, config: RewardConfig) -> torch.Tensor:
    """[rows, completion length]: every token carries its answer's form advantage (times
    form_weight); the tokens of an end word (and its line break) add that end word's rhyme
    advantage. With
    rhyme_credit="answer", the answer's mean pair score joins its form reward instead, and
    every token carries the advantage of the sum (GRPO's one advantage an answer)."""
    texts, group = batch["texts"], config.group_size
    form = [form_penalty(t, config) for t in texts]
    form = [f + config.novelty_weight * n for f, n in zip(form, group_novelty(texts, group))]
    scored = [rhyme_scores(t, config.near_rhyme_weight) for t in texts]
    if config.rhyme_credit == "answer":
        form = [f + (fmean(s for *_, s in row) if row else 0.0) for f, row in zip(form, scored)]
    advantages = group_advantages(form, group, config.scale_rewards).unsqueeze(1).repeat(
        1, batch["completion_ids"].shape[1])
    if config.rhyme_credit == "answer":
        return advantages
    # The form advantage sits on every token, the rhyme advantage on a few end words: at full
    # weight the form's share of the gradient dwarfs the rhyme's. Trials on the tiny stage-2
    # model of the first, 4 x 128 pocket base (2026-12-05, tools/reward_trials.py): at weight 1,
    # 2 of 14 runs (seeds and other settings) raised the held-out rhyme-pair rate by 0.13 or
    # more; at 0.5 or 0.25, 5 of 8 did. On the 8 x 128 base without attention dropout
    # (2026-12-06, weight 0.25, one stage-2 model of notebook 07): seeds 1-4 moved it by +0.020,
    # -0.003, +0.580 and +0.001, so 1 of 4; seed 42, the notebook's, rose in all 3 of its runs
    # that day (+0.12 to +0.16), and by +0.005 in the next suite, whose stage 2 trained through
    # the reworked chunked loss (the same loss, other rounding): another draw.
    advantages = config.form_weight * advantages
    rhyme = end_word_advantages([[s for *_, s in row] for row in scored], group, config.scale_rewards)
    for i, (spans, adv) in enumerate(zip(scored, rhyme)):
        ids = batch["completion_ids"][i][batch["completion_mask"][i].bool()].tolist()
        ends = [len(tokenizer.decode(ids[:t + 1], skip_special_tokens=True)) for t in range(len(ids))]
        for (start, end, _), a in zip(spans, adv):
            for t, (token_start, token_end) in enumerate(zip([0] + ends[:-1], ends)):
                if token_start < end and token_end > start:  # the token overlaps the end word
                    advantages[i, t] += a
    return advantages


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
    distribution the answers came from (utils/generate/sampling.py: the distribution of
    `generate(do_sample=True)`, without its costly draw on a CPU). An answer ends at its first
    EOS, which it keeps.
    """
    limit = context_length(model)
    rows = [encode_prompt(tokenizer, p, config.max_new_tokens, limit)[0].tolist()
            for p in prompts for _ in range(config.group_size)]
    ids, mask = _left_padded(rows, tokenizer.pad_token_id)
    device = next(model.parameters()).device
    completion = sample(model, ids.to(device), mask.to(device), config.max_new_tokens,
                        config.temperature, tokenizer.eos_token_id).cpu()
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
    """(loss, mean KL): -advantage x log p averaged over the batch's completion tokens, plus
    beta x the per-token KL estimate exp(r) - r - 1 with r = ref - policy (GRPO's "k3", >= 0)."""
    mask = mask.to(logps.dtype)
    per_token = -advantages * logps
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
    advantages = token_advantages(batch, tokenizer, config).to(device)
    ref_logps = None
    if ref_model is not None:
        with torch.no_grad():
            ref_logps = completion_token_logps(ref_model, batch, config.temperature)
    loss, kl = policy_loss(completion_token_logps(model, batch, config.temperature), ref_logps,
                           advantages, batch["completion_mask"].to(device), config.beta)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
    optimizer.step()
    texts = batch["texts"]
    return {"reward": fmean(poem_reward(t, config) for t in texts),
            "rhyme": fmean(map(rhyme_pair_rate, texts)), "kl": kl, "loss": loss.item()}


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
    sampled with the decoding a reader sees (`decode`), and the answers. Notebook 13."""
    answers = sample_answers(model, tokenizer, prompts, decode, n_samples, seed)
    texts = [t for group in answers for t in group]
    return {"rhyme_pair_rate": fmean(map(rhyme_pair_rate, texts)),
            "distinct_2": distinct_n(texts, 2), "answers": answers}


def train_reward(model, tokenizer, prompts, config: RewardConfig, *, eval_prompts,
                 decode: DecodeConfig, verbose: bool = True) -> dict:
    """Tune `model` in place on `prompts` with the verifiable reward; measure the rhyme-pair
    rate and distinct-2 on `eval_prompts` before and after. Introduced in notebook 13.

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
            f"{log[-1]['rhyme']:.3f}, KL {log[-1]['kl']:.3f} ({time.perf_counter() - train_start:.0f} s)")
    train_seconds = time.perf_counter() - train_start
    after = measure_rhyme(model, tokenizer, eval_prompts, **measure)
    result = {"rhyme_pair_rate_before": before["rhyme_pair_rate"],
              "rhyme_pair_rate_after": after["rhyme_pair_rate"],
              "distinct_2_before": before["distinct_2"], "distinct_2_after": after["distinct_2"],
              "kl_last_step": log[-1]["kl"], "steps": config.max_steps,
              "train_seconds": train_seconds, "wall_seconds": time.perf_counter() - start,
              "log": log, "answers_after": after["answers"]}
    say("rhyme-pair rate {rhyme_pair_rate_before:.3f} -> {rhyme_pair_rate_after:.3f}; distinct-2 "
        "{distinct_2_before:.3f} -> {distinct_2_after:.3f}; KL {kl_last_step:.2f} a token; "
        "{steps} steps, {wall_seconds:.0f} s".format(**result))
    return result
