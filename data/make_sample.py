"""Build data/sample from the original poems in data/sample/source (deterministic).

Writes
- data/sample/PoetryFoundationData.csv: the Poetry Foundation schema with its quirks
  (an unnamed index column, \\r\\r\\n line breaks, padded titles, empty poems, missing tags,
  duplicate rows), so the cleaning code meets the same mess as on the real file;
- data/sample/poetry-instructions/{train,validation,test}.jsonl: one `conversation` column
  in the four templates of the poetry-instructions dataset, with the real dataset's quirks
  (a few validation and test rows repeated in train, a few very long rows).

Run: python data/make_sample.py   (same input -> byte-identical output)
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "sample" / "source"
OUT = HERE / "sample"
SEED = 1234

STOPWORDS = set("""a an the and or but if of to in on at by for with from into onto over under
as is are was were be been being am i me my we our you your he him his she her it its they them
their this that these those there here what which who whom whose when where why how all any
each every no not nor so than too very can will just do does did done have has had would could
should shall may might must up down out off again then once only own same some such both few
more most other one two three like upon through still yet till until while let lets s t o oh
""".split())

TEMPLATES = {
    "continue": ("Can you continue this poem for me? {head}",
                 "Sure, a continuation for this poem could be:\n{tail}"),
    "style": ("Can you write a poem for me in the style of {poet}?",
              "Sure, here's a poem in the style of {poet}:\n{poem}"),
    "about": ("Can you write me a poem about {keywords}?",
              "Sure, here's a poem about {keywords}:\n{poem}"),
    "about_style": ("Can you write me a poem about {keywords} in the style of {poet}?",
                    "Sure, here's a poem about {keywords} in the style of {poet}:\n{poem}"),
}


def parse_source(text: str) -> list[dict]:
    """Poems of one source file (format: data/sample/source/FORMAT.md)."""
    poems = []
    for block in re.split(r"(?m)^=== ", text):
        if not block.strip():
            continue
        head, _, body = block.partition("\n---\n")
        fields = dict(line.split(":", 1) for line in head.splitlines() if ":" in line)
        poems.append({"title": fields["Title"].strip(), "poet": fields["Poet"].strip(),
                      "tags": fields.get("Tags", "").strip(), "form": fields.get("Form", "").strip(),
                      "poem": body.strip("\n")})
    return poems


def read_all_poems() -> list[dict]:
    poems = []
    for path in sorted(SOURCE.glob("*.txt")):
        poems.extend(parse_source(path.read_text(encoding="utf-8")))
    return poems


def keywords(poem: str, k: int = 2) -> str:
    """The k most frequent content words (ties: longer first, then alphabetical)."""
    words = [w for w in re.findall(r"[a-z']+", poem.lower()) if w not in STOPWORDS and len(w) > 3]
    ranked = sorted(Counter(words).items(), key=lambda kv: (-kv[1], -len(kv[0]), kv[0]))
    return " and ".join(w for w, _ in ranked[:k]) or "the world"


def conversation(template: str, poem: dict) -> str | None:
    user, assistant = TEMPLATES[template]
    lines = poem["poem"].split("\n")
    half = len(lines) // 2
    if template == "continue" and half < 2:
        return None
    values = {"poet": poem["poet"], "poem": poem["poem"], "keywords": keywords(poem["poem"]),
              "head": "\n".join(lines[:half]).strip(), "tail": "\n".join(lines[half:]).strip()}
    return f"User: {user.format(**values)}\nAssistant: {assistant.format(**values)}"


def instruction_rows(poems: list[dict]) -> dict[str, list[str]]:
    """Conversations per split; each poem's conversations stay in one split (80/5/15)."""
    rng = random.Random(SEED)
    order = list(range(len(poems)))
    rng.shuffle(order)
    n_test, n_val = round(0.15 * len(poems)), round(0.05 * len(poems))
    split_of = {i: "test" for i in order[:n_test]}
    split_of.update({i: "validation" for i in order[n_test:n_test + n_val]})
    rows = {"train": [], "validation": [], "test": []}
    names = list(TEMPLATES)
    for i, poem in enumerate(poems):
        chosen = [names[i % 4]] + (["continue"] if i % 3 == 0 and names[i % 4] != "continue" else [])
        for template in chosen:
            text = conversation(template, poem)
            if text:
                rows[split_of.get(i, "train")].append(text)
    # Quirk of the real dataset: train repeats some validation and test rows (leakage).
    rows["train"] += rows["validation"][:2] + rows["test"][:4]
    # ... and one that differs only in case and spacing, which an exact match would miss.
    rows["train"].append(rows["test"][4].replace("User: Can", "User:  can", 1))
    # Quirk: a few huge rows, far over any sensible max_length.
    for poet in sorted({p["poet"] for p in poems})[:2]:
        body = "\n\n".join(p["poem"] for p in poems if p["poet"] == poet)
        rows["train"].append(f"User: Can you write a poem for me in the style of {poet}?\n"
                             f"Assistant: Sure, here's a poem in the style of {poet}:\n{body}")
    rng.shuffle(rows["train"])
    return rows


def quirky_csv_frame(poems: list[dict]) -> pd.DataFrame:
    """The Poetry Foundation CSV's mess, applied to our poems."""
    rows = []
    for p in poems:
        body = p["poem"].replace("\n", "\r\r\n")
        rows.append({"Title": f"\r\r\n                    {p['title']}\r\r\n                    ",
                     "Poem": f"\r\r\n{body}\r\r\n", "Poet": p["poet"],
                     "Tags": p["tags"] or None})
    # Two entries whose poem text is empty, as in the real file.
    rows.insert(7, {**rows[7], "Poem": "", "Tags": None})
    rows.insert(40, {**rows[40], "Poem": "\r\r\n \r\r\n"})
    # Duplicates: two exact copies and one that differs only in spacing.
    rows.append(dict(rows[3]))
    rows.append(dict(rows[20]))
    rows.append({**rows[30], "Poem": rows[30]["Poem"].replace("\r\r\n", "\r\r\n  ", 1)})
    return pd.DataFrame(rows, columns=["Title", "Poem", "Poet", "Tags"])


def main() -> None:
    poems = read_all_poems()
    quirky_csv_frame(poems).to_csv(OUT / "PoetryFoundationData.csv", index=True, lineterminator="\n")
    folder = OUT / "poetry-instructions"
    folder.mkdir(exist_ok=True)
    for split, texts in instruction_rows(poems).items():
        with open(folder / f"{split}.jsonl", "w", encoding="utf-8", newline="\n") as fh:
            for text in texts:
                fh.write(json.dumps({"conversation": text}, ensure_ascii=False) + "\n")
        print(f"{split}: {len(texts)} conversations")
    print(f"{len(poems)} poems by {len({p['poet'] for p in poems})} poets -> {OUT}")


if __name__ == "__main__":
    main()
