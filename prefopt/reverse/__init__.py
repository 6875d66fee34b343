"""prefopt.reverse."""
