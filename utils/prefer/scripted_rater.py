"""A scripted rater for offline runs and CI: it prefers a property a reader can check.

Real preference pairs come from people clicking in notebook 09. A laptop or CI has no people,
so this rater samples several answers per prompt from the model, checks each for one
PROPERTY (a rule you can verify by eye), and prefers an answer that has it over one that does
not. Its pairs are SIMULATED: every pair carries `"simulated": True`, and notebook 12 and the
`prefer` stage say so. `measure` reports the property rate and distinct-2 of sampled answers,
before and after tuning. Introduced in notebook 12.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Callable

from utils.config import DecodeConfig
from utils.evaluate.metrics import distinct_n
from utils.generate.batched import generate_batched

RATER_NAME = "scripted-rater (SIMULATED)"
_WORD = re.compile(r"[A-Za-z']+")


@dataclass(frozen=True)
class Property:
    """A yes/no rule about one answer, with the sentence a reader checks it by."""

    name: str
    description: str
    check: Callable[[str], bool]


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def short_lines(text: str, max_words: int = 8) -> bool:
    """True when the answer has at least two lines and none is longer than max_words words."""
    lines = _lines(text)
    return len(lines) >= 2 and all(len(_WORD.findall(line)) <= max_words for line in lines)


def no_repeated_line(text: str) -> bool:
    """True when no line occurs twice (case and punctuation ignored) and there is some text."""
    keys = [" ".join(_WORD.findall(line.lower())) for line in _lines(text)]
    keys = [k for k in keys if k]
    return bool(keys) and len(keys) == len(set(keys))


PROPERTIES = {
    "short_lines": Property("short_lines", "the answer is verse: two or more lines, none over 8 words",
                            short_lines),
    "no_repeated_line": Property("no_repeated_line", "no line of the answer is repeated",
                                 no_repeated_line),
}
DEFAULT_PROPERTY = "short_lines"


def get_property(name: str | Property = DEFAULT_PROPERTY) -> Property:
    """A Property by name; ValueError listing the known ones."""
    if isinstance(name, Property):
        return name
    try:
        return PROPERTIES[name]
    except KeyError:
        raise ValueError(f"unknown property {name!r}; known: {', '.join(PROPERTIES)}") from None


def property_rate(texts, prop: str | Property = DEFAULT_PROPERTY) -> float:
    """Share of texts (0..1) that have the property."""
    texts, check = list(texts), get_property(prop).check
    if not texts:
        raise ValueError("property_rate needs at least one text")
    return sum(map(check, texts)) / len(texts)


def sample_answers(model, tokenizer, prompts, decode: DecodeConfig, n_samples: int,
                   seed: int = 0) -> list[list[str]]:
    """n_samples sampled answers per prompt (seeded): one list of answers per prompt.

    Each prompt is repeated n_samples times inside one generate batch, so its samples are
    different draws of the same random stream; the same seed gives the same answers.
    """
    prompts = list(prompts)
    if n_samples < 2:
        raise ValueError(f"n_samples must be >= 2 to compare answers, got {n_samples}")
    repeated = [p for p in prompts for _ in range(n_samples)]
    per_batch = max(1, 32 // n_samples) * n_samples  # whole prompts per batch, ~32 rows
    texts = generate_batched(model, tokenizer, repeated, decode, seed=seed, batch_size=per_batch)
    return [texts[i * n_samples:(i + 1) * n_samples] for i in range(len(prompts))]


def scripted_pairs(prompts, answers, prop: str | Property = DEFAULT_PROPERTY,
                   max_pairs_per_prompt: int = 4, seed: int = 0) -> tuple[list[dict], dict]:
    """(pairs, dropped): each pair prefers an answer with the property over one without. SIMULATED.

    Every answer with the property is a candidate winner against every answer without it; at
    most max_pairs_per_prompt such pairs are drawn per prompt (seeded), so no prompt dominates.
    A prompt whose answers all have the property, or none does, gives no pair: the rater would
    call it a tie. `dropped` counts those prompts and identical texts.
    """
    check, rng = get_property(prop).check, random.Random(seed)
    pairs, dropped = [], {"tie_all_have": 0, "tie_none_has": 0, "identical_texts": 0}
    for prompt, texts in zip(prompts, answers, strict=True):
        good = [t for t in dict.fromkeys(texts) if check(t)]  # dict.fromkeys: drop duplicates
        bad = [t for t in dict.fromkeys(texts) if not check(t)]
        dropped["identical_texts"] += len(texts) - len(good) - len(bad)
        if not good or not bad:
            dropped["tie_none_has" if not good else "tie_all_have"] += 1
            continue
        candidates = [(g, b) for g in good for b in bad]
        for chosen, rejected in rng.sample(candidates, min(max_pairs_per_prompt, len(candidates))):
            pairs.append({"prompt": prompt, "chosen": chosen, "rejected": rejected,
                          "rater": RATER_NAME, "simulated": True})
    return pairs, dropped


def measure(model, tokenizer, prompts, decode: DecodeConfig, n_samples: int = 4, seed: int = 0,
            prop: str | Property = DEFAULT_PROPERTY) -> dict:
    """Property rate and distinct-2 of n_samples sampled answers per prompt, and the answers."""
    answers = sample_answers(model, tokenizer, prompts, decode, n_samples, seed)
    texts = [t for group in answers for t in group]
    return {"property": property_rate(texts, prop), "distinct_2": distinct_n(texts, 2),
            "answers": answers}
