"""LoRA: the adapter config of a profile, applying it, the trainable-parameter line, merging. Notebook 06.
"""

from __future__ import annotations

import contextlib
import functools
import io
import warnings

from utils.config import Profile, get_profile
from utils.models.shapes import count_parameters


def lora_config(profile: Profile | str | None = None, target_modules=None):
    """LoRA settings of stage 1: r, alpha, dropout from the profile, peft's default targets."""
    from peft import LoraConfig, TaskType

    profile = get_profile(profile)
    s1 = profile.stage1
    return LoraConfig(task_type=TaskType.CAUSAL_LM, r=s1.lora_r, lora_alpha=s1.lora_alpha,
                      lora_dropout=s1.lora_dropout, target_modules=target_modules,
                      # GPT-2 stores its projections transposed (Conv1D); peft must know.
                      fan_in_fan_out=profile.model.architecture == "gpt2")


def apply_lora(model, profile: Profile | str | None = None, target_modules=None):
    """Wrap a model with LoRA adapters (peft); only the adapters stay trainable. Notebook 06."""
    from peft import get_peft_model

    with warnings.catch_warnings():
        # peft 0.21 reads `model.is_gradient_checkpointing`, which transformers 5.2x renamed and
        # warns about on every read; the read is inside peft, so only that one notice is muted.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        peft_model = get_peft_model(model, lora_config(profile, target_modules))
    # Saving an adapter, peft's default save_embedding_layers="auto" asks the hub for the base
    # model's config.json to learn whether the vocabulary was resized; offline it cannot, and
    # warns "Could not find a config file in openai-community/gpt2". The course never resizes
    # nor targets the embeddings, so the answer is known: every save (ours, the Trainer's
    # checkpoints) says so, and the adapter stays the LoRA weights alone.
    peft_model.save_pretrained = functools.partial(peft_model.save_pretrained, save_embedding_layers=False)
    return peft_model


def trainable_parameter_line(model) -> str:
    """peft's 'trainable params: ... || all params: ... || trainable%: ...' line, as a string."""
    if hasattr(model, "print_trainable_parameters"):
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            model.print_trainable_parameters()
        return buffer.getvalue().strip()
    trainable, total = count_parameters(model)
    return (f"trainable params: {trainable:,d} || all params: {total:,d} || "
            f"trainable%: {100 * trainable / total:.4f}")


def merge_lora(peft_model):
    """Fold the LoRA adapters into the base weights and drop the wrapper. Notebook 06."""
    return peft_model.merge_and_unload()
