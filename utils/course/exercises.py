"""Checks for the notebooks' exercises: a student's answer passes, or fails with a hint.

Each notebook ends with a cell of `answers` (None = not answered yet) and calls `check_all`
with the expected values it computes from its own objects; a cell tagged `solution` runs the
same checks on the reference answers, so the notebook test proves every check passes on them.
The small functions below compute the expected values the notebooks cannot read off a cell.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable


class ExerciseError(AssertionError):
    """An answer that does not match: the message names the exercise and gives a hint."""


@dataclass(frozen=True)
class Check:
    """What one exercise expects: a value (compared with `rel_tol` for numbers) and a hint."""

    expected: Any
    hint: str
    rel_tol: float = 1e-3


def _matches(answer, expected, rel_tol: float) -> bool:
    if callable(expected):  # a predicate, e.g. a check of a function the student wrote
        return bool(expected(answer))
    if isinstance(expected, bool) or isinstance(answer, bool):
        return answer is expected
    if isinstance(expected, (int, float)) and isinstance(answer, (int, float)):
        return math.isclose(answer, expected, rel_tol=rel_tol, abs_tol=1e-12)
    if isinstance(expected, str) and isinstance(answer, str):
        return answer.strip().lower() == expected.strip().lower()
    return answer == expected


def check_all(notebook: str, answers: dict, checks: dict[Any, Check]) -> dict:
    """Check every answered exercise; raise ExerciseError with the hint of the first wrong one.

    Returns {exercise: "correct" | "not answered yet"} so a notebook can print its progress.
    """
    unknown = set(answers) - set(checks)
    if unknown:
        raise ValueError(f"notebook {notebook}: no exercise {sorted(unknown)}; the exercises are {sorted(checks)}")
    status = {}
    for key, check in checks.items():
        answer = answers.get(key)
        if answer is None:
            status[key] = "not answered yet"
            continue
        if not _matches(answer, check.expected, check.rel_tol):
            raise ExerciseError(f"notebook {notebook}, exercise {key}: {answer!r} is not right yet. "
                                f"Hint: {check.hint}")
        status[key] = "correct"
    print(f"notebook {notebook}:", ", ".join(f"{k}: {v}" for k, v in status.items()))
    return status


# ---------------------------------------------------------------- expected values, by notebook


def skipgram_pairs(n_words: int, window: int) -> int:
    """(centre, context) pairs of a stream of n_words: each offset 1..window, both directions. 01."""
    return 2 * sum(max(n_words - offset, 0) for offset in range(1, window + 1))


def untrained_skipgram_loss(negatives: int) -> float:
    """Skip-gram loss when every score is 0: -log sigma(0) for the pair and each negative. 01."""
    return (1 + negatives) * math.log(2)


def repetition_penalty_matches_transformers(fn: Callable, penalty: float = 2.0) -> bool:
    """True if fn(logits, input_ids, penalty) matches transformers' repetition penalty. 03.

    The probe repeats token 0 three times: the library penalises a seen token once, however
    often it was seen, and multiplies negative logits instead of dividing them.
    """
    import torch
    from transformers import RepetitionPenaltyLogitsProcessor

    logits = torch.tensor([[2.0, -2.0, 1.0, 0.5]])
    input_ids = torch.tensor([[0, 0, 0, 1]])
    expected = RepetitionPenaltyLogitsProcessor(penalty)(input_ids, logits.clone())
    return torch.allclose(fn(logits.clone(), input_ids, penalty), expected)


def lora_weights(model, target_modules, r: int) -> int:
    """LoRA weights r x (d_in + d_out) summed over the linear layers whose name ends in a target. 06."""
    total = 0
    for name, module in model.named_modules():
        if name.split(".")[-1] in target_modules and hasattr(module, "weight") and module.weight.dim() == 2:
            total += r * sum(module.weight.shape)  # Linear (out, in) or GPT-2's Conv1D (in, out)
    return total


def naive_accumulation_weights(token_counts: list[int]) -> list[float]:
    """Weight of one token of each micro-batch when each micro-batch's mean loss is averaged. 11.

    Correct weighting gives every token 1 / sum(token_counts); the naive mean of means gives a
    token of micro-batch i the weight 1 / (k * n_i), so the return value is naive / correct.
    """
    k, total = len(token_counts), sum(token_counts)
    return [total / (k * n) for n in token_counts]


def real_token_loss(reported: float, real_tokens: int, length: int, padding_loss: float = 0.0) -> float:
    """The loss on real tokens that a mean `reported` over `length` positions implies. 07.

    The reported mean weighs real tokens and padding by their counts:
    reported = (real x L_real + (length - real) x padding_loss) / length.
    """
    if not 0 < real_tokens <= length:
        raise ValueError(f"real_tokens must be in 1..length ({length}), not {real_tokens}")
    return (reported * length - (length - real_tokens) * padding_loss) / real_tokens
