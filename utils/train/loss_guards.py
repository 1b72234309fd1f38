"""Guards on a training run's loss: NaN or infinity, and a finite loss that explodes.

Trainer callbacks that stop a run with a message naming the learning rate and the dtype, before
the weights turn to NaN. Used by utils/train/trainer.py's build_trainer for every stage.
"""

from __future__ import annotations

import math

from transformers import TrainerCallback, TrainingArguments


class NonFiniteLossError(FloatingPointError):
    """The training or validation loss became NaN or infinite; the message says what to change."""


class DivergedLossError(NonFiniteLossError):
    """The training loss exploded while still finite (DivergenceCallback's rule)."""


def dtype_name(args: TrainingArguments) -> str:
    """The precision a run trains in, as a word: bfloat16, float16 or float32."""
    return "bfloat16" if args.bf16 else "float16" if args.fp16 else "float32"


# ---------------------------------------------------------------- callbacks


class NonFiniteLossCallback(TrainerCallback):
    """Stops training with a clear error when a logged loss is NaN or infinite."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key in ("loss", "eval_loss"):
            value = (logs or {}).get(key)
            if value is not None and not math.isfinite(value):
                raise NonFiniteLossError(
                    f"{key} became {value} at step {state.global_step} (learning_rate="
                    f"{args.learning_rate:g}, dtype={dtype_name(args)}). Lower the learning rate "
                    "(--learning-rate), or train in float32/bfloat16 instead of float16.")


class DivergenceCallback(TrainerCallback):
    """Stops a run whose training loss explodes, before its weights turn to NaN.

    The rule: a logged loss above 3x the first one logged, or above 2 ln(vocab_size) (twice
    what guessing every token uniformly costs; no model, trained or random, honestly sits
    there). A finite loss like 1.4e6 (learning rate 100) passes the NaN guard; this catches it.
    """

    def __init__(self):
        self.first = None

    def on_log(self, args, state, control, logs=None, model=None, **kwargs):
        value = (logs or {}).get("loss")
        if value is None or not math.isfinite(value):
            return  # NonFiniteLossCallback speaks for NaN and infinity
        self.first = value if self.first is None else self.first
        vocab = getattr(getattr(model, "config", None), "vocab_size", None)
        ceiling = 2 * math.log(vocab) if vocab else math.inf
        if value > 3 * self.first or value > ceiling:
            raise DivergedLossError(
                f"training loss diverged: {value:.4g} at step {state.global_step}, against "
                f"{self.first:.4g} first logged and {ceiling:.4g} = 2 ln(vocab) (learning_rate="
                f"{args.learning_rate:g}). Lower the learning rate (--learning-rate), e.g. by 10x.")
