"""utils.runs.experiments: the seed's runs as named experiments."""

from utils.runs import experiments


def test_sweep_names_follow_the_seed_runs():
    assert list(experiments.SWEEP) == ["gpt2-b2-acc4-e1-lr1e-4", "gpt2-b2-acc8-e3-lr5e-5",
                                      "gpt2-b2-acc16-e5-lr3e-5", "deepseek-b2-acc4-e1-lr1e-4",
                                      "deepseek-b4-acc4-e2-lr2e-4"]
    assert experiments.SWEEP["deepseek-b4-acc4-e2-lr2e-4"].stage2 == {
        "per_device_train_batch_size": 4, "gradient_accumulation_steps": 4,
        "num_train_epochs": 2, "learning_rate": 2e-4}
    assert experiments.experiments_for("tiny") == list(experiments.SWEEP)[:3]
    assert experiments.experiments_for("tiny-llama") == list(experiments.SWEEP)[3:]


def test_run_names_carry_the_profile_not_the_experiments_model():
    exp = experiments.SWEEP["gpt2-b2-acc16-e5-lr3e-5"]
    assert exp.settings == "b2-acc16-e5-lr3e-5"
    assert exp.run_name("tiny") == "tiny-b2-acc16-e5-lr3e-5"
    assert exp.run_name("gpt2") == "gpt2-b2-acc16-e5-lr3e-5"
    assert experiments.SWEEP["deepseek-b4-acc4-e2-lr2e-4"].run_name("tiny-llama") == "tiny-llama-b4-acc4-e2-lr2e-4"
