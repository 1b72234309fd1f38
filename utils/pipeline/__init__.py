"""The headless main job, `python -m utils.pipeline`: its stages, the context they share, the
models between stages, and the sweep. Notebooks 08, 10 and 12 call it through `run`; 08, 12
and 13 make the class's runs they miss with `make_missing_class_runs` (12 and 13 through
`class_stage2_model`, 10 through `class_stage1_run`).
"""

# What the notebooks import from this room; everything else is imported from its module.
from .class_runs import class_stage1_run, class_stage2_model, make_missing_class_runs
from .job import run
from .rehearsal import rehearse
from .stages import print_data_report
from .sweep import run_sweep, seed_repeats
