"""Human preference: the rating store (preferences.csv), the items people rate, the statistics
of their clicks, the A/B rater widget, the scripted rater, and DPO. Notebooks 09 and 12.
"""

# What the notebooks import from this room; everything else is imported from its module.
from .dpo import preference_config
from .rater import ABRater
