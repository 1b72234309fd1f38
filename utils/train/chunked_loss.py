"""Chunked cross-entropy for both fine-tuning stages and pretraining: the loss, a slice at a time.

At the seed's workload (batch 2 x 512, GPT-2 shape) a LoRA step is dominated by activations
and the fp32 logits (2 x 512 x 50,257 x 4 bytes = 206 MB, several copies in the backward),
not by optimizer state. `lm_loss` computes the loss from the final hidden states through the
output layer `chunk` positions at a time, and computes the gradient during the forward, so no
more than one chunk of logits ever exists. It also projects only the positions that have a
label: in stage 2 a prompt or padding position would otherwise cost a row of 50,257 logits
forward and back, which is most of a small model's step and of its validation. The other
savers (checkpointing, the fused GELU) are stage 1's, in utils/train/savers.py;
utils/train/trainer.py hooks them into the pipeline; notebook 11 measures what each buys.
Pretraining's corpus head (utils/train/corpus_head.py) uses `linear_cross_entropy` for speed
rather than memory: a chunk's logits stay in the CPU's cache (`bench --only pretrain`).
"""

from __future__ import annotations

import torch

from utils.config import IGNORE_INDEX

CHUNK = 256  # positions per slice of logits: 256 x 50,257 x 4 bytes = 51 MB for GPT-2


class LinearCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of (hidden @ weight.T) against labels, `chunk` rows at a time.

    The loss is a sum, so its gradient is the per-chunk (softmax - one_hot) terms times the
    incoming scalar: they are computed in the forward, chunk by chunk, and only the gradients
    for hidden (and weight, if it trains) are kept; the backward scales them. Logits are fp32.
    tail: (n, value) adds value to the logits of weight's last n rows, or None: pretraining's
    corpus head puts its sampled rows last, each standing for many (utils/train/corpus_head.py).
    A slice of the logits, not a bias over all of them: a bias in the matmul copies every logit.
    """

    @staticmethod
    def forward(ctx, hidden, weight, labels, chunk, tail=None):
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_h = hidden.new_empty(hidden.shape) if need_h else None  # every row is written below
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if need_w else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk):
            h, y = hidden[start:start + chunk], labels[start:start + chunk]
            logits = (h @ weight.T).float()
            if tail:
                logits[:, -tail[0]:] += tail[1]
            # log-sum-exp by hand, in place: the exponentials become the softmax below, so a
            # chunk's logits are read and written a few times and never copied
            picked = logits.gather(1, y[:, None])[:, 0]
            top = logits.amax(dim=-1, keepdim=True)
            probs = logits.sub_(top).exp_()
            sums = probs.sum(dim=-1, keepdim=True)
            total += (top[:, 0] + sums[:, 0].log() - picked).sum()
            if need_h or need_w:
                probs.div_(sums)[torch.arange(len(y), device=y.device), y] -= 1.0  # softmax - one_hot
                g = probs.to(hidden.dtype)
                if need_h and g.dtype == weight.dtype:
                    torch.mm(g, weight, out=grad_h[start:start + chunk])
                elif need_h:
                    grad_h[start:start + chunk] = g @ weight
                if need_w:
                    if grad_w.dtype == g.dtype:  # fp32: accumulate in place, no product to copy
                        grad_w.addmm_(g.T, h)
                    else:
                        grad_w += (g.T @ h).float()
            del logits
        ctx.save_for_backward(*(t for t in (grad_h, grad_w) if t is not None))
        ctx.has, ctx.weight_dtype = (need_h, need_w), weight.dtype
        return total

    @staticmethod
    def backward(ctx, grad_out):
        saved = iter(ctx.saved_tensors)
        grad_h = next(saved) * grad_out.to(ctx.saved_tensors[0].dtype) if ctx.has[0] else None
        grad_w = (next(saved) * grad_out).to(ctx.weight_dtype) if ctx.has[1] else None
        return grad_h, grad_w, None, None, None


def linear_cross_entropy(hidden, weight, labels, chunk: int = CHUNK,
                         tail: tuple[int, float] | None = None) -> torch.Tensor:
    """Summed next-token loss of hidden states (..., d) against labels (...), IGNORE_INDEX skipped.

    tail: (n, value) added to the logits of weight's last n rows (LinearCrossEntropy), or None.
    """
    hidden, labels = hidden.reshape(-1, hidden.shape[-1]), labels.reshape(-1)
    keep = labels != IGNORE_INDEX  # only positions with a label cost a row of logits
    if bool(keep.all()):  # packed pretraining blocks: every position has one, nothing to copy
        keep = slice(None)
    if not torch.is_grad_enabled():  # validation: detached inputs, so the forward builds no gradients
        hidden, weight = hidden.detach(), weight.detach()
    return LinearCrossEntropy.apply(hidden[keep], weight, labels[keep], chunk, tail)


def causal_lm(model):
    """The transformers causal LM inside a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def supports_chunked_loss(model) -> bool:
    """True when the output layer is a plain bias-free Linear (not an adapter) the loss can reuse."""
    head = causal_lm(model).get_output_embeddings()
    return type(head) is torch.nn.Linear and head.bias is None


def lm_loss(model, inputs: dict, num_items: int | torch.Tensor | None = None,
            chunk: int = CHUNK) -> torch.Tensor:
    """The model's causal-LM loss (labels shifted by one) without materialising all logits.

    Divided by num_items (the Trainer's label-token count over an accumulated batch) when
    given, else by this batch's label tokens: the same value as `model(**inputs).loss`.
    """
    lm = causal_lm(model)
    body = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask", "position_ids")}
    hidden = lm.base_model(**body, use_cache=False).last_hidden_state
    labels = inputs["labels"][:, 1:]  # position t predicts token t + 1
    total = linear_cross_entropy(hidden[:, :-1], lm.get_output_embeddings().weight, labels, chunk)
    count = num_items if num_items is not None else (labels != IGNORE_INDEX).sum()
    return total / count


