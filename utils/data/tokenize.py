"""Tokenizing: prompt and completion to ids with masked labels; texts to packed blocks. Notebooks 02, 05 and 06.
"""

from __future__ import annotations

from utils.config import IGNORE_INDEX
from utils.data.sources import DataError

ANSWER_END = "\n"  # every completion ends with a newline, then EOS (see encode_example)
# Tokenizing is measuring here, never feeding the model: whole poems are cut into blocks
# afterwards and rows over max_length are dropped and counted. So the tokenizer's "sequence
# length is longer than the specified maximum (50012 > 1024)" notice, which a long real poem
# triggers, warns about nothing that happens; verbose=False is its own switch for it.
QUIET = {"verbose": False}


def encode_example(prompt: str, completion: str, tokenizer, max_length: int) -> dict:
    """input_ids and labels for supervised fine-tuning: -100 on the prompt, EOS appended and kept.

    The prompt gets the tokenizer's special tokens (BOS for Llama-style tokenizers, none for
    GPT-2); the completion gets none but ends with a newline and EOS, which the loss must see so
    the model learns to stop. The newline is there because a poem's every other line ends with
    one: trained on "last word + EOS", a model that writes its usual newline after the last line
    is somewhere it never saw EOS and keeps writing blank lines (measured on the pocket model:
    19 of 31 test answers ended within 256 tokens without the newline, 31 of 31 with it).
    Raises DataError when the row would exceed max_length.
    """
    prompt_ids = tokenizer(prompt, add_special_tokens=True, **QUIET)["input_ids"]
    completion_ids = tokenizer(completion + ANSWER_END, add_special_tokens=False, **QUIET)["input_ids"]
    completion_ids = completion_ids + [tokenizer.eos_token_id]
    if len(prompt_ids) >= max_length:
        raise DataError(f"prompt has {len(prompt_ids)} tokens but max_length is {max_length}; "
                        "shorten the prompt or raise max_length")
    total = len(prompt_ids) + len(completion_ids)
    if total > max_length:
        raise DataError(f"example has {total} tokens, more than max_length={max_length}")
    return {"input_ids": prompt_ids + completion_ids,
            "labels": [IGNORE_INDEX] * len(prompt_ids) + completion_ids}


def encode_pairs(pairs, tokenizer, max_length: int) -> tuple[list[dict], int]:
    """Encode every (prompt, completion); rows over max_length are dropped and counted."""
    encoded, dropped = [], 0
    for prompt, completion in pairs:
        try:
            encoded.append(encode_example(prompt, completion, tokenizer, max_length))
        except DataError:
            dropped += 1
    return encoded, dropped


def filter_by_length(pairs, tokenizer, max_length: int) -> tuple[list, int]:
    """Keep the (prompt, completion) pairs that fit max_length once encoded; count the rest."""
    kept = []
    for prompt, completion in pairs:
        try:
            encode_example(prompt, completion, tokenizer, max_length)
        except DataError:
            continue
        kept.append((prompt, completion))
    return kept, len(pairs) - len(kept)


def token_lengths(texts, tokenizer) -> list[int]:
    """Number of tokens of each text (no special tokens): the histograms of notebook 05."""
    return [len(ids) for ids in tokenizer(list(texts), add_special_tokens=False, **QUIET)["input_ids"]]


def group_texts(token_lists, block_size: int, eos_token_id: int | None = None) -> list[list[int]]:
    """Concatenate token lists (EOS between them) and cut into full blocks of block_size.

    The remainder shorter than a block is dropped: padding it would waste compute and a
    partial block would be the only one of its length. With ~100k tokens and blocks of 256
    the loss is under 256 tokens, a fraction of a percent. Introduced in notebook 06.
    """
    stream: list[int] = []
    for ids in token_lists:
        stream.extend(ids)
        if eos_token_id is not None:
            stream.append(eos_token_id)
    n_blocks = len(stream) // block_size
    return [stream[i * block_size:(i + 1) * block_size] for i in range(n_blocks)]


def lm_blocks(texts, tokenizer, block_size: int) -> tuple[list[dict], dict]:
    """Stage 1's rows: texts tokenized, joined with EOS and cut into full blocks. Notebook 06.

    Returns the rows and the counts a learner should check, among them the dropped remainder.
    """
    token_lists = tokenizer(list(texts), add_special_tokens=True, **QUIET)["input_ids"]  # BOS for Llama
    blocks = group_texts(token_lists, block_size, tokenizer.eos_token_id)
    stream = sum(len(ids) + 1 for ids in token_lists)  # +1: the EOS after each text
    info = {"texts": len(token_lists), "tokens": stream, "block_size": block_size,
            "blocks": len(blocks), "dropped_tokens": stream - len(blocks) * block_size}
    return [{"input_ids": block} for block in blocks], info
