"""The reward stage (utils/prefer/reward.py): the reward, the group baseline against TRL's,
the config's checks and the stage's wiring. The measured effect on the tiny stage-2 model (the
rhyme-pair rate up by >= 0.15, distinct-2 kept) is asserted on notebook 13's run, which calls
the same `reward_stage` with the profile's settings: tests/test_notebooks.py."""

import math

import pytest
import torch

from utils.evaluate.poetry import rhyme_class
from utils.prefer.reward import (RewardConfig, completion_token_logps, end_word_advantages,
                                 group_advantages, group_novelty, pair_score, poem_reward,
                                 policy_loss, prompt_batches, repeated_line_share, rhyme_scores,
                                 rollouts, token_advantages)

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


def test_pair_score_pays_perfect_then_near_rhymes():
    assert pair_score("in the light", "at night", 0.5) == 1.0
    assert pair_score("my love", "to prove", 0.5) == 0.5  # slant
    assert pair_score("all day", "the gate", 0.3) == 0.3  # assonance
    assert pair_score("the day", "the day", 0.5) == 0.0  # the same word is no rhyme
    assert pair_score("zarking", "blarking", 0.5) == 0.0  # a spelling guess earns nothing
    assert pair_score("the day", "a dog", 0.5) == 0.0
    assert rhyme_class("the sound of", "my love") == "perfect"  # "of" AH1 V: the dictionary's
    assert pair_score("the sound of", "my love", 0.5) == 0.0  # but a line does not end on "of"


@pytest.mark.parametrize("text", ["", "   \n\n", "one line with no newline", "one line\n\nanother"])
def test_degenerate_answers_get_the_penalty(text):
    assert poem_reward(text, RewardConfig(degenerate_penalty=0.7)) == -0.7


def test_rhyme_scores_mark_each_end_word_and_its_line_break():
    text = "The garden wakes in light,\nthe frost lets go at night\n\nso green,\n!!"
    scored = rhyme_scores(text, 0.5)
    assert [(text[a:b], score) for a, b, score in scored] == [("night\n", 1.0), ("!!", 0.0)]
    # one score per consecutive pair, as poetry.line_pairs counts them (never across stanzas)
    assert len(scored) == 2


def test_group_novelty_is_the_share_of_bigrams_no_groupmate_has():
    texts = ["a b c", "a b d", "x y", "x y"]
    assert group_novelty(texts, 2) == [0.5, 0.5, 0.0, 0.0]  # "b c" and "b d" are their own
    assert group_novelty(["", "a b"], 2) == [0.0, 1.0]


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


def test_end_word_advantages_centre_on_the_group_of_end_words():
    scores = [[1.0, 0.0], [0.0], [0.5], []]  # two groups of two answers
    advantages = end_word_advantages(scores, 2, scale=False)
    assert advantages[:2] == [[pytest.approx(2 / 3), pytest.approx(-1 / 3)], [pytest.approx(-1 / 3)]]
    assert advantages[2:] == [[0.0], []]  # one end word in the group: nothing to compare
    scaled = end_word_advantages(scores, 2)
    assert scaled[0][0] == pytest.approx((2 / 3) / (math.sqrt(1 / 3) + 1e-4))


def test_token_advantages_add_rhyme_credit_on_end_word_tokens():
    from utils.models.tokenizers import load_tokenizer

    tok = load_tokenizer("tiny")
    texts = ["In the light\nat night", "In the light\nat noon"]  # one group of two
    ids = [tok(t)["input_ids"] for t in texts]
    width = max(map(len, ids))
    batch = {"texts": texts,
             "completion_ids": torch.tensor([row + [tok.eos_token_id] * (width - len(row)) for row in ids]),
             "completion_mask": torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in ids])}
    config = RewardConfig(group_size=2, novelty_weight=0.0, scale_rewards=False)
    advantages = token_advantages(batch, tok, config)
    # equal form (no repetition): only the last word differs, by its rhyme: 1 against 0
    night = len(ids[0]) - 1  # " night" is the last token of the first answer
    assert advantages[0, night].item() == pytest.approx(0.5)
    assert advantages[1, len(ids[1]) - 1].item() == pytest.approx(-0.5)
    assert advantages[:, :night].abs().max().item() == 0.0  # "In the light\nat": no credit


def test_form_weight_scales_the_form_advantage_and_leaves_the_rhyme_credit():
    """Every token carries form_weight x the answer's form advantage; an end word adds its
    rhyme advantage at full weight."""
    from utils.models.tokenizers import load_tokenizer
    from utils.prefer.reward import form_penalty

    tok = load_tokenizer("tiny")
    texts = ["In the light\nat night", "night night night\nnight night night"]  # the second repeats
    ids = [tok(t)["input_ids"] for t in texts]
    width = max(map(len, ids))
    batch = {"texts": texts,
             "completion_ids": torch.tensor([row + [tok.eos_token_id] * (width - len(row)) for row in ids]),
             "completion_mask": torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in ids])}
    form = group_advantages([form_penalty(t, RewardConfig(novelty_weight=0.0)) for t in texts], 2, False)
    assert form[0] > 0 > form[1]
    for weight in (1.0, 0.25):
        config = RewardConfig(group_size=2, novelty_weight=0.0, scale_rewards=False, form_weight=weight)
        advantages = token_advantages(batch, tok, config)
        assert advantages[0, 0].item() == pytest.approx(weight * form[0].item())  # "In": form alone
        assert advantages[1, 0].item() == pytest.approx(weight * form[1].item())


def test_policy_loss_is_minus_advantage_weighted_logp_plus_kl():
    logps = torch.tensor([[-1.0, -2.0], [-0.5, -9.0]])
    mask = torch.tensor([[1, 1], [1, 0]])  # the second answer ended after one token
    advantages = torch.tensor([[1.0, 1.0], [-2.0, -2.0]])
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
    ("repetition_weight", -1.0), ("near_rhyme_weight", float("nan")), ("novelty_weight", -0.5), ("form_weight", -0.1),
    ("eval_samples_per_prompt", 1),
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
    # the scored log-probabilities are those of each row run on its own, without padding, at
    # the rollouts' temperature
    logps = completion_token_logps(model, batch, config.temperature)
    for i in (0, 5):
        prompt = batch["prompt_ids"][i][batch["prompt_mask"][i].bool()]
        ids = torch.cat([prompt, batch["completion_ids"][i][:ends[i]]]).unsqueeze(0)
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, :-1].float() / config.temperature
            alone = torch.log_softmax(logits, dim=-1)
        expected = alone[-int(ends[i]):].gather(-1, ids[0, -int(ends[i]):, None]).squeeze(-1)
        assert torch.allclose(logps[i, :ends[i]], expected, atol=1e-4)


# ---------------------------------------------------------------- the pipeline stage


def test_reward_is_an_optional_stage_that_records_its_metrics(tiny_full_run, monkeypatch):
    from utils import options
    from utils.pipeline import reward_stage, stages
    from utils.runs import registry
    from utils.runs import table as runs

    assert "reward" in options.STAGE_NAMES and "reward" not in options.DEFAULT_STAGES
    seen = {}

    def fake_stage(model_dir, tokenizer, profile, output_dir, prompts, eval_prompts, cfg=None,
                   training_poems=()):
        seen.update(model_dir=model_dir, output_dir=output_dir, prompts=len(prompts), cfg=cfg,
                    poems=len(training_poems))
        return {"rhyme_pair_rate_before": 0.1, "rhyme_pair_rate_after": 0.3, "kl_last_step": 0.2}

    monkeypatch.setattr(reward_stage, "reward_stage", fake_stage)  # the real one: notebook 13
    tiny_full_run.options = options.RunOptions(num_samples=1, reward_max_steps=3, reward_beta=0.0)
    stages.STAGES["reward"](tiny_full_run)
    run = tiny_full_run.run_dir
    assert seen["model_dir"] == run / registry.STAGE2_MODEL
    assert seen["output_dir"] == run / registry.REWARD_MODEL and seen["prompts"] > 0 and seen["poems"] > 0
    assert (seen["cfg"].max_steps, seen["cfg"].beta) == (3, 0.0)  # the --reward-* flags reach it
    written = registry.read_json(run / registry.METRICS)["reward"]
    assert written["rhyme_pair_rate_after"] == 0.3
    row = runs.runs_table(run.parent).set_index("run").loc[run.name]
    assert row["reward: rhyme after"] == 0.3 and row["reward: KL"] == 0.2


def test_the_reward_stage_needs_stage2_and_says_how_to_get_it(tmp_path):
    from utils.pipeline.context import Context
    from utils.pipeline.reward_stage import stage_reward
    from utils.runs.registry import RunNotFoundError

    with pytest.raises(RunNotFoundError, match=r"stage2/model is missing.*--stages data,stage1,merge,stage2,reward"):
        stage_reward(Context("tiny", tmp_path / "r"))


def test_the_memory_check_sizes_the_reward_stage_when_it_runs(monkeypatch):
    from utils.models import fit
    from utils.models.memory import estimate_memory, parameter_counts
    from utils.models.shapes import reference_config
    from utils.pipeline import job
    from utils.pipeline import reward_stage as stage
    from utils.prefer import reward

    seen = {}
    monkeypatch.setattr(job, "check_gpu_memory", lambda profile, extra=None: seen.update(extra=extra))
    job.check_memory_first(fit.get_profile("gpt2"), ["stage2"])
    assert seen["extra"] is None
    job.check_memory_first(fit.get_profile("gpt2"), ["reward"])
    (label, estimate), = seen["extra"].items()
    assert label == stage.MEMORY_LABEL
    config, cfg = reference_config("gpt2"), reward.reward_config("gpt2")
    rows, seq = cfg.prompts_per_step * cfg.group_size, stage.PROMPT_TOKENS + cfg.max_new_tokens
    by_hand = (estimate_memory(config, "full fp32", rows, seq)["total"]  # policy, AdamW
               + 4 * parameter_counts(config)[0])  # the frozen fp32 reference
    assert estimate(config, 1) == by_hand
    no_reference = stage.memory_estimate(reward.reward_config("gpt2", beta=0.0))
    assert no_reference(config, 1) == by_hand - 4 * parameter_counts(config)[0]
    # and the card check lists it beside stages 1 and 2
    found = fit.check_gpu_memory("gpt2", card_bytes=80 * 2**30, extra=seen["extra"])
    assert set(found) == {"stage 1 (LoRA r=8, fp32 base)", "stage 2 (full fine-tuning, mixed precision)",
                          stage.MEMORY_LABEL}


def test_compare_tuned_measures_every_model_on_the_same_prompts():
    from utils.config import get_profile
    from utils.models.loading import build_tiny_model
    from utils.models.tokenizers import load_tokenizer
    from utils.prefer.compare import compare_tuned, log_ratio

    tok = load_tokenizer("tiny")
    start, other = build_tiny_model("tiny", tok, seed=0), build_tiny_model("tiny", tok, seed=1)
    prompts = ["User: a poem about rain\nAssistant:", "User: the sea\nAssistant:"]
    answers = [["grey rain\non the roof"], ["salt wind"]]
    assert log_ratio(start, start, tok, prompts, answers) == 0.0
    assert log_ratio(other, start, tok, prompts, answers) != 0.0
    decode = get_profile("tiny").decode
    table = compare_tuned(start, {"other": other}, tok, prompts, decode.__class__(max_new_tokens=8),
                          training_poems=["grey rain on the roof of the house"], seed=0)
    assert list(table.index) == ["stage 2 (start)", "other"]
    assert table.loc["stage 2 (start)", "log-ratio to start"] == 0.0
    assert 0 <= table.loc["other", "rhyme-pair rate"] <= 1 and 0 <= table.loc["other", "distinct-2"] <= 1


def test_answer_credit_spreads_the_rhyme_over_every_token():
    from utils.models.tokenizers import load_tokenizer

    tok = load_tokenizer("tiny")
    texts = ["In the light\nat night", "In the light\nat noon"]
    ids = [tok(t)["input_ids"] for t in texts]
    width = max(map(len, ids))
    batch = {"texts": texts,
             "completion_ids": torch.tensor([row + [tok.eos_token_id] * (width - len(row)) for row in ids]),
             "completion_mask": torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in ids])}
    config = RewardConfig(group_size=2, novelty_weight=0.0, scale_rewards=False, rhyme_credit="answer")
    advantages = token_advantages(batch, tok, config)
    assert torch.allclose(advantages[0], torch.full((width,), 0.5))  # rhyme 1 against 0, on every token
    assert torch.allclose(advantages[1], torch.full((width,), -0.5))
    with pytest.raises(ValueError, match="rhyme_credit"):
        RewardConfig(rhyme_credit="tokens")


def test_the_trials_tool_reads_its_changes_and_refuses_a_folder_without_a_model(tmp_path):
    """tools/reward_trials.py (the seed trials counted at RewardConfig.form_weight): `--set`
    values parse as Python literals, and a folder with no model stops before any work."""
    import importlib.util
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("reward_trials", root / "tools" / "reward_trials.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    parse_changes = tool.parse_changes

    assert parse_changes(["form_weight=1.0", "max_steps=60"]) == {"form_weight": 1.0, "max_steps": 60}
    with pytest.raises(SystemExit, match="name=value"):
        parse_changes(["form_weight"])
    done = subprocess.run([sys.executable, str(root / "tools" / "reward_trials.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "holds no model (config.json)" in done.stderr
