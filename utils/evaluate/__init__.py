"""Evaluation: text metrics (each checked against a reference library), one model on the test
pairs, poetry's own measures (rhyme, meter, memorisation) checked against Shakespeare, the
learning report of a run, and the seed's two practical prompts. Notebook 08.
"""

# What the notebooks import from this room; everything else is imported from its module.
from .evaluation import EVAL_KEYS, MEMORISED, compare_models, plot_metric_bars, split_loss
from .learning import answer_budget, greedy_answers, median_tokens, response_rates
from .metrics import (
    block_loss,
    evaluate_generations,
    exact_match,
    line_stats,
    perplexity_from_loss,
    rhyme_rate,
)
from .seed_prompts import show, side_by_side
