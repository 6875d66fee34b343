"""prefopt.grpo."""
