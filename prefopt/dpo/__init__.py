"""prefopt.dpo."""
