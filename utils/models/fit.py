"""Will this run fit on this GPU? The memory calculator's estimate against the card, before a download.

A real profile on too small a card would download the weights (2.7 GB for DeepSeek-Coder
1.3B) and then run out of memory in stage 2. `check_gpu_memory` compares `utils.models.memory`'s
estimate of each training stage with the card and stops first, naming the ways out.
Introduced in notebook 11; called by `modeling.load_model` before `from_pretrained`.
"""

from __future__ import annotations

import dataclasses

import torch

from utils.config import Profile, get_profile
from utils.env import env_flag
from utils.models.memory import (
    FIT_FRACTION,
    GB,
    GPUS_GB,
    STRATEGIES,
    estimate_memory,
    parameter_counts,
)

IGNORE_ENV = "POET_IGNORE_MEMORY_CHECK"  # 1/true: go on although the estimate does not fit
# Hub ids the calculator knows offline (utils.models.loading.REFERENCE_CONFIGS).
REFERENCE_MODELS = {"openai-community/gpt2": "gpt2", "gpt2": "gpt2",
                    "deepseek-ai/deepseek-coder-1.3b-base": "deepseek-coder-1.3b"}


class GPUMemoryError(ValueError):
    """The run's estimated memory exceeds the GPU's; the message lists the options.

    A ValueError: the profile is a bad setting for this card, and the CLI reports it in one line.
    """


def model_config(profile: Profile):
    """The model's config for the calculator: built offline if known, else config.json only."""
    name = profile.model.model_name_or_path
    if name in REFERENCE_MODELS:
        return REFERENCE_MODELS[name]
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(name)  # a few kB; the weights come later


def stage_estimates(profile: Profile, config) -> dict[str, int]:
    """Estimated peak bytes of stage 1 (LoRA, fp32 base) and stage 2 (full, mixed precision)."""
    seq = profile.data.max_length
    s1, s2 = profile.stage1, profile.stage2
    return {"stage 1 (LoRA r=%d, fp32 base)" % s1.lora_r: estimate_memory(
                config, "LoRA r=8, fp32 base", s1.per_device_train_batch_size, seq, s1.lora_r)["total"],
            "stage 2 (full fine-tuning, mixed precision)": estimate_memory(
                config, "full mixed precision", s2.per_device_train_batch_size, seq)["total"]}


def options(profile: Profile, config) -> list[str]:
    """The ways out, each with the calculator's estimate for stage 2."""
    batch, seq = profile.stage2.per_device_train_batch_size, profile.data.max_length
    full = STRATEGIES["full mixed precision"]
    checkpointed = dataclasses.replace(full, name="full + checkpointing", checkpointing=True)
    need = estimate_memory(config, full, batch, seq)["total"]
    lora = estimate_memory(config, "LoRA r=8, half base", batch, seq)["total"]
    ckpt = estimate_memory(config, checkpointed, batch, seq)["total"]
    # AdamW keeps 8 bytes of state per weight; an 8-bit AdamW keeps 2.
    adam8 = need - 6 * parameter_counts(config)[0]
    bigger = [gpu for gpu, size in GPUS_GB.items() if need <= FIT_FRACTION * size * GB]
    return [f"LoRA for stage 2 as well (half-precision base): {lora / GB:.1f} GiB",
            f"gradient checkpointing in stage 2: {ckpt / GB:.1f} GiB",
            f"an 8-bit optimizer (bitsandbytes, optim='adamw_bnb_8bit'): {adam8 / GB:.1f} GiB",
            f"a bigger card: {', '.join(bigger) or 'larger than ' + list(GPUS_GB)[-1]}",
            f"or go on anyway: set {IGNORE_ENV}=1 (e.g. to evaluate only)"]


def check_gpu_memory(profile: Profile | str | None = None, card_bytes: int | None = None,
                     ignore: bool | None = None) -> dict | None:
    """Stop (GPUMemoryError) when a stage's estimate exceeds the card, unless asked to go on.

    Returns {stage: bytes} when checked, None where there is nothing to check (a tiny
    profile, no CUDA GPU, or a model the calculator cannot describe offline).
    """
    profile = get_profile(profile)
    if profile.is_tiny or (card_bytes is None and not torch.cuda.is_available()):
        return None
    if card_bytes is None:
        card_bytes = torch.cuda.get_device_properties(0).total_memory
    try:
        config = model_config(profile)
    except (OSError, ValueError) as error:  # offline and unknown: from_pretrained will say why
        print(f"memory check skipped: no config for {profile.model.model_name_or_path} ({error})")
        return None
    estimates = stage_estimates(profile, config)
    usable = FIT_FRACTION * card_bytes
    lines = [f"  {stage}: {need / GB:.1f} GiB" for stage, need in estimates.items()]
    if max(estimates.values()) <= usable:
        print(f"memory check: fits in {usable / GB:.1f} GiB usable of {card_bytes / GB:.1f} GiB\n"
              + "\n".join(lines))
        return estimates
    message = (f"the {profile.name} profile needs more GPU memory than this card has "
               f"({usable / GB:.1f} GiB usable of {card_bytes / GB:.1f} GiB; "
               f"{FIT_FRACTION:.0%} leaves room for the CUDA context):\n" + "\n".join(lines)
               + "\nOptions:\n" + "\n".join(f"  - {o}" for o in options(profile, config)))
    if ignore if ignore is not None else env_flag(IGNORE_ENV):
        print("warning: " + message + f"\n{IGNORE_ENV} is set: going on.")
        return estimates
    raise GPUMemoryError(message)
