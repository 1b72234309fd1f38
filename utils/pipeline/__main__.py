"""`python -m utils.pipeline`: see utils/pipeline/job.py."""

from utils.pipeline.job import cli

cli()
