"""Performance measurements, kept outside the `utils` package: nothing in utils imports them.

`python -m bench` (CPU, side by side), `python -m bench.gpu` (a CUDA GPU). Notebook 11 reads them.
"""
