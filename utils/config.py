"""Profiles: one frozen configuration that moves the same code between a CPU, Colab and a big GPU.

A profile bundles four concerns, each its own dataclass: the model, the data, the training
hyperparameters of each stage and the decoding defaults. Introduced in every notebook's
parameters cell; `get_profile` is the single public entry.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DIR = REPO_ROOT / "data" / "sample"
PROFILE_ENV = "POET_PROFILE"
RUNS_ENV = "POET_RUNS_DIR"  # tests point this at a temporary folder
DEFAULT_PROFILE = "tiny"
CONTAMINATION_DROPS = ("none", "poems", "instructions")
# The label value cross-entropy skips (torch's default ignore_index): prompt and padding
# positions carry it. Defined here, at the bottom, so data, metrics and training share one.
IGNORE_INDEX = -100


@dataclass(frozen=True)
class ModelConfig:
    """Which model to load, or which tiny architecture to build offline."""

    architecture: str  # "gpt2" or "llama": decides the tiny model class and LoRA targets
    model_name_or_path: str | None = None  # hub id; None means "a tiny offline model"
    # A tiny profile's pretrained base: a local folder (the pocket model); None: random init.
    pretrained_dir: Path | None = None
    # Tiny random-init architecture (used when neither of the two above is set).
    n_layer: int = 2
    n_embd: int = 128
    n_head: int = 4
    n_positions: int = 256
    min_gpu_memory_gb: float = 0.0  # stated need, printed by describe()

    def __post_init__(self):
        if self.architecture not in ("gpt2", "llama"):
            raise ValueError(f"architecture must be 'gpt2' or 'llama', got {self.architecture!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")

    @property
    def is_tiny(self) -> bool:
        return self.model_name_or_path is None

    @property
    def base_description(self) -> str:
        """Which weights a run starts from, in words (printed by every setup cell)."""
        if self.model_name_or_path:
            return self.model_name_or_path
        if self.pretrained_dir:
            return f"pocket {self.architecture} pretrained on Shakespeare ({_short(self.pretrained_dir)})"
        return f"tiny random-init {self.architecture}"


@dataclass(frozen=True)
class DataConfig:
    """Where the poems and the poetry instructions come from, and how long a row may be."""

    source: str = "sample"  # "sample" (data/sample, offline) or "hub"
    poems_dataset: str = "suayptalha/Poetry-Foundation-Poems"
    poems_file: str = "PoetryFoundationData.csv"
    instructions_dataset: str = "isaacrehg/poetry-instructions"
    sample_dir: Path = SAMPLE_DIR
    # A local folder with copies of both datasets (parquet, jsonl or CSV; hub or sample layout).
    # Set, it replaces both the hub and data/sample: an offline cluster, a pre-downloaded folder.
    data_dir: Path | None = None
    # Cross-dataset contamination: stage-2 answers that are stage-1 poems (exactly, after
    # normalising, or sharing a contamination_ngram-word run, 13 as in GPT-3's study).
    # "none" only counts them; "poems" drops those poems from stage 1; "instructions" drops
    # those rows from stage 2.
    drop_contaminated: str = "none"
    contamination_ngram: int = 13
    max_length: int = 512  # tokens per training row; longer rows are dropped and counted
    validation_fraction: float = 0.2  # the seed's 80/20 train/validation split
    seed: int = 42

    def __post_init__(self):
        if self.source not in ("sample", "hub"):
            raise ValueError(f"data source must be 'sample' or 'hub', got {self.source!r}")
        if not 0.0 < self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in (0, 1), got {self.validation_fraction}")
        if self.drop_contaminated not in CONTAMINATION_DROPS:
            raise ValueError(f"drop_contaminated must be one of {CONTAMINATION_DROPS}, "
                             f"got {self.drop_contaminated!r}")
        if self.contamination_ngram < 1:
            raise ValueError(f"contamination_ngram must be >= 1, got {self.contamination_ngram}")
        if self.max_length < 8:
            raise ValueError(f"max_length must be at least 8 tokens, got {self.max_length}")


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one training stage, named as in `transformers.TrainingArguments`."""

    num_train_epochs: float = 1.0
    learning_rate: float = 3e-5
    weight_decay: float = 0.0
    per_device_train_batch_size: int = 2
    gradient_accumulation_steps: int = 1
    max_steps: int = -1  # > 0 overrides epochs: the tiny profiles use a handful of steps
    warmup_steps: int = 0
    logging_steps: int = 10
    eval_steps: int = 50
    seed: int = 42
    # LoRA (stage 1 only). r=8 on GPT-2 trains 294,912 of 124,734,720 weights (0.24%).
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05

    def __post_init__(self):
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.per_device_train_batch_size < 1 or self.gradient_accumulation_steps < 1:
            raise ValueError("per_device_train_batch_size and gradient_accumulation_steps must be >= 1")
        if self.max_steps <= 0 and self.num_train_epochs <= 0:
            raise ValueError("set num_train_epochs > 0 or max_steps > 0")

    @property
    def effective_batch_size(self) -> int:
        return self.per_device_train_batch_size * self.gradient_accumulation_steps


@dataclass(frozen=True)
class DecodeConfig:
    """Decoding defaults: the seed's repetition penalty 1.1, temperature 0.7 and top-p 0.95."""

    do_sample: bool = True
    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 0  # 0 disables top-k; top-p does the truncation
    repetition_penalty: float = 1.1
    max_new_tokens: int = 80
    num_beams: int = 1

    def __post_init__(self):
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.num_beams < 1:
            raise ValueError(f"num_beams must be >= 1, got {self.num_beams}")

    def generate_kwargs(self) -> dict:
        """Keyword arguments for `model.generate` / `GenerationConfig`."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Profile:
    """One named machine setting: model, data, both training stages and decoding."""

    name: str
    description: str
    model: ModelConfig
    data: DataConfig = field(default_factory=DataConfig)
    stage1: TrainConfig = field(default_factory=TrainConfig)
    stage2: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)

    @property
    def is_tiny(self) -> bool:
        return self.model.is_tiny

    def replace(self, **sections) -> "Profile":
        """A copy with some sections changed, e.g. `p.replace(stage2={"learning_rate": 1e-4})`."""
        changes = {}
        for key, value in sections.items():
            current = getattr(self, key)
            if isinstance(value, dict) and dataclasses.is_dataclass(current):
                value = dataclasses.replace(current, **value)
            changes[key] = value
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """JSON-ready dict (paths as strings), saved in every run's config.json."""
        return _jsonable(dataclasses.asdict(self))


def _short(path: Path) -> str:
    path = Path(path)
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def random_init(profile: "Profile") -> "Profile":
    """The same tiny profile with a random-init model: for tests that only need shapes."""
    return profile.replace(model={"pretrained_dir": None})


def _jsonable(obj):
    """Paths as strings; those inside the repository relative to it, so a run's config.json
    still matches after the course folder is moved or cloned again (--resume, --from-run)."""
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return _short(obj)
    return obj


# The pocket model: an 8 x 128 GPT-2 the course pretrained on Shakespeare (utils/train/pretrain.py).
POCKET_DIR = REPO_ROOT / "models" / "pocket-gpt2"

# The tiny profiles: a few optimizer steps of a small model on data/sample, minutes on a CPU.
_TINY_DATA = DataConfig(source="sample", max_length=256)
# Sized by measurement: on a 2-core CPU one step of 8 rows of ~150-256 tokens takes ~2 s of CPU,
# most of it in the 50,257-way output layer. Stage 1: 12 steps x 8 = 96 blocks (1.3 epochs of
# the 74 sample blocks); stage 2: 12 steps x 8 = 96 of the 122 sample rows.
_TINY_STAGE1 = TrainConfig(learning_rate=2e-3, max_steps=12, per_device_train_batch_size=8,
                           logging_steps=2, eval_steps=6)
_TINY_STAGE2 = TrainConfig(learning_rate=1e-3, max_steps=12, per_device_train_batch_size=8,
                           logging_steps=2, eval_steps=6)
_TINY_DECODE = DecodeConfig(max_new_tokens=40)
# The pocket model decodes with repetition penalty 1.2 (CTRL's value, Keskar et al. 2019), not
# the seed's 1.1: at 1.1 its stage-2 greedy answers loop on a phrase ("and the way") until the
# budget runs out, so whether they end is a coin flip of the run (measured 2026-12-05 on three
# stage-2 models of the first 8 x 128 base, 4.259, r=4 stage 1: 0.42 / 0.42 / 0.90 of the test
# answers ended with EOS at 1.1; at 1.2 all of them, after a median 32-48 tokens; from today's
# base, 4.251, without attention dropout, all of them after a median 33, 2026-12-06).
_POCKET_DECODE = DecodeConfig(max_new_tokens=40, repetition_penalty=1.2)
# From the pocket base, measured (metrics.json["learning"]): 30 LoRA steps lower the held-out
# poem loss by about half a nat, 60 full steps of stage 2 the completion loss by about one.
# Stage 2's rate was tried on the first 8 x 128 base (2026-12-05, 31 test prompts, greedy answers at
# repetition penalty 1.1, r=8 stage 1): 1e-3 ended 0.65 of them with EOS (the base's verse
# prior keeps lines coming), 2e-3 0.94; with r=4 stage 1 that flipped (see _POCKET_DECODE).
# LoRA r=4 (alpha 8, the same alpha / r as GPT-2's r=8): the pocket model has 8 layers, and r=8
# on each c_attn would train 0.41% of its weights; r=4 trains 0.20%, under stage 1's 0.3%.
_POCKET_STAGE1 = TrainConfig(learning_rate=3e-3, max_steps=30, per_device_train_batch_size=8,
                             logging_steps=5, eval_steps=15, lora_r=4, lora_alpha=8)
_POCKET_STAGE2 = TrainConfig(learning_rate=2e-3, max_steps=60, per_device_train_batch_size=8,
                             logging_steps=5, eval_steps=20)

# The seed's GPT-2 run: 2 seqs * 16 accum = 32 poems per update, 5 epochs at lr 3e-5.
_GPT2_STAGE2 = TrainConfig(num_train_epochs=5, learning_rate=3e-5, weight_decay=0.01,
                           per_device_train_batch_size=2, gradient_accumulation_steps=16,
                           warmup_steps=20, eval_steps=100)
# DeepSeek: 2 seqs * 4 accum = 8 rows per update, 3 epochs at lr 1e-4, no weight decay.
_DEEPSEEK_STAGE2 = TrainConfig(num_train_epochs=3, learning_rate=1e-4, weight_decay=0.0,
                               per_device_train_batch_size=2, gradient_accumulation_steps=4,
                               warmup_steps=20, eval_steps=100)
# Stage 1 (LoRA) uses a higher rate than full fine-tuning; 2e-4 is the LoRA paper's
# GPT-2 Medium setting (Hu et al. 2021, Table 11). One epoch over the poems.
_REAL_STAGE1 = TrainConfig(num_train_epochs=1, learning_rate=2e-4, per_device_train_batch_size=8,
                           gradient_accumulation_steps=2, warmup_steps=20, eval_steps=200)

PROFILES: dict[str, Profile] = {
    "tiny": Profile(
        name="tiny",
        description="the pocket GPT-2 (8 x 128, pretrained on Shakespeare by the course), real "
                    "GPT-2 tokenizer, data/sample; any CPU, offline",
        model=ModelConfig(architecture="gpt2", pretrained_dir=POCKET_DIR),
        data=_TINY_DATA, stage1=_POCKET_STAGE1, stage2=_POCKET_STAGE2, decode=_POCKET_DECODE,
    ),
    "tiny-llama": Profile(
        name="tiny-llama",
        description="2-layer Llama, random init, BOS-adding tokenizer with pad == eos; any CPU, offline",
        model=ModelConfig(architecture="llama"),
        data=_TINY_DATA, stage1=_TINY_STAGE1, stage2=_TINY_STAGE2, decode=_TINY_DECODE,
    ),
    "gpt2": Profile(
        name="gpt2",
        description="openai-community/gpt2 (124M) on the hub datasets; Colab T4 or a local GPU",
        model=ModelConfig(architecture="gpt2", model_name_or_path="openai-community/gpt2",
                          min_gpu_memory_gb=8),
        data=DataConfig(source="hub", max_length=512),
        stage1=_REAL_STAGE1, stage2=_GPT2_STAGE2,
    ),
    "deepseek": Profile(
        name="deepseek",
        description="deepseek-ai/deepseek-coder-1.3b-base on the hub datasets; a >= 24 GB GPU",
        model=ModelConfig(architecture="llama",
                          model_name_or_path="deepseek-ai/deepseek-coder-1.3b-base",
                          min_gpu_memory_gb=24),
        data=DataConfig(source="hub", max_length=512),
        stage1=_REAL_STAGE1, stage2=_DEEPSEEK_STAGE2,
    ),
}


def get_profile(name: str | None = None) -> Profile:
    """Return the named profile; with no name, read POET_PROFILE (default 'tiny'). Notebook 05."""
    if name is None:
        name = os.environ.get(PROFILE_ENV, "").strip() or DEFAULT_PROFILE
    if isinstance(name, Profile):
        return name
    try:
        return PROFILES[name]
    except KeyError:
        valid = ", ".join(PROFILES)
        raise ValueError(f"unknown profile {name!r}; valid profiles: {valid}") from None


def runs_dir() -> Path:
    """Where run folders live: $POET_RUNS_DIR, else runs/ in the repository (git-ignored)."""
    return Path(os.environ.get(RUNS_ENV) or REPO_ROOT / "runs")
