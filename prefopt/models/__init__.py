"""prefopt.models."""
