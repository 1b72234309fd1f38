"""The memory calculator: exact parameter-derived parts and the activation arithmetic
(bench/memory_measure.py checks it against a measured peak, tests/test_memory_measure.py)."""

import pytest

from utils.models.memory import (
    GB,
    STRATEGIES,
    activation_bytes,
    estimate_memory,
    fits_table,
    head_activation_bytes,
    layer_activation_bytes,
    parameter_counts,
    tied_embedding_bytes,
)

GPT2_PARAMS = 124_439_808  # tied embeddings counted once
DEEPSEEK_PARAMS = 1_346_471_936


def test_parameter_counts_of_the_reference_models():
    # LoRA r=8: GPT-2 c_attn 12 * 8 * (768 + 2304); DeepSeek q_proj + v_proj 24 * 2 * 8 * (2048 + 2048)
    assert parameter_counts("gpt2") == (GPT2_PARAMS, 294_912)
    assert parameter_counts("deepseek-coder-1.3b") == (DEEPSEEK_PARAMS, 1_572_864)


@pytest.mark.parametrize("name", ["tiny", "tiny-llama"])
def test_lora_count_matches_peft(name):
    from utils.config import get_profile
    from utils.models.loading import build_tiny_model, tiny_config
    from utils.models.lora import apply_lora
    from utils.models.shapes import count_parameters
    from utils.models.tokenizers import load_tokenizer

    tok = load_tokenizer(name)
    model = apply_lora(build_tiny_model(name, tok), name)
    trainable, total = count_parameters(model)
    r = get_profile(name).stage1.lora_r
    assert parameter_counts(tiny_config(get_profile(name), tok), r) == (total - trainable, trainable)


def test_full_fp32_gpt2_parts_are_exact():
    est = estimate_memory("gpt2", "full fp32")
    assert est["weights"] == 4 * GPT2_PARAMS
    assert est["gradients"] == 4 * GPT2_PARAMS
    assert est["optimizer"] == 8 * GPT2_PARAMS
    assert est["temporaries"] == 2 * 4 * 50_257 * 768 == 308_779_008
    assert est["total"] == 16 * GPT2_PARAMS + max(est["activations"], est["temporaries"])


def test_mixed_precision_and_lora_parts_are_exact():
    mixed = estimate_memory("gpt2", "full mixed precision")
    assert mixed["weights"] == 6 * GPT2_PARAMS  # fp32 master + 2-byte autocast copy
    lora = estimate_memory("deepseek-coder-1.3b", "LoRA r=8, half base")
    assert lora["weights"] == 2 * DEEPSEEK_PARAMS + 4 * 1_572_864
    assert (lora["gradients"], lora["optimizer"], lora["temporaries"]) == (4 * 1_572_864, 8 * 1_572_864, 0)
    assert tied_embedding_bytes("deepseek-coder-1.3b") == 0  # untied: nothing transient


def test_layer_activation_arithmetic():
    # GPT-2: 8h + 5*ffn (gelu_new's intermediates) = 21,504 values, fp32, plus two 1-byte dropout masks of h
    assert layer_activation_bytes("gpt2", 512) == 4 * 21_504 + 2 * 768
    assert layer_activation_bytes("gpt2", 512, attention="eager") == 4 * 21_504 + 2 * 768 + 12 * 512 * 9
    # DeepSeek: 8h + 4*ffn = 16,384 + 22,016 values, no dropout
    assert layer_activation_bytes("deepseek-coder-1.3b", 512, act_bytes=2) == 2 * 38_400
    # eager attention without dropout keeps only the probabilities: 16 heads * 512 values
    assert layer_activation_bytes("deepseek-coder-1.3b", 512, 2, "eager") == 2 * 38_400 + 2 * 16 * 512
    assert head_activation_bytes("gpt2") == 4 * 2 * 768 + 12 * 50_257
    with pytest.raises(ValueError, match="attention"):
        layer_activation_bytes("gpt2", 512, attention="flash")


def test_checkpointing_keeps_only_layer_inputs():
    layer, head = layer_activation_bytes("gpt2", 512), head_activation_bytes("gpt2")
    assert activation_bytes("gpt2", 2, 512) == 1024 * (12 * layer + head)
    assert activation_bytes("gpt2", 2, 512, checkpointing=True) == 1024 * (12 * 4 * 768 + layer + head)


def test_unknown_model_and_strategy_are_rejected():
    with pytest.raises(ValueError, match="unknown reference model"):
        estimate_memory("gpt5", "full fp32")
    with pytest.raises(KeyError):
        estimate_memory("gpt2", "full fp8")


def test_fits_table():
    table = fits_table()
    assert len(table) == 2 * len(STRATEGIES)
    assert list(table.columns[-4:]) == ["T4-16GB", "L4-24GB", "A100-40GB", "A100-80GB"]
    gpt2 = table[table.model == "gpt2"]
    assert (gpt2["T4-16GB"] == "yes").all()  # ~3.5 GiB at most: GPT-2 fits a T4 every way
    full = table[(table.model == "deepseek-coder-1.3b") & (table.strategy == "full fp32")].iloc[0]
    assert full["T4-16GB"] == "no" and full["A100-80GB"] == "yes"
    assert full["total"] == round(estimate_memory("deepseek-coder-1.3b", "full fp32")["total"] / GB, 2)


