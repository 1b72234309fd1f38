"""The course itself: the notebooks' shared setup cell, exercise checkers, the seed deck's
figures and the plots. Every notebook uses it; it imports nothing above `utils.config`.
"""

# What the notebooks import from this room; everything else is imported from its module.
from .plots import bar_compare, loss_curves, token_length_histograms, token_loss_html
from .seed_facts import GPT2, SEED_BEST, SEED_RESULTS, careful_reader_notes
