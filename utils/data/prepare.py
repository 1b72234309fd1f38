"""The data stage: clean the poems, format the conversations, split, check for leakage.

hub dataset or data/sample (utils.data.sources) -> clean -> (prompt, completion) -> split +
leakage and contamination checks -> tokenize (utils.data.tokenize: labels -100 on prompt and
padding, EOS kept) -> batch (utils.data.collate). `prepare_data` runs the whole stage for a
profile. Introduced in notebook 05.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from utils.config import Profile, get_profile
from utils.data.contamination import (
    contamination_report,
    drop_contaminated,
    normalise_for_matching,
)
from utils.data.sources import (
    CONVERSATION_COLUMN,
    POEM_COLUMNS,
    SPLITS,
    DataError,
    instruction_paths,
    poems_path,
    read_instruction_files,
    read_poems_file,
    require_columns,
)
from utils.data.tokenize import filter_by_length

ASSISTANT_MARK = "\nAssistant:"


# ---------------------------------------------------------------- cleaning poems


def clean_poem_text(text) -> str:
    """Normalise a poem: \\r\\r\\n and \\r\\n become \\n, trailing spaces go, at most one blank line."""
    if not isinstance(text, str):
        return ""
    text = text.replace("\r\r\n", "\n").replace("\r\n", "\n").replace("\r", "\n")
    lines = [line.rstrip() for line in text.split("\n")]
    text = "\n".join(lines).strip("\n")
    return re.sub(r"\n{3,}", "\n\n", text)


def blank_rows(frame: pd.DataFrame) -> pd.Series:
    """Rows with nothing in Title, Poem, Poet and Tags (the real CSV has whole blank lines of commas)."""
    cells = frame[list(POEM_COLUMNS)]
    return (cells.isna() | cells.astype(str).apply(lambda c: c.str.strip() == "")).all(axis=1)


def clean_poems(frame: pd.DataFrame, source: str = "poems") -> tuple[pd.DataFrame, dict]:
    """Clean raw poems; returns (clean frame, counts of what was fixed or dropped).

    Each count means one thing: blank rows (no cell filled), empty poems (a row with a title
    or poet but no poem text), duplicates, and missing tags among the rows that are kept.
    """
    require_columns(frame.columns, POEM_COLUMNS, source)
    blank = blank_rows(frame)
    report = {"rows_read": len(frame), "blank_rows_dropped": int(blank.sum())}
    if frame.attrs.get("empty_columns_dropped"):
        report["empty_columns_dropped"] = frame.attrs["empty_columns_dropped"]
    frame = frame[~blank]
    out = pd.DataFrame({
        "title": frame["Title"].fillna("").astype(str).str.strip(),
        "poem": frame["Poem"].map(clean_poem_text),
        "poet": frame["Poet"].fillna("").astype(str).str.strip(),
        "tags": frame["Tags"].fillna("").astype(str).str.strip(),
    })
    report["padded_titles_fixed"] = int((frame["Title"].fillna("").astype(str) != out["title"]).sum())
    empty = out["poem"].str.len() == 0
    report["empty_poems_dropped"] = int(empty.sum())
    out = out[~empty]
    dup = out["poem"].map(normalise_for_matching).duplicated()
    report["duplicates_dropped"] = int(dup.sum())
    out = out[~dup].reset_index(drop=True)
    report["rows_kept"] = len(out)
    report["missing_tags"] = int((out["tags"] == "").sum())  # of the kept rows only
    if out.empty:
        raise DataError(f"{source}: no poems left after cleaning ({report}); check the Poem column")
    return out, report


def poem_to_text(row) -> str:
    """The training text of one poem for stage 1: title line, blank line, the poem."""
    return f"{row['title']}\n\n{row['poem']}" if row["title"] else row["poem"]


# ---------------------------------------------------------------- conversations


def split_conversation(text: str) -> tuple[str, str]:
    """Cut 'User: ...\\nAssistant: ...' at the first '\\nAssistant:' into (prompt, completion).

    The prompt keeps the 'Assistant:' cue, so the model learns to answer after it; the
    completion is everything the assistant says. Raises DataError without an Assistant turn.
    """
    if not isinstance(text, str):
        raise DataError(f"a conversation must be a string, got {type(text).__name__}")
    text = text.replace("\r\n", "\n").replace("\r", "\n")  # a Windows file: as the poems
    cut = text.find(ASSISTANT_MARK)
    if cut < 0:
        raise DataError(f"no '\\nAssistant:' turn in conversation starting {text[:60]!r}")
    end = cut + len(ASSISTANT_MARK)
    prompt, completion = text[:end], text[end:].rstrip()
    if not completion.strip():
        raise EmptyAssistantTurn(f"empty Assistant turn in conversation starting {text[:60]!r}")
    return prompt, completion


class EmptyAssistantTurn(DataError):
    """A conversation whose 'Assistant:' turn holds nothing: there is no answer to learn."""


def format_conversations(texts, reasons: dict | None = None) -> tuple[list[tuple[str, str]], int]:
    """(prompt, completion) pairs of every usable conversation, and how many were dropped.

    `reasons`, if given, is filled with the drops by cause: "no_assistant" and "empty_assistant".
    """
    pairs, counts = [], {"no_assistant": 0, "empty_assistant": 0}
    for text in texts:
        try:
            pairs.append(split_conversation(text))
        except EmptyAssistantTurn:
            counts["empty_assistant"] += 1
        except DataError:
            counts["no_assistant"] += 1
    if reasons is not None:
        reasons.update(counts)
    return pairs, sum(counts.values())


# ---------------------------------------------------------------- splits and leakage


def train_validation_split(items: list, validation_fraction: float = 0.2, seed: int = 42):
    """Shuffle with a fixed seed and cut off the validation share (the seed's 80/20)."""
    import random

    if len(items) < 2:
        raise DataError(f"need at least 2 rows to split into train and validation, got {len(items)}")
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(items) * validation_fraction))
    val = [items[i] for i in sorted(order[:n_val])]
    train = [items[i] for i in sorted(order[n_val:])]
    return train, val


def _key(row) -> str:
    return row if isinstance(row, str) else "\x00".join(map(str, row))


def leakage_report(splits: dict[str, list]) -> pd.DataFrame:
    """Rows shared by each pair of splits: exactly, and after lowercasing and collapsing spaces."""
    names = list(splits)
    rows = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            exact = {_key(r) for r in splits[a]} & {_key(r) for r in splits[b]}
            norm_a = {normalise_for_matching(_key(r)) for r in splits[a]}
            norm = norm_a & {normalise_for_matching(_key(r)) for r in splits[b]}
            rows.append({"split_a": a, "split_b": b, "rows_a": len(splits[a]),
                         "rows_b": len(splits[b]), "shared_exact": len(exact),
                         "shared_normalised": len(norm)})
    return pd.DataFrame(rows)


def deduplicate_splits(splits: dict[str, list], priority=("test", "validation", "train")):
    """Drop from lower-priority splits every row (normalised) already in a higher one.

    Test rows are never removed: the test set is what we report, so train gives way.
    """
    seen: set[str] = set()
    out, removed = {}, {}
    for name in priority:
        if name not in splits:
            continue
        kept = [r for r in splits[name] if normalise_for_matching(_key(r)) not in seen]
        removed[name] = len(splits[name]) - len(kept)
        seen.update(normalise_for_matching(_key(r)) for r in kept)
        out[name] = kept
    return {name: out[name] for name in splits}, removed


# ---------------------------------------------------------------- tokenizing


# ---------------------------------------------------------------- the whole data stage


@dataclass
class PreparedData:
    """Everything the training stages need, plus the report the notebooks print."""

    poems: dict[str, list[str]]  # train / validation poem texts (stage 1)
    instructions: dict[str, list[tuple[str, str]]]  # train / validation / test pairs (stage 2)
    report: dict = field(default_factory=dict)


def prepare_data(profile: Profile | str | None, tokenizer, deduplicate: bool = True) -> PreparedData:
    """Run the whole data-preparation flow of notebook 05 and `pipeline --stages data`."""
    profile = get_profile(profile)
    cfg = profile.data
    poems_file, instruction_files = poems_path(profile), instruction_paths(profile)
    poems, poem_report = clean_poems(read_poems_file(poems_file), source=cfg.poems_file)
    poem_texts = [poem_to_text(row) for _, row in poems.iterrows()]
    raw = read_instruction_files(instruction_files)
    splits, ins_report = prepare_instructions(raw, tokenizer, cfg, deduplicate)
    # Stage-2 answers that copy stage-1 poems flatter the stage-2 test loss: count them, and
    # drop one side if the profile asks (--drop-contaminated).
    contamination, matches = contamination_report(list(poems["poem"]), splits, cfg.contamination_ngram)
    poem_texts, splits, dropped = drop_contaminated(poem_texts, splits, matches, cfg.drop_contaminated)
    contamination.update(dropped=cfg.drop_contaminated, rows_dropped=dropped)
    check_left_after_drops(poem_texts, splits, cfg.drop_contaminated, ins_report)
    ins_report["rows_kept"] = {s: len(splits[s]) for s in SPLITS}
    poem_train, poem_val = train_validation_split(poem_texts, cfg.validation_fraction, cfg.seed)
    report = {"poems": {**poem_report, "train": len(poem_train), "validation": len(poem_val)},
              "instructions": ins_report, "contamination": contamination,
              "files_read": {"poems": [shown_path(poems_file)],
                             **{split: [shown_path(p) for p in paths]
                                for split, paths in instruction_files.items()}}}
    return PreparedData({"train": poem_train, "validation": poem_val}, splits, report)


def shown_path(path) -> str:
    """A file as the data report shows it: relative to the repository when inside it."""
    from utils.config import REPO_ROOT

    path = Path(path)
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def check_left_after_drops(poem_texts: list, splits: dict, drop: str, ins_report: dict) -> None:
    """DataError naming the split, why it is empty and the fix, when cleaning or
    --drop-contaminated left nothing to train or score on (no data report is written then)."""
    if drop == "poems" and len(poem_texts) < 2:
        raise DataError(f"--drop-contaminated poems left {len(poem_texts)} poem(s): nearly every "
                        "poem overlaps a stage-2 answer. Run with --drop-contaminated none or "
                        "instructions, or use a poems file that does not repeat the instructions")
    for split in SPLITS:
        if splits[split]:
            continue
        if drop == "instructions":
            raise DataError(f"--drop-contaminated instructions left the {split} split empty: every "
                            "one of its answers overlaps a stage-1 poem. Run with "
                            "--drop-contaminated none or poems, or use instruction files that do "
                            "not repeat the poems")
        if split == "train":
            raise DataError(f"no training conversations left after cleaning "
                            f"({ins_report['rows_read']['train']} read, duplicates removed "
                            f"{ins_report['duplicates_removed']}, over max_length dropped "
                            f"{ins_report['over_max_length_dropped']}); check the train split's file")


def prepare_instructions(raw, tokenizer, cfg, deduplicate: bool = True) -> tuple[dict, dict]:
    """(train/validation/test pairs, report): format, leakage check, dedupe, 80/20, length filter."""
    pairs, no_assistant, empty = {}, {}, {}
    for split in SPLITS:
        reasons = {}
        pairs[split], dropped = format_conversations(raw[split][CONVERSATION_COLUMN], reasons)
        no_assistant[split], empty[split] = reasons["no_assistant"], reasons["empty_assistant"]
        if not pairs[split] and dropped:
            what = ("has an Assistant turn" if not empty[split] else
                    f"has an answer: {empty[split]} have an empty Assistant turn, "
                    f"{no_assistant[split]} have none")
            raise DataError(
                f"none of the {dropped} conversations in the instructions' {split} split {what}; "
                f"each '{CONVERSATION_COLUMN}' must read "
                "'User: <request>\\nAssistant: <poem>' (the Assistant on a new line, then its poem). "
                "Fix that split's file, or point the profile's instructions folder at another.")
    # Leakage is checked on the splits as shipped: the real train split repeats rows of the
    # validation and test splits, and a model tested on rows it trained on looks too good.
    leakage = leakage_report(pairs)
    removed = {}
    if deduplicate:
        pairs, removed = deduplicate_splits(pairs)
    # The seed's split: 80/20 of the train split; the shipped validation rows join our
    # validation split and the shipped test split stays the test split.
    train, val = train_validation_split(pairs["train"], cfg.validation_fraction, cfg.seed)
    splits = {"train": train, "validation": val + pairs["validation"], "test": pairs["test"]}
    too_long = {}
    for split in SPLITS:
        splits[split], too_long[split] = filter_by_length(splits[split], tokenizer, cfg.max_length)
    report = {"rows_read": {s: len(raw[s]) for s in SPLITS},
              "no_assistant_dropped": no_assistant,
              "empty_assistant_dropped": empty,
              "leakage": leakage.to_dict(orient="records"),
              "duplicates_removed": removed,
              "over_max_length_dropped": too_long,
              "max_length": cfg.max_length}
    return splits, report
