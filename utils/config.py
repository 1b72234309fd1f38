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
# The label value cross-entropy skips (torch's default ignore_index): prompt and padding
# positions carry it. Defined here, at the bottom, so data, metrics and training share one.
IGNORE_INDEX = -100


@dataclass(frozen=True)
class ModelConfig:
    """Which model to load, or which tiny architecture to build offline."""

    architecture: str  # "gpt2" or "llama": decides the tiny model class and LoRA targets
    model_name_or_path: str | None = None  # hub id; None means "build a tiny random model"
    # Tiny random-init architecture (only used when model_name_or_path is None).
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


@dataclass(frozen=True)
class DataConfig:
    """Where the poems and the poetry instructions come from, and how long a row may be."""

    source: str = "sample"  # "sample" (data/sample, offline) or "hub"
    poems_dataset: str = "suayptalha/Poetry-Foundation-Poems"
    poems_file: str = "PoetryFoundationData.csv"
    instructions_dataset: str = "isaacrehg/poetry-instructions"
    sample_dir: Path = SAMPLE_DIR
    max_length: int = 512  # tokens per training row; longer rows are dropped and counted
    validation_fraction: float = 0.2  # the seed's 80/20 train/validation split
    seed: int = 42

    def __post_init__(self):
        if self.source not in ("sample", "hub"):
            raise ValueError(f"data source must be 'sample' or 'hub', got {self.source!r}")
        if not 0.0 < self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in (0, 1), got {self.validation_fraction}")
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


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


# The tiny profiles: a few optimizer steps of a 2-layer model on data/sample, minutes on a CPU.
_TINY_DATA = DataConfig(source="sample", max_length=256)
# Sized by measurement: on a 2-core CPU one step of 8 rows of ~150-256 tokens takes ~2 s of CPU,
# most of it in the 50,257-way output layer. Stage 1: 12 steps x 8 = 96 blocks (1.3 epochs of
# the 74 sample blocks); stage 2: 12 steps x 8 = 96 of the 122 sample rows.
_TINY_STAGE1 = TrainConfig(learning_rate=2e-3, max_steps=12, per_device_train_batch_size=8,
                           logging_steps=2, eval_steps=6)
_TINY_STAGE2 = TrainConfig(learning_rate=1e-3, max_steps=12, per_device_train_batch_size=8,
                           logging_steps=2, eval_steps=6)
_TINY_DECODE = DecodeConfig(max_new_tokens=40)

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
        description="2-layer GPT-2, random init, real GPT-2 tokenizer, data/sample; any CPU, offline",
        model=ModelConfig(architecture="gpt2"),
        data=_TINY_DATA, stage1=_TINY_STAGE1, stage2=_TINY_STAGE2, decode=_TINY_DECODE,
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
