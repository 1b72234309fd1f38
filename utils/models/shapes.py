"""Model shapes without weights: the real models' configs offline, meta-device models, counts.

Parameter counts and memory estimates need only a config; `meta_model` builds the model on
the meta device (shapes, no memory). Kept apart from `loading` so the memory calculator can
use it without importing model loading. Introduced in notebooks 04 (architecture) and 11.
"""

from __future__ import annotations

import time

import torch
from transformers import AutoConfig, AutoModelForCausalLM

# The hub configs of the two real models, copied field by field so that parameter counts
# and memory estimates work offline (notebooks 04 and 11).
REFERENCE_CONFIGS = {
    "gpt2": dict(model_type="gpt2", vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12,
                 n_head=12, bos_token_id=50256, eos_token_id=50256),
    "deepseek-coder-1.3b": dict(
        model_type="llama", vocab_size=32256, hidden_size=2048, intermediate_size=5504,
        num_hidden_layers=24, num_attention_heads=16, num_key_value_heads=16,
        max_position_embeddings=16384, rms_norm_eps=1e-6, rope_theta=100000.0,
        rope_scaling={"type": "linear", "factor": 4.0}, tie_word_embeddings=False,
        bos_token_id=32013, eos_token_id=32014, hidden_act="silu"),
}


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameters; tied weights count once, as in peft's line."""
    if hasattr(model, "get_nb_trainable_parameters"):
        return model.get_nb_trainable_parameters()
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def reference_config(name: str):
    """The transformers config of 'gpt2' or 'deepseek-coder-1.3b', built offline."""
    try:
        fields = dict(REFERENCE_CONFIGS[name])
    except KeyError:
        raise ValueError(f"unknown reference model {name!r}; known: {', '.join(REFERENCE_CONFIGS)}") from None
    return AutoConfig.for_model(fields.pop("model_type"), **fields)


def meta_model(config):
    """The model of a config on the meta device: shapes without memory, built in milliseconds."""
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def count_parameters_from_config(config) -> int:
    """Total parameters of the model a config describes, without allocating it. Notebook 04."""
    if isinstance(config, str):
        config = reference_config(config)
    return count_parameters(meta_model(config))[1]


# ---------------------------------------------------------------- compute


def training_flops_per_token(model, context: float, head_rows: int | None = None) -> float:
    """Training FLOPs per token: 6 x parameters, plus attention's 12 x layers x width x context.

    6N: a parameter costs 2 FLOPs forward (one multiply, one add) and 4 backward (gradients of
    the input and of the weight), Kaplan et al. 2020. Attention's scores and weighted sum add
    2 x 2 x width x context per layer forward, so 12 x layers x width x context with the
    backward's 2x. The tied output layer is counted once, as the one matmul it is; `context` is
    the mean real length a token attends over (padding is no useful work). The one formula
    every benchmark and the pretraining card use. Notebook 11. head_rows: the output layer's
    rows the loss scores, when fewer than the vocabulary (pretraining's corpus head).
    """
    cfg = model.config
    params = sum(p.numel() for p in model.parameters())
    if head_rows is not None:
        params -= (cfg.vocab_size - head_rows) * cfg.hidden_size
    return 6 * params + 12 * cfg.num_hidden_layers * cfg.hidden_size * context


def mfu(flops_per_token: float, tokens_per_second: float, peak_flops: float | None) -> float | None:
    """Model FLOPs utilisation: useful training FLOP/s over the device's peak (None if unknown)."""
    return None if not peak_flops else flops_per_token * tokens_per_second / peak_flops


def peak_gemm_flops(n: int = 2048, repeats: int = 5) -> float:
    """This machine's fp32 matmul FLOP/s with all of torch's threads: the best of `repeats`.

    The denominator of every MFU the course reports (the bench, the pretraining card).
    """
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up: the first call picks kernels and allocates
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best
