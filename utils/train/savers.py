"""Stage 1's memory savers on a frozen base: checkpointing every second block, GPT-2's GELU fused,
the chunked loss switched on. Notebook 11 measures each (bench/).
"""

from __future__ import annotations

import dataclasses
import inspect

import torch
from transformers import TrainerCallback, TrainingArguments

from utils.train.chunked_loss import causal_lm

EVERY_N_LAYERS = 2  # stage 1 checkpoints blocks 0, 2, 4, ...: see LeanLoRA


class LeanLoRA(TrainerCallback):
    """Stage 1's savers on a LoRA model for one training run, undone when it ends.

    - Activation checkpointing of every `every_n_layers`-th block (measured, notebook 11:
      every second block keeps the peak under 0.4 x full fine-tuning's and the step faster).
      The frozen base's inputs do not require grad, so checkpointed blocks would pass no
      gradient back to the adapters: `enable_input_require_grads` makes the embeddings'
      output require it. use_cache off: a cache is useless in training, and transformers
      warns that it is incompatible with checkpointing.
    - GPT-2's GELU as one fused kernel (`fuse_gelu`).
    At the end the model is left as it was, so the merged model carries neither into stage 2
    or generation.
    """

    def __init__(self, model, checkpointing: bool = True, every_n_layers: int = EVERY_N_LAYERS,
                 fused_gelu: bool = True):
        self.model, self.use_cache, self.checkpointing = model, causal_lm(model).config.use_cache, checkpointing
        self.gelus = fuse_gelu(model) if fused_gelu else []
        if checkpointing:
            causal_lm(model).config.use_cache = False
            set_checkpointing(model, True, every_n_layers)
            model.enable_input_require_grads()

    def on_train_end(self, args=None, state=None, control=None, **kwargs):
        unfuse_gelu(self.gelus)
        if self.checkpointing:
            set_checkpointing(self.model, False)
            self.model.disable_input_require_grads()
            causal_lm(self.model).config.use_cache = self.use_cache


def fuse_gelu(model) -> list:
    """Swap GPT-2's `gelu_new` modules for PyTorch's fused tanh GELU; returns what `unfuse_gelu` puts back.

    Both compute 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))). transformers writes it as
    eight elementwise tensor operations, and autograd keeps four 1,024 x 3,072 intermediates
    of each block for the backward (48 MB a block at batch 2 x 512); the fused kernel keeps
    only its input and runs faster. The values differ by float rounding only.
    """
    from transformers.activations import NewGELUActivation

    return swap_modules(model, lambda m: type(m) is NewGELUActivation,
                        lambda m: torch.nn.GELU(approximate="tanh"))


def swap_modules(model, matches, make) -> list:
    """Replace each submodule for which matches(module) is true with make(module); returns
    (parent, name, old module) of each swap, what `unfuse_gelu` puts back."""
    swaps = [(parent, name, child) for parent in model.modules()
             for name, child in parent.named_children() if matches(child)]
    for parent, name, child in swaps:
        setattr(parent, name, make(child))
    return swaps


def unfuse_gelu(swaps: list) -> None:
    """Put back the modules `fuse_gelu` replaced."""
    for parent, name, child in swaps:
        setattr(parent, name, child)


def set_checkpointing(model, on: bool, every_n_layers: int = 1) -> None:
    """Activation checkpointing on or off, by transformers' current names where it has them
    (5.2x renamed gradient_checkpointing_* and warns on the old names; Colab's may predate it,
    and then checkpoints every block: less memory, a slower step)."""
    lm = causal_lm(model)
    if not on:
        (getattr(lm, "activation_checkpointing_disable", None) or lm.gradient_checkpointing_disable)()
    elif hasattr(lm, "activation_checkpointing_enable"):
        enable = lm.activation_checkpointing_enable
        some = {"every_n_layers": every_n_layers} if "every_n_layers" in inspect.signature(enable).parameters else {}
        enable(activation_checkpointing_kwargs={"use_reentrant": False}, **some)
    else:
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def checkpointing_argument() -> str:
    """The TrainingArguments field that switches checkpointing: its v5 name where it exists.

    transformers 5.2x renamed gradient_checkpointing to activation_checkpointing and warns on
    the old name; Colab's transformers may predate the rename.
    """
    fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    return "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"


def is_lora(model) -> bool:
    """True for a peft model with a frozen base: the case the stage-1 savers are for."""
    return hasattr(model, "peft_config") and any(not p.requires_grad for p in model.parameters())
