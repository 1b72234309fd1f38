"""Did the run learn? The numbers of metrics.json["learning"], for base, stage 1 and stage 2.

- `pocket_val_loss`: the base's loss on the held-out 5% of the pretraining corpus (pocket base);
- `poem_loss`: loss on held-out poems, every token (what stage 1 trains);
- `completion_loss`: loss on the instruction test split, completion tokens only (stage 2);
- `eos_rate` / `user_turn_rate`: the share of greedy answers to held-out instruction prompts
  that end with EOS within the token budget, and that start a new `User:` turn;
- `answer_tokens`: the median length of those answers (a model that stops at once says nothing).

Notebooks 06-08 show them; the forgetting check is poem_loss after stage 2 against stage 1.
"""

from __future__ import annotations

import re


from utils.data.corpus import pretraining_blocks
from utils.data.tokenize import lm_blocks, token_lengths
from utils.evaluate.evaluation import completion_loss_on_pairs
from utils.evaluate.metrics import block_loss
from utils.generate.decoding import context_length
from utils.models.loading import eos_is_not_padding, eval_mode

USER_TURN = re.compile(r"(^|\n)\s*User:")


def greedy_answers(model, tokenizer, prompts, max_new_tokens: int, repetition_penalty: float = 1.0,
                   batch_size: int = 8):
    """(text, ended_with_eos) of greedy (argmax) continuations in left-padded batches.

    `repetition_penalty` > 1 divides the logits of tokens already seen (the profile's decoding
    uses the seed's 1.1): without it a small model's argmax often loops on one line forever.
    """
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # every prompt ends where generation continues
    device = next(model.parameters()).device
    answers = []
    try:
        for start in range(0, len(prompts), batch_size):
            batch = tokenizer(list(prompts[start:start + batch_size]), return_tensors="pt",
                              padding=True).to(device)
            room = context_length(model) - batch["input_ids"].shape[1]  # prompt + answer must fit
            with eval_mode(model), eos_is_not_padding(model):  # a finished row's EOS fill is not padding
                out = model.generate(**batch, do_sample=False, num_beams=1,
                                     max_new_tokens=min(max_new_tokens, room),
                                     repetition_penalty=repetition_penalty,
                                     eos_token_id=tokenizer.eos_token_id,
                                     pad_token_id=tokenizer.pad_token_id)
            for row in out[:, batch["input_ids"].shape[1]:].tolist():
                ended = tokenizer.eos_token_id in row
                kept = row[:row.index(tokenizer.eos_token_id)] if ended else row
                answers.append((tokenizer.decode(kept, skip_special_tokens=True), ended))
    finally:
        tokenizer.padding_side = old_side
    return answers


def response_rates(answers) -> dict:
    """eos_rate and user_turn_rate of greedy answers (each a share in 0..1)."""
    if not answers:
        raise ValueError("no answers to rate: pass at least one prompt")
    n = len(answers)
    return {"eos_rate": sum(ended for _, ended in answers) / n,
            "user_turn_rate": sum(bool(USER_TURN.search(text)) for text, _ in answers) / n}


def median_tokens(tokenizer, texts) -> float:
    """The median length in tokens of some texts: does a model that stops say anything first?"""
    import statistics

    return float(statistics.median(token_lengths(texts, tokenizer))) if texts else 0.0


def pocket_val_loss(model, tokenizer) -> float:
    """The base's loss on the held-out 5% of the pocket model's corpus (256-token blocks)."""
    block_size = getattr(model.config, "n_positions", 256)
    blocks = pretraining_blocks(tokenizer, block_size)["validation"]
    return block_loss(model, blocks)


def answer_budget(models: dict, tokenizer, prompts, max_new_tokens: int) -> int:
    """New tokens every greedy answer gets: max_new_tokens, or less where the longest prompt
    leaves less room in the context. One budget for all, so an answer's length and whether it
    reached EOS measure the model, not how long the other prompts of its batch were (a 256-token
    context with a 150-token prompt in the batch left 106 tokens for every row of that batch)."""
    longest = max((len(tokenizer(p)["input_ids"]) for p in prompts), default=0)
    context = min((context_length(m) for m in models.values()), default=longest + max_new_tokens)
    return max(1, min(max_new_tokens, context - longest))


def learning_report(models: dict, tokenizer, prepared, profile) -> dict:
    """metrics.json["learning"] for the models a run has ({'base', 'stage1', 'stage2'}: model).

    Poem loss on the held-out sample poems (stage 1's task), completion loss on the test split
    (stage 2's task), and greedy answers of base and stage 2 to the test prompts, with the
    profile's repetition penalty and one budget of new tokens for every answer (answer_budget:
    max_length, less where the longest prompt leaves less room; recorded as max_new_tokens).
    """
    block = profile.data.max_length
    poems = lm_blocks(prepared.poems["validation"], tokenizer, block)[0]
    pairs = prepared.instructions["test"]
    prompts = [prompt for prompt, _ in pairs]
    budget = answer_budget(models, tokenizer, prompts, block)
    report = {"poem_loss": {}, "completion_loss": {}, "eos_rate": {}, "user_turn_rate": {},
              "answer_tokens": {},
              "n_poem_blocks": len(poems), "n_test_prompts": len(prompts),
              "max_new_tokens": budget, "repetition_penalty": profile.decode.repetition_penalty}
    if profile.model.pretrained_dir and "base" in models:
        report["pocket_val_loss"] = pocket_val_loss(models["base"], tokenizer)
    for name, model in models.items():
        report["poem_loss"][name] = block_loss(model, poems)
        report["completion_loss"][name] = completion_loss_on_pairs(model, tokenizer, pairs, block)[0]
        if name in ("base", "stage2"):
            answers = greedy_answers(model, tokenizer, prompts, budget,
                                     profile.decode.repetition_penalty)
            rates = response_rates(answers)
            report["eos_rate"][name] = rates["eos_rate"]
            report["answer_tokens"][name] = median_tokens(tokenizer, [text for text, _ in answers])
            report["user_turn_rate"][name] = rates["user_turn_rate"]
    return report
