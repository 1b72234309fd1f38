"""Pretrain the pocket poet: a small GPT-2 with the real GPT-2 tokenizer, on public-domain verse.

`python -m utils.train.pretrain` trains it from `data/pretrain/` with a fixed seed and writes
`runs/pretrain/<date>-<time>/` (or `--out`; only `--rebuild-pocket` writes the committed
`models/pocket-gpt2/`): fp16 safetensors, config, the loss history and a model card (corpus
sha256, steps, tokens, validation loss, wall time, tokens/s, machine). The `tiny` profile
starts from models/pocket-gpt2. The loop is the one notebook 04b writes out by hand: AdamW, warm-up
then cosine, gradient clipping, periodic validation. A crash loses at most `eval_every` steps:
`--resume` continues from the last checkpoint with the same data order and settings.
utils/train/pretrain_guard.py checks the arguments and the output folder before the first step.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import GPT2Config, GPT2LMHeadModel

from utils.config import POCKET_DIR
from utils.data import corpus as pretrain_data
from utils.evaluate.metrics import block_loss
from utils.models.loading import eval_mode, load_local_base
from utils.models.shapes import peak_gemm_flops
from utils.models.tokenizers import gpt2_tokenizer
from utils.train import pretrain_guard
from utils.train.chunked_loss import lm_loss
from utils.train.corpus_head import CorpusHead, corpus_head_loss
from utils.train.dropout import swap_dropout
from utils.train.pocket_card import model_card
from utils.train.savers import fuse_gelu

SAMPLE_PROMPTS = ("The sea is blue, the sky is red", "Write a poem about the sea and the sky")


@dataclass(frozen=True)
class PretrainConfig:
    """Architecture, schedule and loop settings of the pocket model.

    The defaults are the committed checkpoint's run (models/pocket-gpt2, 2026-12-06: held-out
    4.251 nats/token in 28 minutes on 2 cores), with speed settings it trained without. The
    chunked loss, the fused GELU and the corpus head's single gather of the tied embedding
    compute the same loss and gradients up to float rounding (tests/test_corpus_head.py,
    test_chunked_loss.py), in fewer passes over memory. The 15-bit dropout masks drop with
    probability 0.100006, not 0.1, and draw other masks (utils/train/dropout.py).
    Each speed setting is measured side by side by
    `python -m bench --only pretrain`, the shape by `pretrain-shapes` and dropout by
    `pretrain-dropout` (bench/pretrain.py, bench/pretrain_sweeps.py). Weight decay 1.0 is what
    moved the held-out loss: at 0.1 every shape tried over-fitted after about a dozen passes and
    bottomed out at 4.375 or above (the candidates' cards in results/pocket-next/).
    """

    n_layer: int = 8  # depth is cheap downstream; the width (the 50,257-way head) is not
    n_embd: int = 128
    n_head: int = 4
    block_size: int = 256  # tokens per row; also the model's context (n_positions)
    batch_size: int = 8
    max_tokens: int = 5_000_000  # training tokens seen, ~14 passes over the corpus: about half an hour on 2 cores
    learning_rate: float = 2e-3
    min_lr_ratio: float = 0.1  # cosine decays to 10% of the peak
    warmup_steps: int = 100
    weight_decay: float = 1.0  # 10x GPT-2's: the corpus repeats ~14 times, and 0.1 over-fitted it
    grad_clip: float = 1.0
    eval_every: int = 250  # steps between validation (and checkpoints)
    dropout: float = 0.1  # residual and embedding dropout: the data repeats ~14 times (bench: pretrain-dropout)
    # Dropout on the attention probabilities keeps CPU SDPA off its fused kernel (bench: "attention
    # dropout"); without it the checkpoint trained at 2,986 tokens/s, not 2,672, and ended at
    # 4.251, not 4.259.
    attn_dropout: float = 0.0
    bf16: bool = False  # bf16 autocast: without native bf16 (AVX2) a CPU converts, ~5x slower
    adamw: str = "fused"  # AdamW's update: "fused" (one kernel), "foreach" or "for-loop" (a CPU's default)
    chunked_loss: bool = True  # loss and gradients 256 positions at a time (chunked_loss.py), either head
    compile: bool = False  # torch.compile the model (its body alone with the corpus head)
    fused_gelu: bool = True  # PyTorch's one-kernel tanh GELU for transformers' eight ops (savers.fuse_gelu)
    bits_dropout: bool = True  # dropout masks from 15-bit draws, two per random number (dropout.py)
    head: str = "corpus"  # the training split's tokens + a sample of the rest ("corpus", corpus_head.py) or all 50,257 ("full")
    seed: int = 0

    @property
    def total_steps(self) -> int:
        return max(1, self.max_tokens // (self.batch_size * self.block_size))


def pocket_config(cfg: PretrainConfig, tokenizer) -> GPT2Config:
    return GPT2Config(vocab_size=len(tokenizer), n_positions=cfg.block_size, n_embd=cfg.n_embd,
                      n_layer=cfg.n_layer, n_head=cfg.n_head, resid_pdrop=cfg.dropout,
                      embd_pdrop=cfg.dropout, attn_pdrop=cfg.attn_dropout, bos_token_id=tokenizer.bos_token_id,
                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)


def new_pocket_model(cfg: PretrainConfig, tokenizer) -> GPT2LMHeadModel:
    """A random-init pocket GPT-2. Its class name is not in transformers' loss table, which
    would warn "loss_type=None ... unrecognized" at the first loss: it is a causal LM."""
    model = GPT2LMHeadModel(pocket_config(cfg, tokenizer))
    model.loss_type = "ForCausalLM"
    return model


def learning_rate_at(step: int, cfg: PretrainConfig) -> float:
    """Linear warm-up to the peak, then a cosine down to min_lr_ratio x peak."""
    if step < cfg.warmup_steps:
        return cfg.learning_rate * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.total_steps - cfg.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.learning_rate * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def make_optimizer(model, cfg: PretrainConfig) -> torch.optim.AdamW:
    """AdamW; no weight decay on biases and layer norms (1-D tensors), as in GPT-2's recipe."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(0.9, 0.95),
                             fused=cfg.adamw == "fused", foreach=cfg.adamw == "foreach")


def batch_rows(step: int, n_rows: int, cfg: PretrainConfig) -> torch.Tensor:
    """Row indices of a step: one fixed shuffle per epoch, so a resumed run sees the same data."""
    start = step * cfg.batch_size
    rows = []
    while len(rows) < cfg.batch_size:
        epoch, offset = divmod(start + len(rows), n_rows)
        order = torch.randperm(n_rows, generator=torch.Generator().manual_seed(cfg.seed + epoch))
        rows += order[offset:offset + cfg.batch_size - len(rows)].tolist()
    return torch.tensor(rows)


def _lm_loss(model, batch: torch.Tensor, chunked: bool = False,
             head: CorpusHead | None = None) -> torch.Tensor:
    """Next-token loss of packed blocks; the all-ones mask says: no padding here (EOS is text).

    head: the corpus head's sampled softmax (corpus_head.py) instead of all 50,257 rows.
    chunked: the loss through the tied output layer 256 positions at a time, its gradients
    computed in the forward (chunked_loss.py): a batch's logits never exist at once (the full
    head's: 8 x 256 x 50,257 x 4 bytes = 412 MB), and each chunk's stay in the CPU's cache.
    """
    if head is not None:
        return corpus_head_loss(model, batch, head, chunked)
    if chunked:
        return lm_loss(model, {"input_ids": batch, "attention_mask": torch.ones_like(batch), "labels": batch})
    return model(input_ids=batch, attention_mask=torch.ones_like(batch), labels=batch).loss


def train_step(model, optimizer, batch: torch.Tensor, cfg: PretrainConfig,
               head: CorpusHead | None = None) -> torch.Tensor:
    """One optimizer step on a batch of blocks: loss, backward, clip, update. Returns the loss.

    head: the corpus head that cfg.head == "corpus" trains (`new_run` makes it); None: all rows.
    """
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
        loss = _lm_loss(model, batch, cfg.chunked_loss, head)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def new_run(cfg: PretrainConfig, tokenizer, train: torch.Tensor):
    """(model, optimizer, head) of a fresh run: the random-init model, compiled in place when
    cfg.compile (the module the loss calls: the body alone with the corpus head; the weights,
    their names and the saved files stay the model's own), AdamW, and the corpus head of the
    training blocks (None with cfg.head "full")."""
    model = new_pocket_model(cfg, tokenizer)
    if cfg.fused_gelu:  # the same function; the saved config still says gelu_new
        fuse_gelu(model)
    if cfg.bits_dropout:  # dropout modules hold no weights: the saved model is the same
        swap_dropout(model)
    if cfg.compile:
        (model.transformer if cfg.head == "corpus" else model).compile()
    head = CorpusHead.from_blocks(train, len(tokenizer)) if cfg.head == "corpus" else None
    return model, make_optimizer(model, cfg), head


def sample_texts(model, tokenizer, prompts=SAMPLE_PROMPTS, max_new_tokens: int = 40, seed: int = 0):
    """One sampled continuation per prompt (temperature 0.8, top-k 50), seeded.

    The global random state is forked, so sampling never changes the training run's dropout.
    """
    texts = []
    with torch.random.fork_rng(), eval_mode(model):
        for prompt in prompts:
            torch.manual_seed(seed)
            enc = tokenizer(prompt, return_tensors="pt")
            room = model.config.n_positions - enc["input_ids"].shape[1]  # the context is the limit
            out = model.generate(**enc, do_sample=True, temperature=0.8, top_k=50, top_p=1.0,
                                 max_new_tokens=min(max_new_tokens, room),
                                 pad_token_id=tokenizer.eos_token_id)
            texts.append(tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True))
    return texts


# ---------------------------------------------------------------- checkpoints


def _save_checkpoint(folder: Path, model, optimizer, state: dict) -> None:
    """Weights, optimizer moments, the random state (safetensors, no pickle), then the loop state."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()
               if k != "lm_head.weight"}, folder / "model.tmp")  # lm_head is tied to wte
    moments = {"rng_state": torch.random.get_rng_state()}  # dropout masks continue exactly
    for i, (param, slot) in enumerate(optimizer.state.items()):
        moments.update({f"{i}.exp_avg": slot["exp_avg"], f"{i}.exp_avg_sq": slot["exp_avg_sq"]})
    save_file(moments, folder / "optimizer.tmp")
    os.replace(folder / "model.tmp", folder / "model.safetensors")
    os.replace(folder / "optimizer.tmp", folder / "optimizer.safetensors")
    (folder / "state.tmp").write_text(json.dumps(state, indent=1))
    os.replace(folder / "state.tmp", folder / "state.json")  # the commit point


def _load_checkpoint(folder: Path, model, optimizer) -> dict:
    state = json.loads((folder / "state.json").read_text())
    model.load_state_dict(load_file(folder / "model.safetensors"), strict=False)
    model.tie_weights()
    moments = load_file(folder / "optimizer.safetensors")
    torch.random.set_rng_state(moments["rng_state"])
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for i, param in enumerate(params):
        if f"{i}.exp_avg" in moments:
            optimizer.state[param] = {"step": torch.tensor(float(state["step"])),
                                      "exp_avg": moments[f"{i}.exp_avg"],
                                      "exp_avg_sq": moments[f"{i}.exp_avg_sq"]}
    return state


# ---------------------------------------------------------------- the run


def pretrain(cfg: PretrainConfig, out_dir: Path | None = None, resume: bool = False,
             progress: bool = True, overwrite: bool = False, rebuild_pocket: bool = False) -> dict:
    """Train the pocket model, save it to `out_dir` with its card; returns the history.

    `out_dir` None: a new runs/pretrain/<date>-<time>; the committed models/pocket-gpt2 only
    with rebuild_pocket (pretrain_guard.prepare_out says what else is refused).
    """
    out_dir = pretrain_guard.prepare_out(out_dir, cfg, resume, overwrite, rebuild_pocket)
    torch.manual_seed(cfg.seed)
    tokenizer = gpt2_tokenizer()
    blocks = pretrain_data.pretraining_blocks(tokenizer, cfg.block_size, seed=cfg.seed)
    model, optimizer, head = new_run(cfg, tokenizer, blocks["train"])
    ckpt = out_dir / "checkpoint"
    state = {"step": 0, "history": [], "samples": [], "wall_s": 0.0, "tokens": 0,
             "config": dataclasses.asdict(cfg)}  # --resume compares it (pretrain_guard)
    if resume and (ckpt / "state.json").is_file():
        state = _load_checkpoint(ckpt, model, optimizer)
    elif (ckpt / "state.json").is_file():
        raise FileExistsError(f"{ckpt} holds an unfinished run: pass --resume to continue it, "
                              "or delete that folder to start over")
    if head is not None:  # the card's output-head row
        state["head"] = {"used": len(head.ids), "samples": head.samples, "unused": len(head.unused)}
    model.train()
    start, last = time.perf_counter(), state["wall_s"]
    bar = tqdm(range(state["step"], cfg.total_steps), initial=state["step"], total=cfg.total_steps,
               desc="pretraining", disable=not progress)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(step, cfg)
        batch = blocks["train"][batch_rows(step, len(blocks["train"]), cfg)]
        loss = train_step(model, optimizer, batch, cfg, head)
        state["tokens"] += batch.numel()
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"loss became {loss.item()} at step {step}: lower --learning-rate")
        done = step + 1
        if done % cfg.eval_every == 0 or done == cfg.total_steps:
            state["wall_s"] = last + time.perf_counter() - start
            val = block_loss(model, blocks["validation"])  # the full 50,257-way loss either way
            state["history"].append({"step": done, "tokens": state["tokens"], "train_loss": loss.item(),
                                     "val_loss": val, "lr": learning_rate_at(step, cfg),
                                     "wall_s": round(state["wall_s"], 1)})
            if done in _sample_steps(cfg):
                state["samples"].append({"step": done, "texts": sample_texts(model, tokenizer)})
            bar.set_postfix(train=f"{loss.item():.2f}", val=f"{val:.2f}")
            state["step"] = done
            _save_checkpoint(ckpt, model, optimizer, state)
    state["wall_s"] = last + time.perf_counter() - start if state["step"] < cfg.total_steps else state["wall_s"]
    state["peak_gemm_gflops"] = peak_gemm_flops() / 1e9  # MFU's denominator, on this machine now
    save_pocket(model, tokenizer, out_dir, cfg, state, blocks)
    shutil.rmtree(ckpt)  # the finished model is saved; the resumable state is no longer needed
    return state


def _sample_steps(cfg: PretrainConfig) -> set[int]:
    """A few checkpoints to read samples at: early, a quarter, half, the end."""
    evals = list(range(cfg.eval_every, cfg.total_steps + 1, cfg.eval_every)) or [cfg.total_steps]
    picks = {evals[0], evals[len(evals) // 4], evals[len(evals) // 2], cfg.total_steps}
    return picks


def save_pocket(model, tokenizer, out_dir: Path, cfg: PretrainConfig, state: dict, blocks) -> None:
    """fp16 safetensors (half the bytes; loaded back as fp32), config, history and card."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.generation_config.pad_token_id = tokenizer.eos_token_id
    model.to(torch.float16).save_pretrained(out_dir)
    model.to(torch.float32)
    (out_dir / "history.json").write_text(json.dumps(
        {"config": dataclasses.asdict(cfg), **state}, indent=1))
    (out_dir / "README.md").write_text(model_card(cfg, state, blocks, model))


def load_pocket(path: str | Path = POCKET_DIR, dtype: torch.dtype = torch.float32):
    """The committed pocket model as fp32 (or `dtype`), with a clear error when it is missing."""
    return load_local_base(path, dtype)


def main(argv=None) -> dict:
    fields = {f.name: f for f in dataclasses.fields(PretrainConfig)}
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: a new runs/pretrain/<date>-<time>)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a folder an earlier pretraining wrote (nothing else)")
    parser.add_argument("--rebuild-pocket", action="store_true",
                        help=f"write the committed checkpoint {POCKET_DIR.name} (the default --out then)")
    for name, field in fields.items():
        kind = type(field.default)
        if kind is bool:
            parser.add_argument(f"--{name.replace('_', '-')}", action=argparse.BooleanOptionalAction,
                                default=field.default)
        else:
            parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=field.default)
    args = vars(parser.parse_args(argv))
    out, resume = args.pop("out"), args.pop("resume")
    overwrite, rebuild = args.pop("overwrite"), args.pop("rebuild_pocket")
    cfg = PretrainConfig(**args)
    if rebuild:
        out, overwrite = out or POCKET_DIR, True
    out = pretrain_guard.prepare_out(out, cfg, resume, overwrite, rebuild)
    print(f"pretraining {cfg.total_steps:,d} steps ({cfg.max_tokens:,d} tokens) into {out}")
    state = pretrain(cfg, out, resume=resume, overwrite=overwrite, rebuild_pocket=rebuild)
    print(f"validation loss {state['history'][-1]['val_loss']:.3f}; card: {out / 'README.md'}")
    return state


def cli(argv=None) -> None:
    """main, with a refused argument or folder ending in one line instead of a traceback."""
    try:
        main(argv)
    except (ValueError, FileExistsError) as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    cli()
