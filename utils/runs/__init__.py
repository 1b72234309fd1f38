"""Run folders: the registry under runs/ (atomic writes), who may overwrite or resume a run, the
runs table, the report, and the seed's experiments. Notebooks 06-08, 10 and 12.
"""

# What the notebooks import from this room; everything else is imported from its module.
from .experiments import SWEEP, experiments_for
from .guard import check_overwrite
from .registry import run_path
from .table import PREFERENCE_COLUMNS, read_log_history, runs_table
