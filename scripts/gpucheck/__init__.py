"""Pieces of ``scripts/gpu_check.py``: real-size model configs, the smoke checks and the timings."""
