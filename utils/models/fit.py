"""Will this run fit on this GPU? The memory calculator's estimate against the card, before a download.

A real profile on too small a card would download the weights (2.7 GB for DeepSeek-Coder
1.3B) and then run out of memory in stage 2. `check_gpu_memory` compares `utils.models.memory`'s
estimate of each training stage with the card and stops first, naming the ways out.
Introduced in notebook 11; called by `python -m utils.pipeline` before the tokenizer, the data
and the weights, by `loading.load_model` before `from_pretrained`, and by the setup cell.
"""

from __future__ import annotations

import dataclasses
import os

import torch

from utils.config import REPO_ROOT, Profile, get_profile
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
# Sharded training over several GPUs of one machine (Kaggle's 2 x T4): FSDP through accelerate.
FSDP_CONFIG = REPO_ROOT / "configs" / "accelerate_fsdp_2gpu.yaml"
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


def stage_estimates(profile: Profile, config, shards: int = 1, extra=None) -> dict[str, int]:
    """Estimated peak bytes of stage 1 (LoRA, fp32 base) and stage 2 (full, mixed precision),
    and of the `extra` stages ({name: estimate(config, shards) -> bytes}, from the rooms above,
    such as the reward stage's); per GPU when `shards` GPUs share the model (FSDP)."""
    seq = profile.data.max_length
    s1, s2 = profile.stage1, profile.stage2
    found = {"stage 1 (LoRA r=%d, fp32 base)" % s1.lora_r: estimate_memory(
                config, "LoRA r=8, fp32 base", s1.per_device_train_batch_size, seq, s1.lora_r,
                shards=shards)["total"],
            "stage 2 (full fine-tuning, mixed precision)": estimate_memory(
                config, "full mixed precision", s2.per_device_train_batch_size, seq,
                shards=shards)["total"]}
    for name, estimate in (extra or {}).items():
        found[name] = estimate(config, shards)
    return found


def options(profile: Profile, config, gpus: int = 1) -> list[str]:
    """The ways out, each with the calculator's estimate for stage 2; sharding where gpus > 1."""
    batch, seq = profile.stage2.per_device_train_batch_size, profile.data.max_length
    full = STRATEGIES["full mixed precision"]
    checkpointed = dataclasses.replace(full, name="full + checkpointing", checkpointing=True)
    need = estimate_memory(config, full, batch, seq)["total"]
    lora = estimate_memory(config, "LoRA r=8, half base", batch, seq)["total"]
    ckpt = estimate_memory(config, checkpointed, batch, seq)["total"]
    # AdamW keeps 8 bytes of state per weight; an 8-bit AdamW keeps 2.
    adam8 = need - 6 * parameter_counts(config)[0]
    bigger = [gpu for gpu, size in GPUS_GB.items() if need <= FIT_FRACTION * size * GB]
    found = [f"LoRA for stage 2 as well (half-precision base): {lora / GB:.1f} GiB",
             f"gradient checkpointing in stage 2: {ckpt / GB:.1f} GiB",
             f"an 8-bit optimizer (bitsandbytes, optim='adamw_bnb_8bit'): {adam8 / GB:.1f} GiB",
             f"a bigger card: {', '.join(bigger) or 'larger than ' + list(GPUS_GB)[-1]}",
             f"or go on anyway: set {IGNORE_ENV}=1 (e.g. to evaluate only)"]
    if gpus > 1:
        sharded = estimate_memory(config, full, batch, seq, shards=gpus)["total"]
        found.insert(0, f"shard the model over this machine's {gpus} GPUs (FSDP): {sharded / GB:.1f} "
                        f"GiB per GPU; `accelerate launch --config_file {FSDP_CONFIG.relative_to(REPO_ROOT)}"
                        f" --num_processes {gpus} -m utils.pipeline --profile {profile.name}`")
    return found


def fsdp_shards() -> int:
    """How many GPUs share the model in this process's run: WORLD_SIZE under an FSDP launch, else 1.

    `accelerate launch --config_file configs/accelerate_fsdp_2gpu.yaml` sets ACCELERATE_USE_FSDP.
    """
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true"):
        return int(os.environ.get("WORLD_SIZE", "1"))
    return 1


def gpu_count() -> int:
    """CUDA GPUs on this machine (0 without CUDA)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_gpu_memory(profile: Profile | str | None = None, card_bytes: int | None = None,
                     ignore: bool | None = None, shards: int | None = None,
                     gpus: int | None = None, extra=None) -> dict | None:
    """Stop (GPUMemoryError) when a stage's estimate exceeds the card, unless asked to go on.

    `shards`: GPUs the model is sharded over (default: fsdp_shards()); the estimates are then
    per GPU. `gpus`: GPUs on the machine (default: counted; 1 with a given card_bytes), which
    adds sharding to the options when more than one. `extra`: more stages to size (see
    stage_estimates). Returns {stage: bytes} when checked, None where there is nothing to
    check (a tiny profile, no CUDA GPU, or a model the calculator cannot describe offline).
    """
    profile = get_profile(profile)
    if profile.is_tiny or (card_bytes is None and not torch.cuda.is_available()):
        return None
    if card_bytes is None:
        card_bytes, gpus = torch.cuda.get_device_properties(0).total_memory, gpus or gpu_count()
    shards = shards or fsdp_shards()
    try:
        config = model_config(profile)
    except (OSError, ValueError) as error:  # offline and unknown: from_pretrained will say why
        print(f"memory check skipped: no config for {profile.model.model_name_or_path} ({error})")
        return None
    estimates = stage_estimates(profile, config, shards, extra)
    usable = FIT_FRACTION * card_bytes
    per_gpu = f" per GPU, sharded over {shards} GPUs" if shards > 1 else ""
    lines = [f"  {stage}: {need / GB:.1f} GiB{per_gpu}" for stage, need in estimates.items()]
    if max(estimates.values()) <= usable:
        print(f"memory check: fits in {usable / GB:.1f} GiB usable of {card_bytes / GB:.1f} GiB\n"
              + "\n".join(lines))
        return estimates
    message = (f"the {profile.name} profile needs more GPU memory than this card has "
               f"({usable / GB:.1f} GiB usable of {card_bytes / GB:.1f} GiB; "
               f"{FIT_FRACTION:.0%} leaves room for the CUDA context):\n" + "\n".join(lines)
               + "\nOptions:\n"
               + "\n".join(f"  - {o}" for o in options(profile, config, gpus or 1)))
    if ignore if ignore is not None else env_flag(IGNORE_ENV):
        print("warning: " + message + f"\n{IGNORE_ENV} is set: going on.")
        return estimates
    raise GPUMemoryError(message)


def setup_check(profile: Profile | str | None = None) -> str | None:
    """At setup, on a CUDA machine: say now, with the options, when the profile will not fit.

    The setup cell calls this after `env.describe()`; the pipeline would stop later with the
    same message, after the student has waited for nothing. Returns the warning, or None.
    """
    try:
        check_gpu_memory(profile, ignore=False)
    except GPUMemoryError as error:
        warning = f"warning: {error}"
        print(warning)
        return warning
    return None
