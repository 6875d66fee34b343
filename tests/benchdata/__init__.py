"""Inputs and official-script numbers shared by a benchmark's unit tests and its CLI tests."""
