"""Shared training helpers."""
