"""prefopt.eval."""
