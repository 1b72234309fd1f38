"""Training: the Trainer wrapper both fine-tuning stages use (notebooks 06 and 07), the loss
guards, stage 1's memory savers, and the pocket model's pretraining loop (notebook 04b).
"""

# What the notebooks import from this room; everything else is imported from its module.
from .pretrain import (
    PretrainConfig,
    batch_rows,
    learning_rate_at,
    load_pocket,
    make_optimizer,
    new_pocket_model,
    sample_texts,
)
from .trainer import build_trainer, train
