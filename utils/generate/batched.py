"""Batched generation: the one helper that turns prompts into continuations.

Evaluation (notebook 08), the pipeline's samples, the playground widget (notebook 03) and
the preference notebook (09) all generate through `generate_batched`; `generate_texts` is
its one-prompt-per-batch form. Settings are a profile's DecodeConfig or a dict of `generate`
keyword arguments; the model's own generation_config is never changed.
"""

from __future__ import annotations

import copy

import torch
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper

from utils.config import DecodeConfig
from utils.env import set_seed, torch_threads
from utils.generate.decoding import check_settings, context_length, encode_prompt
from utils.generate.nucleus import NucleusWarper
from utils.models.loading import eos_is_not_padding, eval_mode

# check_settings validates these; the others (do_sample, eos ids, ...) pass straight through
_CHECKED = ("num_beams", "temperature", "top_p", "top_k", "repetition_penalty", "max_new_tokens",
            "num_return_sequences")


def _settings(settings: DecodeConfig | dict, max_new_tokens: int | None) -> dict:
    """The `generate` keyword arguments of a DecodeConfig or a dict, checked; max_new_tokens set."""
    kwargs = settings.generate_kwargs() if isinstance(settings, DecodeConfig) else dict(settings)
    if max_new_tokens:
        kwargs["max_new_tokens"] = max_new_tokens
    if "max_new_tokens" not in kwargs:
        raise ValueError("give max_new_tokens (in the settings or as an argument)")
    check_settings(**{k: v for k, v in kwargs.items() if k in _CHECKED})
    return kwargs


def _generation_config(model, tokenizer, kwargs: dict):
    # A copy: generating must not change the decoding settings a notebook set on the model.
    config = copy.deepcopy(model.generation_config)
    for key, value in kwargs.items():
        setattr(config, key, value)
    config.pad_token_id = tokenizer.pad_token_id
    if config.eos_token_id is None:
        config.eos_token_id = tokenizer.eos_token_id
    config.use_cache = True  # the Trainer switches the KV cache off for training
    return config


def _nucleus(config) -> LogitsProcessorList:
    """Top-p by utils/generate/nucleus.py in place of Hugging Face's: the same tokens kept,
    without sorting all 50,257 logits at every token. `generate` runs the processors it is given
    before its own temperature and top-k, so those move here too, in Hugging Face's order, and
    the config's temperature, top_k and top_p are set to do nothing."""
    top_p = config.top_p
    others = ("min_p", "typical_p", "epsilon_cutoff", "eta_cutoff")  # they follow top-p there
    if (not config.do_sample or top_p is None or top_p >= 1.0 or (config.num_beams or 1) > 1
            or any(getattr(config, name) not in (None, 0.0, 1.0) for name in others)):
        return LogitsProcessorList()
    warpers = LogitsProcessorList()
    if config.temperature not in (None, 1.0):
        warpers.append(TemperatureLogitsWarper(config.temperature))
    if config.top_k:
        warpers.append(TopKLogitsWarper(config.top_k))
    warpers.append(NucleusWarper(top_p))
    config.temperature, config.top_k, config.top_p = 1.0, 0, 1.0
    return warpers


def _left_padded(rows: list[torch.Tensor], pad_token_id: int, device) -> dict:
    """A batch of (1, n) id tensors, padded on the left: every prompt ends where generation starts."""
    width = max(r.shape[1] for r in rows)
    ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - r.shape[1]:], mask[i, width - r.shape[1]:] = r[0], 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


def cpu_threads(device, batch_size: int) -> int | None:
    """One CPU thread for one or two rows at a time, torch's own count for wider batches.

    A second thread splits a wide batch by rows. Measured on the pocket model, 2 idle cores, 40
    new tokens, when Hugging Face's top-p still sorted every row's 50,257 probabilities (before
    utils/generate/nucleus.py): 32 rows in one batch 8.0 s on one thread, 5.1 s on two; 8 rows
    1.5 s and 1.0 s; one row at a time the same 4.1 s either way (and on a busy machine a
    second thread that cannot run only waits).
    """
    return 1 if device.type == "cpu" and batch_size <= 2 else None


def generate_batched(model, tokenizer, prompts, settings: DecodeConfig | dict,
                     max_new_tokens: int | None = None, seed: int | None = 42,
                     batch_size: int = 8, fast_top_p: bool = True) -> list[str]:
    """The new text after each prompt, batch_size prompts at a time. Notebooks 03, 08 and 09.

    Each batch is reseeded with `seed` (None: not reseeded, e.g. the playground's fresh
    samples), so a rerun gives the same texts; a prompt's text depends on the batch it shares
    the random stream with (generate_texts reseeds per prompt instead). Prompts are encoded by
    utils.generate.decoding.encode_prompt: an empty one starts from BOS, a too long one loses its start.
    fast_top_p=False samples with Hugging Face's own top-p (the same texts, slower: `python -m
    bench --only sampling` compares them).
    """
    kwargs = _settings(settings, max_new_tokens)
    config = _generation_config(model, tokenizer, kwargs)
    processors = _nucleus(config) if fast_top_p else LogitsProcessorList()
    limit = context_length(model)
    device, texts = next(model.parameters()).device, []
    encoded = [encode_prompt(tokenizer, p, kwargs["max_new_tokens"], limit) for p in prompts]
    with torch_threads(cpu_threads(device, batch_size)), eval_mode(model), eos_is_not_padding(model):
        for start in range(0, len(encoded), batch_size):
            batch = _left_padded(encoded[start:start + batch_size], tokenizer.pad_token_id, device)
            if seed is not None:
                set_seed(seed)
            out = model.generate(**batch, generation_config=config, logits_processor=processors)
            texts += tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:],
                                            skip_special_tokens=True)
    return texts


def generate_texts(model, tokenizer, prompts, settings: DecodeConfig | dict,
                   seed: int = 42) -> list[str]:
    """Continue each prompt on its own, reseeded before each: the same seed, the same text.
    Notebooks 06 and 08.

    A prompt's text does not depend on the prompts before it.
    """
    return generate_batched(model, tokenizer, prompts, settings, seed=seed, batch_size=1)
