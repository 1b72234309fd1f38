"""What the pipeline's stages share within one run: the Context and its typed parts.

A stage is a function `stage(ctx)`; it reads the profile, the run folder and the options
from ctx, loads the tokenizer and the data once through it, and hands the models it made to
later stages in `ctx.models` (named fields, not string keys). Used by utils/pipeline/stages.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from utils.config import Profile
from utils.data.prepare import prepare_data
from utils.models.tokenizers import load_tokenizer
from utils.options import RunOptions
from utils.runs import registry


@dataclass
class Inputs:
    """The tokenizer and the prepared data: loaded once, shared by the stages (and a sweep's runs)."""

    tokenizer: object = None
    data: object = None  # utils.data's prepared data, cut to options.max_rows


@dataclass
class StageModels:
    """Models a stage hands to a later one in the same process; None: read from the run folder."""

    stage1: object = None  # the PEFT model stage 1 trained
    merged: object = None  # stage 1's adapter folded into the base weights
    stage2: object = None  # the fully fine-tuned model


@dataclass
class Context:
    """What the stages share: the profile, the run folder, the options and loaded objects."""

    profile: Profile
    run_dir: Path
    options: RunOptions = field(default_factory=RunOptions)
    is_main: bool = True  # the process that writes the registry (rank 0 under torchrun)
    inputs: Inputs = field(default_factory=Inputs)
    models: StageModels = field(default_factory=StageModels)
    losses: dict = field(default_factory=dict)  # (id(model), split) -> loss, computed once

    def save_json(self, name: str, obj) -> Path:
        """Write obj as pretty JSON into the run folder (atomically: no half-written file)."""
        return registry.write_json_atomic(self.run_dir / name, obj)

    def tokenizer(self):
        """The profile's tokenizer, loaded once."""
        if self.inputs.tokenizer is None:
            self.inputs.tokenizer = load_tokenizer(self.profile)
        return self.inputs.tokenizer

    def data(self):
        """The prepared data, from the data stage or prepared now without printing."""
        if self.inputs.data is None:
            self.inputs.data = limit_rows(prepare_data(self.profile, self.tokenizer()),
                                          self.options.max_rows)
        return self.inputs.data


def limit_rows(prepared, max_rows: int | None):
    """The prepared data with at most max_rows rows per split (--max-rows: quick smoke runs)."""
    if max_rows:
        prepared.poems = {k: v[:max_rows] for k, v in prepared.poems.items()}
        prepared.instructions = {k: v[:max_rows] for k, v in prepared.instructions.items()}
    return prepared
