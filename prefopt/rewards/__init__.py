"""prefopt.rewards."""
