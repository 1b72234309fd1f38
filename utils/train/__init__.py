"""Training: the Trainer wrapper both fine-tuning stages use (notebooks 06 and 07), the loss
guards, stage 1's memory savers, and the pocket model's pretraining loop (notebook 04b).
"""

# What the notebooks import from this room; everything else is imported from its module.
from .trainer import build_trainer, train

# The pretraining names load on first use: `python -m utils.train.pretrain` imports this
# package first, and a package that had already imported the module it runs would make runpy
# warn ("found in sys.modules ... unpredictable behaviour") before every run's first line.
PRETRAIN_NAMES = ("PretrainConfig", "batch_rows", "learning_rate_at", "load_pocket",
                  "make_optimizer", "new_pocket_model", "sample_texts")


def __getattr__(name):
    if name in PRETRAIN_NAMES:
        from . import pretrain

        return getattr(pretrain, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
