"""Decoding written out for teaching: greedy search, beam search and sampling. Notebook 03.

Every function here is checked token for token against `model.generate` in tests/test_decoding.py:
`greedy_search` against `do_sample=False`, `beam_search` against `num_beams=k` (same length
penalty, early stopping and `num_return_sequences`), `sample` and `apply_sampling_filters`
against Hugging Face's logits processors under the same seed.
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass

import torch

NEG_INF = -1.0e9  # "impossible" score; the value Hugging Face uses, so that ties break the same way


# ---------------------------------------------------------------- checking inputs


def check_settings(num_beams: int = 1, temperature: float = 1.0, top_p: float = 1.0,
                   top_k: int = 0, repetition_penalty: float = 1.0, max_new_tokens: int = 1,
                   num_return_sequences: int = 1) -> None:
    """Raise ValueError naming the first decoding argument that is out of range."""
    if num_beams < 1:
        raise ValueError(f"num_beams must be >= 1, got {num_beams}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 (use greedy search for 'temperature 0'), got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 disables it), got {top_k}")
    if not repetition_penalty > 0:
        raise ValueError(f"repetition_penalty must be > 0 (1.0 disables it), got {repetition_penalty}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if not 1 <= num_return_sequences <= num_beams:
        raise ValueError(f"num_return_sequences must be in [1, num_beams={num_beams}], "
                         f"got {num_return_sequences}")


def context_length(model) -> int:
    """How many positions the model can attend to (GPT-2: n_positions, Llama: max_position_embeddings)."""
    config = model.config
    return getattr(config, "n_positions", None) or config.max_position_embeddings


def encode_prompt(tokenizer, prompt: str, max_new_tokens: int, max_positions: int) -> torch.Tensor:
    """Token ids (1, n) of a prompt, made safe to generate from.

    An empty prompt starts from the tokenizer's BOS token (GPT-2's is <|endoftext|>, the
    token that separated its training documents); a tokenizer without one raises ValueError.
    A prompt that leaves no room for max_new_tokens in the context window is cut from the
    left (the end of a prompt matters most for what comes next) with a warning; a leading
    BOS is kept.
    """
    if not isinstance(prompt, str):
        raise ValueError(f"prompt must be a string, got {type(prompt).__name__}")
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as err:  # a lone surrogate, e.g. half an emoji cut from a file
        raise ValueError(f"prompt has a character that is not valid text ({prompt[err.start]!r} "
                         f"at position {err.start}), often half of an emoji; remove it or paste "
                         "the text again") from None
    ids = tokenizer(prompt)["input_ids"]  # Llama-style tokenizers prepend BOS here
    bos = tokenizer.bos_token_id
    if not ids:
        if bos is None:
            raise ValueError("empty prompt and the tokenizer has no BOS token to start from; "
                             "give the model at least one word")
        ids = [bos]
    room = max_positions - max_new_tokens
    if room < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} leaves no room for a prompt in the "
                         f"{max_positions}-token context window")
    if len(ids) > room:
        warnings.warn(f"prompt has {len(ids)} tokens but only {room} fit before "
                      f"{max_new_tokens} new ones in the {max_positions}-token context; "
                      f"keeping the last {room}", stacklevel=2)
        keep_bos = bos is not None and ids[0] == bos
        ids = [bos] + ids[len(ids) - room + 1:] if keep_bos else ids[-room:]
    return torch.tensor([ids], dtype=torch.long)


# ---------------------------------------------------------------- one forward step


def cache_argument(model) -> str:
    """The name forward() takes the KV cache by: transformers 5.24 renamed `past_key_values` to
    `cache` (the old name works until 5.40, with a warning); older releases know only the old."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def next_token_logits(model, input_ids, cache=None):
    """Logits of the next token (float32) and the updated KV cache.

    With a cache, only the newest token goes through the model: the keys and values of
    the earlier ones are stored, so a step costs one token's work instead of the whole line.
    """
    name = cache_argument(model)
    # logits_to_keep=1: the LM head runs on the last position only, the one we sample from.
    out = model(input_ids=input_ids.to(model.device), use_cache=True, logits_to_keep=1, **{name: cache})
    return out.logits[:, -1, :].float(), getattr(out, name)


def resolve_eos(model, eos_token_id: int | None = None) -> int:
    """The EOS id to stop at: the one given, else the model's generation config (-1: none)."""
    if eos_token_id is None:
        eos_token_id = model.generation_config.eos_token_id
    if isinstance(eos_token_id, (list, tuple)):  # several stop tokens: this course uses one
        eos_token_id = eos_token_id[0]
    return -1 if eos_token_id is None else int(eos_token_id)


# ---------------------------------------------------------------- greedy search


@torch.no_grad()
def greedy_search(model, input_ids, max_new_tokens: int, eos_token_id: int | None = None) -> list[int]:
    """The new tokens of greedy decoding (notebook 03): always the most likely; stops after EOS."""
    check_settings(max_new_tokens=max_new_tokens)
    eos_token_id = resolve_eos(model, eos_token_id)
    logits, cache = next_token_logits(model, input_ids)
    new = []
    for _ in range(max_new_tokens):
        token = int(logits[0].argmax())
        new.append(token)
        if token == eos_token_id:
            break
        logits, cache = next_token_logits(model, torch.tensor([[token]]), cache)
    return new


# ---------------------------------------------------------------- beam search


@dataclass
class Beam:
    """A finished hypothesis: its new tokens (EOS included if it ended with one) and score."""

    tokens: list[int]
    score: float  # sum of token log-probs / len(tokens) ** length_penalty


@torch.no_grad()
def one_prompt(input_ids) -> torch.Tensor:
    """input_ids as a (1, length) tensor, or ValueError: the beams of one prompt fill the batch."""
    if not isinstance(input_ids, torch.Tensor):
        raise TypeError(f"input_ids must be a torch.Tensor of token ids, got {type(input_ids).__name__}")
    ids = input_ids.unsqueeze(0) if input_ids.dim() == 1 else input_ids
    if ids.dim() != 2 or ids.size(0) != 1:
        raise ValueError(f"beam_search takes one prompt (input_ids of shape (1, length)), got shape "
                         f"{tuple(input_ids.shape)}; call it once per prompt")
    if ids.size(1) == 0:
        raise ValueError("input_ids is empty; encode at least one token (e.g. BOS or EOS)")
    return ids


def beam_search(model, input_ids, num_beams: int, max_new_tokens: int, length_penalty: float = 1.0,
                early_stopping: bool | str = False, num_return_sequences: int = 1,
                eos_token_id: int | None = None) -> list[Beam]:
    """The num_return_sequences best beams, best first, scored as Hugging Face does (notebook 03).

    A beam's score is the sum of its tokens' log-probabilities divided by
    generated_length ** length_penalty (> 0 favours longer lines). early_stopping: True stops
    once num_beams beams have finished; False stops when the best running beam, scored at
    its current length, cannot beat the worst finished one; "never" scores it at
    max_new_tokens instead when length_penalty > 0.
    """
    check_settings(num_beams=num_beams, max_new_tokens=max_new_tokens,
                   num_return_sequences=num_return_sequences)
    input_ids = one_prompt(input_ids)
    eos_token_id = resolve_eos(model, eos_token_id)
    # All beams run as one batch of num_beams rows; at the start they are copies of the
    # prompt, so only row 0 is "live" (the others get -1e9 and never win a top-k slot).
    seqs = input_ids.to(model.device).repeat(num_beams, 1)
    scores = torch.full((num_beams,), NEG_INF, device=seqs.device)
    scores[0] = 0.0
    logits, cache = next_token_logits(model, seqs)
    finished: list[tuple[float, list[int]]] = []  # (normalised score, new tokens), best first
    for step in range(max_new_tokens):
        log_probs = torch.log_softmax(logits, dim=-1) + scores[:, None]  # (num_beams, vocab)
        vocab = log_probs.shape[-1]
        # 2 * num_beams candidates: even if num_beams of them end with EOS, num_beams remain.
        cand_scores, flat = torch.topk(log_probs.view(-1), 2 * num_beams)
        cand_beams, cand_tokens = flat // vocab, flat % vocab
        length = step + 1  # new tokens in every candidate, the one chosen now included
        ends = (cand_tokens == eos_token_id) | (length == max_new_tokens)
        # Only the best num_beams candidates may become finished hypotheses.
        for i in range(num_beams):
            if ends[i]:
                tokens = seqs[cand_beams[i], input_ids.shape[1]:].tolist() + [int(cand_tokens[i])]
                finished.append(((cand_scores[i] / length ** length_penalty).item(), tokens))
        finished = sorted(finished, key=lambda f: -f[0])[:num_beams]  # stable: older first on ties
        if bool(ends.all()):
            break
        # The num_beams best candidates that did not end keep running.
        running_scores, keep = torch.topk(cand_scores + ends.float() * NEG_INF, num_beams)
        parents = cand_beams[keep]
        seqs = torch.cat([seqs[parents], cand_tokens[keep, None]], dim=1)
        scores = running_scores
        cache.reorder_cache(parents)  # each row's cache now follows its new beam
        if _search_is_done(finished, scores[0], num_beams, length, max_new_tokens,
                           length_penalty, early_stopping):
            break
        logits, cache = next_token_logits(model, seqs[:, -1:], cache)
    return [Beam(tokens, score) for score, tokens in finished[:num_return_sequences]]


def _search_is_done(finished, best_running, num_beams, length, max_new_tokens,
                    length_penalty, early_stopping) -> bool:
    """True once num_beams beams have finished and no running beam is expected to beat them."""
    if len(finished) < num_beams:
        return False
    if early_stopping is True:
        return True
    # The best running beam's score if it stopped now ("never": at the longest allowed length).
    hoped_length = max_new_tokens if early_stopping == "never" and length_penalty > 0 else length
    return not bool(best_running / hoped_length ** length_penalty > finished[-1][0])


def as_generate_output(input_ids, beams: list[Beam], pad_token_id: int) -> torch.Tensor:
    """Beams as the tensor `model.generate` returns: prompt + new tokens, right-padded."""
    width = max(len(b.tokens) for b in beams)
    rows = [input_ids[0].tolist() + b.tokens + [pad_token_id] * (width - len(b.tokens)) for b in beams]
    return torch.tensor(rows, dtype=torch.long)


# ---------------------------------------------------------------- sampling


def apply_sampling_filters(logits, input_ids=None, temperature: float = 0.7, top_k: int = 0,
                           top_p: float = 0.95, repetition_penalty: float = 1.1):
    """Logits reshaped for sampling, in Hugging Face's order: repetition, temperature, top-k, top-p.

    Defaults are the seed's settings; introduced in notebook 03. Filtered tokens get -inf, i.e. probability 0.
    """
    check_settings(temperature=temperature, top_p=top_p, top_k=top_k,
                   repetition_penalty=repetition_penalty)
    scores = logits.float().clone()
    if repetition_penalty != 1.0 and input_ids is not None:
        # A token already in the text gets less likely: positive logits shrink, negative grow.
        seen = scores.gather(-1, input_ids)
        seen = torch.where(seen < 0, seen * repetition_penalty, seen / repetition_penalty)
        scores = scores.scatter(-1, input_ids, seen)
    scores = scores / temperature  # < 1 sharpens the distribution, > 1 flattens it
    if top_k > 0:
        kth_best = torch.topk(scores, min(top_k, scores.shape[-1])).values[..., -1:]
        scores = scores.masked_fill(scores < kth_best, float("-inf"))
    if top_p < 1.0:
        # Drop the least likely tokens whose probabilities add up to at most 1 - top_p.
        ascending, order = torch.sort(scores, descending=False)
        drop = ascending.softmax(dim=-1).cumsum(dim=-1) <= 1 - top_p
        drop[..., -1:] = False  # always keep the most likely token
        scores = scores.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return scores


def sample_next_token(logits, input_ids=None, generator=None, **filters) -> torch.Tensor:
    """Draw one token id per row from the filtered distribution (see apply_sampling_filters)."""
    probs = apply_sampling_filters(logits, input_ids, **filters).softmax(dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)


@torch.no_grad()
def sample(model, input_ids, max_new_tokens: int, eos_token_id: int | None = None,
           generator=None, **filters) -> list[int]:
    """The new tokens of sampling with the KV cache (notebook 03); stops after EOS."""
    check_settings(max_new_tokens=max_new_tokens)
    eos_token_id = resolve_eos(model, eos_token_id)
    ids = input_ids.to(model.device)
    logits, cache = next_token_logits(model, ids)
    new = []
    for _ in range(max_new_tokens):
        token = sample_next_token(logits, ids, generator=generator, **filters)
        new.append(int(token))
        if new[-1] == eos_token_id:
            break
        ids = torch.cat([ids, token], dim=1)  # the repetition penalty looks at every token so far
        logits, cache = next_token_logits(model, token, cache)
    return new
