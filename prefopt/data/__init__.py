"""prefopt.data."""
