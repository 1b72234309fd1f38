"""Cross-dataset contamination: stage-2 answers that are (or copy from) stage-1 training poems.

The instruction data's answers are poems. When one of them is also a stage-1 poem, the
model has read it before stage 2 and its stage-2 test loss is flattered. Three checks, from
strict to loose: the same text, the same text after lowercasing and collapsing whitespace,
and one shared run of n words (n = 13, the length GPT-3's contamination study used; Brown
et al. 2020, appendix C). Introduced in notebook 05.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

_WORD = re.compile(r"\w+")


def normalise_for_matching(text: str) -> str:
    """Lowercase and collapse all whitespace: texts equal after this count as copies."""
    return " ".join(str(text).lower().split())


def word_ngrams(text: str, n: int) -> set[str]:
    """The set of n-word runs of a text (lowercased words, punctuation ignored), joined by spaces."""
    words = _WORD.findall(str(text).lower())
    return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}


@dataclass
class Contamination:
    """Which answers overlap which poems, by each check (indices into the lists given)."""

    exact: set[int] = field(default_factory=set)  # answers identical to a poem
    normalised: set[int] = field(default_factory=set)  # identical after normalising
    ngram: set[int] = field(default_factory=set)  # sharing at least one n-word run
    poems: set[int] = field(default_factory=set)  # poems that any check links to an answer

    @property
    def answers(self) -> set[int]:
        return self.exact | self.normalised | self.ngram


def find_contamination(poems: list[str], answers: list[str], n: int = 13) -> Contamination:
    """Compare every answer with every poem: exactly, normalised, and by shared n-word runs."""
    found = Contamination()
    exact = defaultdict(list)
    normal = defaultdict(list)
    for i, poem in enumerate(poems):
        exact[poem.strip()].append(i)
        normal[normalise_for_matching(poem)].append(i)
    # Index the answers' n-grams once; each poem then costs one pass over its own words.
    by_gram = defaultdict(set)
    for j, answer in enumerate(answers):
        if answer.strip() in exact:
            found.exact.add(j)
            found.poems.update(exact[answer.strip()])
        if normalise_for_matching(answer) in normal:
            found.normalised.add(j)
            found.poems.update(normal[normalise_for_matching(answer)])
        for gram in word_ngrams(answer, n):
            by_gram[gram].add(j)
    for i, poem in enumerate(poems):
        hits = set().union(*(by_gram.get(g, ()) for g in word_ngrams(poem, n)))
        if hits:
            found.ngram.update(hits)
            found.poems.add(i)
    return found


def contamination_report(poems: list[str], splits: dict[str, list[tuple[str, str]]],
                         n: int = 13) -> tuple[dict, dict[str, Contamination]]:
    """Counts per stage-2 split of answers overlapping stage-1 poems, and the matches themselves."""
    matches = {split: find_contamination(poems, [c for _, c in pairs], n)
               for split, pairs in splits.items()}
    report = {"ngram": n, "poems_compared": len(poems)}
    for split, found in matches.items():
        report[split] = {"answers": len(splits[split]), "exact": len(found.exact),
                         "normalised": len(found.normalised), f"{n}gram": len(found.ngram),
                         "any": len(found.answers), "poems_involved": len(found.poems)}
    report["poems_involved"] = len(set().union(*(f.poems for f in matches.values())))
    return report, matches


def drop_contaminated(poems: list, splits: dict[str, list], matches: dict[str, Contamination],
                      what: str) -> tuple[list, dict[str, list], int]:
    """(poems, splits, rows dropped) without the overlapping poems ('poems') or answers ('instructions')."""
    if what == "none":
        return poems, splits, 0
    if what == "poems":  # stage 1 gives way: the stage-2 splits stay as shipped
        bad = set().union(*(f.poems for f in matches.values()))
        return [p for i, p in enumerate(poems) if i not in bad], splits, len(bad)
    if what == "instructions":
        kept = {s: [r for j, r in enumerate(rows) if j not in matches[s].answers]
                for s, rows in splits.items()}
        return poems, kept, sum(len(splits[s]) - len(kept[s]) for s in splits)
    raise ValueError(f"drop_contaminated must be 'none', 'poems' or 'instructions', got {what!r}")
