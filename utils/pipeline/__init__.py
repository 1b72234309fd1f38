"""The headless main job, `python -m utils.pipeline`: its stages, the context they share, the
models between stages, and the sweep. Notebooks 08, 10 and 12 call it through `run`.
"""

# What the notebooks import from this room; everything else is imported from its module.
from .job import run
from .rehearsal import rehearse
from .stages import print_data_report
from .sweep import run_sweep
