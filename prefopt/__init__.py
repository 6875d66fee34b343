"""prefopt: train vision-language models to hallucinate less."""

__version__ = "0.1.0"
