"""Tuned models side by side: what each moved, and what each cost, on the same held-out prompts.

Notebook 13 puts DPO from (simulated) clicks beside the reward stage. Each model, the starting
one included, answers the same prompts with the reader's decoding and the same seed; the
table holds the rhyme-pair rate the reward pays for, the short-lines rate the scripted rater
prefers, distinct-2 (variety), the mean log-ratio to the starting model on the tuned model's
own answers (how far it drifted) and the longest run of words shared with a training poem.
"""

from __future__ import annotations

from statistics import fmean

import pandas as pd
import torch

from utils.config import DecodeConfig
from utils.evaluate.evaluation import MEMORISED, poetry_scores
from utils.evaluate.metrics import distinct_n
from utils.generate.decoding import context_length, encode_prompt
from utils.models.loading import eval_mode
from utils.prefer.scripted_rater import property_rate, sample_answers


@torch.no_grad()
def answer_logprob(model, tokenizer, prompt: str, answer: str) -> tuple[float, int]:
    """(sum of log p of the answer's tokens after the prompt, number of tokens)."""
    device = next(model.parameters()).device
    prompt_ids = encode_prompt(tokenizer, prompt, 1, context_length(model))[0]
    answer_ids = torch.tensor(tokenizer(answer, add_special_tokens=False)["input_ids"], dtype=torch.long)
    if answer_ids.numel() == 0:
        return 0.0, 0
    ids = torch.cat([prompt_ids, answer_ids])[-context_length(model):].unsqueeze(0).to(device)
    with eval_mode(model):
        logits = model(input_ids=ids).logits[0, :-1].float()
    logps = torch.log_softmax(logits, dim=-1).gather(-1, ids[0, 1:, None]).squeeze(-1)
    return logps[-answer_ids.numel():].sum().item(), answer_ids.numel()


def log_ratio(model, start_model, tokenizer, prompts, answers) -> float:
    """Mean over tokens of log p_model - log p_start on the model's own answers (nats a token):
    an estimate of the KL from the starting model when the answers are samples of `model`."""
    total, tokens = 0.0, 0
    for prompt, group in zip(prompts, answers):
        for answer in group:
            mine, n = answer_logprob(model, tokenizer, prompt, answer)
            theirs, _ = answer_logprob(start_model, tokenizer, prompt, answer)
            total, tokens = total + mine - theirs, tokens + n
    return total / tokens if tokens else 0.0


def compare_tuned(start_model, tuned: dict, tokenizer, prompts, decode: DecodeConfig,
                  training_poems=(), n_samples: int = 2, seed: int = 0) -> pd.DataFrame:
    """One row for the starting model and one per tuned model ({name: model}). Notebook 13."""
    rows = {}
    for name, model in {"stage 2 (start)": start_model, **tuned}.items():
        answers = sample_answers(model, tokenizer, prompts, decode, n_samples, seed)
        texts = [t for group in answers for t in group]
        scores = poetry_scores(texts, training_poems)
        rows[name] = {"rhyme-pair rate": scores["rhyme_pair_rate"],
                      "short-lines rate": property_rate(texts, "short_lines"),
                      "distinct-2": distinct_n(texts, 2),
                      "log-ratio to start": (0.0 if model is start_model else
                                             log_ratio(model, start_model, tokenizer, prompts, answers)),
                      "longest run from a training poem": scores.get(MEMORISED),
                      "mean answer words": fmean(len(t.split()) for t in texts) if texts else 0.0}
    return pd.DataFrame(rows).T
