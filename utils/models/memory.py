"""Training memory: a calculator from a config alone, and a measurement in a fresh process.

The calculator counts, in bytes, weights, gradients, optimizer states, temporaries and
activations, from a transformers config alone. Assumptions (notebook 11 explains each):

- AdamW keeps two fp32 states (exp_avg, exp_avg_sq) per trainable parameter: 8 bytes.
- Trainable parameters are fp32 in every strategy, so their gradients are fp32: 4 bytes.
  Mixed precision (torch.autocast, the Trainer's fp16=/bf16=) keeps the fp32 master weights
  and adds a 2-byte half copy of each weight, made in the forward and saved for the backward:
  4 + 4 + 8 + 2 = 18 bytes per parameter. LoRA adapters are fp32 (peft upcasts them).
- The optimizer is fused AdamW (the Trainer's default `adamw_torch_fused`): no per-step
  temporaries. Tied input/output embeddings (GPT-2) do add two transient fp32 copies of the
  embedding's gradient at the end of the backward (measured: `temporaries`).
- Activations follow `layer_activation_bytes` and `head_activation_bytes`; gradient
  checkpointing keeps only each layer's input and recomputes one layer at a time.
- CUDA context and allocator fragmentation are not counted; a run "fits" when the estimate
  is at most FIT_FRACTION of the card's memory.

Introduced in notebook 11; bench/memory_measure.py measures what the calculator predicts.
"""

from __future__ import annotations

from dataclasses import dataclass

MB = 2**20
GB = 2**30
# Nominal memory of each card in GiB (vendor datasheets: NVIDIA T4, L4, A100 40GB/80GB).
GPUS_GB = {"T4-16GB": 16, "L4-24GB": 24, "A100-40GB": 40, "A100-80GB": 80}
# ECC reserve, the CUDA context (~0.3-0.5 GiB) and the caching allocator's fragmentation eat
# the rest: a T4 shows 15.0 of its 16 GiB to PyTorch before anything is allocated.
FIT_FRACTION = 0.9
GATED_MLP = ("llama", "mistral", "qwen2", "gemma")  # SwiGLU: gate, up and down projections


@dataclass(frozen=True)
class Strategy:
    """How a model is trained, in the terms that decide its memory."""

    name: str
    weight_bytes: int  # bytes per stored base weight: 4 (fp32) or 2 (fp16/bf16)
    lora: bool  # True: only LoRA adapters train; False: every weight trains
    activation_bytes: int  # bytes per saved activation value: 4 (fp32) or 2 (autocast)
    half_copy: bool = False  # autocast keeps a 2-byte copy of every weight for the backward
    checkpointing: bool = False


STRATEGIES = {s.name: s for s in (
    Strategy("full fp32", weight_bytes=4, lora=False, activation_bytes=4),
    Strategy("full mixed precision", weight_bytes=4, lora=False, activation_bytes=2, half_copy=True),
    Strategy("LoRA r=8, fp32 base", weight_bytes=4, lora=True, activation_bytes=4),
    Strategy("LoRA r=8, half base", weight_bytes=2, lora=True, activation_bytes=2),
    Strategy("LoRA r=8, half base + checkpointing", weight_bytes=2, lora=True,
             activation_bytes=2, checkpointing=True),
)}


# ---------------------------------------------------------------- counting from a config


def _config(config):
    from utils.models.shapes import reference_config

    return reference_config(config) if isinstance(config, str) else config


_COUNTS: dict = {}  # meta models are cheap, not free; the table asks for each count many times


def parameter_counts(config, r: int = 8) -> tuple[int, int]:
    """(all parameters, LoRA adapter parameters at rank r with peft's default targets), cached.

    LoRA adds r * (in + out) per target module (A: in x r, B: r x out). GPT-2's targets are
    c_attn (768 -> 2304): 12 layers * 8 * (768 + 2304) = 294,912. Notebook 11.
    """
    from peft.utils.constants import (
        TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as TARGETS,
    )

    from utils.models.shapes import count_parameters, meta_model

    config = _config(config)
    key = (config.to_json_string(use_diff=False), r)
    if key not in _COUNTS:
        model = meta_model(config)
        targets = TARGETS[config.model_type]
        # Conv1D stores (in, out), nn.Linear (out, in): the sum of the two is the same.
        adapters = sum(r * sum(m.weight.shape) for name, m in model.named_modules()
                       if name.rsplit(".", 1)[-1] in targets)
        _COUNTS[key] = (count_parameters(model)[1], adapters)
    return _COUNTS[key]


def shape(config) -> dict:
    """The sizes the activation formula needs: hidden, ffn width, layers, heads, vocabulary."""
    config = _config(config)
    hidden = config.hidden_size
    ffn = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * hidden
    dropout = max(getattr(config, "resid_pdrop", 0.0) or 0.0,
                  getattr(config, "attention_dropout", 0.0) or 0.0)
    return {"hidden": hidden, "ffn": ffn, "layers": config.num_hidden_layers,
            "heads": config.num_attention_heads, "vocab": config.vocab_size,
            "gated": config.model_type in GATED_MLP, "dropout": dropout > 0,
            "elementwise_gelu": getattr(config, "activation_function", None) == "gelu_new"}


def layer_activation_bytes(config, seq_len: int, act_bytes: int = 4, attention: str = "sdpa") -> int:
    """Bytes one decoder layer saves for the backward, per token. Notebook 11.

    Pre-norm block, one value per token for each saved tensor:
      norm 1 input h, q/k/v input h, q, k, v 3h, attention output h,
      norm 2 input h, MLP input h                                     = 8h
      MLP: a fused GELU keeps fc output and GELU output (2 * ffn); GPT-2's `gelu_new`, which
      transformers writes as eight elementwise operations, keeps three intermediates more
      (5 * ffn, counted with saved-tensor hooks); SwiGLU keeps gate, act(gate), up and their
      product (4 * ffn).
    GPT-2 (h=768, ffn=3072): 8*768 + 5*3072 = 21,504 values = 84 KiB in fp32.
    Dropout (GPT-2) adds two 1-byte masks of h. Eager attention also keeps the softmax
    probabilities (heads * seq_len values) and, with dropout, their dropped copy and a 1-byte
    mask; SDPA (PyTorch's fused kernels, the transformers default) keeps only a log-sum-exp
    per row. On a CPU, SDPA with attention dropout (GPT-2 trains with 0.1) runs PyTorch's math
    path and keeps what eager attention keeps: estimate CPU training with attention="eager".
    Approximate: under autocast some of these stay fp32 (norms, softmax).
    """
    s = shape(config)
    values = 8 * s["hidden"] + (4 if s["gated"] else 5 if s["elementwise_gelu"] else 2) * s["ffn"]
    masks = 2 * s["hidden"] if s["dropout"] else 0
    out = act_bytes * values + masks
    if attention == "eager":
        probs = s["heads"] * seq_len
        out += probs * ((2 * act_bytes + 1) if s["dropout"] else act_bytes)
    elif attention != "sdpa":
        raise ValueError(f"attention must be 'sdpa' or 'eager', got {attention!r}")
    return out


def head_activation_bytes(config, act_bytes: int = 4) -> int:
    """Bytes per token outside the layers: embeddings, final norm, logits and the loss.

    Vocabulary-sized fp32 tensors dominate at the start of the backward: cross-entropy's saved
    log-softmax, its incoming gradient and the gradient of the logits, 3 * 4 * vocab (the
    logits themselves are freed with the model output). GPT-2: 12 * 50,257 = 603,084 bytes
    per token, 12x one fp32 layer. Checked against measured peaks in notebook 11.
    """
    s = shape(config)
    return act_bytes * 2 * s["hidden"] + 12 * s["vocab"]


def activation_bytes(config, batch_size: int, seq_len: int, act_bytes: int = 4,
                     checkpointing: bool = False, attention: str = "sdpa") -> int:
    """Activation memory of one training step; with checkpointing only layer inputs stay."""
    s = shape(config)
    layer = layer_activation_bytes(config, seq_len, act_bytes, attention)
    if checkpointing:
        # each layer keeps its input (h values); the backward rebuilds one layer at a time
        per_token = s["layers"] * act_bytes * s["hidden"] + layer
    else:
        per_token = s["layers"] * layer
    return batch_size * seq_len * (per_token + head_activation_bytes(config, act_bytes))


def tied_embedding_bytes(config) -> int:
    """Transient bytes when a tied embedding trains: 2 fp32 vocab x hidden gradient pieces.

    The shared matrix gets one full gradient from the LM head and one from the lookup, and
    autograd holds both next to the summed .grad for a moment. GPT-2: 2 * 4 * 50,257 * 768
    = 308,779,008 bytes. Untied models (DeepSeek-Coder) add nothing. Measured in notebook 11.
    """
    config = _config(config)
    if not getattr(config, "tie_word_embeddings", False):
        return 0
    return 2 * 4 * config.vocab_size * config.hidden_size


def estimate_memory(config, strategy: Strategy | str, batch_size: int = 2, seq_len: int = 512,
                    lora_r: int = 8, attention: str = "sdpa", shards: int = 1) -> dict:
    """Bytes of weights, gradients, optimizer states, temporaries, activations, total. Notebook 11.

    `shards` > 1: the bytes on each of that many GPUs when FSDP (or DeepSpeed ZeRO-3) shards
    the model (configs/accelerate_fsdp_2gpu.yaml). Each GPU then keeps 1/shards of the weights,
    gradients and optimizer states; activations are not divided, since every GPU runs the whole
    model on its own batch. FSDP also gathers one wrapped layer's full weights at a time for its
    forward and backward (DeepSeek-Coder-1.3B: ~60M parameters, 0.1 GiB in half precision):
    not counted, like the CUDA context.
    """
    if shards < 1:
        raise ValueError(f"shards must be at least 1 (the number of GPUs), got {shards}")
    config = _config(config)
    st = STRATEGIES[strategy] if isinstance(strategy, str) else strategy
    params, adapters = parameter_counts(config, lora_r)
    trainable = adapters if st.lora else params
    weights = st.weight_bytes * params + (2 * params if st.half_copy else 0)
    if st.lora:
        weights += 4 * trainable  # the fp32 adapters themselves
    parts = {"weights": weights // shards, "gradients": 4 * trainable // shards,
             "optimizer": 8 * trainable // shards,
             # the tied embedding's gradient pieces exist whole on each GPU before FSDP's
             # reduce-scatter shards their sum: not divided
             "temporaries": 0 if st.lora else tied_embedding_bytes(config),
             "activations": activation_bytes(config, batch_size, seq_len, st.activation_bytes,
                                             st.checkpointing, attention)}
    # Activations peak at the start of the backward, the tied-embedding pieces at its end
    # (activations freed by then): the peak holds the larger. Gradients are counted as
    # present throughout, as they are under gradient accumulation.
    parts["total"] = (parts["weights"] + parts["gradients"] + parts["optimizer"]
                      + max(parts["activations"], parts["temporaries"]))
    return parts


def fits_table(models=("gpt2", "deepseek-coder-1.3b"), strategies=None, gpus=None,
               batch_size: int = 2, seq_len: int = 512):
    """A DataFrame: estimated GiB per model and strategy, and whether it fits each card."""
    import pandas as pd

    gpus = gpus or GPUS_GB
    rows = []
    for model in models:
        for name in strategies or STRATEGIES:
            est = estimate_memory(model, name, batch_size, seq_len)
            row = {"model": model, "strategy": name,
                   **{k: round(v / GB, 2) for k, v in est.items()}}
            row.update({gpu: "yes" if est["total"] <= FIT_FRACTION * size * GB else "no"
                        for gpu, size in gpus.items()})
            rows.append(row)
    return pd.DataFrame(rows)
