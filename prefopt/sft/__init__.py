"""Supervised fine-tuning (cold start, SPEC 1.7): LLaVA conversations / LLaVA-CoT with assistant-only loss."""
