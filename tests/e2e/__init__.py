"""Helpers for the browser test of the course widgets (tests/test_e2e_jupyterlab.py)."""
