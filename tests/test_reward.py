"""The reward stage (utils/prefer/reward.py): the reward, the group baseline against TRL's,
the config's checks, and (slow) the measured effect on a tiny stage-2 model."""

import math

import pytest
import torch

from utils.prefer.reward import (RewardConfig, completion_token_logps, group_advantages,
                                 poem_reward, policy_loss, prompt_batches, repeated_line_share,
                                 rollouts)

COUPLET = "The garden wakes in light,\nthe frost lets go at last of night"
UNRHYMED = "The garden wakes in light,\nthe frost lets go at noon"


def test_poem_reward_pays_for_rhyme_and_charges_for_repetition():
    config = RewardConfig()
    assert poem_reward(COUPLET, config) == 1.0  # one pair, it rhymes, nothing repeated
    assert poem_reward(UNRHYMED, config) == 0.0
    repeated = f"{COUPLET}\n{COUPLET}"  # 3 pairs rhyme, lines 3-4 repeat 1-2
    # 2 of 4 lines repeat; 26 words make 25 bigrams, the second copy's 12 repeat the first's
    expected = 1.0 - 0.5 * (2 / 4 + 12 / 25)
    assert poem_reward(repeated, config) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["", "   \n\n", "one line with no newline", "one line\n\n"])
def test_degenerate_answers_get_the_penalty(text):
    assert poem_reward(text, RewardConfig(degenerate_penalty=0.7)) == -0.7


def test_repeated_line_share_ignores_case_and_punctuation():
    assert repeated_line_share("The sea.\nthe SEA\nA gull") == pytest.approx(1 / 3)
    assert repeated_line_share("") == 0.0


def test_group_advantages_by_hand():
    rewards = [1.0, 0.0, 0.0, 0.0, 0.5, 0.5, 0.5, 0.5]
    centred = group_advantages(rewards, 4, scale=False)
    assert torch.allclose(centred, torch.tensor([0.75, -0.25, -0.25, -0.25, 0, 0, 0, 0]))
    scaled = group_advantages(rewards, 4)
    std = math.sqrt((0.75 ** 2 + 3 * 0.25 ** 2) / 3)  # Bessel's n - 1
    assert scaled[0].item() == pytest.approx(0.75 / (std + 1e-4))
    assert scaled[4:].abs().max().item() == 0.0  # equal rewards: nothing to learn, not 0 / 0
    with pytest.raises(ValueError, match="group_size"):
        group_advantages(rewards, 3)


@pytest.mark.parametrize("scale", [True, False])
def test_group_advantages_match_trl(scale, tmp_path):
    """TRL computes the advantages inside GRPOTrainer._generate_and_score_completions; run it
    on a tiny model with a reward function that returns fixed rewards, and compare."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from utils.models.loading import build_tiny_model
    from utils.models.tokenizers import load_tokenizer

    tok = load_tokenizer("tiny")
    rewards = [0.2, 0.9, 0.1, 0.4, 0.3, 0.3, 0.3, 0.3, -0.5, 1.0, 0.0, 0.25]

    def fixed_rewards(prompts, completions, **kwargs):
        return list(rewards)

    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=len(rewards),
                      num_generations=4, max_completion_length=4, scale_rewards="group" if scale else "none",
                      use_cpu=True, bf16=False, gradient_checkpointing=False, report_to="none")
    prompts = ["The sea", "The sky", "The hill"]
    trainer = GRPOTrainer(model=build_tiny_model("tiny", tok, seed=0), reward_funcs=fixed_rewards,
                          args=args, processing_class=tok,
                          train_dataset=Dataset.from_list([{"prompt": p} for p in prompts]))
    trainer.model.train()  # TRL groups by num_generations in train mode
    out = trainer._generate_and_score_completions([{"prompt": p} for p in prompts for _ in range(4)])
    assert torch.allclose(out["advantages"].cpu(), group_advantages(rewards, 4, scale), atol=1e-6)


def test_policy_loss_is_minus_advantage_weighted_logp_plus_kl():
    logps = torch.tensor([[-1.0, -2.0], [-0.5, -9.0]])
    mask = torch.tensor([[1, 1], [1, 0]])  # the second answer ended after one token
    advantages = torch.tensor([1.0, -2.0])
    loss, kl = policy_loss(logps, None, advantages, mask, beta=0.1)
    assert loss.item() == pytest.approx(-(1.0 * (-1.0 - 2.0) + (-2.0) * (-0.5)) / 3)
    assert kl == 0.0
    loss, kl = policy_loss(logps, logps, advantages, mask, beta=0.1)  # the reference agrees: KL 0
    assert kl == pytest.approx(0.0)
    ref = logps + torch.log(torch.tensor(2.0))
    _, kl = policy_loss(logps, ref, advantages, mask, beta=0.1)
    assert kl == pytest.approx(2 - math.log(2) - 1)  # exp(r) - r - 1 at r = log 2


def test_prompt_batches_cover_every_prompt_each_pass():
    batches = prompt_batches(list("abcdefg"), 3, seed=0)
    first_pass = [next(batches) for _ in range(2)]  # 7 prompts: two batches of 3, one dropped
    assert all(len(b) == 3 for b in first_pass) and len(set(sum(first_pass, []))) == 6
    assert next(prompt_batches(["only"], 8, seed=0)) == ["only"]
    with pytest.raises(ValueError, match="no prompts"):
        next(prompt_batches([], 2, seed=0))


@pytest.mark.parametrize("field, value", [
    ("max_steps", 0), ("group_size", 1), ("prompts_per_step", 0), ("learning_rate", 0.0),
    ("beta", float("nan")), ("beta", -0.1), ("temperature", float("inf")), ("max_new_tokens", 0),
    ("repetition_weight", -1.0), ("eval_samples_per_prompt", 1),
])
def test_reward_config_names_the_bad_field(field, value):
    with pytest.raises(ValueError, match=field):
        RewardConfig(**{field: value})


def test_rollouts_mask_after_eos_and_logps_match_the_sampler():
    from utils.models.loading import build_tiny_model
    from utils.models.tokenizers import load_tokenizer

    tok = load_tokenizer("tiny")
    model = build_tiny_model("tiny", tok, seed=0).eval()
    config = RewardConfig(group_size=3, max_new_tokens=6)
    torch.manual_seed(0)
    batch = rollouts(model, tok, ["The sea", "A much longer prompt about the sky"], config)
    assert batch["completion_ids"].shape[0] == 6 and len(batch["texts"]) == 6
    ends = batch["completion_mask"].sum(dim=1)
    for row, n in zip(batch["completion_ids"], ends):
        assert (row[:n - 1] != tok.eos_token_id).all()  # no EOS before the last kept token
    # the scored log-probabilities are those of each row run on its own, without padding
    logps = completion_token_logps(model, batch, config.temperature)
    for i in (0, 5):
        prompt = batch["prompt_ids"][i][batch["prompt_mask"][i].bool()]
        ids = torch.cat([prompt, batch["completion_ids"][i][:ends[i]]]).unsqueeze(0)
        with torch.no_grad():
            alone = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
        expected = alone[-int(ends[i]):].gather(-1, ids[0, -int(ends[i]):, None]).squeeze(-1)
        assert torch.allclose(logps[i, :ends[i]], expected, atol=1e-4)
