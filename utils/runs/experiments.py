"""The seed's hyperparameter runs as named experiments: the table a sweep replays.

Each Experiment overrides the profile's stage-2 TrainConfig with one of the seed project's
runs (batch, accumulation, epochs, learning rate); utils/pipeline/sweep.py trains them and
utils/runs/table.py reads their results back. Introduced in notebook 10.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from utils.config import Profile, get_profile


@dataclass(frozen=True)
class Experiment:
    """One named run of the sweep: the seed's stage-2 hyperparameters as a small override."""

    name: str
    architecture: str  # "gpt2" or "llama": which profiles can run it
    model: str
    stage2: dict = field(default_factory=dict)  # overrides of the profile's stage-2 TrainConfig

    @property
    def settings(self) -> str:
        """The name without its model: b2-acc4-e1-lr1e-4 (batch, accumulation, epochs, lr)."""
        return self.name.split("-", 1)[1]

    def run_name(self, profile: Profile | str | None = None) -> str:
        """The run folder's name: the profile that trains it, then the settings.

        A tiny run of a GPT-2 experiment is tiny-b2-acc4-e1-lr1e-4, never gpt2-...: the name
        says which model trained, config.json says which experiment it replays.
        """
        return f"{get_profile(profile).name}-{self.settings}"


def _lr_text(lr: float) -> str:
    mantissa, exponent = f"{lr:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"  # 1e-04 -> 1e-4


def _experiment(short: str, architecture: str, model: str, batch: int, accumulation: int,
                epochs: float, lr: float) -> Experiment:
    name = f"{short}-b{batch}-acc{accumulation}-e{epochs:g}-lr{_lr_text(lr)}"  # peft-style names
    return Experiment(name, architecture, model, {
        "per_device_train_batch_size": batch, "gradient_accumulation_steps": accumulation,
        "num_train_epochs": epochs, "learning_rate": lr})


_GPT2, _DEEPSEEK = "openai-community/gpt2", "deepseek-ai/deepseek-coder-1.3b-base"
# The deck's runs (utils.course.seed_facts holds their published losses): batch / accum. / epochs / lr.
SWEEP: dict[str, Experiment] = {e.name: e for e in (
    _experiment("gpt2", "gpt2", _GPT2, 2, 4, 1, 1e-4),
    _experiment("gpt2", "gpt2", _GPT2, 2, 8, 3, 5e-5),
    _experiment("gpt2", "gpt2", _GPT2, 2, 16, 5, 3e-5),
    _experiment("deepseek", "llama", _DEEPSEEK, 2, 4, 1, 1e-4),
    _experiment("deepseek", "llama", _DEEPSEEK, 4, 4, 2, 2e-4),
)}


def experiments_for(profile: Profile | str | None = None) -> list[str]:
    """Names of the sweep's experiments this profile can run (GPT-2 ones on tiny and gpt2)."""
    architecture = get_profile(profile).model.architecture
    return [name for name, e in SWEEP.items() if e.architecture == architecture]


def check_experiments(names, profile: Profile) -> list[Experiment]:
    """The experiments asked for, or a ValueError naming the unknown one and the valid ones."""
    chosen = []
    for name in names:
        if name not in SWEEP:
            raise ValueError(f"unknown experiment {name!r}; valid experiments: {', '.join(SWEEP)}")
        exp = SWEEP[name]
        if exp.architecture != profile.model.architecture:
            raise ValueError(f"experiment {name!r} needs a {exp.architecture} profile, but profile "
                             f"{profile.name!r} is {profile.model.architecture}; this profile runs: "
                             f"{', '.join(experiments_for(profile))}")
        chosen.append(exp)
    return chosen
