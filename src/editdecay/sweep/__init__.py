"""Sweeps: a grid of trials (``grid.py``, no Ray) run with Ray Tune (``runner.py``, the only ``import ray``)."""
