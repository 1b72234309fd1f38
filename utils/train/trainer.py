"""One Trainer wrapper for both fine-tuning stages: arguments, callbacks, the loss, validation.

Stage 1 (notebook 06) trains LoRA adapters on packed blocks of poems; stage 2 (notebook 07)
trains every weight on poetry instructions. Both go through `build_trainer` and `train`, and
`python -m utils.pipeline` runs them headless, alone or under torchrun / accelerate launch.
"""

from __future__ import annotations

import os
import time

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from utils.config import IGNORE_INDEX, TrainConfig
from utils.env import peak_memory_mb, pick_device, pick_dtype
from utils.models.files import last_checkpoint
from utils.models.loading import eos_is_not_padding, eval_mode
from utils.train.chunked_loss import lm_loss, supports_chunked_loss
from utils.train.loss_guards import DivergenceCallback, NonFiniteLossCallback
from utils.train.savers import LeanLoRA, is_lora

# ---------------------------------------------------------------- arguments


def precision_flags(device: torch.device | str | None = None) -> dict:
    """{'bf16': ..., 'fp16': ...} for TrainingArguments: bf16 on Ampere+, fp16 on a T4, fp32 on CPU."""
    dtype = pick_dtype(device)
    return {"bf16": dtype == torch.bfloat16, "fp16": dtype == torch.float16}


def training_arguments(cfg: TrainConfig, output_dir, save_steps: int | None = None,
                       **overrides) -> TrainingArguments:
    """TrainingArguments (transformers v5 names) from a stage's TrainConfig. Notebook 06."""
    device, world = pick_device(), int(os.environ.get("WORLD_SIZE", "1"))
    args = dict(
        output_dir=str(output_dir), seed=cfg.seed, data_seed=cfg.seed,
        num_train_epochs=cfg.num_train_epochs, max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup_steps,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        per_device_eval_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        eval_strategy="steps", eval_steps=cfg.eval_steps,
        logging_strategy="steps", logging_steps=cfg.logging_steps,
        # Off: the default filter would hide a NaN loss that NonFiniteLossCallback must see.
        logging_nan_inf_filter=False,
        save_strategy="steps", save_steps=save_steps or cfg.eval_steps, save_total_limit=2,
        report_to="none", dataloader_num_workers=0, remove_unused_columns=False,
        dataloader_pin_memory=device.type == "cuda",
        # Bit-for-bit reruns on a CPU (the resume test needs them); on a GPU deterministic
        # kernels cost speed, so there the seed alone is used.
        full_determinism=device.type == "cpu",
        # Several CPU processes (torchrun on a laptop, the DDP test) talk through gloo.
        use_cpu=device.type == "cpu", ddp_backend="gloo" if device.type == "cpu" and world > 1 else None,
        ddp_find_unused_parameters=False,  # every trainable weight is used in every step
        **precision_flags(device),
    )
    args.update(overrides)
    return TrainingArguments(**args)


class TrainingStatsCallback(TrainerCallback):
    """Adds tokens_per_second, padding_share and peak_memory_mb to every training log entry.

    It also logs the last step, whatever logging_steps says, so every run ends with a loss.

    The trainer hands it each batch (`count`); the clock runs only between on_step_begin and
    on_step_end, so evaluation and checkpoint saving do not dilute the throughput.
    """

    def __init__(self):
        self.total = {"tokens": 0, "positions": 0, "seconds": 0.0}
        self.window = dict(self.total)
        self._start = None

    def count(self, inputs: dict) -> None:
        mask = inputs.get("attention_mask")
        positions = inputs["input_ids"].numel()
        tokens = int(mask.sum()) if mask is not None else positions  # packed rows have no padding
        for bucket in (self.total, self.window):
            bucket["tokens"] += tokens
            bucket["positions"] += positions

    def on_train_begin(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self._start is not None:
            seconds = time.perf_counter() - self._start
            self.total["seconds"] += seconds
            self.window["seconds"] += seconds
        if state.global_step >= state.max_steps:
            control.should_log = True  # always log the final steps' loss: it is the run's train_loss
        return control

    @staticmethod
    def summarise(bucket: dict) -> dict:
        """tokens_per_second, padding_share and peak_memory_mb of a bucket of counts."""
        seconds, positions = bucket["seconds"], bucket["positions"]
        return {"tokens_per_second": round(bucket["tokens"] / seconds, 1) if seconds else 0.0,
                "padding_share": round(1 - bucket["tokens"] / positions, 4) if positions else 0.0,
                "peak_memory_mb": round(peak_memory_mb(), 1)}

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or "loss" not in logs:
            return
        stats = self.summarise(self.window)
        logs.update(stats)
        state.log_history[-1].update(stats)  # the Trainer stored a copy of logs before calling us
        self.window = {"tokens": 0, "positions": 0, "seconds": 0.0}


class PoetTrainer(Trainer):
    """A Trainer that shows each training batch to a TrainingStatsCallback before the step."""

    def __init__(self, *args, stats: TrainingStatsCallback | None = None, loss_fn=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.stats, self.loss_fn = stats, loss_fn

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The loss of one batch; packed rows (no attention mask) are not mistaken for padding."""
        with eos_is_not_padding(self.model):
            return self._loss(model, inputs, return_outputs, num_items_in_batch)

    def _loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """loss_fn(model, inputs, num_items) when set (the chunked loss), else the model's."""
        # A DDP-wrapped model must run its own forward, or its gradients would not be synchronised.
        if self.loss_fn is None or return_outputs or not model.training or model is not self.model:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        scaled = self.model_accepts_loss_kwargs and num_items_in_batch is not None
        loss = self.loss_fn(model, inputs, num_items_in_batch if scaled else None)
        if scaled and self.args.average_tokens_across_devices:
            loss = loss * self.accelerator.num_processes  # as the Trainer's own loss path does
        return loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        if self.stats is not None:
            self.stats.count(inputs)
        return super().training_step(model, inputs, num_items_in_batch)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
        """Loss per label token over the whole split (the Trainer's own averages batch means)."""
        start, model = time.perf_counter(), self.model
        sums = torch.zeros(2, dtype=torch.float64, device=self.args.device)  # (sum of NLL, tokens)
        with eval_mode(model), eos_is_not_padding(model):
            for inputs in self.get_eval_dataloader(eval_dataset):
                inputs = self._prepare_inputs(inputs)
                count = (inputs["labels"][..., 1:] != IGNORE_INDEX).sum()  # the model shifts by one
                with self.compute_loss_context_manager():
                    loss = self._eval_loss(model, inputs)
                sums += torch.stack([loss.double() * count, count.double()])
        sums = self.accelerator.reduce(sums, reduction="sum")  # all processes' shares of the split
        metrics = {f"{metric_key_prefix}_loss": (sums[0] / sums[1]).item(),
                   f"{metric_key_prefix}_runtime": round(time.perf_counter() - start, 3)}
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def _eval_loss(self, model, inputs) -> torch.Tensor:
        """The mean loss per label token of a batch: through loss_fn, which projects only the
        label positions onto the vocabulary (a prompt or padding position costs a row of 50,257
        logits in the model's own loss), else the model's."""
        if self.loss_fn is None or model is not self.model:
            return model(**inputs).loss
        return self.loss_fn(model, inputs, None)


def build_trainer(model, cfg: TrainConfig, output_dir, train_rows, eval_rows, collator,
                  tokenizer=None, callbacks=(), **arg_overrides) -> PoetTrainer:
    """A PoetTrainer with the stats, NaN and divergence callbacks; evaluates on the validation rows."""
    args = training_arguments(cfg, output_dir, **arg_overrides)
    stats = TrainingStatsCallback()
    # A LoRA model (stage 1) trains with checkpointing (utils/train/savers.py). Both stages score
    # only the positions that have a label, a chunk of the vocabulary's logits at a time
    # (utils/train/chunked_loss.py): stage 2's prompts and padding then cost no logits at all.
    lean = [LeanLoRA(model)] if is_lora(model) else []
    return PoetTrainer(model=model, args=args, train_dataset=list(train_rows),
                       eval_dataset=list(eval_rows), data_collator=collator,
                       processing_class=tokenizer, stats=stats,
                       loss_fn=lm_loss if supports_chunked_loss(model) else None,
                       callbacks=[stats, NonFiniteLossCallback(), DivergenceCallback(), *callbacks,
                                  *lean])


def last_logged(history: list[dict], key: str = "loss"):
    """The last value of `key` in a Trainer log_history (None if never logged)."""
    values = [entry[key] for entry in history if key in entry]
    return values[-1] if values else None


def train(trainer: PoetTrainer, resume: bool = False) -> dict:
    """Train (from the last complete checkpoint when resume=True); return the run's numbers.

    train_loss is the last logged training loss, as in the Trainer's table; the Trainer's own
    average would be wrong after a resume, because it restarts its running sum at the resume step.
    """
    checkpoint = last_checkpoint(trainer.args.output_dir) if resume else None
    if checkpoint:
        print(f"resuming from {checkpoint}")
    output = trainer.train(resume_from_checkpoint=checkpoint)
    history = trainer.state.log_history
    summary = {"train_loss": last_logged(history, "loss"),
               "last_eval_loss": last_logged(history, "eval_loss"),
               "global_step": trainer.state.global_step,
               "train_runtime": round(output.metrics.get("train_runtime", 0.0), 2),
               "resumed_from": checkpoint,
               **TrainingStatsCallback.summarise(all_processes(trainer.stats.total, trainer.args.device))}
    return summary


def all_processes(bucket: dict, device=None) -> dict:
    """Token counts summed over the DDP processes; the time is the slowest process's."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return bucket
    # nccl only moves GPU tensors, hence the device
    counts = torch.tensor([bucket["tokens"], bucket["positions"]], dtype=torch.float64, device=device)
    seconds = torch.tensor([bucket["seconds"]], dtype=torch.float64, device=device)
    dist.all_reduce(counts)
    dist.all_reduce(seconds, op=dist.ReduceOp.MAX)
    return {"tokens": int(counts[0]), "positions": int(counts[1]), "seconds": float(seconds[0])}


# ---------------------------------------------------------------- rows and batches


